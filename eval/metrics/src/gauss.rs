//! Per-channel Gaussianity of features (the paper's Figures 7 and 8).
//!
//! The paper measures "how much the statistics look like a Gaussian" by the adjusted R² of a
//! Gaussian fitted to each channel's histogram. We histogram a channel over its range, fit
//! `a·exp(−(x−μ)²/(2σ²))` to the bin counts by least squares (Levenberg–Marquardt from the
//! moment estimates), and report `R² = 1 − SS_res/SS_tot` over the bins and
//! `adj R² = 1 − (1 − R²)(n − 1)/(n − k)` with `n` bins and `k = 3` fitted parameters.
//!
//! The score depends on the number of samples per bin as well as on the shape: for exactly
//! Gaussian data `1 − R² ≈ bins / (1.26 · samples)` from counting noise alone. So the default bin
//! count grows with the samples (`samples / 200`, clamped to 10..=50): Gaussian channels then
//! score ≈ 0.996 whatever the sample size above 2,000, and fewer samples are honestly noisier.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Matrix;

/// Number of fitted parameters (amplitude, mean, standard deviation).
const PARAMS: usize = 3;

/// Bins for `n` samples: `n / 200` clamped to 10..=50 (see the module docs).
pub fn auto_bins(n: usize) -> usize {
    (n / 200).clamp(10, 50)
}

/// Equal-width bin counts over `[lo, lo + width · counts.len()]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f64,
    pub width: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Histogram of the finite values over their range (the maximum falls in the last bin).
    /// A constant input gives one bin of width 0.
    pub fn new(values: &[f32], bins: usize) -> Histogram {
        let bins = bins.max(1);
        let finite = values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .map(f64::from);
        let (lo, hi) = finite
            .clone()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
        if hi <= lo {
            let count = finite.count() as u64;
            return Histogram {
                lo: if lo.is_finite() { lo } else { 0.0 },
                width: 0.0,
                counts: vec![count],
            };
        }
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0u64; bins];
        for v in finite {
            let b = (((v - lo) / width) as usize).min(bins - 1);
            counts[b] += 1;
        }
        Histogram { lo, width, counts }
    }

    /// Centre of each bin.
    pub fn centers(&self) -> Vec<f64> {
        (0..self.counts.len())
            .map(|i| self.lo + (i as f64 + 0.5) * self.width)
            .collect()
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// `amplitude · exp(−(x − mean)² / (2 std²))`, in the histogram's count units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianCurve {
    pub amplitude: f64,
    pub mean: f64,
    pub std: f64,
}

impl GaussianCurve {
    /// Value at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        let z = (x - self.mean) / self.std;
        self.amplitude * (-0.5 * z * z).exp()
    }
}

/// The fit of one histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussFit {
    pub curve: GaussianCurve,
    pub r2: f64,
    pub adj_r2: f64,
}

/// One channel's histogram and fit (`fit` is `None` for a constant channel or too few bins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelFit {
    pub channel: usize,
    /// Sample mean and standard deviation of the channel.
    pub mean: f64,
    pub std: f64,
    pub histogram: Histogram,
    pub fit: Option<GaussFit>,
}

impl ChannelFit {
    /// The adjusted R², if the channel could be fitted.
    pub fn adj_r2(&self) -> Option<f64> {
        self.fit.as_ref().map(|f| f.adj_r2)
    }
}

/// Histogram `values` into `bins` bins (or [`auto_bins`]) and fit a Gaussian.
pub fn fit_channel(channel: usize, values: &[f32], bins: Option<usize>) -> ChannelFit {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let histogram = Histogram::new(values, bins.unwrap_or_else(|| auto_bins(values.len())));
    let fit = fit_gaussian(&histogram, mean, std);
    ChannelFit {
        channel,
        mean,
        std,
        histogram,
        fit,
    }
}

/// Fit every column of `x` (in parallel).
pub fn channel_gaussianity(x: Matrix<'_>, bins: Option<usize>) -> Vec<ChannelFit> {
    (0..x.cols())
        .into_par_iter()
        .map(|j| fit_channel(j, &x.column(j), bins))
        .collect()
}

