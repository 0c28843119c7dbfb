//! 2-D t-SNE embeddings of features (the paper's Figures 1b and 4) and a score of how well a
//! labelling separates in them.
//!
//! The embedding is the `bhtsne` crate's Barnes-Hut t-SNE (van der Maaten 2014, the method the
//! paper cites) with the Euclidean metric. We start it from our own seeded layout and, with
//! [`TsneConfig::deterministic`], run it on one thread, so a run can be reproduced bit for bit;
//! and we check the inputs instead of letting it panic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::Matrix;

/// t-SNE settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsneConfig {
    /// Effective number of neighbours (lowered to `(n − 1) / 3` for small inputs).
    pub perplexity: f32,
    /// Barnes-Hut accuracy: larger is faster and coarser (0.5 is the usual value).
    pub theta: f32,
    /// Gradient-descent iterations.
    pub epochs: usize,
    /// Seed of the initial layout.
    pub seed: u64,
    /// Run on one thread, so the same input and seed give the same embedding bit for bit
    /// (`bhtsne` sums forces in parallel, and the order of a parallel sum varies with scheduling).
    pub deterministic: bool,
}

impl Default for TsneConfig {
    fn default() -> Self {
        TsneConfig {
            perplexity: 30.0,
            theta: 0.5,
            epochs: 1000,
            seed: 0,
            deterministic: false,
        }
    }
}

/// Errors in t-SNE inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TsneError {
    #[error("t-SNE needs at least 4 points, got {0}")]
    TooFewPoints(usize),
    #[error("invalid t-SNE setting: {0}")]
    Config(String),
    #[error("row {0} has a non-finite value")]
    NonFinite(usize),
}

/// A 2-D embedding, one point per input row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub points: Vec<[f32; 2]>,
    /// The perplexity used (after lowering for small inputs).
    pub perplexity: f32,
}

/// Embed the rows of `x` in 2-D.
pub fn tsne_2d(x: Matrix<'_>, cfg: &TsneConfig) -> Result<Embedding, TsneError> {
    let n = x.rows();
    if n < 4 {
        return Err(TsneError::TooFewPoints(n));
    }
    if cfg.theta.is_nan() || cfg.theta <= 0.0 {
        return Err(TsneError::Config(format!(
            "theta must be > 0, got {}",
            cfg.theta
        )));
    }
    if cfg.perplexity.is_nan() || cfg.perplexity < 1.0 {
        return Err(TsneError::Config(format!(
            "perplexity must be >= 1, got {}",
            cfg.perplexity
        )));
    }
    if cfg.epochs == 0 {
        return Err(TsneError::Config("epochs must be > 0".into()));
    }
    if let Some(i) = x.iter_rows().position(|r| r.iter().any(|v| !v.is_finite())) {
        return Err(TsneError::NonFinite(i));
    }
    // bhtsne requires 3·perplexity <= n − 1 (it keeps 3·perplexity neighbours per point).
    let perplexity = cfg.perplexity.min(((n - 1) / 3) as f32).floor().max(1.0);
    let rows: Vec<&[f32]> = x.iter_rows().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // The usual small random start (σ = 1e-4), as in the reference implementation.
    let init: Vec<f32> = (0..n * 2)
        .map(|_| 1e-4 * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let run = || {
        let mut tsne: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&rows);
        tsne.perplexity(perplexity)
            .epochs(cfg.epochs)
            .initial_embedding(init)
            .barnes_hut(cfg.theta, |a, b| euclidean(a, b));
        tsne.embedding()
    };
    let flat = if cfg.deterministic {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| TsneError::Config(format!("cannot start a one-thread pool: {e}")))?
            .install(run)
    } else {
        run()
    };
    Ok(Embedding {
        points: flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
        perplexity,
    })
}

fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Leave-one-out k-nearest-neighbour accuracy of `labels` in the embedding: the fraction of
/// points whose `k` nearest other points vote (majority, ties to the nearest) for their own
/// label. 1.0 means every point sits among its own kind.
pub fn knn_accuracy(points: &[[f32; 2]], labels: &[usize], k: usize) -> f64 {
    let n = points.len().min(labels.len());
    if n < 2 || k == 0 {
        return 0.0;
    }
    let k = k.min(n - 1);
    let mut right = 0;
    let mut d: Vec<(f32, usize)> = Vec::with_capacity(n);
    for i in 0..n {
        d.clear();
        for j in (0..n).filter(|&j| j != i) {
            let (dx, dy) = (points[i][0] - points[j][0], points[i][1] - points[j][1]);
            d.push((dx * dx + dy * dy, j));
        }
        d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
        let near = &mut d[..k];
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut votes: Vec<(usize, usize, usize)> = Vec::new(); // (label, count, first rank)
        for (rank, &(_, j)) in near.iter().enumerate() {
            match votes.iter_mut().find(|v| v.0 == labels[j]) {
                Some(v) => v.1 += 1,
                None => votes.push((labels[j], 1, rank)),
            }
        }
        let winner = votes
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|v| v.0);
        if winner == Some(labels[i]) {
            right += 1;
        }
    }
    right as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_accuracy_counts_votes() {
        let pts = [
            [0.0, 0.0],
            [0.1, 0.0],
            [0.2, 0.0],
            [5.0, 5.0],
            [5.1, 5.0],
            [0.15, 0.05],
        ];
        // The last point carries label 1 but sits in cluster 0: with 3 neighbours it and nobody
        // else is outvoted.
        let labels = [0, 0, 0, 1, 1, 1];
        assert!((knn_accuracy(&pts, &labels, 3) - 5.0 / 6.0).abs() < 1e-12);
        // With 2, points 1 and 2 have the stray point nearest and one true neighbour: the tie
        // goes to the nearest, so they are wrong too.
        assert!((knn_accuracy(&pts, &labels, 2) - 3.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn too_few_points_is_an_error() {
        let data = [0.0f32; 6];
        assert_eq!(
            tsne_2d(Matrix::new(&data, 2).unwrap(), &TsneConfig::default()).unwrap_err(),
            TsneError::TooFewPoints(3)
        );
    }
}
