//! Per-channel z-scoring of feature rows, fitted on a training split, and the map that turns a
//! linear classifier trained on z-scores back into one on raw features.

/// Per-channel z-scoring with the training split's statistics.
///
/// Feature scales differ between models and channels (an early checkpoint's f_P can be a hundred
/// times smaller than a trained one's), and a linear SVM's regularisation is not scale-invariant:
/// on raw small features every C of the grid underfits to the majority class. Standardising first
/// (as is usual before liblinear) makes the C grid mean the same for every model. The trained
/// weights are mapped back ([`Standardize::to_raw`]), so saved directions live in feature space,
/// where editing adds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardize {
    pub mean: Vec<f32>,
    /// Standard deviation, 1 for constant channels.
    pub std: Vec<f32>,
}

impl Standardize {
    /// Statistics of the rows of `x` (row-major, `cols` wide).
    pub fn fit(x: &[f32], cols: usize) -> Standardize {
        let n = (x.len() / cols.max(1)).max(1) as f64;
        let mut mean = vec![0f64; cols];
        let mut sq = vec![0f64; cols];
        for row in x.chunks(cols.max(1)) {
            for (j, &v) in row.iter().enumerate() {
                mean[j] += f64::from(v);
                sq[j] += f64::from(v) * f64::from(v);
            }
        }
        let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let var = (s / n - m * m).max(0.0);
                if var > 1e-20 {
                    var.sqrt() as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardize {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// z-score `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        let cols = self.mean.len().max(1);
        for row in x.chunks_mut(cols) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }

    /// Turn an SVM trained on z-scores into the same classifier on raw features:
    /// w·(x − μ)/s + b = (w/s)·x + (b − Σ w·μ/s).
    pub fn to_raw(&self, svm: &mut crate::svm::LinearSvm) {
        let mut shift = 0f64;
        for ((w, m), s) in svm.w.iter_mut().zip(&self.mean).zip(&self.std) {
            *w /= s;
            shift += f64::from(*w) * f64::from(*m);
        }
        svm.b = (f64::from(svm.b) - shift) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_svm_maps_back_to_the_same_raw_decisions() {
        let x: Vec<f32> = (0..40)
            .map(|i| 0.001 * ((i * 37) % 17) as f32 + 0.5)
            .collect();
        let scale = Standardize::fit(&x, 4);
        let mut z = x.clone();
        scale.apply(&mut z);
        let col0: Vec<f32> = z.chunks(4).map(|r| r[0]).collect();
        let mean = col0.iter().sum::<f32>() / 10.0;
        let var = col0.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 10.0;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
        let mut svm = crate::svm::LinearSvm {
            w: vec![0.5, -1.0, 2.0, 0.25],
            b: 0.3,
            epochs: 1,
            converged: true,
        };
        let before: Vec<f32> = z.chunks(4).map(|r| svm.decision(r)).collect();
        scale.to_raw(&mut svm);
        for (row, d) in x.chunks(4).zip(before) {
            assert!(
                (svm.decision(row) - d).abs() < 1e-3,
                "{} vs {d}",
                svm.decision(row)
            );
        }
    }
}
