//! The optimizers, SGD with momentum and Adam, with their state visible for checkpoints.
//!
//! Why not `tch::nn::Optimizer`: its buffers live inside libtorch and cannot be read or restored,
//! so a resumed run would restart momentum from zero and drift from an uninterrupted one. This
//! optimizer keeps its buffers by parameter name and follows PyTorch's formulas exactly:
//! - `torch.optim.SGD` (dampening 0, no Nesterov):
//!   `g = grad + wd·p;  buf = momentum·buf + g (buf = g on the first step);  p -= lr·buf`;
//! - `torch.optim.Adam` (L2 weight decay added to the gradient, no AMSGrad):
//!   `g = grad + wd·p;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
//!   p -= lr·(m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)`.
//!
//! The paper gives a learning rate and its decay but no optimizer; SGD is the default. Adam is
//! there for short runs: it scales each parameter's step by its own gradient statistics, so the
//! decoder (which learns only from L_X, weighted by a tiny λ_X) and the adversary W_P (only from
//! λ_adv·L_T^adv) learn at full speed whatever their loss weights (docs/TRAINING.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{no_grad, Kind, Tensor};

/// Which update rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with momentum (the paper's learning-rate schedule was made for it).
    #[default]
    Sgd,
    /// Adam with β1 = 0.9, β2 = 0.999, ε = 1e-8 (PyTorch's defaults).
    Adam,
}

/// Hyper-parameters of [`Optimizer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// SGD momentum (unused by Adam).
    pub momentum: f64,
    pub weight_decay: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
/// State names: SGD's momentum buffer is the parameter's own name (as in checkpoints written
/// before Adam existed); Adam's moments are prefixed, and its step count is one scalar.
const ADAM_M: &str = "adam.m.";
const ADAM_V: &str = "adam.v.";
const ADAM_STEP: &str = "adam.step";

/// The optimizer: parameters by name (sorted, so the step order never depends on a hash map).
pub struct Optimizer {
    cfg: OptimizerConfig,
    params: BTreeMap<String, Tensor>,
    /// SGD: momentum buffers by parameter name. Adam: first and second moments and the step.
    state: BTreeMap<String, Tensor>,
    /// Learning-rate multipliers by parameter name (absent: 1).
    lr_scales: BTreeMap<String, f64>,
    /// Adam's step count t.
    adam_steps: u64,
}

impl Optimizer {
    /// Optimise every variable of `vars` that requires a gradient.
    pub fn new(vars: impl IntoIterator<Item = (String, Tensor)>, cfg: OptimizerConfig) -> Self {
        let params = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        Optimizer {
            cfg,
            params,
            state: BTreeMap::new(),
            lr_scales: BTreeMap::new(),
            adam_steps: 0,
        }
    }

    /// The optimised parameters, by name.
    pub fn params(&self) -> &BTreeMap<String, Tensor> {
        &self.params
    }

    /// Scale the learning rate of the named parameters by `scale`.
    pub fn scale_lr(&mut self, names: impl IntoIterator<Item = String>, scale: f64) {
        for name in names {
            self.lr_scales.insert(name, scale);
        }
    }

