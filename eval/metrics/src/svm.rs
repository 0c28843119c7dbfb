//! Linear SVMs for attribute recognition, and their weight directions for face editing.
//!
//! The solver is liblinear's dual coordinate descent (Hsieh et al., ICML 2008) for the
//! L2-regularised L1-loss (hinge) or L2-loss (squared hinge) SVM, with the bias learned as the
//! weight of a constant extra feature (liblinear's `-B 1`, so the bias is regularised too, as in
//! scikit-learn's `LinearSVC`), random permutation per epoch and optional shrinking. We write it
//! here rather than use `linfa-svm`: that crate solves the kernel SMO problem, which on 5,000 ×
//! 512 features for 40 attributes is far slower than the linear dual, and liblinear itself would
//! need a C toolchain binding.
//!
//! [`attribute_svms`] trains one SVM per attribute in parallel, chooses C from a grid on a
//! validation split (or on a held-out fifth of the training split when there is none, then
//! retrains on all of it), and scores the test split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::matrix::{axpy, dot};
use crate::Matrix;

/// Errors in SVM inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SvmError {
    #[error("{what}: {got} labels for {rows} feature rows")]
    Labels {
        what: String,
        got: usize,
        rows: usize,
    },
    #[error("{what}: no samples")]
    Empty { what: String },
    #[error("{what}: features have {got} columns, expected {expected}")]
    Columns {
        what: String,
        got: usize,
        expected: usize,
    },
    #[error("{what}: {got} label columns for {names} attribute names")]
    Attributes {
        what: String,
        got: usize,
        names: usize,
    },
    #[error("C must be positive and finite, got {0}")]
    BadC(f64),
    #[error("empty C grid")]
    EmptyGrid,
    #[error("choosing C without a validation split needs at least 10 training samples, got {0}")]
    TooFewForHoldout(usize),
}

/// The loss on margin violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// `max(0, 1 − y·f(x))`: the classic SVM (liblinear `-s 3`).
    Hinge,
    /// `max(0, 1 − y·f(x))²`: liblinear's and scikit-learn's default (`-s 1`); better conditioned.
    #[default]
    SquaredHinge,
}

/// Solver settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmParams {
    pub loss: Loss,
    /// Inverse regularisation strength.
    pub c: f64,
    /// Stop when the projected-gradient spread over an epoch is below this (liblinear's `-e`,
    /// default 0.1 for the dual solvers).
    pub tol: f64,
    /// Upper bound on epochs (passes over the active samples).
    pub max_epochs: usize,
    /// Value of the constant feature whose weight is the bias (0 disables the bias).
    pub bias: f32,
    /// Drop samples whose dual variable sits at a bound from the sweep (liblinear's shrinking).
    pub shrinking: bool,
    /// Seed for the per-epoch permutation.
    pub seed: u64,
}

impl Default for SvmParams {
    fn default() -> Self {
        SvmParams {
            loss: Loss::SquaredHinge,
            c: 1.0,
            tol: 0.1,
            max_epochs: 1000,
            bias: 1.0,
            shrinking: true,
            seed: 0,
        }
    }
}

/// A trained linear classifier: `f(x) = w·x + b`, positive means the attribute is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearSvm {
    pub w: Vec<f32>,
    pub b: f32,
    /// Epochs run.
    pub epochs: usize,
    /// Whether the stopping tolerance was met before `max_epochs`.
    pub converged: bool,
}

fn check_labels(what: &str, x: Matrix<'_>, y: &[bool]) -> Result<(), SvmError> {
    if y.len() != x.rows() {
        return Err(SvmError::Labels {
            what: what.to_owned(),
            got: y.len(),
            rows: x.rows(),
        });
    }
    if y.is_empty() {
        return Err(SvmError::Empty {
            what: what.to_owned(),
        });
    }
    Ok(())
}

