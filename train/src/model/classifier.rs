//! The identity classifiers W_T (on f_T, eq. 1) and W_P (the adversary on f_P, section 3.2).
//!
//! Both are one linear layer with bias over the training identities. W_P is applied two ways:
//! as itself on a detached f_P (the adversary that L_T^adv trains), and with its weights detached
//! on the live f_P (the fixed classifier that L_H asks B_P to confuse).
//!
//! W_T can instead be a cosine classifier ([`IdentityHead::Cosine`]): logits are the scaled
//! cosines between f_T and its rows, and [`Classifier::margin_logits`] subtracts the margin from
//! the true class's for L_T.

use tch::{nn, Kind, Tensor};

use super::config::IdentityHead;

/// An identity classifier. Variables: `weight` `[N_ID, dim]`, and `bias` `[N_ID]` for the
/// linear head.
#[derive(Debug)]
pub struct Classifier {
    fc: nn::Linear,
    head: IdentityHead,
}

impl Classifier {
    /// A linear classifier from `dim`-d features to `num_identities` logits.
    pub fn new(p: &nn::Path, dim: i64, num_identities: i64) -> Self {
        Self::with_head(p, dim, num_identities, IdentityHead::Linear)
    }

    /// A classifier of the given form.
    pub fn with_head(p: &nn::Path, dim: i64, num_identities: i64, head: IdentityHead) -> Self {
        let config = nn::LinearConfig {
            bias: head.is_linear(),
            ..Default::default()
        };
        Self {
            fc: nn::linear(p, dim, num_identities, config),
            head,
        }
    }

    /// Logits `[B, N_ID]`; gradients reach both the features and this classifier.
    pub fn forward(&self, f: &Tensor) -> Tensor {
        self.logits(f, &self.fc.ws, self.fc.bs.as_ref())
    }

    /// Logits with this classifier's weights treated as constants: gradients reach only `f`.
    pub fn forward_fixed(&self, f: &Tensor) -> Tensor {
        let bias = self.fc.bs.as_ref().map(Tensor::detach);
        self.logits(f, &self.fc.ws.detach(), bias.as_ref())
    }

    /// The logits L_T is computed on: [`Self::forward`]'s output with the cosine head's margin
    /// taken off each row's true class (`labels` `[B]`, i64); the linear head's unchanged.
    pub fn margin_logits(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        match self.head {
            IdentityHead::Cosine { scale, margin } if margin > 0.0 => {
                let n = logits.size()[1];
                let one_hot = labels.one_hot(n).to_kind(logits.kind());
                logits - one_hot * (scale * margin)
            }
            _ => logits.shallow_clone(),
        }
    }

    fn logits(&self, f: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        match self.head {
            IdentityHead::Linear => f.linear(weight, bias),
            IdentityHead::Cosine { scale, .. } => {
                let unit = |t: &Tensor| {
                    let norm = t
                        .norm_scalaropt_dim(2.0, [-1], true)
                        .clamp_min(1e-12)
                        .to_kind(Kind::Float);
                    t / norm
                };
                unit(f).matmul(&unit(weight).tr()) * scale
            }
        }
    }

    /// MACs per image.
    pub fn cost(&self) -> u64 {
        self.fc.ws.size().iter().product::<i64>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn cosine_logits_are_scaled_cosines_and_the_margin_hits_the_true_class_only() {
        let vs = VarStore::new(Device::Cpu);
        let head = IdentityHead::Cosine {
            scale: 10.0,
            margin: 0.3,
        };
        let c = Classifier::with_head(&vs.root(), 4, 3, head);
        assert!(c.fc.bs.is_none(), "the cosine head has no bias");
        let f = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 0.5, -3.0, 0.0, 2.0, 1.0]).view([2, 4]);
        let logits = c.forward(&f);
        // Scaling a feature or a weight row changes no logit.
        let again = c.forward(&(&f * 7.0));
        assert!(f64::try_from((&logits - &again).abs().max()).unwrap() < 1e-5);
        let max = f64::try_from(logits.abs().max()).unwrap();
        assert!(max <= 10.0 + 1e-4, "{max}");
        // By hand for row 0, class 1.
        let w = Vec::<f32>::try_from(c.fc.ws.get(1)).unwrap();
        let x = [1.0f32, 2.0, -1.0, 0.5];
        let dot: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
        let norms = w.iter().map(|a| a * a).sum::<f32>().sqrt()
            * x.iter().map(|a| a * a).sum::<f32>().sqrt();
        let want = 10.0 * dot / norms;
        let got = f64::try_from(logits.get(0).get(1)).unwrap() as f32;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        // The margin: 0.3·10 off the true class, nothing else.
        let labels = Tensor::from_slice(&[2i64, 0]);
        let diff = &logits - c.margin_logits(&logits, &labels);
        let diff = Vec::<f32>::try_from(diff.flatten(0, -1)).unwrap();
        assert_eq!(diff.iter().filter(|d| d.abs() > 1e-6).count(), 2);
        assert!(
            (diff[2] - 3.0).abs() < 1e-5 && (diff[3] - 3.0).abs() < 1e-5,
            "{diff:?}"
        );
    }

    #[test]
    fn the_linear_head_is_unchanged_by_margin_logits() {
        let vs = VarStore::new(Device::Cpu);
        let c = Classifier::new(&vs.root(), 4, 3);
        let f = Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
        let logits = c.forward(&f);
        let labels = Tensor::from_slice(&[0i64, 1]);
        assert!(c.margin_logits(&logits, &labels).equal(&logits));
    }
}
