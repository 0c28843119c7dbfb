//! `d2ae-eval attributes`: per-attribute linear SVMs on f_T, f_P and f_C (the attribute column
//! of Table 1 and Figure 5a), their directions for editing, and the share of each continuous
//! factor a feature explains.
//!
//! The SVMs are `d2ae-metrics`' liblinear-style solver with C chosen on the validation split.
//! Small datasets often lack splits, so [`plan_splits`] falls back and says how: without a
//! validation split C is chosen on a held-out fifth of the training split; without a test split
//! the validation split is scored instead, or, with neither, every fourth training row is held
//! out for scoring.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_metrics::plot::bar_chart;
use d2ae_metrics::svm::{
    attribute_svms, AttributeConfig, AttributeReport, AttributeSplit, CSelection,
};
use d2ae_metrics::table::{percent, Table};
use d2ae_metrics::Matrix;
use safetensors::tensor::Dtype;

use crate::tensor_file::{self, f32_bytes, HostTensor};
use serde::{Deserialize, Serialize};

use crate::features::{FeatureChoice, FeatureKind, FeatureSet};
use d2ae_metrics::regress::{factor_fit, FactorFit};
use d2ae_metrics::standardize::Standardize;

/// `d2ae-eval attributes`
#[derive(Debug, Clone, Args)]
pub struct AttributesArgs {
    /// Feature file written by `d2ae-eval extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// Split the SVMs are trained on.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Split C is chosen on (missing: a held-out fifth of the training split).
    #[arg(long, default_value = "val")]
    pub val_split: String,
    /// Split the SVMs are scored on (missing: the validation split, else every fourth training row).
    #[arg(long, default_value = "test")]
    pub test_split: String,
    /// Which features: t (f_T), p (f_P), c (f_C = [f_T, f_P]) or all.
    #[arg(long, value_enum, default_value_t = FeatureChoice::All)]
    pub feature: FeatureChoice,
    /// Write the per-attribute accuracy difference f_P − f_T as a bar chart PNG (Figure 5a).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Save the SVM directions for `d2ae-eval edit`: safetensors, or JSON when the name ends in
    /// `.json`.
    #[arg(long)]
    pub save_directions: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Rows of each role and how they were chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitPlan {
    pub train: Vec<usize>,
    /// `None`: C is chosen on a held-out part of `train`.
    pub val: Option<Vec<usize>>,
    pub test: Vec<usize>,
    /// What fell back, for people.
    pub notes: Vec<String>,
}

/// Decide the train/val/test rows (see the module docs for the fallbacks).
pub fn plan_splits(set: &FeatureSet, train: &str, val: &str, test: &str) -> Result<SplitPlan> {
    let rows = |s: &str| set.rows_of_split(s);
    let mut notes = Vec::new();
    let mut train_rows = rows(train);
    if train_rows.is_empty() {
        bail!(
            "no rows in training split {train:?} (the features have: {})",
            set.split_names().join(", ")
        );
    }
    let mut val_rows = Some(rows(val)).filter(|r| !r.is_empty());
    let mut test_rows = rows(test);
    if test_rows.is_empty() {
        if let Some(v) = val_rows.take() {
            notes.push(format!(
                "no {test:?} split: scoring on {val:?} ({} rows) and choosing C on a held-out fifth of {train:?}",
                v.len()
            ));
            test_rows = v;
        } else {
            let (keep, held) = every_kth(&train_rows, 4);
            test_rows = held;
            train_rows = keep;
            notes.push(format!(
                "no {test:?} or {val:?} split: scoring on every fourth row of {train:?} ({} rows), training on the other {}",
                test_rows.len(),
                train_rows.len()
            ));
        }
    }
    if val_rows.is_none() && !notes.iter().any(|n| n.contains("held-out fifth")) {
        notes.push(format!(
            "no {val:?} split: C is chosen on a held-out fifth of {train:?}"
        ));
    }
    Ok(SplitPlan {
        train: train_rows,
        val: val_rows,
        test: test_rows,
        notes,
    })
}

/// One attribute's accuracies for each feature.
#[derive(Debug, Clone, Serialize)]
pub struct AttributeRow {
    pub name: String,
    /// Test accuracy by feature.
    pub accuracy: HashMap<FeatureKind, f64>,
    /// Chosen C by feature.
    pub c: HashMap<FeatureKind, f64>,
    pub majority_accuracy: f64,
    pub train_positive_rate: f64,
}

/// One feature's means.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureSummary {
    pub feature: FeatureKind,
    pub name: &'static str,
    pub mean_test_accuracy: f64,
    pub selection: CSelection,
}

