//! The D²AE model (sections 3 and 4.2 of the paper): a shared encoder E, the identity distilling
//! branch B_T with its classifier W_T, the identity dispelling branch B_P with the adversary W_P,
//! and a decoder D from concat(f_T, f_P) back to the image.
//!
//! The method lives in where gradients flow; [`D2ae::forward_t`] builds the graph so that one
//! backward pass of [`LossTerms::total`] (eq. 6) routes each term to its parameters:
//!
//! | term | reaches | how |
//! |---|---|---|
//! | L_T | E, B_T, W_T | plain cross-entropy of W_T·f_T |
//! | L_T^adv | W_P only | W_P applied to f_P *detached* |
//! | L_H | B_P, E | W_P's weights *detached* in that product |
//! | L_X, L̃_X | E, B_T, B_P, D | the decoder reads the features, not the logits |
//!
//! So one optimizer step per batch trains the adversary and the branch that fools it at once,
//! with no alternating GAN-style updates (section 3.2). Ablations are config fields
//! ([`ModelConfig::with_ablation`]).

pub mod branch;
pub mod classifier;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod inception_resnet;
pub mod layers;
pub mod losses;
pub mod pixels;
pub mod stat_aug;

use serde::Serialize;
use tch::{nn, Kind, Tensor};

pub use config::{Ablation, BranchPool, ClassifierNoise, ConfigError, IdentityHead, ModelConfig};
pub use pixels::{denormalise, normalise};

use branch::Branch;
use classifier::Classifier;
use decoder::Decoder;
use encoder::Encoder;
use stat_aug::StatAug;

/// What went wrong building or running the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The config cannot build a model.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input tensor has the wrong kind, shape or values.
    #[error("bad model input: {0}")]
    Input(String),
    /// The operation needs the P branch and decoder, which the `baseline` ablation lacks.
    #[error("{0} needs the dispelling branch and decoder, which the baseline model has none of")]
    NoDispelling(&'static str),
}

/// The parts of the model whose parameters the gradient-routing rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamGroup {
    /// The shared encoder E.
    Encoder,
    /// The identity distilling branch B_T.
    BranchT,
    /// The identity dispelling branch B_P.
    BranchP,
    /// The identity classifier W_T on f_T.
    ClassifierT,
    /// The adversarial identity classifier W_P on f_P.
    ClassifierP,
    /// The decoder D.
    Decoder,
}

impl ParamGroup {
    /// Every group, in model order.
    pub const ALL: [ParamGroup; 6] = [
        Self::Encoder,
        Self::BranchT,
        Self::BranchP,
        Self::ClassifierT,
        Self::ClassifierP,
        Self::Decoder,
    ];

    /// The path segment under which this group's variables live (`encoder`, `w_p`, ...).
    pub fn segment(self) -> &'static str {
        match self {
            Self::Encoder => "encoder",
            Self::BranchT => "branch_t",
            Self::BranchP => "branch_p",
            Self::ClassifierT => "w_t",
            Self::ClassifierP => "w_p",
            Self::Decoder => "decoder",
        }
    }

    /// The group index the parts' `nn::Path`s carry, so a `tch` optimizer can set per-group
    /// learning rates (`set_lr_group`).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Everything one forward pass produces. Features are `[B, dim]`, logits `[B, N_ID]`, images
/// `[B, 3, H, W]` in the normalised pixel scale.
#[derive(Debug)]
pub struct ForwardOutput {
    /// f_T before augmentation: the identity representation.
    pub f_t: Tensor,
    /// f_P before augmentation (`None` for `baseline`).
    pub f_p: Option<Tensor>,
    /// f̃_T (training with statistical augmentation only).
    pub f_t_aug: Option<Tensor>,
    /// f̃_P (training with statistical augmentation only).
    pub f_p_aug: Option<Tensor>,
    /// W_T on f̃_T in training with augmentation, else on f_T (eq. 1): L_T.
    pub logits_t: Tensor,
    /// The adversary W_P on the same f_P as `logits_t` uses, detached: L_T^adv.
    pub logits_p: Option<Tensor>,
    /// W_P with frozen weights on the live f_P: L_H.
    pub logits_p_fixed: Option<Tensor>,
    /// D(f_T, f_P): L_X.
    pub recon: Option<Tensor>,
    /// D(f̃_T, f̃_P) (training with augmentation only): L̃_X.
    pub recon_aug: Option<Tensor>,
}

