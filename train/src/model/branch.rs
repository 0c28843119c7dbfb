//! The branches B_T and B_P (section 4.2): three convs, global average pool and one FC from the
//! encoder's map to a feature vector (f_T or f_P).
//!
//! The paper gives only "3 conv layers"; we use 1×1 (reduce the encoder's channels) then two
//! 3×3, each conv + BN + ReLU, so the 1792-channel Inception map is not convolved at full width.
//! The FC has a bias and no activation: features are signed, and the classifiers and decoder see
//! them as they are.

use tch::{nn, Tensor};

use super::config::BranchConfig;
use super::layers::{cost_seq, forward_seq, ConvBn, ConvSpec, Hw};

/// One branch. Variables: `convs.{0,1,2}`, `fc.{weight,bias}`.
#[derive(Debug)]
pub struct Branch {
    convs: Vec<ConvBn>,
    fc: nn::Linear,
    cfg: BranchConfig,
}

impl Branch {
    /// Build on an encoder output with `c_in` channels.
    pub fn new(p: &nn::Path, c_in: i64, cfg: &BranchConfig) -> Self {
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
        let fc = nn::linear(p / "fc", c, cfg.feature_dim, Default::default());
        Self {
            convs,
            fc,
            cfg: *cfg,
        }
    }

    /// Encoder map `[B, C, h, w]` → features `[B, feature_dim]`.
    pub fn forward_t(&self, map: &Tensor, train: bool) -> Tensor {
        forward_seq(&self.convs, map, train)
            .mean_dim([2i64, 3].as_slice(), false, None)
            .apply(&self.fc)
    }

    /// MACs per image for an encoder map of size `hw`.
    pub fn cost(&self, hw: Hw) -> u64 {
        cost_seq(&self.convs, hw).0 + (self.cfg.channels * self.cfg.feature_dim) as u64
    }
}