/// One continuous factor's held-out R² by feature.
#[derive(Debug, Clone, Serialize)]
pub struct FactorRow {
    pub name: String,
    pub fits: HashMap<FeatureKind, FactorFit>,
}

/// Everything `attributes` reports.
#[derive(Debug, Clone, Serialize)]
pub struct AttributesOutput {
    pub features: String,
    pub train_rows: usize,
    pub val_rows: usize,
    pub test_rows: usize,
    pub notes: Vec<String>,
    /// Attributes left out because some of their labels are unknown.
    pub skipped_attributes: Vec<String>,
    pub summaries: Vec<FeatureSummary>,
    pub mean_majority_accuracy: f64,
    pub attributes: Vec<AttributeRow>,
    /// f_P − f_T test accuracy per attribute (Figure 5a), when both were scored.
    pub difference_p_minus_t: Vec<(String, f64)>,
    pub factors: Vec<FactorRow>,
    pub plot: Option<String>,
    pub directions: Option<String>,
    /// The full SVM reports (weights included) for saving directions; not serialised.
    #[serde(skip)]
    pub reports: Vec<(FeatureKind, AttributeReport)>,
}

/// Train and score the SVMs and the factor regressions.
pub fn attributes(set: &FeatureSet, args: &AttributesArgs) -> Result<AttributesOutput> {
    let plan = plan_splits(set, &args.train_split, &args.val_split, &args.test_split)?;
    let all_rows: Vec<usize> = plan
        .train
        .iter()
        .chain(plan.val.iter().flatten())
        .chain(&plan.test)
        .copied()
        .collect();
    let names = &set.meta.attribute_names;
    let (mut used, mut skipped) = (Vec::new(), Vec::new());
    for (a, name) in names.iter().enumerate() {
        if all_rows.iter().all(|&i| set.attributes_of(i)[a] != 0) {
            used.push(a);
        } else {
            skipped.push(name.clone());
        }
    }
    if used.is_empty() && set.meta.factor_names.is_empty() {
        bail!(
            "{} has no attribute with known labels on every row and no factors ({} attribute columns)",
            args.features.display(),
            names.len()
        );
    }
    let used_names: Vec<String> = used.iter().map(|&a| names[a].clone()).collect();
    let labels = |rows: &[usize]| -> Vec<Vec<bool>> {
        used.iter()
            .map(|&a| rows.iter().map(|&i| set.attributes_of(i)[a] > 0).collect())
            .collect()
    };
    let (train_y, test_y) = (labels(&plan.train), labels(&plan.test));
    let val_y = plan.val.as_ref().map(|v| labels(v));
    let kinds = args.feature.kinds(set);
    let mut reports = Vec::new();
    for &kind in &kinds {
        let (buf, cols) = set.features(kind)?;
        let m = FeatureSet::matrix(&buf, cols);
        let take = |rows: &[usize]| m.select_rows(rows);
        let (mut train_x, mut test_x) = (take(&plan.train), take(&plan.test));
        let mut val_x = plan.val.as_ref().map(|v| take(v));
        let scale = Standardize::fit(&train_x, cols);
        scale.apply(&mut train_x);
        scale.apply(&mut test_x);
        if let Some(v) = val_x.as_mut() {
            scale.apply(v);
        }
        if !used.is_empty() {
            let report = attribute_svms(
                &used_names,
                AttributeSplit {
                    features: FeatureSet::matrix(&train_x, cols),
                    labels: &train_y,
                },
                val_x
                    .as_ref()
                    .zip(val_y.as_ref())
                    .map(|(x, y)| AttributeSplit {
                        features: FeatureSet::matrix(x, cols),
                        labels: y,
                    }),
                AttributeSplit {
                    features: FeatureSet::matrix(&test_x, cols),
                    labels: &test_y,
                },
                &AttributeConfig::default(),
            )
            .with_context(|| format!("attribute SVMs on {}", kind.label()))?;
            let mut report = report;
            for r in &mut report.attributes {
                scale.to_raw(&mut r.svm);
                r.direction = r.svm.direction();
            }
            reports.push((kind, report));
        }
    }
    let all_factors: Vec<usize> = (0..set.meta.factor_names.len()).collect();
    let factors = regress_factors(set, &plan, &kinds, &all_factors)?;
    let mut rows: Vec<AttributeRow> = used_names
        .iter()
        .map(|n| AttributeRow {
            name: n.clone(),
            accuracy: HashMap::new(),
            c: HashMap::new(),
            majority_accuracy: 0.0,
            train_positive_rate: 0.0,
        })
        .collect();
    for (kind, report) in &reports {
        for (row, r) in rows.iter_mut().zip(&report.attributes) {
            row.accuracy.insert(*kind, r.test_accuracy);
            row.c.insert(*kind, r.c);
            row.majority_accuracy = r.majority_accuracy;
            row.train_positive_rate = r.train_positive_rate;
        }
    }
    let difference_p_minus_t = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.name.clone(),
                r.accuracy.get(&FeatureKind::P)? - r.accuracy.get(&FeatureKind::T)?,
            ))
        })
        .collect();
    Ok(AttributesOutput {
        features: args.features.display().to_string(),
        train_rows: plan.train.len(),
        val_rows: plan.val.as_ref().map_or(0, Vec::len),
        test_rows: plan.test.len(),
        notes: plan.notes,
        skipped_attributes: skipped,
        summaries: reports
            .iter()
            .map(|(k, r)| FeatureSummary {
                feature: *k,
                name: k.paper_name(),
                mean_test_accuracy: r.mean_test_accuracy,
                selection: r.selection,
            })
            .collect(),
        mean_majority_accuracy: reports
            .first()
            .map_or(0.0, |(_, r)| r.mean_majority_accuracy),
        attributes: rows,
        difference_p_minus_t,
        factors,
        plot: None,
        directions: None,
        reports,
    })
}

