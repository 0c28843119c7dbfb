//! Face verification from pair scores: cosine similarity and the LFW protocol.
//!
//! Definitions (the Python reference `scripts/reference/lfw_protocol.py` implements the same
//! ones independently, and a test checks that both agree exactly):
//! - A pair is predicted "same" when its score is `>= threshold`.
//! - **Threshold of a fold** (LFW's 10-fold cross-validation): on the pairs of the *other* folds,
//!   every cut between two consecutive distinct scores is a candidate (plus "all same" and "all
//!   different"); the one with the most correct training pairs wins, ties going to the highest
//!   threshold (fewest false accepts); the threshold is the midpoint between the two scores around
//!   the cut (±∞ for the extreme cuts). The fold's accuracy is that threshold applied to its own
//!   pairs. A list with a single non-empty fold (LFW View 1, a small CSV) has no other folds: its
//!   threshold is then fitted on the same pairs, which is optimistic, and
//!   [`ThresholdProtocol::SelfFit`] says so.
//! - **Accuracy** is reported as mean ± standard deviation (population, `ddof = 0`, as the common
//!   LFW tools compute it) over the non-empty folds.
//! - **ROC**, **AUC**, **EER** and **TPR@FPR** use all pairs at once (one ROC, not per fold), the
//!   usual practice for the paper's "TPR@0.001FPR": TPR@FPR=x is the highest TPR among ROC points
//!   whose FPR is `<= x` (no interpolation; with 3000 negative pairs, at most 3 false accepts).
//!   AUC is the trapezoidal area under the ROC (ties count half). EER is where FPR = 1 − TPR on
//!   the ROC polyline, linearly interpolated between its two neighbouring points.

use serde::{Deserialize, Serialize};

use crate::Matrix;

/// Errors in verification inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("pair {pair} names row {row}, but the features have {rows} rows")]
    RowOutOfRange {
        pair: usize,
        row: usize,
        rows: usize,
    },
    #[error(
        "pair {pair}: row {row} has a zero feature vector, so its cosine similarity is undefined"
    )]
    ZeroVector { pair: usize, row: usize },
    #[error("score of pair {pair} is not finite ({score})")]
    NonFinite { pair: usize, score: f64 },
    #[error("{what} has {got} entries but there are {pairs} scores")]
    Length {
        what: &'static str,
        got: usize,
        pairs: usize,
    },
    #[error("verification needs at least one same and one different pair (got {same} same, {different} different)")]
    OneClass { same: usize, different: usize },
    #[error("FPR target {0} is not in (0, 1]")]
    BadTarget(f64),
}

/// Cosine similarity of each pair of rows, computed in f64.
pub fn cosine_scores(
    features: Matrix<'_>,
    pairs: &[(usize, usize)],
) -> Result<Vec<f64>, VerifyError> {
    let rows = features.rows();
    let mut norms: Vec<Option<f64>> = vec![None; rows];
    let mut norm = |row: usize| -> f64 {
        *norms[row].get_or_insert_with(|| {
            features
                .row(row)
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
        })
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (pair, &(a, b)) in pairs.iter().enumerate() {
        for row in [a, b] {
            if row >= rows {
                return Err(VerifyError::RowOutOfRange { pair, row, rows });
            }
        }
        let (na, nb) = (norm(a), norm(b));
        for (row, n) in [(a, na), (b, nb)] {
            if n == 0.0 || !n.is_finite() {
                return Err(VerifyError::ZeroVector { pair, row });
            }
        }
        let d: f64 = features
            .row(a)
            .iter()
            .zip(features.row(b))
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        out.push(d / (na * nb));
    }
    Ok(out)
}

/// Cosine-score resolved pairs and run [`lfw_protocol`] on them: the one call `verify` needs per
/// feature (f_T, f_P, f_C).
pub fn verify_pairs(
    features: Matrix<'_>,
    pairs: &crate::pairs::ResolvedPairs,
    fpr_targets: &[f64],
) -> Result<VerificationReport, VerifyError> {
    let scores = cosine_scores(features, &pairs.rows)?;
    lfw_protocol(&scores, &pairs.same, &pairs.fold, fpr_targets)
}

/// How the fold thresholds were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ThresholdProtocol {
    /// Each fold's threshold was fitted on the other folds (LFW's protocol).
    CrossValidated { folds: usize },
    /// Only one fold had pairs: its threshold was fitted on itself (optimistic).
    SelfFit,
}