/// The loss terms of eq. 6 as scalar tensors (for backward) and the batch accuracies. A term the
/// config turns off is `None`.
#[derive(Debug)]
pub struct LossTerms {
    /// L_T: identity cross-entropy on f_T.
    pub l_t: Tensor,
    /// L_T^adv: the adversary's identity cross-entropy on detached f_P.
    pub l_adv: Option<Tensor>,
    /// L_H: cross-entropy of the frozen adversary's prediction against uniform (≥ log N_ID).
    pub l_h: Option<Tensor>,
    /// L_X: ½‖x − D(f_T, f_P)‖², pixel sum, batch mean.
    pub l_x: Option<Tensor>,
    /// L̃_X: the same for D(f̃_T, f̃_P).
    pub l_x_aug: Option<Tensor>,
    /// λ_T·L_T + λ_P·(L_T^adv + L_H) + λ_X·(L_X + L̃_X) (L_T^adv weighted by
    /// [`ModelConfig::lambda_adv`]): the one tensor to call `backward` on.
    pub total: Tensor,
    /// Identity accuracy of W_T on this batch.
    pub acc_t: Tensor,
    /// Identity accuracy of the adversary W_P on this batch (how much identity f_P still leaks).
    pub acc_p: Option<Tensor>,
}

/// [`LossTerms`] as numbers for logs (`null` in JSON for terms that are off).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossValues {
    /// L_T.
    pub l_t: f64,
    /// L_T^adv.
    pub l_adv: Option<f64>,
    /// L_H.
    pub l_h: Option<f64>,
    /// L_X.
    pub l_x: Option<f64>,
    /// L̃_X.
    pub l_x_aug: Option<f64>,
    /// The weighted total of eq. 6.
    pub total: f64,
    /// W_T's batch accuracy.
    pub acc_t: f64,
    /// W_P's batch accuracy.
    pub acc_p: Option<f64>,
}

impl LossTerms {
    /// Copy the values to the host (one sync per term).
    pub fn values(&self) -> LossValues {
        let v = |t: &Tensor| t.double_value(&[]);
        LossValues {
            l_t: v(&self.l_t),
            l_adv: self.l_adv.as_ref().map(v),
            l_h: self.l_h.as_ref().map(v),
            l_x: self.l_x.as_ref().map(v),
            l_x_aug: self.l_x_aug.as_ref().map(v),
            total: v(&self.total),
            acc_t: v(&self.acc_t),
            acc_p: self.acc_p.as_ref().map(v),
        }
    }
}

/// MACs per image of each part, from layer shapes (see [`layers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// The encoder E.
    pub encoder: u64,
    /// B_T plus B_P (when present).
    pub branches: u64,
    /// W_T plus W_P (when present).
    pub classifiers: u64,
    /// One decode.
    pub decoder: u64,
    /// What `encode` costs: E and the branches.
    pub encode: u64,
    /// A training forward: everything, with the decoder run twice when augmenting (L_X and L̃_X).
    pub train_forward: u64,
}

/// The P side of the model: absent in the `baseline` ablation.
#[derive(Debug)]
struct Dispelling {
    branch_p: Branch,
    w_p: Classifier,
    stat_p: StatAug,
    decoder: Decoder,
    /// Per-pixel weights of L_X and L̃_X when `recon_face_weight` > 0.
    recon_weights: Option<Tensor>,
}

/// The D²AE model. Build it on a `VarStore` path; its variables are named
/// `encoder.*`, `branch_t.*`, `branch_p.*`, `w_t.*`, `w_p.*`, `decoder.*` (the [`ParamGroup`]s)
/// and `stat_t.running_std`, `stat_p.running_std` (buffers) under that path.
#[derive(Debug)]
pub struct D2ae {
    cfg: ModelConfig,
    num_identities: i64,
    prefix: String,
    encoder: Encoder,
    branch_t: Branch,
    w_t: Classifier,
    stat_t: StatAug,
    dispel: Option<Dispelling>,
}