/// Whether the `i`-th row (from 0) is held out when every `k`-th is: the last of each `k`.
/// `fidelity` holds out the same images of a split when a report has no held-out split.
pub fn is_kth(i: usize, k: usize) -> bool {
    i % k == k - 1
}

/// `rows` split into (the rest, every `k`-th row): a deterministic hold-out.
fn every_kth(rows: &[usize], k: usize) -> (Vec<usize>, Vec<usize>) {
    let (mut rest, mut held) = (Vec::new(), Vec::new());
    for (i, &r) in rows.iter().enumerate() {
        if is_kth(i, k) {
            held.push(r);
        } else {
            rest.push(r);
        }
    }
    (rest, held)
}

/// Held-out R² of each factor in `which` (column numbers) regressed on each feature kind, fitted
/// on the plan's training rows and scored on its test rows.
pub fn regress_factors(
    set: &FeatureSet,
    plan: &SplitPlan,
    kinds: &[FeatureKind],
    which: &[usize],
) -> Result<Vec<FactorRow>> {
    let mut rows: Vec<FactorRow> = which
        .iter()
        .map(|&f| FactorRow {
            name: set.meta.factor_names[f].clone(),
            fits: HashMap::new(),
        })
        .collect();
    for &kind in kinds {
        let (buf, cols) = set.features(kind)?;
        let m = FeatureSet::matrix(&buf, cols);
        for (row, &f) in rows.iter_mut().zip(which) {
            let fit = fit_factor(set, &m, f, plan)
                .with_context(|| format!("regressing factor {} on {}", row.name, kind.label()))?;
            row.fits.insert(kind, fit);
        }
    }
    Ok(rows)
}