/// Distribution of the adjusted R² over channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianitySummary {
    pub channels: usize,
    /// Channels that could be fitted.
    pub fitted: usize,
    pub mean_adj_r2: f64,
    pub median_adj_r2: f64,
    pub min_adj_r2: f64,
    /// Fraction of fitted channels with adjusted R² above 0.99 (the paper's criterion).
    pub above_0_99: f64,
}

/// Summarise channel fits.
pub fn summarize(fits: &[ChannelFit]) -> GaussianitySummary {
    let mut r: Vec<f64> = fits.iter().filter_map(ChannelFit::adj_r2).collect();
    r.sort_by(f64::total_cmp);
    let k = r.len();
    let median = match k {
        0 => 0.0,
        _ if k % 2 == 1 => r[k / 2],
        _ => (r[k / 2 - 1] + r[k / 2]) / 2.0,
    };
    GaussianitySummary {
        channels: fits.len(),
        fitted: k,
        mean_adj_r2: r.iter().sum::<f64>() / k.max(1) as f64,
        median_adj_r2: median,
        min_adj_r2: r.first().copied().unwrap_or(0.0),
        above_0_99: r.iter().filter(|&&v| v > 0.99).count() as f64 / k.max(1) as f64,
    }
}

/// Least-squares Gaussian fit to the bin counts, from the moments (`mean`, `std`).
pub fn fit_gaussian(h: &Histogram, mean: f64, std: f64) -> Option<GaussFit> {
    let nb = h.counts.len();
    if nb <= PARAMS || h.width <= 0.0 || std <= 0.0 {
        return None;
    }
    let xs = h.centers();
    let ys: Vec<f64> = h.counts.iter().map(|&c| c as f64).collect();
    let total = h.total() as f64;
    let mut p = [
        total * h.width / (std * (2.0 * std::f64::consts::PI).sqrt()),
        mean,
        std,
    ];
    let sse = |p: &[f64; 3]| -> f64 {
        let c = GaussianCurve {
            amplitude: p[0],
            mean: p[1],
            std: p[2],
        };
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| (y - c.eval(x)).powi(2))
            .sum()
    };
    let mut cur = sse(&p);
    let mut lambda = 1e-3;
    for _ in 0..200 {
        // Normal equations JᵀJ δ = Jᵀr of the residual r = y − f.
        let mut jtj = [[0.0f64; 3]; 3];
        let mut jtr = [0.0f64; 3];
        for (&x, &y) in xs.iter().zip(&ys) {
            let d = x - p[1];
            let e = (-0.5 * d * d / (p[2] * p[2])).exp();
            let f = p[0] * e;
            let j = [e, f * d / (p[2] * p[2]), f * d * d / (p[2] * p[2] * p[2])];
            for (a, row) in jtj.iter_mut().enumerate() {
                jtr[a] += j[a] * (y - f);
                for (b, v) in row.iter_mut().enumerate() {
                    *v += j[a] * j[b];
                }
            }
        }
        let mut improved = false;
        while lambda < 1e12 {
            let mut m = jtj;
            for (a, row) in m.iter_mut().enumerate() {
                row[a] += lambda * jtj[a][a].max(1e-12);
            }
            let Some(delta) = solve3(m, jtr) else {
                lambda *= 10.0;
                continue;
            };
            let next = [p[0] + delta[0], p[1] + delta[1], (p[2] + delta[2]).abs()];
            let s = sse(&next);
            if s.is_finite() && s < cur && next[2] > 0.0 {
                let gain = (cur - s) / cur.max(1e-300);
                p = next;
                cur = s;
                lambda = (lambda / 10.0).max(1e-12);
                improved = gain > 1e-12;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    let ybar = ys.iter().sum::<f64>() / nb as f64;
    let sst: f64 = ys.iter().map(|y| (y - ybar).powi(2)).sum();
    if sst <= 0.0 {
        return None;
    }
    let r2 = 1.0 - cur / sst;
    let adj_r2 = 1.0 - (1.0 - r2) * (nb as f64 - 1.0) / (nb - PARAMS) as f64;
    Some(GaussFit {
        curve: GaussianCurve {
            amplitude: p[0],
            mean: p[1],
            std: p[2],
        },
        r2,
        adj_r2,
    })
}

/// Solve a 3×3 system by Gaussian elimination with partial pivoting.
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    for c in 0..3 {
        let piv = (c..3).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
        if m[piv][c].abs() < 1e-300 {
            return None;
        }
        m.swap(c, piv);
        v.swap(c, piv);
        let pivot_row = m[c];
        for r in c + 1..3 {
            let f = m[r][c] / pivot_row[c];
            for (mk, pk) in m[r].iter_mut().zip(pivot_row).skip(c) {
                *mk -= f * pk;
            }
            v[r] -= f * v[c];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|k| m[r][k] * x[k]).sum();
        x[r] = (v[r] - s) / m[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    fn normal(n: usize, mean: f32, std: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| mean + std * rng.sample::<f32, _>(StandardNormal))
            .collect()
    }

    #[test]
    fn gaussian_samples_score_above_0_99_and_recover_parameters() {
        let v = normal(20_000, 3.0, 0.5, 1);
        let f = fit_channel(0, &v, None);
        assert_eq!(f.histogram.counts.len(), 50);
        assert_eq!(f.histogram.total(), 20_000);
        let fit = f.fit.unwrap();
        assert!(fit.adj_r2 > 0.99, "{}", fit.adj_r2);
        assert!(fit.adj_r2 < fit.r2);
        assert!((fit.curve.mean - 3.0).abs() < 0.02, "{:?}", fit.curve);
        assert!((fit.curve.std - 0.5).abs() < 0.02, "{:?}", fit.curve);
    }

    #[test]
    fn bimodal_and_uniform_samples_score_clearly_lower() {
        let mut v = normal(10_000, -2.0, 1.0, 2);
        v.extend(normal(10_000, 2.0, 1.0, 3));
        let bimodal = fit_channel(0, &v, None).adj_r2().unwrap();
        assert!(bimodal < 0.9, "{bimodal}");
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let u: Vec<f32> = (0..20_000).map(|_| rng.random::<f32>()).collect();
        let uniform = fit_channel(0, &u, None).adj_r2().unwrap();
        assert!(uniform < 0.5, "{uniform}");
    }

    #[test]
    fn matrix_channels_and_summary() {
        let (a, b) = (normal(4000, 0.0, 1.0, 5), normal(4000, 0.0, 1.0, 6));
        let mut data = Vec::new();
        for i in 0..4000 {
            data.extend([a[i], 7.0, if b[i] > 0.0 { 1.0 } else { -1.0 }]);
        }
        let fits = channel_gaussianity(Matrix::new(&data, 3).unwrap(), None);
        assert_eq!(fits.len(), 3);
        assert!(fits[0].adj_r2().unwrap() > 0.99);
        assert!(fits[1].fit.is_none(), "constant channel");
        assert_eq!(fits[1].histogram.counts, vec![4000]);
        // Two values: the histogram is two spikes, far from a Gaussian.
        assert!(fits[2].adj_r2().unwrap() < 0.5);
        let s = summarize(&fits);
        assert_eq!((s.channels, s.fitted), (3, 2));
        assert_eq!(s.above_0_99, 0.5);
    }

    #[test]
    fn histogram_edges() {
        let h = Histogram::new(&[0.0, 1.0, 2.0, 3.0, 4.0, f32::NAN], 4);
        assert_eq!(h.counts, vec![1, 1, 1, 2]);
        assert_eq!((h.lo, h.width), (0.0, 1.0));
        assert_eq!(h.centers(), vec![0.5, 1.5, 2.5, 3.5]);
        assert_eq!(auto_bins(100), 10);
        assert_eq!(auto_bins(13_233), 50);
    }
}