impl D2ae {
    /// Build the model for `num_identities` training identities.
    pub fn new(p: &nn::Path, cfg: &ModelConfig, num_identities: i64) -> Result<Self, ModelError> {
        cfg.validate()?;
        if num_identities < 2 {
            return Err(ModelError::Input(format!(
                "num_identities must be at least 2, got {num_identities}"
            )));
        }
        let part = |g: ParamGroup| p.sub(g.segment()).set_group(g.index());
        let encoder = Encoder::new(&part(ParamGroup::Encoder), &cfg.encoder);
        let c = encoder.out_channels();
        let dim = cfg.branch.feature_dim;
        let (_, map) = encoder.cost((cfg.image_size, cfg.image_size));
        let branch_t = Branch::new(
            &part(ParamGroup::BranchT),
            c,
            map,
            &cfg.branch,
            cfg.branch.identity_pool(),
        );
        let w_t = Classifier::with_head(
            &part(ParamGroup::ClassifierT),
            dim,
            num_identities,
            cfg.identity_head,
        );
        let stat_t = StatAug::new(
            &(p / "stat_t"),
            dim,
            cfg.stat_aug.momentum,
            cfg.stat_aug.noise_scale,
        );
        let dispel = cfg.has_dispelling().then(|| Dispelling {
            branch_p: {
                let path = part(ParamGroup::BranchP);
                let b = Branch::new(&path, c, map, &cfg.branch, cfg.branch.dispel_pool());
                match cfg.branch.dispel_linear_input {
                    Some(k) => b.with_linear_input(&path, k),
                    None => b,
                }
            },
            w_p: Classifier::new(&part(ParamGroup::ClassifierP), dim, num_identities),
            stat_p: StatAug::new(
                &(p / "stat_p"),
                dim,
                cfg.stat_aug.momentum,
                cfg.stat_aug.noise_scale,
            ),
            decoder: Decoder::new(&part(ParamGroup::Decoder), cfg, 2 * dim),
            recon_weights: (cfg.recon_face_weight > 0.0).then(|| {
                losses::face_weight_map(cfg.image_size, cfg.recon_face_weight, p.device())
            }),
        });
        let prefix = p.components().map(|c| format!("{c}.")).collect();
        Ok(Self {
            cfg: cfg.clone(),
            num_identities,
            prefix,
            encoder,
            branch_t,
            w_t,
            stat_t,
            dispel,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Number of training identities (rows of W_T and W_P).
    pub fn num_identities(&self) -> i64 {
        self.num_identities
    }

    /// The forward pass. `images` are normalised (see [`normalise`]) `[B, 3, S, S]` with S the
    /// config's `image_size`. With `train`, batch norm uses batch statistics, the running σ of
    /// f_T and f_P is updated and, when configured, the features are augmented (eq. 5).
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<ForwardOutput, ModelError> {
        self.check_images(images)?;
        let map = self.encoder.forward_t(images, train);
        let f_t = self.branch_t.forward_t(&map, images, train);
        let f_t_aug = self.augment(&self.stat_t, &f_t, train);
        let noise = self.cfg.stat_aug.classifier_noise;
        let f_t_cls = match noise {
            ClassifierNoise::None => &f_t,
            _ => f_t_aug.as_ref().unwrap_or(&f_t),
        };
        let logits_t = self.w_t.forward(f_t_cls);
        let mut out = ForwardOutput {
            f_t,
            f_p: None,
            f_t_aug,
            f_p_aug: None,
            logits_t,
            logits_p: None,
            logits_p_fixed: None,
            recon: None,
            recon_aug: None,
        };
        let Some(d) = &self.dispel else {
            return Ok(out);
        };
        let f_p = d.branch_p.forward_t(&map, images, train);
        let f_p_aug = self.augment(&d.stat_p, &f_p, train);
        let f_p_cls = match noise {
            ClassifierNoise::All => f_p_aug.as_ref().unwrap_or(&f_p),
            _ => &f_p,
        };
        // Eq. 3 / section 3.2: L_T^adv trains the classifier W_P only, "not the preceding layers
        // in B_P and E", so the adversary sees f_P detached.
        out.logits_p = Some(d.w_p.forward(&f_p_cls.detach()));
        // Eq. 3: L_H reaches B_P and E "with the identity classifier fixed": W_P's weights are
        // detached in this product (`forward_fixed`), so fooling it cannot change it. Without
        // L_T^adv (the `no-adv` ablation, section 5.2) nothing else trains W_P, and the paper
        // lets L_H update the classifier too: then the live product.
        out.logits_p_fixed = Some(if self.cfg.use_adv {
            d.w_p.forward_fixed(f_p_cls)
        } else {
            d.w_p.forward(f_p_cls)
        });
        out.recon = Some(
            d.decoder
                .forward_t(&Tensor::cat(&[&out.f_t, &f_p], 1), train),
        );
        if let (Some(t), Some(p)) = (&out.f_t_aug, &f_p_aug) {
            out.recon_aug = Some(d.decoder.forward_t(&Tensor::cat(&[t, p], 1), train));
        }
        out.f_p = Some(f_p);
        out.f_p_aug = f_p_aug;
        Ok(out)
    }

    /// Training: track σ and, when configured, return f̃ (eq. 5). Evaluation: `None`.
    fn augment(&self, stat: &StatAug, f: &Tensor, train: bool) -> Option<Tensor> {
        if !train {
            return None;
        }
        if self.cfg.uses_stat_aug() {
            Some(stat.augment(f))
        } else {
            // Only the running σ is wanted here (edit bounds of `no-stat-aug` models).
            let _ = stat.track(f);
            None
        }
    }

    /// The loss terms of eq. 6 for a forward output, the batch's identity `labels` (`[B]`, i64,
    /// on the model's device, in `0..num_identities`) and the normalised `images` it came from.
    pub fn losses(
        &self,
        out: &ForwardOutput,
        labels: &Tensor,
        images: &Tensor,
    ) -> Result<LossTerms, ModelError> {
        self.check_labels(labels, out.f_t.size()[0])?;
        let cfg = &self.cfg;
        let l_t = losses::cross_entropy(&self.w_t.margin_logits(&out.logits_t, labels), labels);
        let l_adv = match (&out.logits_p, cfg.use_adv) {
            (Some(logits), true) => Some(losses::cross_entropy(logits, labels)),
            _ => None,
        };
        let l_h = match (&out.logits_p_fixed, cfg.use_lh) {
            (Some(logits), true) => Some(losses::uniform_cross_entropy(logits)),
            _ => None,
        };
        let weights = self.dispel.as_ref().and_then(|d| d.recon_weights.as_ref());
        let recon_loss = |r: &Tensor| losses::reconstruction(images, r, weights);
        let l_x = out.recon.as_ref().map(recon_loss);
        let l_x_aug = out.recon_aug.as_ref().map(recon_loss);
        let mut total = &l_t * cfg.lambda_t;
        for (term, weight) in [
            (&l_adv, cfg.lambda_adv()),
            (&l_h, cfg.lambda_p),
            (&l_x, cfg.lambda_x()),
            (&l_x_aug, cfg.lambda_x()),
        ] {
            if let Some(term) = term {
                total += term * weight;
            }
        }
        let accuracy = |logits: &Tensor| losses::accuracy(logits, labels);
        Ok(LossTerms {
            acc_t: accuracy(&out.logits_t),
            acc_p: out.logits_p.as_ref().map(accuracy),
            l_t,
            l_adv,
            l_h,
            l_x,
            l_x_aug,
            total,
        })
    }

    /// (f_T, f_P) of normalised images in evaluation mode (running batch-norm statistics, no
    /// augmentation). f_P is `None` for `baseline`. Call inside `tch::no_grad` unless you need
    /// gradients.
    pub fn encode(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>), ModelError> {
        self.check_images(images)?;
        let map = self.encoder.forward_t(images, false);
        let f_t = self.branch_t.forward_t(&map, images, false);
        let f_p = self
            .dispel
            .as_ref()
            .map(|d| d.branch_p.forward_t(&map, images, false));
        Ok((f_t, f_p))
    }

    /// D(f_T, f_P) in evaluation mode: normalised images `[B, 3, S, S]` (for editing).
    pub fn decode(&self, f_t: &Tensor, f_p: &Tensor) -> Result<Tensor, ModelError> {
        let d = self
            .dispel
            .as_ref()
            .ok_or(ModelError::NoDispelling("decode"))?;
        let dim = self.cfg.branch.feature_dim;
        let (st, sp) = (f_t.size(), f_p.size());
        if st.len() != 2 || st != sp || st[1] != dim {
            return Err(ModelError::Input(format!(
                "decode needs f_T and f_P of the same shape [B, {dim}], got {st:?} and {sp:?}"
            )));
        }
        Ok(d.decoder.forward_t(&Tensor::cat(&[f_t, f_p], 1), false))
    }

    /// The running per-channel σ of f_T and f_P (`[dim]` each; f_P's is `None` for `baseline`):
    /// the scale of eq. 5 at evaluation, and the unit for bounding feature edits.
    pub fn feature_std(&self) -> (Tensor, Option<Tensor>) {
        (
            self.stat_t.running_std().shallow_clone(),
            self.dispel
                .as_ref()
                .map(|d| d.stat_p.running_std().shallow_clone()),
        )
    }

    /// The trainable variables of each group present in this model, by full name, sorted.
    pub fn param_groups(&self, vs: &nn::VarStore) -> Vec<(ParamGroup, Vec<(String, Tensor)>)> {
        let vars = vs.variables();
        let mut groups = Vec::new();
        for g in ParamGroup::ALL {
            let prefix = format!("{}{}.", self.prefix, g.segment());
            let mut params: Vec<(String, Tensor)> = vars
                .iter()
                .filter(|(name, t)| name.starts_with(&prefix) && t.requires_grad())
                .map(|(name, t)| (name.clone(), t.shallow_clone()))
                .collect();
            if params.is_empty() {
                continue;
            }
            params.sort_by(|a, b| a.0.cmp(&b.0));
            groups.push((g, params));
        }
        groups
    }

    /// MACs per image of each part at the config's input size (no tensors are run).
    pub fn cost(&self) -> Cost {
        let s = self.cfg.image_size;
        let (encoder, map) = self.encoder.cost((s, s));
        let mut branches = self.branch_t.cost(map);
        let mut classifiers = self.w_t.cost();
        let mut decoder = 0;
        if let Some(d) = &self.dispel {
            branches += d.branch_p.cost(map);
            classifiers += 2 * d.w_p.cost(); // the adversary and its frozen copy
            decoder = d.decoder.cost();
        }
        let decodes = if self.cfg.uses_stat_aug() { 2 } else { 1 };
        Cost {
            encoder,
            branches,
            classifiers,
            decoder,
            encode: encoder + branches,
            train_forward: encoder + branches + classifiers + decodes * decoder,
        }
    }

    fn check_images(&self, images: &Tensor) -> Result<(), ModelError> {
        pixels::check_nchw(images)?;
        let size = images.size();
        let s = self.cfg.image_size;
        if size[2] != s || size[3] != s {
            return Err(ModelError::Input(format!(
                "images are {}×{} but the model takes {s}×{s}",
                size[2], size[3]
            )));
        }
        if images.kind() != Kind::Float {
            return Err(ModelError::Input(format!(
                "images must be normalised f32 (see `normalise`), got {:?}",
                images.kind()
            )));
        }
        Ok(())
    }

    fn check_labels(&self, labels: &Tensor, batch: i64) -> Result<(), ModelError> {
        if labels.kind() != Kind::Int64 || labels.size() != [batch] {
            return Err(ModelError::Input(format!(
                "labels must be i64 [{batch}], got {:?} {:?}",
                labels.kind(),
                labels.size()
            )));
        }
        let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
        if lo < 0 || hi >= self.num_identities {
            return Err(ModelError::Input(format!(
                "labels span {lo}..={hi}, outside 0..{} identities",
                self.num_identities
            )));
        }
        Ok(())
    }
}
