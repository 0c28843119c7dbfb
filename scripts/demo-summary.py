#!/usr/bin/env python3
"""The demo's Table-1-style summary: reads `d2ae-eval report`'s report.json (and, for the synthetic
set, synth.json), writes summary.json beside the report and prints the table.

summary.json holds, for each of t, p, c: verification accuracy (mean ± std over folds, TPR at
FPR 1e-3 and 1e-2) and mean attribute accuracy, per-attribute accuracies, which attributes are identity-
independent by construction, and the R² of background colour (and every other factor) from each
feature; per-fold verification accuracies; with a baseline run, its f_T verification (`baseline`,
Table 2); with applied factors, each one's R² from each feature (`applied_factor_r2`); and the autoencoder's fidelity (`reconstruction`, `swap`,
`edit` from report.json's `fidelity`: PSNR against the mean-image floor, identity swaps and attribute
edits re-encoded). With synth.json, the swap's attributes kept and the edit flip rate are recomputed
over the identity-independent attributes (the ones f_P should carry), the all-attribute values kept
beside them as `*_all_attributes`. Only the standard library, so it runs with any python3.
"""
import argparse
import json
import os
import sys

KINDS = ("t", "p", "c")
NAMES = {"t": "f_T (D2AE-T)", "p": "f_P (D2AE-P)", "c": "f_C (D2AE)"}


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def verification(r):
    """summary.json's verification entry of one feature's result in report.json."""
    rep = r["report"]
    return {
        "accuracy": rep["accuracy_mean"],
        "accuracy_std": rep["accuracy_std"],
        "tpr_at_fpr_1e-3": r.get("tpr_at_1e3"),
        "tpr_at_fpr_1e-2": r.get("tpr_at_1e2"),
        "auc": rep["auc"],
        "fold_accuracies": [f["accuracy"] for f in rep.get("folds", [])],
    }


def summarize(report, synth):
    out = {
        "run": report.get("run"),
        "checkpoint": report.get("checkpoint"),
        "step": report.get("step"),
        "features": {k: {} for k in KINDS},
    }
    ver = report.get("verification")
    if ver:
        out["pairs"] = ver.get("pairs_used")
        for r in ver["results"]:
            out["features"][r["feature"]]["verification"] = verification(r)
    base = report.get("baseline")
    if base:
        t = [r for r in base["verification"]["results"] if r["feature"] == "t"]
        out["baseline"] = {"run": base["run"], "step": base["step"],
                           "verification": verification(t[0]) if t else None}
    applied = report.get("applied_factors")
    if applied:
        out["applied_factor_r2"] = {
            row["name"]: {k: fit["r2"] for k, fit in row["fits"].items()} for row in applied["factors"]
        }
    attrs = report.get("attributes")
    independent = synth.get("identity_independent", []) if synth else []
    dependent = synth.get("identity_dependent", []) if synth else []
    if attrs:
        out["test_rows"] = attrs.get("test_rows")
        out["majority_accuracy"] = {a["name"]: a["majority_accuracy"] for a in attrs["attributes"]}
        for k in KINDS:
            per = {a["name"]: a["accuracy"][k] for a in attrs["attributes"] if k in a["accuracy"]}
            if not per:
                continue
            f = out["features"][k]
            f["attributes"] = per
            f["mean_attribute_accuracy"] = mean(per.values())
            if independent:
                f["mean_identity_independent_accuracy"] = mean(per.get(a) for a in independent)
                f["mean_identity_dependent_accuracy"] = mean(per.get(a) for a in dependent)
        factors = {}
        for row in attrs.get("factors", []):
            factors[row["name"]] = {k: fit["r2"] for k, fit in row["fits"].items()}
        if factors:
            out["factor_r2"] = factors
            bg = [n for n in factors if n.startswith("background_")]
            if bg:
                out["background_r2"] = {
                    k: mean(factors[n].get(k) for n in bg) for k in KINDS if any(k in factors[n] for n in bg)
                }
    probe = report.get("identity_probe")
    if probe:
        out["identity_probe"] = {
            "train_split": probe["train_split"],
            "test_split": probe["test_split"],
            "identities": probe["identities"],
            "chance": probe["chance"],
        }
        for r in probe["results"]:
            out["features"][r["feature"]]["identity_probe_accuracy"] = r["accuracy"]
    adv = report.get("adversary")
    if adv:
        out["adversary"] = adv
    fid = report.get("fidelity")
    if fid:
        out.update(fidelity(fid, independent))
    if synth:
        out["identity_independent"] = independent
        out["identity_dependent"] = dependent
    return out


