#!/usr/bin/env python3
"""Aggregate the demo's summary.json files of several ablations × seeds (scripts/demo-ablations):
mean, sample standard deviation and min–max over the seeds of each ablation, for verification
with f_T and f_P, the adversary's identity accuracy on f_P (its own, jointly trained classifier),
a freshly trained linear identity probe on f_P and f_T, and the mean accuracy of the
identity-independent attributes from f_P and f_T. Writes ablations.json and prints a table.
Only the standard library.
"""
import argparse
import json
import math
import sys

METRICS = [
    ("ver_t", "verif. f_T", lambda s: s["features"]["t"].get("verification", {}).get("accuracy")),
    ("ver_p", "verif. f_P", lambda s: s["features"]["p"].get("verification", {}).get("accuracy")),
    ("adversary_p", "adversary W_P on f_P", lambda s: (s.get("adversary") or {}).get("accuracy")),
    ("probe_p", "fresh probe on f_P", lambda s: s["features"]["p"].get("identity_probe_accuracy")),
    ("probe_t", "fresh probe on f_T", lambda s: s["features"]["t"].get("identity_probe_accuracy")),
    ("indep_p", "image attr. f_P", lambda s: s["features"]["p"].get("mean_identity_independent_accuracy")),
    ("indep_t", "image attr. f_T", lambda s: s["features"]["t"].get("mean_identity_independent_accuracy")),
    ("psnr", "recon. PSNR (dB)", lambda s: (s.get("reconstruction") or {}).get("psnr_db")),
    ("swap_t", "swap: identity from f_T", lambda s: (s.get("swap") or {}).get("identity_from_t")),
    ("edit_flip", "edit flip rate", lambda s: (s.get("edit") or {}).get("flip_rate")),
]

# Metrics printed as they are (dB), not as percentages.
RAW = {"psnr"}


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": m, "std": sd, "min": min(xs), "max": max(xs), "n": len(xs), "values": xs}


def ablation_of(summary):
    run = summary.get("run") or ""
    name = run.rstrip("/").split("/")[-1]  # run-<ablation>-seed<S>
    return name[len("run-"):name.rindex("-seed")] if name.startswith("run-") and "-seed" in name else name


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("summaries", nargs="+", help="summary.json files written by scripts/demo")
    ap.add_argument("--out", required=True, help="ablations.json to write")
    a = ap.parse_args()
    by_ablation = {}
    for path in a.summaries:
        with open(path) as f:
            s = json.load(f)
        by_ablation.setdefault(ablation_of(s), []).append((path, s))
    table = {}
    for abl, rows in by_ablation.items():
        table[abl] = {
            "runs": [p for p, _ in rows],
            "chance_probe": (rows[0][1].get("identity_probe") or {}).get("chance"),
            "metrics": {key: stats([get(s) for _, s in rows]) for key, _, get in METRICS},
        }
    with open(a.out, "w") as f:
        json.dump(table, f, indent=2)
        f.write("\n")
    head = "| ablation | seeds | " + " | ".join(label for _, label, _ in METRICS) + " |"
    print(head)
    print("|" + "---|" * (2 + len(METRICS)))
    for abl, t in table.items():
        cells = []
        for key, _, _ in METRICS:
            st = t["metrics"][key]
            k = 1 if key in RAW else 100
            cells.append("—" if st is None else f"{k * st['mean']:.1f} ± {k * st['std']:.1f}")
        n = max((st["n"] for st in t["metrics"].values() if st), default=0)
        print(f"| {abl} | {n} | " + " | ".join(cells) + " |")
    chance = next((t["chance_probe"] for t in table.values() if t["chance_probe"]), None)
    if chance:
        print(f"\n(mean ± sample std over seeds, in % but PSNR in dB; identity probe chance {100 * chance:.1f}%, verification chance 50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
