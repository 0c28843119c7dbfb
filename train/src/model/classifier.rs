//! The identity classifiers W_T (on f_T, eq. 1) and W_P (the adversary on f_P, section 3.2).
//!
//! Both are one linear layer with bias over the training identities. W_P is applied two ways:
//! as itself on a detached f_P (the adversary that L_T^adv trains), and with its weights detached
//! on the live f_P (the fixed classifier that L_H asks B_P to confuse).

use tch::{nn, Tensor};

/// A linear identity classifier. Variables: `weight` `[N_ID, dim]`, `bias` `[N_ID]`.
#[derive(Debug)]
pub struct Classifier {
    fc: nn::Linear,
}

impl Classifier {
    /// A classifier from `dim`-d features to `num_identities` logits.
    pub fn new(p: &nn::Path, dim: i64, num_identities: i64) -> Self {
        Self {
            fc: nn::linear(p, dim, num_identities, Default::default()),
        }
    }

    /// Logits `[B, N_ID]`; gradients reach both the features and this classifier.
    pub fn forward(&self, f: &Tensor) -> Tensor {
        f.apply(&self.fc)
    }

    /// Logits with this classifier's weights treated as constants: gradients reach only `f`.
    pub fn forward_fixed(&self, f: &Tensor) -> Tensor {
        let bias = self.fc.bs.as_ref().map(Tensor::detach);
        f.linear(&self.fc.ws.detach(), bias.as_ref())
    }

    /// MACs per image.
    pub fn cost(&self) -> u64 {
        self.fc.ws.size().iter().product::<i64>() as u64
    }
}
