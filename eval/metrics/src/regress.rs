//! How much of a continuous factor (e.g. a synthetic background colour) a feature explains:
//! ridge regression of the factor on the feature, fitted on one split and scored by R² on
//! another.
//!
//! Centred least squares with a ridge term `λ·n·I` (λ chosen from a grid on a validation set), solved in f64 by
//! Cholesky. Held-out R² is the honest number: with as many channels as training samples, plain
//! least squares would explain any factor perfectly on the training rows.

use crate::Matrix;
use serde::Serialize;

/// Errors fitting a regression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegressError {
    #[error("{what}: {got} targets for {rows} feature rows")]
    Length {
        what: &'static str,
        got: usize,
        rows: usize,
    },
    #[error("{0}: no rows with a known target")]
    Empty(&'static str),
    #[error("ridge system is not positive definite (λ = {0})")]
    NotPositiveDefinite(f64),
}

/// The ridge grid, relative to the mean variance of the channels.
pub const LAMBDA_GRID: [f64; 5] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// A fitted `y ≈ w·(x − x̄) + ȳ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    pub w: Vec<f64>,
    pub x_mean: Vec<f64>,
    pub y_mean: f64,
    pub lambda: f64,
}

/// One factor's held-out fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactorFit {
    /// R² on the scoring rows (1 = fully explained, 0 = no better than the mean, can be < 0).
    pub r2: f64,
    /// The chosen relative ridge strength.
    pub lambda: f64,
    pub train_rows: usize,
    pub test_rows: usize,
}

impl Ridge {
    /// Fit on rows of `x` with targets `y` and relative ridge strength `lambda`.
    pub fn fit(x: Matrix<'_>, y: &[f64], lambda: f64) -> Result<Ridge, RegressError> {
        let (n, d) = (x.rows(), x.cols());
        if y.len() != n {
            return Err(RegressError::Length {
                what: "training rows",
                got: y.len(),
                rows: n,
            });
        }
        if n == 0 {
            return Err(RegressError::Empty("training rows"));
        }
        let mut x_mean = vec![0f64; d];
        for r in x.iter_rows() {
            for (m, &v) in x_mean.iter_mut().zip(r) {
                *m += f64::from(v);
            }
        }
        x_mean.iter_mut().for_each(|m| *m /= n as f64);
        let y_mean = y.iter().sum::<f64>() / n as f64;
        // Gram matrix of the centred rows (upper triangle, then mirrored).
        let mut a = vec![0f64; d * d];
        let mut b = vec![0f64; d];
        let mut xc = vec![0f64; d];
        for (r, &yi) in x.iter_rows().zip(y) {
            for j in 0..d {
                xc[j] = f64::from(r[j]) - x_mean[j];
            }
            for j in 0..d {
                let v = xc[j];
                if v == 0.0 {
                    continue;
                }
                b[j] += v * (yi - y_mean);
                let row = &mut a[j * d..(j + 1) * d];
                for k in j..d {
                    row[k] += v * xc[k];
                }
            }
        }
        for j in 0..d {
            for k in 0..j {
                a[j * d + k] = a[k * d + j];
            }
        }
        let trace_mean = (0..d).map(|j| a[j * d + j]).sum::<f64>() / d.max(1) as f64;
        let ridge = lambda * trace_mean.max(1e-12);
        for j in 0..d {
            a[j * d + j] += ridge;
        }
        let w = cholesky_solve(&mut a, &b, d).ok_or(RegressError::NotPositiveDefinite(lambda))?;
        Ok(Ridge {
            w,
            x_mean,
            y_mean,
            lambda,
        })
    }

    /// Prediction for one row.
    pub fn predict(&self, row: &[f32]) -> f64 {
        self.y_mean
            + row
                .iter()
                .zip(&self.x_mean)
                .zip(&self.w)
                .map(|((&v, m), w)| (f64::from(v) - m) * w)
                .sum::<f64>()
    }