/// One fold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    /// 0-based fold index as in the pair list.
    pub fold: usize,
    pub pairs: usize,
    /// The threshold chosen on the training folds (JSON: `"inf"`/`"-inf"` for the extremes).
    #[serde(with = "serde_extended_f64")]
    pub threshold: f64,
    /// Accuracy of that threshold on the training folds.
    pub train_accuracy: f64,
    /// Accuracy on this fold.
    pub accuracy: f64,
}

/// One point of the ROC: predicting "same" for scores `>= threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    #[serde(with = "serde_extended_f64")]
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

/// TPR at an FPR bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TprAtFpr {
    /// The bound asked for.
    pub fpr_target: f64,
    pub tpr: f64,
    /// The FPR actually reached (`<= fpr_target`).
    pub fpr: f64,
    #[serde(with = "serde_extended_f64")]
    pub threshold: f64,
}

/// Everything the LFW protocol reports for one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    pub pairs: usize,
    pub same_pairs: usize,
    pub protocol: ThresholdProtocol,
    /// Non-empty folds in order.
    pub folds: Vec<FoldResult>,
    pub accuracy_mean: f64,
    /// Population standard deviation over folds.
    pub accuracy_std: f64,
    pub tpr_at_fpr: Vec<TprAtFpr>,
    pub auc: f64,
    pub eer: f64,
    /// ROC over all pairs, from (0, 0) at threshold +∞ to (1, 1).
    pub roc: Vec<RocPoint>,
}

impl VerificationReport {
    /// TPR at the given FPR target, if it was asked for.
    pub fn tpr_at(&self, fpr_target: f64) -> Option<f64> {
        self.tpr_at_fpr
            .iter()
            .find(|t| t.fpr_target == fpr_target)
            .map(|t| t.tpr)
    }
}

/// The paper's operating point: TPR at FPR = 0.001.
pub const PAPER_FPR: f64 = 1e-3;

/// Run the LFW protocol over precomputed scores. `fold[i]` is pair `i`'s fold (any numbers;
/// folds are ordered by number). `fpr_targets` are the FPR bounds to report TPR at (the paper's
/// is [`PAPER_FPR`]).
pub fn lfw_protocol(
    scores: &[f64],
    same: &[bool],
    fold: &[usize],
    fpr_targets: &[f64],
) -> Result<VerificationReport, VerifyError> {
    let n = scores.len();
    for (what, got) in [("labels", same.len()), ("folds", fold.len())] {
        if got != n {
            return Err(VerifyError::Length {
                what,
                got,
                pairs: n,
            });
        }
    }
    if let Some((pair, &score)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(VerifyError::NonFinite { pair, score });
    }
    if let Some(&t) = fpr_targets
        .iter()
        .find(|&&t| t.is_nan() || t <= 0.0 || t > 1.0)
    {
        return Err(VerifyError::BadTarget(t));
    }
    let same_pairs = same.iter().filter(|&&s| s).count();
    if same_pairs == 0 || same_pairs == n {
        return Err(VerifyError::OneClass {
            same: same_pairs,
            different: n - same_pairs,
        });
    }

    let mut fold_ids: Vec<usize> = fold.to_vec();
    fold_ids.sort_unstable();
    fold_ids.dedup();
    let protocol = if fold_ids.len() >= 2 {
        ThresholdProtocol::CrossValidated {
            folds: fold_ids.len(),
        }
    } else {
        ThresholdProtocol::SelfFit
    };
    let mut folds = Vec::with_capacity(fold_ids.len());
    for &k in &fold_ids {
        let (mut train_s, mut train_y, mut test_s, mut test_y) = (vec![], vec![], vec![], vec![]);
        for ((&s, &y), &f) in scores.iter().zip(same).zip(fold) {
            if f == k {
                test_s.push(s);
                test_y.push(y);
            }
            if f != k || protocol == ThresholdProtocol::SelfFit {
                train_s.push(s);
                train_y.push(y);
            }
        }
        let (threshold, train_correct) = best_threshold(&train_s, &train_y);
        folds.push(FoldResult {
            fold: k,
            pairs: test_s.len(),
            threshold,
            train_accuracy: train_correct as f64 / train_s.len() as f64,
            accuracy: accuracy_at(&test_s, &test_y, threshold),
        });
    }
    let k = folds.len() as f64;
    let accuracy_mean = folds.iter().map(|f| f.accuracy).sum::<f64>() / k;
    let accuracy_std = (folds
        .iter()
        .map(|f| (f.accuracy - accuracy_mean).powi(2))
        .sum::<f64>()
        / k)
        .sqrt();

    let roc = roc_curve(scores, same);
    let tpr_at_fpr = fpr_targets.iter().map(|&t| tpr_at_fpr(&roc, t)).collect();
    Ok(VerificationReport {
        pairs: n,
        same_pairs,
        protocol,
        folds,
        accuracy_mean,
        accuracy_std,
        tpr_at_fpr,
        auc: auc(&roc),
        eer: eer(&roc),
        roc,
    })
}