impl LinearSvm {
    /// Train on rows of `x` with labels `y` (`true` = positive class).
    pub fn train(x: Matrix<'_>, y: &[bool], p: &SvmParams) -> Result<LinearSvm, SvmError> {
        check_labels("training split", x, y)?;
        if p.c.is_nan() || p.c <= 0.0 || p.c.is_infinite() {
            return Err(SvmError::BadC(p.c));
        }
        let n = x.rows();
        let d = x.cols();
        // Dual: min ½αᵀQ̄α − eᵀα, 0 ≤ α ≤ U, Q̄ = Q + D; D = 1/(2C), U = ∞ for the squared hinge,
        // D = 0, U = C for the hinge.
        let (diag, upper) = match p.loss {
            Loss::Hinge => (0.0f64, p.c),
            Loss::SquaredHinge => (0.5 / p.c, f64::INFINITY),
        };
        let bias = p.bias;
        let sign: Vec<f32> = y.iter().map(|&v| if v { 1.0 } else { -1.0 }).collect();
        let qd: Vec<f64> = x
            .iter_rows()
            .map(|r| f64::from(dot(r, r)) + f64::from(bias * bias) + diag)
            .collect();
        let mut alpha = vec![0.0f64; n];
        let mut w = vec![0.0f32; d];
        let mut wb = 0.0f32; // weight of the constant feature
        let mut active: Vec<usize> = (0..n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let (mut pg_max_old, mut pg_min_old) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut epochs = 0;
        let mut converged = false;
        while epochs < p.max_epochs {
            epochs += 1;
            active.shuffle(&mut rng);
            let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
            let mut s = 0;
            while s < active.len() {
                let i = active[s];
                let xi = x.row(i);
                let yi = sign[i];
                let margin = f64::from(yi) * f64::from(dot(&w, xi) + wb * bias);
                let g = margin - 1.0 + diag * alpha[i];
                let mut pg = 0.0;
                if alpha[i] == 0.0 {
                    if g > pg_max_old && p.shrinking {
                        active.swap_remove(s);
                        continue;
                    }
                    if g < 0.0 {
                        pg = g;
                    }
                } else if alpha[i] == upper {
                    if g < pg_min_old && p.shrinking {
                        active.swap_remove(s);
                        continue;
                    }
                    if g > 0.0 {
                        pg = g;
                    }
                } else {
                    pg = g;
                }
                pg_max = pg_max.max(pg);
                pg_min = pg_min.min(pg);
                if pg.abs() > 1e-12 {
                    let old = alpha[i];
                    alpha[i] = (old - g / qd[i]).clamp(0.0, upper);
                    let step = ((alpha[i] - old) * f64::from(yi)) as f32;
                    axpy(step, xi, &mut w);
                    wb += step * bias;
                }
                s += 1;
            }
            if pg_max - pg_min <= p.tol {
                if active.len() == n {
                    converged = true;
                    break;
                }
                // Converged on the shrunk set: check once more on all samples.
                active = (0..n).collect();
                pg_max_old = f64::INFINITY;
                pg_min_old = f64::NEG_INFINITY;
                continue;
            }
            pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
            pg_min_old = if pg_min >= 0.0 {
                f64::NEG_INFINITY
            } else {
                pg_min
            };
        }
        Ok(LinearSvm {
            w,
            b: wb * bias,
            epochs,
            converged,
        })
    }

    /// The decision value `w·x + b`.
    pub fn decision(&self, x: &[f32]) -> f32 {
        dot(&self.w, x) + self.b
    }

    /// Whether the attribute is predicted present.
    pub fn predict(&self, x: &[f32]) -> bool {
        self.decision(x) > 0.0
    }

    /// Fraction of rows predicted correctly.
    pub fn accuracy(&self, x: Matrix<'_>, y: &[bool]) -> f64 {
        let right = x
            .iter_rows()
            .zip(y)
            .filter(|&(r, &t)| self.predict(r) == t)
            .count();
        right as f64 / y.len().max(1) as f64
    }

    /// `w / ‖w‖`: the max-margin direction used to edit features (zero if `w` is zero).
    pub fn direction(&self) -> Vec<f32> {
        let norm = dot(&self.w, &self.w).sqrt();
        if norm == 0.0 {
            return vec![0.0; self.w.len()];
        }
        self.w.iter().map(|v| v / norm).collect()
    }
}

/// Features and per-attribute labels of one split.
#[derive(Debug, Clone, Copy)]
pub struct AttributeSplit<'a> {
    pub features: Matrix<'a>,
    /// `labels[attribute][sample]`.
    pub labels: &'a [Vec<bool>],
}

/// Settings for [`attribute_svms`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeConfig {
    /// Candidate C values; ties in validation accuracy go to the smallest.
    pub c_grid: Vec<f64>,
    /// Solver settings (their `c` is replaced by each grid value).
    pub params: SvmParams,
    /// Fraction of the training split held out to choose C when there is no validation split.
    pub holdout_fraction: f64,
}

impl Default for AttributeConfig {
    fn default() -> Self {
        AttributeConfig {
            c_grid: vec![0.001, 0.01, 0.1, 1.0],
            params: SvmParams::default(),
            holdout_fraction: 0.2,
        }
    }
}

/// How C was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CSelection {
    /// On the validation split; the model trained on the training split is kept.
    Validation,
    /// On a held-out part of the training split; the model is retrained on all of it.
    Holdout,
    /// The grid had a single value.
    Fixed,
}