def kept(per_attribute, names):
    """mean(accuracy on swaps) / mean(accuracy on originals) over `names` (a ratio of means)."""
    rows = [a for a in per_attribute if a["name"] in names]
    swapped = mean(a["accuracy_swapped"] for a in rows)
    original = mean(a["accuracy_original"] for a in rows)
    return swapped / original if swapped is not None and original else None


def fidelity(fid, independent):
    """summary.json's `reconstruction`, `swap` and `edit` from report.json's `fidelity`; with
    identity-independent attributes, the attribute values are over those only."""
    rec, sw, ed = fid["reconstruction"], fid["swap"], fid["edit"]
    reconstruction = {k: rec.get(k) for k in (
        "psnr_db", "psnr_db_mean_image", "psnr_db_std", "psnr_db_min", "psnr_db_p10", "images", "split")}
    swap = {k: sw.get(k) for k in (
        "identity_from_t", "identity_from_t_reconstruction", "pairs", "attributes_from_p", "attributes")}
    swap["per_attribute"] = {
        a["name"]: {k: a[k] for k in ("accuracy_swapped", "accuracy_original", "ratio", "pairs")}
        for a in sw.get("per_attribute", [])
    }
    edit = {k: ed.get(k) for k in (
        "flip_rate", "max_sigma", "per_attribute", "control_flip_rate", "control_per_attribute", "images")}
    if independent:
        per, flips = sw.get("per_attribute", []), ed.get("per_attribute", {})
        control = ed.get("control_per_attribute", {})
        everything = [a["name"] for a in per] or list(flips)
        swap["attributes_from_p_all_attributes"] = kept(per, everything)
        swap["attributes_from_p"] = kept(per, independent)
        swap["attributes"] = [a for a in independent if a in swap["per_attribute"]]
        edit["flip_rate_all_attributes"] = mean(flips.values())
        edit["flip_rate"] = mean(flips.get(a) for a in independent)
        edit["control_flip_rate_all_attributes"] = mean(control.values())
        edit["control_flip_rate"] = mean(control.get(a) for a in independent)
    return {"reconstruction": reconstruction, "swap": swap, "edit": edit}


def pct(x):
    return "   —  " if x is None else f"{100 * x:6.2f}"


def num(x, fmt):
    return "—" if x is None else format(x, fmt)


def fidelity_table(s):
    rec, sw, ed = s.get("reconstruction"), s.get("swap"), s.get("edit")
    if not rec:
        return []
    which = " (identity-indep.)" if "flip_rate_all_attributes" in ed else ""
    lines = [
        "| autoencoder fidelity | value | reference |",
        "|---|---|---|",
        f"| reconstruction PSNR | {num(rec['psnr_db'], '.2f')} dB (p10 {num(rec.get('psnr_db_p10'), '.2f')}) |"
        f" mean image: {num(rec.get('psnr_db_mean_image'), '.2f')} dB |",
        f"| swap: f_T nearer B's identity | {pct(sw.get('identity_from_t')).strip()}% of {sw.get('pairs')} pairs |"
        f" plain reconstruction: {pct(sw.get('identity_from_t_reconstruction')).strip()}% |",
    ]
    ref = "1 = as on the originals"
    if "attributes_from_p_all_attributes" in sw:
        ref = f"all attributes: {num(sw['attributes_from_p_all_attributes'], '.3f')}"
    lines.append(f"| swap: f_P attributes kept{which} | {num(sw.get('attributes_from_p'), '.3f')} | {ref} |")
    ref = f"decode → re-encode alone: {pct(ed.get('control_flip_rate')).strip()}%"
    if "flip_rate_all_attributes" in ed:
        ref = f"all attributes: {pct(ed['flip_rate_all_attributes']).strip()}%; " + ref
    lines.append(f"| edit flip rate at {ed.get('max_sigma')}σ{which} | {pct(ed.get('flip_rate')).strip()}% | {ref} |")
    return [""] + lines


