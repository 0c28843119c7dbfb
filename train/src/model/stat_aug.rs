//! Statistical augmentation (section 3.4, eq. 5): f̃ = f + ε·σ with ε ~ N(0, 1) drawn per element
//! and σ the per-channel standard deviation of f.
//!
//! As in batch norm, training uses the batch's σ and folds it into a running estimate
//! (`running_std`, a non-trainable variable, so it is saved in checkpoints). Evaluation adds no
//! noise; the running σ is what editing uses to bound how far it moves a feature. σ is computed
//! from detached features: it scales the noise and is not a path for gradients (otherwise the
//! network could shrink its features' spread just to silence the noise).

use tch::{nn, Tensor};

/// The augmentation of one feature type. Variables: `running_std` `[dim]` (starts at 1).
#[derive(Debug)]
pub struct StatAug {
    running_std: Tensor,
    momentum: f64,
    noise_scale: f64,
}

impl StatAug {
    /// For `dim`-d features; `momentum` as in batch norm; noise of `noise_scale`·σ (1 in eq. 5).
    pub fn new(p: &nn::Path, dim: i64, momentum: f64, noise_scale: f64) -> Self {
        Self {
            running_std: p.ones_no_train("running_std", &[dim]),
            momentum,
            noise_scale,
        }
    }

    /// Training: f̃ = f + s·ε·σ for `f` `[B, dim]`, with σ from [`StatAug::track`] and s the
    /// noise scale.
    pub fn augment(&self, f: &Tensor) -> Tensor {
        f + f.randn_like() * (self.track(f) * self.noise_scale).unsqueeze(0)
    }

    /// Training: this batch's per-channel σ `[dim]`, folded into the running estimate. A batch
    /// of one has no spread, so it returns the running σ and leaves it unchanged.
    pub fn track(&self, f: &Tensor) -> Tensor {
        if f.size()[0] < 2 {
            return self.running_std.shallow_clone();
        }
        // eq. 5: σ is a statistic of the features, not a gradient path.
        let batch = f.detach().std_dim(0, true, false);
        tch::no_grad(|| {
            let next = &self.running_std * (1.0 - self.momentum) + &batch * self.momentum;
            self.running_std.shallow_clone().copy_(&next);
        });
        batch
    }

    /// The running per-channel σ `[dim]` (for evaluation and for bounding edits).
    pub fn running_std(&self) -> &Tensor {
        &self.running_std
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn noise_scale_is_the_batch_std_and_running_std_follows_with_momentum() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let aug = StatAug::new(&vs.root(), 3, 0.5, 1.0);
        // Channels with std 0, 2 and 10 over the batch.
        let base = Tensor::from_slice(&[0.0f32, 2.0, 10.0]);
        let signs = Tensor::from_slice(&[1.0f32, -1.0])
            .repeat([2048])
            .unsqueeze(1);
        let f = &signs * &base.unsqueeze(0) + 5.0;
        let batch_std = f.std_dim(0, true, false);
        let noise = aug.augment(&f) - &f;
        let noise_std = Vec::<f32>::try_from(noise.std_dim(0, true, false)).unwrap();
        let want = Vec::<f32>::try_from(&batch_std).unwrap();
        assert_eq!(noise_std[0], 0.0, "a constant channel gets no noise");
        for c in 1..3 {
            let rel = (noise_std[c] - want[c]).abs() / want[c];
            assert!(
                rel < 0.05,
                "channel {c}: noise std {} vs {}",
                noise_std[c],
                want[c]
            );
        }
        let running = Vec::<f32>::try_from(aug.running_std()).unwrap();
        for c in 0..3 {
            let expect = 0.5 + 0.5 * want[c];
            assert!((running[c] - expect).abs() < 1e-5, "{running:?}");
        }
        // The running σ is a saved, non-trainable variable.
        assert!(vs.trainable_variables().is_empty());
        assert_eq!(vs.variables()["running_std"].kind(), Kind::Float);
    }
}
