//! `d2ae-eval verify`: face verification under the LFW protocol with f_T, f_P and f_C side by
//! side (the verification columns of the paper's Table 1).
//!
//! Pairs resolve to feature rows through `d2ae-metrics`' lookup (LFW `name i` sides by identity
//! name and file name, CSV sides by key or source path); the scores are cosine similarities and
//! the protocol is LFW's 10-fold threshold cross-validation, with TPR at FPR = 1e-3 and 1e-2, AUC
//! and EER.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_metrics::pairs::{
    MissingPolicy, PairFormat, PairList, ResolvedPairs, SampleLookup, SampleRef,
};
use d2ae_metrics::plot::{roc_chart, ChartSize, Series};
use d2ae_metrics::table::{percent, percent_pm, Table};
use d2ae_metrics::verify::{cosine_scores, lfw_protocol, VerificationReport, PAPER_FPR};
use serde::Serialize;

use crate::features::{FeatureChoice, FeatureKind, FeatureSet};

/// The second operating point every result reports, beside the paper's [`PAPER_FPR`].
pub const COARSE_FPR: f64 = 1e-2;

/// `d2ae-eval verify`
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Feature file written by `d2ae-eval extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// Pair list: LFW `pairs.txt` (View 2) or View 1 files, or a `.csv` of `a,b,label[,fold]`
    /// where a side is a sample key or source path.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Which features to score: t (f_T), p (f_P), c (f_C = [f_T, f_P]) or all.
    #[arg(long, value_enum, default_value_t = FeatureChoice::All)]
    pub feature: FeatureChoice,
    /// Drop pairs that name samples missing from the features (counted in the output) instead
    /// of failing with the list of them.
    #[arg(long)]
    pub skip_missing: bool,
    /// Write the ROC curves of the scored features to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write every scored pair to this CSV: both sides' sample keys, same or not, its fold, and
    /// for each feature the cosine and the decision at the fold's threshold (the one chosen on
    /// the other folds), for analyses of your own.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Print the full result (folds, ROC points) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One feature's result.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureVerification {
    pub feature: FeatureKind,
    pub name: &'static str,
    /// TPR at the paper's FPR = 1e-3.
    pub tpr_at_1e3: Option<f64>,
    /// TPR at FPR = 1e-2: the operating point a few hundred different pairs can resolve (at
    /// 1e-3 a list of 300 different pairs allows no false accept at all).
    pub tpr_at_1e2: Option<f64>,
    pub report: VerificationReport,
    /// Each scored pair's cosine, in the order of [`VerifyOutput::pairs`].
    #[serde(skip)]
    pub scores: Vec<f64>,
}

/// One scored pair: the feature rows of its sides, same identity or not, its fold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub a: usize,
    pub b: usize,
    pub same: bool,
    pub fold: usize,
}

/// Everything `verify` reports.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutput {
    pub features: String,
    pub pairs_file: String,
    pub pairs_format: PairFormat,
    pub pairs_total: usize,
    /// Pairs scored (total minus skipped).
    pub pairs_used: usize,
    pub skipped: usize,
    pub missing: Vec<String>,
    pub ambiguous: Vec<String>,
    pub results: Vec<FeatureVerification>,
    pub plot: Option<String>,
    /// `--scores`' CSV, when written.
    pub scores_file: Option<String>,
    /// The scored pairs (their scores are in each result).
    #[serde(skip)]
    pub pairs: Vec<ScoredPair>,
}

/// Resolve `pairs` against `set` and run the protocol for each kind.
pub fn verify(
    set: &FeatureSet,
    features_path: &Path,
    pairs_path: &Path,
    kinds: &[FeatureKind],
    policy: MissingPolicy,
) -> Result<VerifyOutput> {
    let list = PairList::read(pairs_path)?;
    let lookup = SampleLookup::new((0..set.rows()).map(|i| SampleRef {
        key: &set.meta.keys[i],
        identity_name: &set.meta.identity_names[i],
        source: &set.meta.sources[i],
    }));
    let resolved: ResolvedPairs = lookup.resolve(&list, policy).with_context(|| {
        format!(
            "resolving {} against {}",
            pairs_path.display(),
            features_path.display()
        )
    })?;
    if resolved.rows.is_empty() {
        bail!(
            "none of the {} pairs in {} could be resolved",
            list.pairs.len(),
            pairs_path.display()
        );
    }
    let mut results = Vec::new();
    for &kind in kinds {
        let (buf, cols) = set.features(kind)?;
        let scores = cosine_scores(FeatureSet::matrix(&buf, cols), &resolved.rows)
            .with_context(|| format!("scoring pairs with {}", kind.label()))?;
        let report = lfw_protocol(
            &scores,
            &resolved.same,
            &resolved.fold,
            &[PAPER_FPR, COARSE_FPR],
        )
        .with_context(|| format!("LFW protocol on {}", kind.label()))?;
        results.push(FeatureVerification {
            feature: kind,
            name: kind.paper_name(),
            tpr_at_1e3: report.tpr_at(PAPER_FPR),
            tpr_at_1e2: report.tpr_at(COARSE_FPR),
            report,
            scores,
        });
    }
    Ok(VerifyOutput {
        features: features_path.display().to_string(),
        pairs_file: pairs_path.display().to_string(),
        pairs_format: list.format,
        pairs_total: list.pairs.len(),
        pairs_used: resolved.rows.len(),
        skipped: resolved.skipped,
        missing: resolved.missing,
        ambiguous: resolved.ambiguous,
        results,
        plot: None,
        scores_file: None,
        pairs: resolved
            .rows
            .iter()
            .zip(&resolved.same)
            .zip(&resolved.fold)
            .map(|((&(a, b), &same), &fold)| ScoredPair { a, b, same, fold })
            .collect(),
    })
}

/// The `--scores` CSV of `out`: `a,b,same,fold`, then `score_X,accept_X` for each feature X
/// scored (`accept` is 1 when the cosine reaches the threshold of the pair's fold).
pub fn scores_csv(set: &FeatureSet, out: &VerifyOutput) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["a".to_owned(), "b".into(), "same".into(), "fold".into()];
    for r in &out.results {
        let l = r.feature.tensor_name();
        header.extend([format!("score_{l}"), format!("accept_{l}")]);
    }
    w.write_record(&header)?;
    let thresholds: Vec<std::collections::HashMap<usize, f64>> = out
        .results
        .iter()
        .map(|r| {
            r.report
                .folds
                .iter()
                .map(|f| (f.fold, f.threshold))
                .collect()
        })
        .collect();
    for (i, p) in out.pairs.iter().enumerate() {
        let mut row = vec![
            set.meta.keys[p.a].clone(),
            set.meta.keys[p.b].clone(),
            u8::from(p.same).to_string(),
            p.fold.to_string(),
        ];
        for (r, th) in out.results.iter().zip(&thresholds) {
            let score = r.scores[i];
            let accept = th
                .get(&p.fold)
                .map_or(String::new(), |&t| u8::from(score >= t).to_string());
            row.extend([format!("{score:.6}"), accept]);
        }
        w.write_record(&row)?;
    }
    Ok(w.into_inner().map_err(|e| e.into_error())?)
}

/// The ROC curves of the results on one chart (log FPR when there are enough different pairs
/// to reach 1e-3).
pub fn plot_roc(out: &VerifyOutput, path: &Path) -> Result<()> {
    let curves: Vec<Series> = out
        .results
        .iter()
        .map(|r| Series {
            name: format!("{} (AUC {:.3})", r.name, r.report.auc),
            points: r.report.roc.iter().map(|p| (p.fpr, p.tpr)).collect(),
        })
        .collect();
    let different = out
        .results
        .first()
        .map_or(0, |r| r.report.pairs - r.report.same_pairs);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    roc_chart(
        path,
        &format!("ROC, {} pairs", out.pairs_used),
        &curves,
        different >= 1000,
        ChartSize::default(),
    )?;
    Ok(())
}

/// The Table 1 verification columns for people.
pub fn table(out: &VerifyOutput) -> Table {
    let mut t = Table::new([
        "feature",
        "accuracy %",
        "TPR@FPR=1e-3 %",
        "TPR@FPR=1e-2 %",
        "AUC",
        "EER %",
        "pairs",
    ]);
    for r in &out.results {
        t.row([
            r.name.to_owned(),
            percent_pm(r.report.accuracy_mean, r.report.accuracy_std),
            r.tpr_at_1e3.map_or("–".into(), percent),
            r.tpr_at_1e2.map_or("–".into(), percent),
            format!("{:.4}", r.report.auc),
            percent(r.report.eer),
            r.report.pairs.to_string(),
        ]);
    }
    t
}

/// Run `verify`.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let set = FeatureSet::read(&args.features)?;
    let kinds = args.feature.kinds(&set);
    let policy = MissingPolicy::skipping(args.skip_missing);
    let mut out = verify(&set, &args.features, &args.pairs, &kinds, policy)?;
    if let Some(p) = &args.plot {
        plot_roc(&out, p)?;
        out.plot = Some(p.display().to_string());
    }
    if let Some(p) = &args.scores {
        crate::tensor_file::write_atomic(p, &scores_csv(&set, &out)?)
            .with_context(|| format!("writing {}", p.display()))?;
        out.scores_file = Some(p.display().to_string());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let protocol = out
        .results
        .first()
        .map(|r| format!("{:?}", r.report.protocol))
        .unwrap_or_default();
    let format = match out.pairs_format {
        PairFormat::LfwView2 => "LFW View 2",
        PairFormat::LfwView1 => "LFW View 1",
        PairFormat::Csv => "CSV",
    };
    println!(
        "{} pairs from {} ({format}), threshold protocol {protocol}",
        out.pairs_used, out.pairs_file
    );
    if out.skipped > 0 {
        println!(
            "skipped {} pairs naming {} missing samples: {}",
            out.skipped,
            out.missing.len(),
            out.missing.join(", ")
        );
    }
    if !out.ambiguous.is_empty() {
        println!(
            "{} sides matched several samples (the first was used): {}",
            out.ambiguous.len(),
            out.ambiguous.join(", ")
        );
    }
    print!("{}", table(&out));
    if let Some(p) = &out.plot {
        println!("ROC curves → {p}");
    }
    if let Some(p) = &out.scores_file {
        println!("per-pair scores → {p}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::toy_set;

    #[test]
    fn csv_pairs_by_key_score_and_missing_ones_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = toy_set(8, 2);
        // Identity 0 along +x, identity 1 along +y; f_P is the same for everyone.
        for i in 0..8 {
            set.f_t[2 * i] = if i % 2 == 0 { 1.0 } else { 0.1 };
            set.f_t[2 * i + 1] = if i % 2 == 0 { 0.1 } else { 1.0 };
        }
        let pairs = dir.path().join("pairs.csv");
        std::fs::write(
            &pairs,
            "a,b,label,fold\nk0,k2,1,0\nk1,k3,1,0\nk0,k1,0,0\nk2,k3,0,0\n\
             k4,k6,1,1\nk5,k7,1,1\nk4,k5,0,1\nk6,k7,0,1\n",
        )
        .unwrap();
        let out = verify(
            &set,
            Path::new("f"),
            &pairs,
            &[FeatureKind::T],
            MissingPolicy::Error,
        )
        .unwrap();
        let r = &out.results[0].report;
        assert_eq!((out.pairs_used, r.pairs, r.same_pairs), (8, 8, 4));
        assert_eq!(r.accuracy_mean, 1.0);
        assert_eq!(r.auc, 1.0);
        // The per-pair CSV: one line per pair with its keys, label, fold, cosine and the decision
        // at its fold's threshold, which here is right for every pair.
        let csv = String::from_utf8(scores_csv(&set, &out).unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "a,b,same,fold,score_f_t,accept_f_t");
        assert_eq!(lines.len(), 9);
        assert!(lines[1].starts_with("k0,k2,1,0,1.000000,"), "{}", lines[1]);
        for line in &lines[1..] {
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols[2], cols[5], "decision matches the label: {line}");
        }
        // Keys with a comma or a quote are quoted, the quote doubled.
        let mut odd = set.clone();
        odd.meta.keys[0] = "a,b".into();
        odd.meta.keys[2] = "say \"x\"".into();
        let csv = String::from_utf8(scores_csv(&odd, &out).unwrap()).unwrap();
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("\"a,b\",\"say \"\"x\"\"\","),
            "{csv}"
        );

        std::fs::write(&pairs, "k0,k2,1\nk0,nope,0\nmissing/x.jpg,k1,0\n").unwrap();
        let err = verify(
            &set,
            Path::new("f"),
            &pairs,
            &[FeatureKind::T],
            MissingPolicy::Error,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("nope") && msg.contains("missing/x.jpg"),
            "{msg}"
        );
        let out = verify(
            &set,
            Path::new("f"),
            &pairs,
            &[FeatureKind::T],
            MissingPolicy::Skip,
        );
        // One pair left: a single class cannot be scored, and the error says so.
        assert!(format!("{:#}", out.unwrap_err()).contains("at least one same and one different"));
    }
}