/// One attribute's classifier and scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeResult {
    pub name: String,
    /// The chosen C.
    pub c: f64,
    /// Accuracy at the chosen C on the split used for choosing (NaN-free: 0 when fixed).
    pub selection_accuracy: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    /// Test accuracy of always predicting the training majority: the floor to beat, since many
    /// CelebA attributes are rare.
    pub majority_accuracy: f64,
    /// Fraction of positive training labels.
    pub train_positive_rate: f64,
    pub svm: LinearSvm,
    /// `w / ‖w‖`, the editing direction.
    pub direction: Vec<f32>,
}

/// Per-attribute results and their means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeReport {
    pub selection: CSelection,
    pub attributes: Vec<AttributeResult>,
    pub mean_test_accuracy: f64,
    pub mean_majority_accuracy: f64,
}

fn check_split(
    what: &str,
    s: &AttributeSplit<'_>,
    names: usize,
    cols: usize,
) -> Result<(), SvmError> {
    if s.features.cols() != cols {
        return Err(SvmError::Columns {
            what: what.to_owned(),
            got: s.features.cols(),
            expected: cols,
        });
    }
    if s.labels.len() != names {
        return Err(SvmError::Attributes {
            what: what.to_owned(),
            got: s.labels.len(),
            names,
        });
    }
    for (a, l) in s.labels.iter().enumerate() {
        check_labels(&format!("{what}, attribute {a}"), s.features, l)?;
    }
    Ok(())
}