def table(s):
    lines = []
    has_ind = bool(s.get("identity_independent"))
    has_attr = any(s["features"][k].get("mean_attribute_accuracy") is not None for k in KINDS)
    head = "| feature      | verification acc. | TPR@1e-3 | TPR@1e-2 |" + (" mean attr. acc. |" if has_attr else "")
    rule = "|---|---|---|---|" + ("---|" if has_attr else "")
    if has_ind:
        head += " identity-indep. attr. | identity-dep. attr. | background R² |"
        rule += "---|---|---|"
    lines += [head, rule]
    for k in KINDS:
        f = s["features"][k]
        v = f.get("verification", {})
        acc = v.get("accuracy")
        std = v.get("accuracy_std")
        ver = "      —" if acc is None else f"{100 * acc:6.2f} ± {100 * std:5.2f}"
        row = f"| {NAMES[k]:<12} | {ver:>17} | {pct(v.get('tpr_at_fpr_1e-3'))} | {pct(v.get('tpr_at_fpr_1e-2'))} |"
        if has_attr:
            row += f" {pct(f.get('mean_attribute_accuracy'))} |"
        if has_ind:
            bg = s.get("background_r2", {}).get(k)
            row += (
                f" {pct(f.get('mean_identity_independent_accuracy'))} |"
                f" {pct(f.get('mean_identity_dependent_accuracy'))} |"
                f" {'  —' if bg is None else f'{bg:.3f}'} |"
            )
        lines.append(row)
    per = [s["features"][k].get("attributes", {}) for k in KINDS]
    names = sorted(set().union(*[p.keys() for p in per]))
    swaps = s.get("swap", {}).get("per_attribute", {})
    flips = s.get("edit", {}).get("per_attribute", {})
    if names:
        head, rule = "| attribute | by construction | majority | f_T | f_P | f_C |", "|---|---|---|---|---|---|"
        if flips:
            head += " swap kept | edit flips |"
            rule += "---|---|"
        lines += ["", head, rule]
        ind = set(s.get("identity_independent", []))
        dep = set(s.get("identity_dependent", []))
        for n in names:
            kind = "image" if n in ind else "identity" if n in dep else ""
            maj = s.get("majority_accuracy", {}).get(n)
            row = f"| {n} | {kind} | {pct(maj)} | " + " | ".join(pct(p.get(n)) for p in per) + " |"
            if flips:
                row += f" {num(swaps.get(n, {}).get('ratio'), '.3f')} | {pct(flips.get(n))} |"
            lines.append(row)
    base = (s.get("baseline") or {}).get("verification")
    ours = s["features"]["t"].get("verification")
    if base and ours:
        lines += ["", "| Table 2 (f_T) | verification acc. | TPR@1e-2 |", "|---|---|---|"]
        for name, v in (("Baseline", base), ("D2AE", ours)):
            lines.append(f"| {name} | {100 * v['accuracy']:6.2f} ± {100 * v['accuracy_std']:5.2f} |"
                         f" {pct(v.get('tpr_at_fpr_1e-2'))} |")
    applied = s.get("applied_factor_r2")
    if applied:
        lines += ["", "| applied factor | R² f_T | R² f_P |", "|---|---|---|"]
        for n, fits in applied.items():
            lines.append(f"| {n} | {num(fits.get('t'), '.3f')} | {num(fits.get('p'), '.3f')} |")
    lines += fidelity_table(s)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("report", help="report.json written by d2ae-eval report")
    ap.add_argument("--out", help="summary.json to write (default: beside the report)")
    ap.add_argument("--synth", help="synth.json of d2ae-ingest synth (which attributes are identity-independent)")
    ap.add_argument("--timings", default="", help="'stage seconds stage seconds ...' from scripts/demo")
    ap.add_argument("--total", type=float, help="wall seconds of the whole demo")
    a = ap.parse_args()
    with open(a.report) as f:
        report = json.load(f)
    synth = None
    if a.synth:
        with open(a.synth) as f:
            synth = json.load(f)
    s = summarize(report, synth)
    words = a.timings.split()
    s["timings_s"] = {words[i]: float(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    if a.total is not None:
        s["timings_s"]["total"] = a.total
    s["report"] = os.path.join(os.path.dirname(os.path.abspath(a.report)), "report.md")
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.report)), "summary.json")
    with open(out, "w") as f:
        json.dump(s, f, indent=2)
        f.write("\n")
    rows = f", {s['test_rows']} test images" if s.get("test_rows") else ""
    print(f"\nD2AE on held-out identities (step {s.get('step')}, {s.get('pairs', '—')} pairs{rows}):\n")
    print(table(s))
    probe, adv = s.get("identity_probe"), s.get("adversary")
    if probe:
        accs = ", ".join(
            f"{NAMES[k].split()[0]} {pct(s['features'][k].get('identity_probe_accuracy')).strip()}%"
            for k in KINDS if s["features"][k].get("identity_probe_accuracy") is not None
        )
        print(f"\nidentity left in each feature: a fresh linear probe over the {probe['identities']} training "
              f"identities ({probe['test_split']} images) gets {accs} (chance {pct(probe['chance']).strip()}%)")
    if adv:
        print(f"the model's adversary W_P on f_P at step {adv['step']}: {pct(adv['accuracy']).strip()}%")
    print(f"\nstage wall times (s): {s['timings_s']}")
    print(f"summary: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