    /// Zero every gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params.values_mut() {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        if self.cfg.kind == OptimizerKind::Adam {
            self.adam_steps += 1;
        }
        let OptimizerConfig {
            kind,
            momentum,
            weight_decay,
        } = self.cfg;
        let t = self.adam_steps as i32;
        no_grad(|| {
            for (name, p) in self.params.iter_mut() {
                let scale = self.lr_scales.get(name).copied().unwrap_or(1.0);
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let g = if weight_decay != 0.0 {
                    &grad + &*p * weight_decay
                } else {
                    grad.shallow_clone()
                };
                let update = match kind {
                    OptimizerKind::Sgd if momentum != 0.0 => match self.state.get_mut(name) {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&g);
                            buf.shallow_clone()
                        }
                        None => {
                            let buf = g.detach().copy();
                            self.state.insert(name.clone(), buf.shallow_clone());
                            buf
                        }
                    },
                    OptimizerKind::Sgd => g,
                    OptimizerKind::Adam => {
                        let m = self
                            .state
                            .entry(format!("{ADAM_M}{name}"))
                            .or_insert_with(|| g.zeros_like());
                        let _ = m.g_mul_scalar_(BETA1).g_add_(&(&g * (1.0 - BETA1)));
                        let m = m.shallow_clone();
                        let v = self
                            .state
                            .entry(format!("{ADAM_V}{name}"))
                            .or_insert_with(|| g.zeros_like());
                        let _ = v.g_mul_scalar_(BETA2).g_add_(&(g.square() * (1.0 - BETA2)));
                        let v = v.shallow_clone();
                        let m_hat = m / (1.0 - BETA1.powi(t));
                        let v_hat = v / (1.0 - BETA2.powi(t));
                        m_hat / (v_hat.sqrt() + EPS)
                    }
                };
                let _ = p.g_sub_(&(update * (lr * scale)));
            }
        });
    }

    /// The optimizer's state by name, for checkpoints.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut state: BTreeMap<String, Tensor> = self
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        if self.cfg.kind == OptimizerKind::Adam && self.adam_steps > 0 {
            state.insert(
                ADAM_STEP.into(),
                Tensor::from_slice(&[self.adam_steps as i64]),
            );
        }
        state
    }

    /// Restore the state saved by [`Optimizer::state`]; names of unknown parameters, shapes that
    /// differ and state of the other optimizer kind are errors.
    pub fn load_state(
        &mut self,
        state: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Result<(), String> {
        self.state.clear();
        self.adam_steps = 0;
        let adam = self.cfg.kind == OptimizerKind::Adam;
        for (name, buf) in state {
            if name == ADAM_STEP {
                if !adam {
                    return Err("the optimizer state is Adam's, this run uses SGD".into());
                }
                self.adam_steps = buf.to_kind(Kind::Int64).int64_value(&[0]).max(0) as u64;
                continue;
            }
            let param_name = if adam {
                name.strip_prefix(ADAM_M)
                    .or_else(|| name.strip_prefix(ADAM_V))
                    .ok_or_else(|| {
                        format!("optimizer state {name:?} is not Adam's (is it SGD's?)")
                    })?
            } else {
                name.as_str()
            };
            let Some(p) = self.params.get(param_name) else {
                return Err(format!("optimizer state names unknown parameter {name:?}"));
            };
            if p.size() != buf.size() {
                return Err(format!(
                    "optimizer state for {name:?} has shape {:?}, the parameter {:?}",
                    buf.size(),
                    p.size()
                ));
            }
            let buf = buf.to_device(p.device());
            self.state.insert(name, buf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// An optimizer over the single parameter `p`, named `w`.
    fn over_w(p: &Tensor, kind: OptimizerKind, momentum: f64, weight_decay: f64) -> Optimizer {
        Optimizer::new(
            [("w".to_string(), p.shallow_clone())],
            OptimizerConfig {
                kind,
                momentum,
                weight_decay,
            },
        )
    }

    fn quadratic_grad(p: &Tensor) {
        // loss = sum(p²) → grad = 2p
        let loss = (p * p).sum(Kind::Float);
        loss.backward();
    }

    #[test]
    fn matches_pytorch_sgd_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = over_w(&p, OptimizerKind::Sgd, 0.9, 0.1);
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
        let mut opt = Optimizer::new(
            [
                ("encoder.w".to_string(), a.shallow_clone()),
                ("decoder.w".to_string(), b.shallow_clone()),
            ],
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                momentum: 0.0,
                weight_decay: 0.0,
            },
        );
        opt.scale_lr(["decoder.w".to_string()], 10.0);
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
        let a = make();
        let mut opt_a = over_w(&a, OptimizerKind::Sgd, 0.9, 0.0);
        opt_a.zero_grad();
        quadratic_grad(&a);
        opt_a.step(0.1);

        // A second optimizer resumed from the first one's parameters and state.
        let b = no_grad(|| a.detach().copy()).set_requires_grad(true);
        let mut opt_b = over_w(&b, OptimizerKind::Sgd, 0.9, 0.0);
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
        let mut opt = over_w(&p, OptimizerKind::Sgd, 0.9, 0.0);
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

    fn adam(p: &Tensor) -> Optimizer {
        over_w(p, OptimizerKind::Adam, 0.0, 0.0)
    }

    #[test]
    fn adam_matches_pytorch_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = adam(&p);
        // Step 1: m̂ = g, v̂ = g², so p moves by lr·g/|g| = lr·sign(g): 1 → 0.9, -2 → -1.9.
        opt.zero_grad();
        quadratic_grad(&p);
        opt.step(0.1);
        let v0 = f64::try_from(p.get(0)).unwrap();
        assert!((v0 - 0.9).abs() < 1e-6, "{v0}");
        // Step 2 for element 0: g1 = 2, g2 = 1.8; m = 0.9·0.2 + 0.18 = 0.36 → m̂ = 0.36/0.19;
        // v = 0.999·0.004 + 0.001·3.24 = 0.007236 → v̂ = 0.007236/0.001999.
        opt.zero_grad();
        quadratic_grad(&p);
        opt.step(0.1);
        let m_hat = 0.36 / 0.19;
        let v_hat: f64 = 0.007236 / (1.0 - 0.999f64.powi(2));
        let want = 0.9 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        let v0 = f64::try_from(p.get(0)).unwrap();
        assert!((v0 - want).abs() < 1e-5, "{v0} vs {want}");
    }

    #[test]
    fn adam_state_round_trip_gives_identical_next_step_and_kinds_do_not_mix() {
        let a = Tensor::from_slice(&[0.5f32, 1.5, -1.0]).set_requires_grad(true);
        let mut opt_a = adam(&a);
        for _ in 0..3 {
            opt_a.zero_grad();
            quadratic_grad(&a);
            opt_a.step(0.05);
        }
        let saved: Vec<_> = opt_a
            .state()
            .iter()
            .map(|(k, v)| (k.clone(), v.copy()))
            .collect();
        assert_eq!(saved.len(), 3, "m, v and the step count");
        let b = no_grad(|| a.detach().copy()).set_requires_grad(true);
        let mut opt_b = adam(&b);
        opt_b
            .load_state(saved.iter().map(|(k, v)| (k.clone(), v.copy())))
            .unwrap();
        for (p, opt) in [(&a, &mut opt_a), (&b, &mut opt_b)] {
            opt.zero_grad();
            quadratic_grad(p);
            opt.step(0.05);
        }
        assert_eq!((&a - &b).abs().max().double_value(&[]), 0.0);

        // Adam's state does not load into SGD, nor SGD's into Adam.
        let mut sgd = over_w(&b, OptimizerKind::Sgd, 0.9, 0.0);
        assert!(sgd
            .load_state(saved.iter().map(|(k, v)| (k.clone(), v.copy())))
            .is_err());
        let sgd_state = [(
            "w".to_string(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )];
        assert!(adam(&b).load_state(sgd_state).is_err());
    }
}
