#!/usr/bin/env python3
"""Independent reference for the LFW verification protocol, in numpy + scikit-learn.

`d2ae-metrics` (eval/metrics/src/verify.rs) implements the same definitions in Rust; its test
`tests/reference.rs` runs this script on the same scores and requires identical per-fold
accuracies and the same TPR@FPR. The definitions (see verify.rs's module docs):

- predict "same" when score >= threshold;
- each fold's threshold is fitted on the other folds: among all cuts between consecutive distinct
  scores (plus "all same"/"all different"), the one with the most correct pairs, ties going to the
  highest threshold; the threshold is the midpoint of the two scores around the cut (+-inf at the
  ends); a list with one fold fits on itself;
- accuracy: mean and population standard deviation (ddof=0) over folds;
- ROC, AUC, EER and TPR@FPR over all pairs; TPR@FPR=x is the highest TPR with FPR <= x;
  EER is where FPR = 1 - TPR on the ROC polyline, linearly interpolated.

Usage: lfw_protocol.py SCORES.csv [--fpr 0.001 ...] > report.json
SCORES.csv has a header `score,same,fold` (same is 1/0).
"""

import argparse
import json
import sys

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def best_threshold(scores, same):
    """Threshold maximising accuracy on (scores, same), via scikit-learn's full ROC."""
    pos = int(same.sum())
    neg = len(same) - pos
    if pos == 0:
        return np.inf, neg  # nothing beats "all different"
    if neg == 0:
        return -np.inf, pos  # "all same"
    fpr, tpr, thr = roc_curve(same, scores, drop_intermediate=False)
    assert np.isinf(thr[0]), "scikit-learn >= 1.3 starts the ROC at threshold inf"
    # Counts from the rates (exact: integers well below 2**52).
    correct = np.rint(tpr * pos) + (neg - np.rint(fpr * neg))
    i = int(np.argmax(correct))  # first maximum = highest threshold
    lower = thr[i + 1] if i + 1 < len(thr) else -np.inf
    return (thr[i] + lower) / 2.0, int(correct[i])


def protocol(scores, same, folds, fpr_targets):
    ids = np.unique(folds)
    out_folds = []
    for k in ids:
        test = folds == k
        train = ~test if len(ids) > 1 else np.ones_like(test)
        t, correct = best_threshold(scores[train], same[train])
        acc = float(np.mean((scores[test] >= t) == same[test]))
        out_folds.append({"fold": int(k), "pairs": int(test.sum()), "threshold": t, "accuracy": acc})
    accs = np.array([f["accuracy"] for f in out_folds])
    fpr, tpr, thr = roc_curve(same, scores, drop_intermediate=False)
    tpr_at = {}
    for x in fpr_targets:
        ok = fpr <= x
        j = int(np.argmax(np.where(ok, tpr, -1.0)))
        tpr_at[repr(x)] = {"tpr": float(tpr[j]), "fpr": float(fpr[j]), "threshold": float(thr[j])}
    d = fpr - (1.0 - tpr)
    k = int(np.argmax(d >= 0))
    if k == 0 or d[k] == d[k - 1]:
        eer = float(fpr[k])
    else:
        t = -d[k - 1] / (d[k] - d[k - 1])
        eer = float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))
    return {
        "pairs": int(len(scores)),
        "folds": out_folds,
        "accuracy_mean": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "tpr_at_fpr": tpr_at,
        "auc": float(roc_auc_score(same, scores)),
        "eer": eer,
    }


def jsonable(v):
    """JSON has no infinities: write them as the strings d2ae-metrics uses."""
    if isinstance(v, float) and not np.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, np.floating):
        return jsonable(float(v))
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", help="CSV with header score,same,fold")
    ap.add_argument("--fpr", type=float, action="append", help="FPR bound(s) for TPR@FPR (default 0.001)")
    args = ap.parse_args()
    data = np.genfromtxt(args.scores, delimiter=",", names=True, dtype=None, encoding="ascii")
    scores = np.asarray(data["score"], dtype=np.float64)
    same = np.asarray(data["same"], dtype=np.int64) == 1
    folds = np.asarray(data["fold"], dtype=np.int64)
    report = protocol(scores, same, folds, args.fpr or [1e-3])
    json.dump(jsonable(report), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
