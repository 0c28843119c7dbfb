//! SGD with momentum and weight decay, with its state visible for checkpoints.
//!
//! Why not `tch::nn::Optimizer`: its momentum buffers live inside libtorch and cannot be read or
//! restored, so a resumed run would restart momentum from zero and drift from an uninterrupted
//! one. This optimizer keeps one buffer per named parameter and follows PyTorch's `torch.optim.SGD`
//! exactly (dampening 0, no Nesterov):
//! `g = grad + wd·p;  buf = momentum·buf + g (buf = g on the first step);  p -= lr·buf`.

use std::collections::BTreeMap;

use tch::{no_grad, Tensor};

/// Hyper-parameters of [`Sgd`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
}

/// The optimizer: parameters by name (sorted, so the step order never depends on a hash map).
pub struct Sgd {
    cfg: SgdConfig,
    params: BTreeMap<String, Tensor>,
    momentum: BTreeMap<String, Tensor>,
    /// Learning-rate multipliers of parameters whose name starts with a prefix.
    lr_scales: Vec<(String, f64)>,
}

impl Sgd {
    /// Optimise every variable of `vars` that requires a gradient.
    pub fn new(vars: impl IntoIterator<Item = (String, Tensor)>, cfg: SgdConfig) -> Sgd {
        let params = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        Sgd {
            cfg,
            params,
            momentum: BTreeMap::new(),
            lr_scales: Vec::new(),
        }
    }

    /// Scale the learning rate of every parameter whose name starts with `prefix` by `scale`
    /// (the first matching prefix wins).
    pub fn scale_lr(&mut self, prefix: &str, scale: f64) {
        self.lr_scales.push((prefix.to_owned(), scale));
    }

    fn lr_scale(&self, name: &str) -> f64 {
        self.lr_scales
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix.as_str()))
            .map_or(1.0, |(_, s)| *s)
    }

    /// The optimised parameters, by name.
    pub fn params(&self) -> &BTreeMap<String, Tensor> {
        &self.params
    }

    /// Zero every gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params.values_mut() {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let SgdConfig {
            momentum,
            weight_decay,
        } = self.cfg;
        let scales: Vec<f64> = self.params.keys().map(|n| self.lr_scale(n)).collect();
        no_grad(|| {
            for ((name, p), scale) in self.params.iter_mut().zip(scales) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let mut g = if weight_decay != 0.0 {
                    &grad + &*p * weight_decay
                } else {
                    grad.shallow_clone()
                };
                if momentum != 0.0 {
                    let buf = match self.momentum.get_mut(name) {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&g);
                            buf.shallow_clone()
                        }
                        None => {
                            let buf = g.detach().copy();
                            self.momentum.insert(name.clone(), buf.shallow_clone());
                            buf
                        }
                    };
                    g = buf;
                }
                let _ = p.g_sub_(&(g * (lr * scale)));
            }
        });
    }

    /// Momentum buffers by name, for checkpoints.
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.momentum
    }

    /// Restore momentum buffers saved by [`Sgd::state`]; unknown names are an error.
    pub fn load_state(
        &mut self,
        state: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Result<(), String> {
        self.momentum.clear();
        for (name, buf) in state {
            let Some(p) = self.params.get(&name) else {
                return Err(format!("optimizer state names unknown parameter {name:?}"));
            };
            if p.size() != buf.size() {
                return Err(format!(
                    "optimizer state for {name:?} has shape {:?}, the parameter {:?}",
                    buf.size(),
                    p.size()
                ));
            }
            self.momentum.insert(name, buf.to_device(p.device()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn quadratic_grad(p: &Tensor) {
        // loss = sum(p²) → grad = 2p
        let loss = (p * p).sum(Kind::Float);
        loss.backward();
    }

    #[test]
    fn matches_pytorch_sgd_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Sgd::new(
            [("w".to_string(), p.shallow_clone())],
            SgdConfig {
                momentum: 0.9,
                weight_decay: 0.1,
            },
        );
        // Hand computation for element 0 (p = 1): g = 2 + 0.1 = 2.1; buf = 2.1; p = 1 - 0.5·2.1 = -0.05.
        // Step 2: g = 2·(-0.05) + 0.1·(-0.05) = -0.105; buf = 0.9·2.1 - 0.105 = 1.785; p = -0.05 - 0.8925.
        for _ in 0..2 {
            opt.zero_grad();
            quadratic_grad(&p);
            opt.step(0.5);
        }
        let v = f64::try_from(p.get(0)).unwrap();
        assert!((v - (-0.9425)).abs() < 1e-6, "{v}");
    }

    #[test]
    fn scaled_parameters_move_by_their_multiple_of_the_step() {
        let a = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = Sgd::new(
            [
                ("encoder.w".to_string(), a.shallow_clone()),
                ("decoder.w".to_string(), b.shallow_clone()),
            ],
            SgdConfig {
                momentum: 0.0,
                weight_decay: 0.0,
            },
        );
        opt.scale_lr("decoder.", 10.0);
        opt.zero_grad();
        quadratic_grad(&a);
        quadratic_grad(&b);
        opt.step(0.01);
        // grad = 2: the encoder moves by 0.02, the decoder by 0.2.
        let (va, vb) = (f64::try_from(&a).unwrap(), f64::try_from(&b).unwrap());
        assert!((va - 0.98).abs() < 1e-6, "{va}");
        assert!((vb - 0.8).abs() < 1e-6, "{vb}");
    }

    #[test]
    fn state_round_trip_gives_identical_next_step() {
        let make = || Tensor::from_slice(&[0.5f32, 1.5, -1.0]).set_requires_grad(true);
        let cfg = SgdConfig {
            momentum: 0.9,
            weight_decay: 0.0,
        };
        let a = make();
        let mut opt_a = Sgd::new([("w".to_string(), a.shallow_clone())], cfg);
        opt_a.zero_grad();
        quadratic_grad(&a);
        opt_a.step(0.1);

        // A second optimizer resumed from the first one's parameters and state.
        let b = no_grad(|| a.detach().copy()).set_requires_grad(true);
        let mut opt_b = Sgd::new([("w".to_string(), b.shallow_clone())], cfg);
        let saved: Vec<_> = opt_a
            .state()
            .iter()
            .map(|(k, v)| (k.clone(), v.copy()))
            .collect();
        opt_b.load_state(saved).unwrap();

        for (p, opt) in [(&a, &mut opt_a), (&b, &mut opt_b)] {
            opt.zero_grad();
            quadratic_grad(p);
            opt.step(0.1);
        }
        let diff = (&a - &b).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0);
        assert_eq!(a.device(), Device::Cpu);
    }

    #[test]
    fn load_state_rejects_unknown_names_and_shapes() {
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Sgd::new(
            [("w".to_string(), p)],
            SgdConfig {
                momentum: 0.9,
                weight_decay: 0.0,
            },
        );
        assert!(opt
            .load_state([(
                "x".to_string(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu))
            )])
            .is_err());
        assert!(opt
            .load_state([(
                "w".to_string(),
                Tensor::zeros([3], (Kind::Float, Device::Cpu))
            )])
            .is_err());
    }
}
