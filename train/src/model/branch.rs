//! The branches B_T and B_P (section 4.2): three convs, global average pool and one FC from the
//! encoder's map to a feature vector (f_T or f_P).
//!
//! The paper gives only "3 conv layers"; we use 1×1 (reduce the encoder's channels) then two
//! 3×3, each conv + BN + ReLU, so the 1792-channel Inception map is not convolved at full width.
//! The FC has a bias and no activation: features are signed, and the classifiers and decoder see
//! them as they are.

use tch::{nn, Tensor};

use super::config::{BranchConfig, BranchPool};
use super::layers::{cost_seq, forward_seq, ConvBn, ConvSpec, Hw};

/// One branch. Variables: `convs.{0,1,2}`, `fc.{weight,bias}`, and `linear_input.{weight,bias}`
/// for a branch that also reads the pooled image ([`Branch::with_linear_input`]).
#[derive(Debug)]
pub struct Branch {
    convs: Vec<ConvBn>,
    fc: nn::Linear,
    /// The side K of the pooled image and its linear map into the features.
    linear_input: Option<(i64, nn::Linear)>,
    pool: BranchPool,
    channels: i64,
    feature_dim: i64,
}

impl Branch {
    /// Build on an encoder output with `c_in` channels and size `map` (`h, w`), reducing the last
    /// conv's map with `pool` (the branch's own: [`BranchConfig::identity_pool`] or
    /// [`BranchConfig::dispel_pool`]).
    pub fn new(p: &nn::Path, c_in: i64, map: Hw, cfg: &BranchConfig, pool: BranchPool) -> Self {
        let c = cfg.channels;
        let convs = [
            ConvSpec::square(c_in, c, 1, 1),
            ConvSpec::square(c, c, 3, 1),
            ConvSpec::square(c, c, 3, 1),
        ]
        .iter()
        .enumerate()
        .map(|(i, &s)| ConvBn::new(&(p / "convs" / i), s))
        .collect();
        let fc = nn::linear(
            p / "fc",
            fc_inputs(pool, c, map),
            cfg.feature_dim,
            Default::default(),
        );
        Self {
            convs,
            fc,
            linear_input: None,
            pool,
            channels: c,
            feature_dim: cfg.feature_dim,
        }
    }

    /// Also add a linear map of the input image, average-pooled to `k`×`k`, to the features
    /// ([`BranchConfig::dispel_linear_input`](super::config::BranchConfig::dispel_linear_input)).
    pub fn with_linear_input(mut self, p: &nn::Path, k: i64) -> Self {
        let fc = nn::linear(
            p / "linear_input",
            3 * k * k,
            self.feature_dim,
            Default::default(),
        );
        self.linear_input = Some((k, fc));
        self
    }

    /// Encoder map `[B, C, h, w]` (and the normalised input `images`, read only by a branch with
    /// a linear input) → features `[B, feature_dim]`.
    pub fn forward_t(&self, map: &Tensor, images: &Tensor, train: bool) -> Tensor {
        let ys = forward_seq(&self.convs, map, train);
        let pooled = match self.pool {
            BranchPool::Average => ys.mean_dim([2i64, 3].as_slice(), false, None),
            BranchPool::Flatten => ys.flatten(1, -1),
        };
        let f = pooled.apply(&self.fc);
        match &self.linear_input {
            Some((k, fc)) => {
                f + images
                    .adaptive_avg_pool2d([*k, *k])
                    .flatten(1, -1)
                    .apply(fc)
            }
            None => f,
        }
    }

    /// MACs per image for an encoder map of size `hw`.
    pub fn cost(&self, hw: Hw) -> u64 {
        let fc_in = fc_inputs(self.pool, self.channels, hw);
        let linear = self
            .linear_input
            .as_ref()
            .map_or(0, |(k, _)| 3 * k * k * self.feature_dim);
        cost_seq(&self.convs, hw).0 + ((fc_in * self.feature_dim) + linear) as u64
    }
}

/// Inputs of the FC for a `channels`-deep conv map of size `hw`: one per channel, or every
/// position's.
fn fc_inputs(pool: BranchPool, channels: i64, hw: Hw) -> i64 {
    match pool {
        BranchPool::Average => channels,
        BranchPool::Flatten => channels * hw.0 * hw.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn flatten_feeds_the_fc_every_position_and_average_one_per_channel() {
        let map = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
        // The same map with its spatial positions shuffled (rows reversed).
        let moved = map.flip([2i64].as_slice());
        for pool in [BranchPool::Average, BranchPool::Flatten] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = BranchConfig {
                channels: 5,
                feature_dim: 6,
                pool,
                dispel_pool: None,
                dispel_linear_input: None,
            };
            let b = Branch::new(&vs.root(), 4, (3, 3), &cfg, pool);
            let fc_in = vs.variables()["fc.weight"].size()[1];
            let flatten = pool == BranchPool::Flatten;
            assert_eq!(fc_in, if flatten { 5 * 9 } else { 5 });
            assert_eq!(
                b.cost((3, 3)) - cost_seq(&b.convs, (3, 3)).0,
                (fc_in * 6) as u64
            );
            // Eval mode: batch norm uses its running statistics, so rows are independent.
            let a = b.forward_t(&map, &map, false);
            assert_eq!(a.size(), [2, 6]);
            if flatten {
                // The FC sees positions: moving them moves the features.
                let diff = (&a - &b.forward_t(&moved, &moved, false))
                    .abs()
                    .max()
                    .double_value(&[]);
                let scale = a.abs().max().double_value(&[]);
                assert!(diff > 1e-3 * scale, "{diff} vs {scale}");
            }
        }
    }

    #[test]
    fn configs_written_before_pool_existed_average() {
        let cfg: BranchConfig =
            serde_json::from_str(r#"{"channels": 8, "feature_dim": 4}"#).unwrap();
        assert_eq!(cfg.pool, BranchPool::Average);
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains("pool"), "{text}");
    }
}