/// Fraction of pairs classified correctly by "same iff score >= threshold".
pub fn accuracy_at(scores: &[f64], same: &[bool], threshold: f64) -> f64 {
    let correct = scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| (s >= threshold) == y)
        .count();
    correct as f64 / scores.len().max(1) as f64
}

/// Indices sorted by descending score (stable, so equal scores keep input order).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// The accuracy-maximising threshold (see the module docs) and how many pairs it gets right.
pub fn best_threshold(scores: &[f64], same: &[bool]) -> (f64, usize) {
    let idx = order_desc(scores);
    let negatives = same.iter().filter(|&&s| !s).count();
    // Cut 0: nothing predicted same, so every negative is right.
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best = (negatives, 0usize); // (correct, number of pairs above the cut)
    let mut i = 0;
    while i < idx.len() {
        let v = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == v {
            if same[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let correct = tp + negatives - fp;
        if correct > best.0 {
            best = (correct, i);
        }
    }
    let above = if best.1 == 0 {
        f64::INFINITY
    } else {
        scores[idx[best.1 - 1]]
    };
    let below = if best.1 == idx.len() {
        f64::NEG_INFINITY
    } else {
        scores[idx[best.1]]
    };
    (midpoint(above, below), best.0)
}

fn midpoint(a: f64, b: f64) -> f64 {
    // ±∞ stay ±∞ (∞ + finite); both written out so the arithmetic matches numpy's `(a + b) / 2`.
    (a + b) / 2.0
}

/// The ROC over all pairs: one point per distinct score (descending), after (0, 0) at +∞.
pub fn roc_curve(scores: &[f64], same: &[bool]) -> Vec<RocPoint> {
    let idx = order_desc(scores);
    let p = same.iter().filter(|&&s| s).count().max(1) as f64;
    let nn = same.iter().filter(|&&s| !s).count().max(1) as f64;
    let mut out = vec![RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let v = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == v {
            if same[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        out.push(RocPoint {
            threshold: v,
            fpr: fp as f64 / nn,
            tpr: tp as f64 / p,
        });
    }
    out
}

/// Highest TPR among ROC points with FPR `<= target`.
pub fn tpr_at_fpr(roc: &[RocPoint], target: f64) -> TprAtFpr {
    let best =
        roc.iter()
            .filter(|r| r.fpr <= target)
            .fold(roc[0], |b, r| if r.tpr > b.tpr { *r } else { b });
    TprAtFpr {
        fpr_target: target,
        tpr: best.tpr,
        fpr: best.fpr,
        threshold: best.threshold,
    }
}

/// Trapezoidal area under the ROC.
pub fn auc(roc: &[RocPoint]) -> f64 {
    roc.windows(2)
        .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
        .sum()
}

/// Equal error rate: FPR where FPR = 1 − TPR along the ROC polyline.
pub fn eer(roc: &[RocPoint]) -> f64 {
    let d = |r: &RocPoint| r.fpr - (1.0 - r.tpr);
    for w in roc.windows(2) {
        let (d0, d1) = (d(&w[0]), d(&w[1]));
        if d1 >= 0.0 {
            if d1 == d0 {
                return w[1].fpr;
            }
            let t = -d0 / (d1 - d0);
            return w[0].fpr + t * (w[1].fpr - w[0].fpr);
        }
    }
    1.0
}

/// Serialises ±∞ as the strings `"inf"`/`"-inf"` (JSON has no infinities; serde_json would write
/// `null` and then fail to read it back).
pub mod serde_extended_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum F {
            Num(f64),
            Str(String),
        }
        match F::deserialize(d)? {
            F::Num(v) => Ok(v),
            F::Str(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("not a number: {other:?}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Two folds of two pairs each, worked by hand:
    /// fold 0: same 0.9, different 0.7; fold 1: same 0.6, different 0.2.
    /// - fold 0 is tested with fold 1's threshold: cut between 0.6 and 0.2 → 0.4 (2/2 right on
    ///   fold 1); on fold 0, 0.9 ≥ 0.4 is right, 0.7 ≥ 0.4 is a false accept → 0.5.
    /// - fold 1 with fold 0's threshold (0.9 + 0.7)/2 = 0.8: 0.6 is a false reject, 0.2 right → 0.5.
    /// - ROC (desc): (0,0) ∞, (0,½) 0.9, (½,½) 0.7, (½,1) 0.6, (1,1) 0.2; AUC = ¾ (3 of 4
    ///   same/different orderings right); EER: FPR − FNR goes −½ → 0 at (½,½), so ½;
    ///   TPR@FPR ≤ 0.001 is ½ at threshold 0.9.
    #[test]
    fn four_pairs_by_hand() {
        let r = lfw_protocol(
            &[0.9, 0.7, 0.6, 0.2],
            &[true, false, true, false],
            &[0, 0, 1, 1],
            &[PAPER_FPR],
        )
        .unwrap();
        assert_eq!(r.protocol, ThresholdProtocol::CrossValidated { folds: 2 });
        assert!(close(r.folds[0].threshold, 0.4) && close(r.folds[1].threshold, 0.8));
        assert_eq!((r.folds[0].accuracy, r.folds[1].accuracy), (0.5, 0.5));
        assert_eq!(
            (r.folds[0].train_accuracy, r.folds[1].train_accuracy),
            (1.0, 1.0)
        );
        assert_eq!((r.accuracy_mean, r.accuracy_std), (0.5, 0.0));
        assert!(
            close(r.auc, 0.75) && close(r.eer, 0.5),
            "{} {}",
            r.auc,
            r.eer
        );
        assert_eq!(r.tpr_at_fpr[0].tpr, 0.5);
        assert_eq!(r.tpr_at_fpr[0].threshold, 0.9);
        let fprs: Vec<f64> = r.roc.iter().map(|p| p.fpr).collect();
        assert_eq!(fprs, [0.0, 0.0, 0.5, 0.5, 1.0]);
    }

    /// Three folds, scores exact in binary: f0: 0.875 s, 0.125 d; f1: 0.75 s, 0.375 d;
    /// f2: 0.5 s, 0.625 d.
    /// - fold 0: train on f1+f2 = (desc) 0.75 s, 0.625 d, 0.5 s, 0.375 d: correct per cut
    ///   none 2, ≥0.75 3, ≥0.625 2, ≥0.5 3, all 2; the tie goes to the highest, so
    ///   (0.75 + 0.625)/2 = 0.6875; fold 0 is all right → 1.0.
    /// - fold 1: train f0+f2 = 0.875 s, 0.625 d, 0.5 s, 0.125 d: ≥0.875 gets 3 first →
    ///   (0.875 + 0.625)/2 = 0.75; fold 1: 0.75 ≥ 0.75 right, 0.375 right → 1.0.
    /// - fold 2: train f0+f1 = 0.875 s, 0.75 s, 0.375 d, 0.125 d: ≥0.75 gets 4 → 0.5625; fold 2:
    ///   0.5 is a false reject and 0.625 a false accept → 0.0.
    ///
    /// Mean 2/3, std sqrt(((1/3)² · 2 + (2/3)²)/3) = sqrt(2/9). AUC: 8 of the 9 same/different
    /// orderings are right (only 0.5 < 0.625).
    #[test]
    fn three_folds_by_hand_with_ties_going_to_the_highest_threshold() {
        let r = lfw_protocol(
            &[0.875, 0.125, 0.75, 0.375, 0.5, 0.625],
            &[true, false, true, false, true, false],
            &[0, 0, 1, 1, 2, 2],
            &[],
        )
        .unwrap();
        let th: Vec<f64> = r.folds.iter().map(|f| f.threshold).collect();
        assert_eq!(th, [0.6875, 0.75, 0.5625]);
        let acc: Vec<f64> = r.folds.iter().map(|f| f.accuracy).collect();
        assert_eq!(acc, [1.0, 1.0, 0.0]);
        assert!(close(r.accuracy_mean, 2.0 / 3.0));
        assert!(close(r.accuracy_std, (2.0f64 / 9.0).sqrt()));
        assert!(close(r.auc, 8.0 / 9.0));
    }

    #[test]
    fn separable_scores_and_one_fold_self_fit() {
        let r = lfw_protocol(
            &[0.9, 0.8, 0.1, 0.2],
            &[true, true, false, false],
            &[0; 4],
            &[0.5],
        )
        .unwrap();
        assert_eq!(r.protocol, ThresholdProtocol::SelfFit);
        assert!(close(r.folds[0].threshold, 0.5));
        assert_eq!(
            (r.accuracy_mean, r.auc, r.eer, r.tpr_at(0.5)),
            (1.0, 1.0, 0.0, Some(1.0))
        );
    }

    #[test]
    fn extreme_thresholds_roundtrip_through_json() {
        // Fold 0's training pairs are all "same": predicting all same is best → −∞. Fold 1's
        // are {0.9 different, 0.3 same}: no cut beats "all different" → +∞.
        let r = lfw_protocol(
            &[0.1, 0.2, 0.9, 0.3],
            &[true, true, false, true],
            &[1, 1, 0, 0],
            &[],
        )
        .unwrap();
        assert_eq!(r.folds[0].threshold, f64::NEG_INFINITY);
        assert_eq!(r.folds[1].threshold, f64::INFINITY);
        assert_eq!((r.folds[0].accuracy, r.folds[1].accuracy), (0.5, 0.0));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"-inf\""));
        let back: VerificationReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn resolved_pairs_are_scored_by_cosine() {
        // Rows 0 and 1 point the same way, row 2 is orthogonal: same pairs score 1, different 0.
        let data = [1.0, 0.0, 2.0, 0.0, 0.0, 3.0];
        let pairs = crate::pairs::ResolvedPairs {
            rows: vec![(0, 1), (0, 2), (1, 0), (1, 2)],
            same: vec![true, false, true, false],
            fold: vec![0, 0, 1, 1],
            folds: 2,
            ..Default::default()
        };
        let r = verify_pairs(Matrix::new(&data, 2).unwrap(), &pairs, &[PAPER_FPR]).unwrap();
        assert_eq!((r.accuracy_mean, r.auc, r.eer), (1.0, 1.0, 0.0));
        assert!(close(r.folds[0].threshold, 0.5));
    }

    #[test]
    fn cosine_and_input_errors() {
        let data = [1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0, 0.0];
        let m = Matrix::new(&data, 2).unwrap();
        let s = cosine_scores(m, &[(0, 1), (0, 2), (2, 2)]).unwrap();
        assert!(close(s[0], 0.0) && close(s[1], 0.5f64.sqrt()) && close(s[2], 1.0));
        assert_eq!(
            cosine_scores(m, &[(0, 3)]).unwrap_err(),
            VerifyError::ZeroVector { pair: 0, row: 3 }
        );
        assert!(matches!(
            cosine_scores(m, &[(0, 9)]),
            Err(VerifyError::RowOutOfRange { .. })
        ));
        assert!(matches!(
            lfw_protocol(&[0.1, 0.2], &[true, true], &[0, 1], &[]),
            Err(VerifyError::OneClass {
                same: 2,
                different: 0
            })
        ));
        assert!(lfw_protocol(&[0.1, f64::NAN], &[true, false], &[0, 1], &[]).is_err());
        assert!(lfw_protocol(&[0.1, 0.2], &[true, false], &[0], &[]).is_err());
    }
}
