//! Identity probe: how much identity a feature still carries, measured by a *freshly trained*
//! linear classifier rather than by the model's own adversary.
//!
//! The adversary W_P is trained jointly with the branch that fools it, so its accuracy on f_P says
//! only that *this* classifier was fooled (section 3.2). A probe trained after the fact, with the
//! encoder frozen, is the stronger test the ablations of Table 2 call for: one-vs-rest linear SVMs
//! over the identities of the training split (features z-scored on that split), scored on another
//! split of the same identities (by default `val`). Rows whose identity the probe never saw are
//! left out of the score. Chance is the most frequent identity's share of the scored rows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_metrics::svm::{LinearSvm, SvmParams};
use serde::Serialize;

use crate::features::{FeatureChoice, FeatureKind, FeatureSet};
use d2ae_metrics::standardize::Standardize;

/// `d2ae-eval probe`
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Features from `d2ae-eval extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// Split the probe is trained on.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Split it is scored on (same identities, other images).
    #[arg(long, default_value = "val")]
    pub test_split: String,
    /// Which features to probe: t, p, c or all.
    #[arg(long, value_enum, default_value_t = FeatureChoice::All)]
    pub feature: FeatureChoice,
    /// The SVMs' C (inverse regularisation, on z-scored features).
    #[arg(long, default_value_t = 0.1)]
    pub c: f64,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The probe's score on one feature.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub feature: FeatureKind,
    /// Fraction of scored rows whose identity the probe got right.
    pub accuracy: f64,
}

/// Everything `probe` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeOutput {
    pub train_split: String,
    pub test_split: String,
    /// Identities in the training split (classes of the probe).
    pub identities: usize,
    pub train_rows: usize,
    /// Rows of the test split whose identity is among the probe's classes.
    pub test_rows: usize,
    /// The most frequent identity's share of the scored rows.
    pub chance: f64,
    pub c: f64,
    pub results: Vec<ProbeResult>,
}

/// Train and score the probe on every kind of `choice` the set has.
pub fn identity_probe(set: &FeatureSet, args: &ProbeArgs) -> Result<ProbeOutput> {
    let train_rows = set.rows_of_split(&args.train_split);
    if train_rows.is_empty() {
        bail!("no rows in split {:?}", args.train_split);
    }
    // Classes: the identities of the training split, in index order.
    let mut counts = identity_counts(set, &train_rows);
    if counts.len() < 2 {
        bail!(
            "split {:?} has {} identity; a probe needs at least 2",
            args.train_split,
            counts.len()
        );
    }
    let mut train_rows = train_rows;
    let mut test_split = args.test_split.clone();
    let mut test_rows: Vec<usize> = set
        .rows_of_split(&args.test_split)
        .into_iter()
        .filter(|&i| counts.contains_key(&set.identity[i]))
        .collect();
    if test_rows.is_empty() {
        // A partition by identity (CelebA's) leaves the test split no identity the probe knows:
        // hold out every 5th image of each training identity instead.
        (train_rows, test_rows) = hold_out_per_identity(set, &train_rows, 5);
        test_split = format!(
            "{} (every 5th image of an identity held out)",
            args.train_split
        );
        counts = identity_counts(set, &train_rows);
    }
    if test_rows.is_empty() || counts.len() < 2 {
        bail!(
            "no rows of split {:?} belong to an identity of split {:?}, and too few images per identity to hold some out",
            args.test_split,
            args.train_split
        );
    }
    let classes: Vec<i64> = counts.keys().copied().collect();
    let largest = identity_counts(set, &test_rows).into_values().max();
    let chance = largest.expect("non-empty") as f64 / test_rows.len() as f64;

    let mut results = Vec::new();
    for kind in args.feature.kinds(set) {
        let (buf, cols) = set
            .features(kind)
            .with_context(|| format!("reading {}", kind.label()))?;
        let all = FeatureSet::matrix(&buf, cols);
        let mut train_x = all.select_rows(&train_rows);
        let mut test_x = all.select_rows(&test_rows);
        let z = Standardize::fit(&train_x, cols);
        z.apply(&mut train_x);
        z.apply(&mut test_x);
        let params = SvmParams {
            c: args.c,
            ..SvmParams::default()
        };
        let train_m = FeatureSet::matrix(&train_x, cols);
        let svms: Vec<LinearSvm> = classes
            .iter()
            .map(|&id| {
                let y: Vec<bool> = train_rows.iter().map(|&i| set.identity[i] == id).collect();
                LinearSvm::train(train_m, &y, &params)
                    .with_context(|| format!("probe SVM for identity {id}"))
            })
            .collect::<Result<_>>()?;
        let correct = test_x
            .chunks(cols.max(1))
            .zip(&test_rows)
            .filter(|(row, &i)| classes[predict(&svms, row)] == set.identity[i])
            .count();
        results.push(ProbeResult {
            feature: kind,
            accuracy: correct as f64 / test_rows.len() as f64,
        });
    }
    Ok(ProbeOutput {
        train_split: args.train_split.clone(),
        test_split,
        identities: classes.len(),
        train_rows: train_rows.len(),
        test_rows: test_rows.len(),
        chance,
        c: args.c,
        results,
    })
}

/// `rows` split per identity into (kept, held out), in row order: every `k`-th image of an
/// identity is held out, or its last one when it has fewer than `k` (but at least 2).
fn hold_out_per_identity(set: &FeatureSet, rows: &[usize], k: usize) -> (Vec<usize>, Vec<usize>) {
    let total = identity_counts(set, rows);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let (mut kept, mut held) = (Vec::new(), Vec::new());
    for &i in rows {
        let id = set.identity[i];
        let n = seen.entry(id).or_default();
        let t = total[&id];
        if t >= 2 && ((*n + 1).is_multiple_of(k) || (t < k && *n == t - 1)) {
            held.push(i);
        } else {
            kept.push(i);
        }
        *n += 1;
    }
    (kept, held)
}

/// Images per identity among `rows`, by identity index.
fn identity_counts(set: &FeatureSet, rows: &[usize]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for &i in rows {
        *counts.entry(set.identity[i]).or_default() += 1;
    }
    counts
}

/// Index of the one-vs-rest SVM with the largest decision value.
fn predict(svms: &[LinearSvm], row: &[f32]) -> usize {
    svms.iter()
        .map(|s| s.decision(row))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(k, _)| k)
}

/// The result as a table.
pub fn table(out: &ProbeOutput) -> d2ae_metrics::table::Table {
    use d2ae_metrics::table::{percent, Table};
    let mut t = Table::new(["feature", "identity probe acc %", "chance %"]);
    for r in &out.results {
        t.row([
            r.feature.label().to_owned(),
            percent(r.accuracy),
            percent(out.chance),
        ]);
    }
    t
}

/// `d2ae-eval probe`
pub fn run(args: &ProbeArgs) -> Result<()> {
    let set = FeatureSet::read(&args.features)?;
    let out = identity_probe(&set, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "Identity probe: one-vs-rest linear SVMs (C = {}) over the {} identities of {:?} ({} rows), scored on {} rows of {:?}\n",
            out.c, out.identities, out.train_split, out.train_rows, out.test_rows, out.test_split
        );
        println!("{}", table(&out).to_markdown());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 identities × 30 rows: f_T puts identity k at +3 on channel k, f_P is noise; every
    /// third row of an identity is in `val`.
    fn set() -> FeatureSet {
        let (ids, per, dim) = (4usize, 30usize, 8usize);
        let rows = ids * per;
        let mut s = crate::features::tests::toy_set(rows, dim);
        let mut state = 12345u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let (mut f_t, mut f_p) = (Vec::new(), Vec::new());
        for r in 0..rows {
            let id = r / per;
            for j in 0..dim {
                f_t.push(if j == id { 3.0 } else { 0.0 } + noise());
                f_p.push(noise());
            }
            s.identity[r] = id as i64;
            s.meta.splits[r] = if r % 3 == 0 { "val" } else { "train" }.to_owned();
        }
        s.f_t = f_t;
        s.f_p = Some(f_p);
        s
    }

    /// Probe arguments for `train` → `val` on `feature`.
    fn args(train_split: &str, feature: FeatureChoice) -> ProbeArgs {
        ProbeArgs {
            features: PathBuf::new(),
            train_split: train_split.into(),
            test_split: "val".into(),
            feature,
            c: 0.1,
            json: false,
        }
    }

    #[test]
    fn probe_finds_identity_in_f_t_and_none_in_noise() {
        let args = args("train", FeatureChoice::All);
        let out = identity_probe(&set(), &args).unwrap();
        assert_eq!(out.identities, 4);
        assert_eq!((out.train_rows, out.test_rows), (80, 40));
        assert!((out.chance - 0.25).abs() < 1e-12);
        let acc = |k| {
            out.results
                .iter()
                .find(|r| r.feature == k)
                .unwrap()
                .accuracy
        };
        assert!(acc(FeatureKind::T) > 0.95, "{out:?}");
        assert!(acc(FeatureKind::P) < 0.5, "{out:?}");
        assert!(acc(FeatureKind::C) > 0.9, "{out:?}");
    }

    #[test]
    fn probe_needs_two_identities_and_shared_test_rows() {
        let mut s = set();
        let nope = args("nope", FeatureChoice::T);
        assert!(identity_probe(&s, &nope).is_err());
        for id in s.identity.iter_mut() {
            *id = 0;
        }
        let e = identity_probe(&s, &args("train", FeatureChoice::T))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2"), "{e}");
    }

    #[test]
    fn identity_partitioned_splits_fall_back_to_held_out_training_images() {
        // CelebA-like: val holds other identities than train.
        let mut s = set();
        for (r, split) in s.meta.splits.iter_mut().enumerate() {
            *split = if r / 30 == 3 { "val" } else { "train" }.to_owned();
        }
        let args = args("train", FeatureChoice::T);
        let out = identity_probe(&s, &args).unwrap();
        assert_eq!(out.identities, 3);
        // 3 identities × 30 images: every 5th held out.
        assert_eq!((out.train_rows, out.test_rows), (72, 18));
        assert!(out.test_split.contains("held out"), "{}", out.test_split);
        assert!(out.results[0].accuracy > 0.9, "{out:?}");
    }
}