    /// R² of the predictions on `x`, `y` (against the mean of `y`).
    pub fn r2(&self, x: Matrix<'_>, y: &[f64]) -> f64 {
        r2(
            y,
            &x.iter_rows().map(|r| self.predict(r)).collect::<Vec<_>>(),
        )
    }
}

/// `1 − SS_res / SS_tot`; 0 when `y` is constant and predicted exactly, −∞-free otherwise.
pub fn r2(y: &[f64], pred: &[f64]) -> f64 {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b).powi(2)).sum();
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - ss_res / ss_tot
}

/// Solve `A w = b` for symmetric positive definite `A` (overwritten by its Cholesky factor).
fn cholesky_solve(a: &mut [f64], b: &[f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / l;
        }
    }
    let mut z = b.to_vec();
    for i in 0..d {
        for k in 0..i {
            z[i] -= a[i * d + k] * z[k];
        }
        z[i] /= a[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            z[i] -= a[k * d + i] * z[k];
        }
        z[i] /= a[i * d + i];
    }
    Some(z)
}

/// Choose λ on `select` (fitting on `train`), refit on `train` and score on `test`.
pub fn factor_fit(
    train: (Matrix<'_>, &[f64]),
    select: (Matrix<'_>, &[f64]),
    test: (Matrix<'_>, &[f64]),
) -> Result<FactorFit, RegressError> {
    if test.0.rows() == 0 {
        return Err(RegressError::Empty("scoring rows"));
    }
    let mut best: Option<(f64, Ridge)> = None;
    for &lambda in &LAMBDA_GRID {
        let model = Ridge::fit(train.0, train.1, lambda)?;
        let score = if select.0.rows() > 0 {
            model.r2(select.0, select.1)
        } else {
            0.0
        };
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, model));
        }
    }
    let (_, model) = best.expect("grid is not empty");
    Ok(FactorFit {
        r2: model.r2(test.0, test.1),
        lambda: model.lambda,
        train_rows: train.0.rows(),
        test_rows: test.0.rows(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_factor_and_ignores_noise_channels() {
        // y = 2·x0 − x1 + 3; x2 is a distractor.
        let rows: Vec<[f32; 3]> = (0..40)
            .map(|i| {
                let i = i as f32;
                [
                    (i * 0.37).sin(),
                    (i * 0.91).cos(),
                    ((i * 1.7).sin() * 13.0).fract(),
                ]
            })
            .collect();
        let x: Vec<f32> = rows.iter().flatten().copied().collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|r| 2.0 * f64::from(r[0]) - f64::from(r[1]) + 3.0)
            .collect();
        let m = Matrix::new(&x, 3).unwrap();
        let fit = Ridge::fit(m, &y, 1e-9).unwrap();
        assert!(
            (fit.w[0] - 2.0).abs() < 1e-5 && (fit.w[1] + 1.0).abs() < 1e-5,
            "{:?}",
            fit.w
        );
        assert!(fit.w[2].abs() < 1e-5);
        assert!(fit.r2(m, &y) > 0.999_999);
    }

    #[test]
    fn an_unrelated_factor_scores_near_zero_held_out() {
        let x: Vec<f32> = (0..200)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0)
            .collect();
        let y: Vec<f64> = (0..100)
            .map(|i| ((i * 104_729) % 97) as f64 / 97.0)
            .collect();
        let m = Matrix::new(&x, 2).unwrap();
        let (tr, te) = (
            Matrix::new(&x[..120], 2).unwrap(),
            Matrix::new(&x[120..], 2).unwrap(),
        );
        let fit = factor_fit((tr, &y[..60]), (tr, &y[..60]), (te, &y[60..])).unwrap();
        assert!(fit.r2 < 0.2, "{fit:?}");
        assert_eq!((fit.train_rows, fit.test_rows), (60, 40));
        assert!(Ridge::fit(m, &y[..3], 0.1).is_err());
    }

    #[test]
    fn r2_of_exact_and_mean_predictions() {
        assert_eq!(r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(r2(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0]), 0.0);
    }
}