/// Held-out R² of factor `f` regressed on the features `m`, over rows where it is known.
fn fit_factor(set: &FeatureSet, m: &Matrix<'_>, f: usize, plan: &SplitPlan) -> Result<FactorFit> {
    let nf = set.meta.factor_names.len();
    let known = |rows: &[usize]| -> Vec<usize> {
        rows.iter()
            .copied()
            .filter(|&i| set.factors[i * nf + f].is_finite())
            .collect()
    };
    let target = |rows: &[usize]| -> Vec<f64> {
        rows.iter()
            .map(|&i| f64::from(set.factors[i * nf + f]))
            .collect()
    };
    let train = known(&plan.train);
    let test = known(&plan.test);
    // λ is chosen on the validation rows, else on every fifth training row (then fitted on the rest).
    let (fit_rows, select_rows) = match plan.val.as_ref().map(|v| known(v)) {
        Some(v) if !v.is_empty() => (train, v),
        _ => every_kth(&train, 5),
    };
    let cols = m.cols();
    let (fx, sx, tx) = (
        m.select_rows(&fit_rows),
        m.select_rows(&select_rows),
        m.select_rows(&test),
    );
    Ok(factor_fit(
        (FeatureSet::matrix(&fx, cols), &target(&fit_rows)),
        (FeatureSet::matrix(&sx, cols), &target(&select_rows)),
        (FeatureSet::matrix(&tx, cols), &target(&test)),
    )?)
}

/// The directions file: unit SVM directions `w/‖w‖`, raw weights and biases per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directions {
    pub format: String,
    pub attributes: Vec<String>,
    /// By feature kind: one entry per attribute.
    pub kinds: std::collections::BTreeMap<FeatureKind, KindDirections>,
}

/// One feature's SVMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindDirections {
    pub directions: Vec<Vec<f32>>,
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

/// Value of [`Directions::format`].
pub const DIRECTIONS_FORMAT: &str = "d2ae-directions/1";