/// Train and score one linear SVM per attribute (see the module docs for how C is chosen).
pub fn attribute_svms(
    names: &[String],
    train: AttributeSplit<'_>,
    val: Option<AttributeSplit<'_>>,
    test: AttributeSplit<'_>,
    cfg: &AttributeConfig,
) -> Result<AttributeReport, SvmError> {
    let cols = train.features.cols();
    check_split("train split", &train, names.len(), cols)?;
    check_split("test split", &test, names.len(), cols)?;
    if let Some(v) = &val {
        check_split("val split", v, names.len(), cols)?;
    }
    if cfg.c_grid.is_empty() {
        return Err(SvmError::EmptyGrid);
    }
    if let Some(&c) = cfg
        .c_grid
        .iter()
        .find(|&&c| c.is_nan() || c <= 0.0 || c.is_infinite())
    {
        return Err(SvmError::BadC(c));
    }
    let selection = match (&val, cfg.c_grid.len()) {
        (_, 1) => CSelection::Fixed,
        (Some(_), _) => CSelection::Validation,
        (None, _) => CSelection::Holdout,
    };
    // The held-out part, shared by all attributes so they choose C on the same samples.
    let n = train.features.rows();
    let (fit_rows, hold_rows) = if selection == CSelection::Holdout {
        if n < 10 {
            return Err(SvmError::TooFewForHoldout(n));
        }
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.params.seed ^ 0x5eed));
        let hold = ((n as f64 * cfg.holdout_fraction).round() as usize).clamp(1, n - 1);
        let (h, f) = idx.split_at(hold);
        (f.to_vec(), h.to_vec())
    } else {
        (Vec::new(), Vec::new())
    };
    let fit_x = train.features.select_rows(&fit_rows);
    let hold_x = train.features.select_rows(&hold_rows);

    let results: Result<Vec<AttributeResult>, SvmError> = names
        .par_iter()
        .enumerate()
        .map(|(a, name)| {
            let y = &train.labels[a];
            let params = |c: f64| SvmParams {
                c,
                ..cfg.params.clone()
            };
            let (c, selection_accuracy, svm) = match selection {
                CSelection::Fixed => {
                    let c = cfg.c_grid[0];
                    (c, 0.0, LinearSvm::train(train.features, y, &params(c))?)
                }
                CSelection::Validation => {
                    let v = val.as_ref().expect("validation selection has a split");
                    let mut best: Option<(f64, f64, LinearSvm)> = None;
                    for &c in &cfg.c_grid {
                        let svm = LinearSvm::train(train.features, y, &params(c))?;
                        let acc = svm.accuracy(v.features, &v.labels[a]);
                        if best.as_ref().is_none_or(|b| acc > b.1) {
                            best = Some((c, acc, svm));
                        }
                    }
                    best.expect("grid is not empty")
                }
                CSelection::Holdout => {
                    let fx = Matrix::new(&fit_x, cols).expect("rows of the same width");
                    let hx = Matrix::new(&hold_x, cols).expect("rows of the same width");
                    let fy: Vec<bool> = fit_rows.iter().map(|&i| y[i]).collect();
                    let hy: Vec<bool> = hold_rows.iter().map(|&i| y[i]).collect();
                    let mut best = (cfg.c_grid[0], f64::NEG_INFINITY);
                    for &c in &cfg.c_grid {
                        let acc = LinearSvm::train(fx, &fy, &params(c))?.accuracy(hx, &hy);
                        if acc > best.1 {
                            best = (c, acc);
                        }
                    }
                    (
                        best.0,
                        best.1,
                        LinearSvm::train(train.features, y, &params(best.0))?,
                    )
                }
            };
            let positives = y.iter().filter(|&&v| v).count();
            let majority = positives * 2 >= y.len();
            let test_y = &test.labels[a];
            Ok(AttributeResult {
                name: name.clone(),
                c,
                selection_accuracy,
                train_accuracy: svm.accuracy(train.features, y),
                test_accuracy: svm.accuracy(test.features, test_y),
                majority_accuracy: test_y.iter().filter(|&&v| v == majority).count() as f64
                    / test_y.len() as f64,
                train_positive_rate: positives as f64 / y.len() as f64,
                direction: svm.direction(),
                svm,
            })
        })
        .collect();
    let attributes = results?;
    let k = attributes.len().max(1) as f64;
    Ok(AttributeReport {
        selection,
        mean_test_accuracy: attributes.iter().map(|r| r.test_accuracy).sum::<f64>() / k,
        mean_majority_accuracy: attributes.iter().map(|r| r.majority_accuracy).sum::<f64>() / k,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    /// `n` Gaussian rows in `d` dims; label = sign of a fixed direction with a margin gap.
    fn separable(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let mut row: Vec<f32> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
            // Push the first coordinate away from 0 to leave a margin of 1 around x₀ = 0.5.
            let pos = row[0] > 0.5;
            row[0] += if pos { 1.0 } else { -1.0 };
            x.extend(row);
            y.push(pos);
        }
        (x, y)
    }

    #[test]
    fn separable_data_is_learnt_exactly_with_both_losses() {
        let (x, y) = separable(600, 16, 1);
        let (tx, ty) = separable(400, 16, 2);
        let m = Matrix::new(&x, 16).unwrap();
        let t = Matrix::new(&tx, 16).unwrap();
        for loss in [Loss::Hinge, Loss::SquaredHinge] {
            let p = SvmParams {
                loss,
                c: 10.0,
                tol: 0.01,
                ..SvmParams::default()
            };
            let svm = LinearSvm::train(m, &y, &p).unwrap();
            assert!(
                svm.converged,
                "{loss:?} did not converge in {} epochs",
                svm.epochs
            );
            assert_eq!(svm.accuracy(m, &y), 1.0, "{loss:?}");
            assert_eq!(svm.accuracy(t, &ty), 1.0, "{loss:?}");
            // The direction is dominated by the informative coordinate and the boundary sits
            // at x₀ = 0.5, so b ≈ −0.5·w₀.
            let dir = svm.direction();
            assert!(dir[0] > 0.9, "{dir:?}");
            assert!(
                (svm.b / svm.w[0] + 0.5).abs() < 0.15,
                "b {} w0 {}",
                svm.b,
                svm.w[0]
            );
        }
    }

    #[test]
    fn noise_labels_give_chance_accuracy() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (x, _) = separable(2000, 32, 4);
        let y: Vec<bool> = (0..2000).map(|_| rng.random::<bool>()).collect();
        let m = Matrix::new(&x[..1000 * 32], 32).unwrap();
        let t = Matrix::new(&x[1000 * 32..], 32).unwrap();
        let svm = LinearSvm::train(m, &y[..1000], &SvmParams::default()).unwrap();
        let acc = svm.accuracy(t, &y[1000..]);
        assert!((0.45..0.55).contains(&acc), "{acc}");
    }

    #[test]
    fn attributes_choose_c_and_report_means() {
        let (x, y0) = separable(300, 8, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let noise: Vec<bool> = (0..300).map(|_| rng.random::<bool>()).collect();
        let names = vec!["Sep".to_owned(), "Noise".to_owned()];
        let m = Matrix::new(&x, 8).unwrap();
        let labels = vec![y0.clone(), noise.clone()];
        let split = AttributeSplit {
            features: m,
            labels: &labels,
        };
        let cfg = AttributeConfig::default();
        let r = attribute_svms(&names, split, Some(split), split, &cfg).unwrap();
        assert_eq!(r.selection, CSelection::Validation);
        assert_eq!(r.attributes[0].test_accuracy, 1.0);
        assert!(cfg.c_grid.contains(&r.attributes[0].c));
        assert!((r.mean_test_accuracy - (1.0 + r.attributes[1].test_accuracy) / 2.0).abs() < 1e-12);
        let norm: f32 = r.attributes[0].direction.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        let r = attribute_svms(&names, split, None, split, &cfg).unwrap();
        assert_eq!(r.selection, CSelection::Holdout);
        assert_eq!(r.attributes[0].test_accuracy, 1.0);
        let bad = vec![y0];
        let e = attribute_svms(
            &names,
            AttributeSplit {
                features: m,
                labels: &bad,
            },
            None,
            split,
            &cfg,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "train split: 1 label columns for 2 attribute names"
        );
    }
}