impl Directions {
    /// Collect the directions of SVM reports.
    pub fn from_reports(reports: &[(FeatureKind, AttributeReport)]) -> Directions {
        let attributes = reports
            .first()
            .map(|(_, r)| r.attributes.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default();
        let kinds = reports
            .iter()
            .map(|(k, r)| {
                (
                    *k,
                    KindDirections {
                        directions: r.attributes.iter().map(|a| a.direction.clone()).collect(),
                        weights: r.attributes.iter().map(|a| a.svm.w.clone()).collect(),
                        bias: r.attributes.iter().map(|a| a.svm.b).collect(),
                    },
                )
            })
            .collect();
        Directions {
            format: DIRECTIONS_FORMAT.into(),
            attributes,
            kinds,
        }
    }

    /// Write as JSON (`.json`) or safetensors (`<t|p|c>.directions` `[A, D]`, `.weights`,
    /// `.bias` `[A]`; attribute names in the `attributes` metadata entry).
    pub fn write(&self, path: &Path) -> Result<()> {
        if is_json(path) {
            let bytes = serde_json::to_vec_pretty(self)?;
            tensor_file::write_atomic(path, &bytes)?;
            return Ok(());
        }
        let mut host: Vec<HostTensor> = Vec::new();
        let flat = |rows: &[Vec<f32>]| -> Vec<u8> {
            rows.iter()
                .flatten()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        };
        for (k, d) in &self.kinds {
            let n = k.tensor_name().trim_start_matches("f_");
            let dim = d.directions.first().map_or(0, Vec::len);
            let a = d.directions.len();
            host.push((
                format!("{n}.directions"),
                Dtype::F32,
                vec![a, dim],
                flat(&d.directions),
            ));
            host.push((
                format!("{n}.weights"),
                Dtype::F32,
                vec![a, dim],
                flat(&d.weights),
            ));
            host.push((format!("{n}.bias"), Dtype::F32, vec![a], f32_bytes(&d.bias)));
        }
        let meta = HashMap::from([
            ("format".to_owned(), DIRECTIONS_FORMAT.to_owned()),
            (
                "attributes".to_owned(),
                serde_json::to_string(&self.attributes)?,
            ),
        ]);
        tensor_file::write(path, &host, meta)?;
        Ok(())
    }

    /// Read a file written by [`Directions::write`].
    pub fn read(path: &Path) -> Result<Directions> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if is_json(path) {
            let d: Directions = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a directions file", path.display()))?;
            return Ok(d);
        }
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(DIRECTIONS_FORMAT) {
            bail!("{} is not a {DIRECTIONS_FORMAT} file", path.display());
        }
        let attributes: Vec<String> =
            serde_json::from_str(meta.get("attributes").map_or("[]", String::as_str))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)?;
        let rows = |name: &str| -> Result<Option<Vec<Vec<f32>>>> {
            let Ok(v) = st.tensor(name) else {
                return Ok(None);
            };
            let vals: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let cols = v.shape().get(1).copied().unwrap_or(1).max(1);
            Ok(Some(vals.chunks(cols).map(<[f32]>::to_vec).collect()))
        };
        let mut kinds = std::collections::BTreeMap::new();
        for k in FeatureKind::ALL {
            let n = k.tensor_name().trim_start_matches("f_");
            if let Some(directions) = rows(&format!("{n}.directions"))? {
                kinds.insert(
                    k,
                    KindDirections {
                        directions,
                        weights: rows(&format!("{n}.weights"))?.unwrap_or_default(),
                        bias: rows(&format!("{n}.bias"))?.unwrap_or_default().concat(),
                    },
                );
            }
        }
        Ok(Directions {
            format: DIRECTIONS_FORMAT.into(),
            attributes,
            kinds,
        })
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Figure 5a: the f_P − f_T accuracy difference per attribute, in percentage points.
pub fn plot_difference(out: &AttributesOutput, path: &Path) -> Result<()> {
    let bars: Vec<(String, f64)> = out
        .difference_p_minus_t
        .iter()
        .map(|(n, d)| (n.clone(), 100.0 * d))
        .collect();
    if bars.is_empty() {
        bail!("the f_P − f_T chart needs both f_T and f_P scored on at least one attribute");
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    bar_chart(
        path,
        "Attribute accuracy of f_P minus f_T",
        "accuracy difference (percentage points)",
        &bars,
        900,
    )?;
    Ok(())
}

/// Per-attribute and mean accuracies for people.
pub fn table(out: &AttributesOutput) -> Table {
    let kinds: Vec<FeatureKind> = out.summaries.iter().map(|s| s.feature).collect();
    let mut headers = vec!["attribute".to_owned()];
    headers.extend(kinds.iter().map(|k| format!("{} %", k.label())));
    headers.push("majority %".into());
    let has_diff = !out.difference_p_minus_t.is_empty();
    if has_diff {
        headers.push("P − T".into());
    }
    let mut t = Table::new(headers);
    for r in &out.attributes {
        let mut cells = vec![r.name.clone()];
        cells.extend(
            kinds
                .iter()
                .map(|k| r.accuracy.get(k).map_or("–".into(), |v| percent(*v))),
        );
        cells.push(percent(r.majority_accuracy));
        if has_diff {
            let d = r
                .accuracy
                .get(&FeatureKind::P)
                .zip(r.accuracy.get(&FeatureKind::T));
            cells.push(d.map_or("–".into(), |(p, t)| format!("{:+.2}", 100.0 * (p - t))));
        }
        t.row(cells);
    }
    let mut mean = vec!["mean".to_owned()];
    mean.extend(out.summaries.iter().map(|s| percent(s.mean_test_accuracy)));
    mean.push(percent(out.mean_majority_accuracy));
    t.row(mean);
    t
}

/// Factor R² for people.
pub fn factor_table(factors: &[FactorRow]) -> Table {
    let kinds: Vec<FeatureKind> = FeatureKind::ALL
        .into_iter()
        .filter(|k| factors.iter().any(|f| f.fits.contains_key(k)))
        .collect();
    let mut headers = vec!["factor".to_owned()];
    headers.extend(kinds.iter().map(|k| format!("R² {}", k.label())));
    let mut t = Table::new(headers);
    for f in factors {
        let mut cells = vec![f.name.clone()];
        cells.extend(
            kinds
                .iter()
                .map(|k| f.fits.get(k).map_or("–".into(), |v| format!("{:.3}", v.r2))),
        );
        t.row(cells);
    }
    t
}

/// Run `attributes`.
pub fn run(args: &AttributesArgs) -> Result<()> {
    let set = FeatureSet::read(&args.features)?;
    let mut out = attributes(&set, args)?;
    if let Some(p) = &args.plot {
        plot_difference(&out, p)?;
        out.plot = Some(p.display().to_string());
    }
    if let Some(p) = &args.save_directions {
        Directions::from_reports(&out.reports).write(p)?;
        out.directions = Some(p.display().to_string());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "train {} rows, val {} rows, test {} rows",
        out.train_rows, out.val_rows, out.test_rows
    );
    for n in &out.notes {
        println!("note: {n}");
    }
    if !out.skipped_attributes.is_empty() {
        println!(
            "skipped (unknown labels): {}",
            out.skipped_attributes.join(", ")
        );
    }
    if !out.attributes.is_empty() {
        print!("{}", table(&out));
    }
    if !out.factors.is_empty() {
        println!("\nheld-out R² of each factor regressed on the features:");
        print!("{}", factor_table(&out.factors));
    }
    if let Some(p) = &out.plot {
        println!("f_P − f_T chart → {p}");
    }
    if let Some(p) = &out.directions {
        println!("SVM directions → {p}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::toy_set;

    fn args(features: &str) -> AttributesArgs {
        AttributesArgs {
            features: features.into(),
            train_split: "train".into(),
            val_split: "val".into(),
            test_split: "test".into(),
            feature: FeatureChoice::All,
            plot: None,
            save_directions: None,
            json: false,
        }
    }

    /// f_T carries the attribute on channel 0, f_P only noise; f_P channel 1 carries the factor.
    fn separable(rows: usize) -> FeatureSet {
        let mut set = toy_set(rows, 3);
        let fp = set.f_p.as_mut().unwrap();
        for i in 0..rows {
            let smiling = i % 3 == 0;
            set.attributes[i] = if smiling { 1 } else { -1 };
            set.f_t[3 * i] = if smiling { 1.0 } else { -1.0 } + 0.01 * (i % 5) as f32;
            set.f_t[3 * i + 1] = ((i * 37) % 11) as f32 / 11.0;
            set.f_t[3 * i + 2] = ((i * 53) % 13) as f32 / 13.0;
            fp[3 * i] = ((i * 17) % 7) as f32 / 7.0;
            fp[3 * i + 1] = set.factors[i] * 2.0 + 1.0;
            fp[3 * i + 2] = ((i * 29) % 19) as f32 / 19.0;
        }
        set
    }

    #[test]
    fn separable_attribute_and_explained_factor() {
        let set = separable(80);
        let out = attributes(&set, &args("f")).unwrap();
        assert_eq!((out.train_rows, out.val_rows, out.test_rows), (60, 0, 20));
        assert!(
            out.notes.iter().any(|n| n.contains("held-out fifth")),
            "{:?}",
            out.notes
        );
        let t = &out.attributes[0];
        assert_eq!(t.accuracy[&FeatureKind::T], 1.0);
        assert_eq!(t.accuracy[&FeatureKind::C], 1.0);
        assert!(t.accuracy[&FeatureKind::P] < 0.9, "{:?}", t.accuracy);
        let bg = &out.factors[0];
        assert!(bg.fits[&FeatureKind::P].r2 > 0.99, "{:?}", bg.fits);
        assert!(bg.fits[&FeatureKind::T].r2 < 0.5, "{:?}", bg.fits);
        assert_eq!(out.difference_p_minus_t.len(), 1);
    }

    #[test]
    fn without_test_or_val_every_fourth_train_row_is_held_out() {
        let mut set = separable(40);
        set.meta.splits = vec!["train".into(); 40];
        let plan = plan_splits(&set, "train", "val", "test").unwrap();
        assert_eq!((plan.train.len(), plan.test.len()), (30, 10));
        assert_eq!(plan.test[..3], [3, 7, 11]);
        assert!(plan.notes[0].contains("every fourth"), "{:?}", plan.notes);
        let err = plan_splits(&set, "nope", "val", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("train"), "{err}");
    }

    #[test]
    fn directions_round_trip_in_both_formats() {
        let set = separable(80);
        let out = attributes(&set, &args("f")).unwrap();
        let d = Directions::from_reports(&out.reports);
        assert_eq!(d.attributes, vec!["Smiling"]);
        let norm: f32 = d.kinds[&FeatureKind::P].directions[0]
            .iter()
            .map(|v| v * v)
            .sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let dir = tempfile::tempdir().unwrap();
        for name in ["d.safetensors", "d.json"] {
            let p = dir.path().join(name);
            d.write(&p).unwrap();
            assert_eq!(Directions::read(&p).unwrap(), d, "{name}");
        }
    }
}
