//! The model's configuration: plain serde data, with the paper's architecture and a small one for
//! CPUs as preset constructors, and the ablations of Table 2 as fields.
//!
//! One struct describes every variant, so a checkpoint's metadata (the config as JSON) is enough to
//! rebuild the model that wrote it. [`ModelConfig::validate`] is the only place that checks the
//! fields agree with each other.

use serde::{Deserialize, Serialize};

/// Everything that fixes the model's shapes and its training objective (eq. 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Preset the config started from (informational; `custom` for hand-written configs).
    pub name: String,
    /// Side of the square input image in pixels (235 in the paper).
    pub image_size: i64,
    /// The shared encoder E.
    pub encoder: EncoderConfig,
    /// The branches B_T and B_P (same shape for both).
    pub branch: BranchConfig,
    /// The decoder D; unused by the `baseline` ablation.
    pub decoder: DecoderConfig,
    /// Statistical augmentation f̃ = f + ε·σ (section 3.4).
    pub stat_aug: StatAugConfig,
    /// Train L_H (the dispelling branch fools the frozen adversary). `false` is the `no-lh` ablation.
    pub use_lh: bool,
    /// Train the adversary W_P with L_T^adv. `false` is the `no-adv` ablation, in which L_H
    /// updates W_P as well as B_P and E (section 5.2).
    pub use_adv: bool,
    /// The paper's baseline (Table 2): encoder + identity branch only, no P branch, no decoder.
    pub baseline: bool,
    /// λ_T of eq. 6.
    pub lambda_t: f64,
    /// λ_P of eq. 6 (weights both L_T^adv and L_H).
    pub lambda_p: f64,
    /// Weight of L_T^adv when it should differ from λ_P (`None`: λ_P, as in eq. 6).
    ///
    /// L_T^adv reaches only the adversary W_P (f_P is detached there), so this weight is W_P's
    /// learning rate relative to the branch that fools it. At the paper's λ_P = 0.1 the adversary
    /// learns 10× slower than W_T; over a short run it never catches up, and a freshly trained
    /// probe then finds identity in f_P that the adversary missed (see docs/TRAINING.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversary_weight: Option<f64>,
    /// Reconstruction weight per pixel: λ_X = `recon_weight` / (image_size²).
    ///
    /// The paper's λ_X = 1.81e-5 ≈ 1/235², which turns the pixel sum of eq. 4 into a per-pixel
    /// mean (summed over the 3 channels). Keeping the weight per pixel keeps the balance between
    /// reconstruction and identity losses when the resolution changes; the paper's value is
    /// `recon_weight` = 1.81e-5 · 235² ≈ 0.9996.
    pub recon_weight: f64,
    /// How W_T turns f_T into identity logits (absent in older configs and in the paper's:
    /// [`IdentityHead::Linear`]).
    #[serde(default, skip_serializing_if = "IdentityHead::is_linear")]
    pub identity_head: IdentityHead,
    /// Extra reconstruction weight on the inner face (0: every pixel alike, as in the paper).
    ///
    /// The per-pixel weights are 1 + k·g(x, y), with g a Gaussian over the eyes, nose and mouth of
    /// an aligned crop (`d2ae-ingest`'s default template), rescaled to average 1 so λ_X keeps its
    /// meaning. A short run's decoder otherwise spends itself on background and hair colour and
    /// never reconstructs the mouth, so f_P has no reason to carry a smile (docs/TRAINING.md).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recon_face_weight: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Which encoder E to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    /// Inception-ResNet-v1 (Szegedy et al. 2016) without its final average pool: at 235 px it ends
    /// in a 6×6×1792 map. Block counts are the paper's 5/10/5 by default.
    InceptionResnetV1 {
        /// Inception-ResNet-A blocks at 27×27 (at 235 px input).
        blocks_a: usize,
        /// Inception-ResNet-B blocks at 13×13.
        blocks_b: usize,
        /// Inception-ResNet-C blocks at 6×6.
        blocks_c: usize,
    },
    /// A stem conv and residual stages, each halving the resolution: for small inputs on CPUs.
    Residual {
        /// Channels of the 3×3 stem conv (stride 1).
        stem_channels: i64,
        /// One entry per stage; every stage starts with a stride-2 block.
        stages: Vec<ResidualStage>,
    },
}

/// One stage of the residual encoder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualStage {
    /// Output channels of the stage.
    pub channels: i64,
    /// Basic residual blocks (two 3×3 convs); the first one has stride 2.
    pub blocks: usize,
}

/// The branches B_T and B_P: 1×1 conv, two 3×3 convs, global average pool, FC (section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchConfig {
    /// Channels of the three convs.
    pub channels: i64,
    /// Dimension of f_T and f_P (256 in the paper).
    pub feature_dim: i64,
    /// How the last conv's map becomes the FC's input. Absent in older configs: `average`.
    #[serde(default, skip_serializing_if = "BranchPool::is_average")]
    pub pool: BranchPool,
    /// B_P's reduction when it differs from B_T's (`None`: `pool` for both).
    ///
    /// f_T should not care where a face part is; f_P has to say where, for the decoder to draw a
    /// smile at the mouth. `flatten` here with `average` for B_T keeps the paper's identity
    /// branch and lets the dispelling branch keep the layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispel_pool: Option<BranchPool>,
    /// B_P also maps the input image, average-pooled to K×K, linearly into f_P (`None`: the
    /// paper's B_P, which reads only the encoder's map).
    ///
    /// Together with [`DecoderConfig::linear_image`] this gives the dispelling path a linear
    /// autoencoder from the first step, which the convs then refine: the encoder of a short run
    /// otherwise learns what the identity loss asks for and little of the rest of the image
    /// (background, lighting, pose), so f_P cannot carry it (docs/MODEL.md). B_T never gets
    /// this path: identity must come from the encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispel_linear_input: Option<i64>,
}

impl BranchConfig {
    /// The identity branch B_T's reduction.
    pub fn identity_pool(&self) -> BranchPool {
        self.pool
    }

    /// The dispelling branch B_P's reduction.
    pub fn dispel_pool(&self) -> BranchPool {
        self.dispel_pool.unwrap_or(self.pool)
    }
}

/// The branch's reduction of its conv map before the FC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BranchPool {
    /// Global average pooling, as in the paper (section 4.2): where a part is in the crop survives
    /// only in which channels fire.
    #[default]
    Average,
    /// The whole map, flattened: the FC sees where things are (more weights: C·h·w per output).
    Flatten,
}

impl BranchPool {
    fn is_average(&self) -> bool {
        *self == BranchPool::Average
    }
}

/// The decoder D: FC → square map → stages of 3×3 convs, an upsampling before every stage but the
/// first, then a 3×3 conv to RGB and `tanh`.
///
/// With U = `stages.len() - 1` upsamplings, the map sizes are the input size halved U times with
/// rounding up: 235 → 118 → 59 → 30 → 15 → 8 → 4 for the paper (so D starts at 4×4 and each
/// bilinear upsampling goes to the next size of that chain, ending exactly at 235), and
/// 64 → 32 → 16 → 8 → 4 for `small`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// One entry per resolution, coarsest first.
    pub stages: Vec<DecoderStage>,
    /// Also map the features linearly to a full-size image, added to the conv stages' RGB output
    /// before `tanh` (absent in older configs and in the paper's: `false`).
    ///
    /// The conv stages alone learn slowly: after the `small` preset's training budget they draw
    /// a blurred mean face (16–17 dB), while a linear map of 32 principal components already
    /// reconstructs the demo's held-out faces at 24 dB. With this path the decoder starts from a
    /// linear (PCA-like) decoder and the convs learn the rest (docs/MODEL.md).
    #[serde(default, skip_serializing_if = "is_false")]
    pub linear_image: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// One resolution of the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderStage {
    /// Channels of the stage's convs.
    pub channels: i64,
    /// 3×3 conv + BN + ReLU layers at this resolution.
    pub convs: usize,
}

/// Statistical augmentation (section 3.4, eq. 5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatAugConfig {
    /// Add ε·σ noise to f_T and f_P in training and train on the augmented reconstruction too.
    /// `false` is the `no-stat-aug` ablation.
    pub enabled: bool,
    /// Momentum of the running σ estimate, as in batch norm: running ← (1−m)·running + m·σ_batch.
    pub momentum: f64,
    /// Which identity classifiers see the augmented features (the reconstruction always trains on
    /// both f and f̃). Absent in older configs, which behave as [`ClassifierNoise::All`].
    #[serde(default)]
    pub classifier_noise: ClassifierNoise,
    /// The noise's scale s in f̃ = f + s·ε·σ (absent in older configs and in the paper's: 1).
    ///
    /// The decoder is trained on f and on f̃ alike, so at s = 1 (noise as large as the features'
    /// own spread) the best decoder shrinks every feature's effect on the image towards the mean
    /// face: for a linear decoder by about a third, which alone caps the demo's reconstructions
    /// near 24 dB (docs/MODEL.md). A smaller s keeps the augmentation's purpose, a decoder that
    /// is smooth around the training features, at a fraction of the blur.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub noise_scale: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

/// The identity classifier W_T's form. The adversary W_P stays linear whatever this is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum IdentityHead {
    /// The paper's: an FC layer with bias, softmax cross-entropy on its logits (eq. 2).
    #[default]
    Linear,
    /// Cosine logits with an additive margin (CosFace): logit_j = s·(cos θ_j − m·[j = y]), θ_j the
    /// angle between f_T and W_T's row j (no bias).
    ///
    /// Verification scores pairs by the cosine of their f_T; the paper's softmax trains lengths
    /// and angles together, and with a few thousand photos of a few hundred people its f_T
    /// separates held-out people poorly. Training on the angle alone, with a margin, is what face
    /// recognisers do since 2018 (docs/TRAINING.md has the measurements on real faces).
    Cosine {
        /// s: the logits' scale (the softmax's inverse temperature).
        scale: f64,
        /// m: subtracted from the true class's cosine in training only.
        margin: f64,
    },
}

impl IdentityHead {
    pub fn is_linear(&self) -> bool {
        matches!(self, IdentityHead::Linear)
    }
}

/// Which identity classifiers are trained on the noisy f̃ instead of f (section 3.4 leaves it open:
/// "the loss functions aforementioned can be straightforwardly modified by the augmented features").
///
/// The choice matters for the adversary: noise of the features' own σ (SNR 1 per channel) hides
/// most of the identity in f̃_P from a linear W_P, so L_T^adv and L_H then work against a weak
/// adversary while the clean f_P, which evaluation uses, keeps the identity (docs/TRAINING.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierNoise {
    /// W_T on f̃_T, and the adversary W_P and L_H on f̃_P.
    #[default]
    All,
    /// W_T on f̃_T; the adversary W_P and L_H on the clean f_P.
    Identity,
    /// Both classifiers on clean features; f̃ feeds only the augmented reconstruction L̃_X.
    None,
}

/// Why a config cannot build a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has a value the model cannot use.
    #[error("invalid model config: {field}: {reason}")]
    Invalid {
        /// The offending field, as a path (`decoder.stages`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An unknown preset or ablation name.
    #[error("unknown {what} `{name}` (expected one of: {expected})")]
    UnknownName {
        /// `preset` or `ablation`.
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },
}

/// The named presets.
pub const PRESETS: &str = "small, paper";

impl ModelConfig {
    /// The paper (section 4.2): Inception-ResNet-v1 at 235×235, 3-conv branches to 256-d
    /// features, a decoder of 20 convs with 6 upsamplings (19 in the stages + the RGB conv),
    /// λ_T = 1, λ_P = 0.1, λ_X = 1.81e-5.
    pub fn paper() -> Self {
        Self {
            name: "paper".into(),
            image_size: 235,
            encoder: EncoderConfig::InceptionResnetV1 {
                blocks_a: 5,
                blocks_b: 10,
                blocks_c: 5,
            },
            branch: BranchConfig {
                channels: 512,
                feature_dim: 256,
                pool: BranchPool::Average,
                dispel_pool: None,
                dispel_linear_input: None,
            },
            decoder: DecoderConfig {
                stages: [
                    (512, 2),
                    (256, 3),
                    (256, 3),
                    (128, 3),
                    (64, 3),
                    (32, 3),
                    (16, 2),
                ]
                .map(|(channels, convs)| DecoderStage { channels, convs })
                .to_vec(),
                linear_image: false,
            },
            stat_aug: StatAugConfig {
                enabled: true,
                momentum: 0.1,
                classifier_noise: ClassifierNoise::All,
                noise_scale: 1.0,
            },
            use_lh: true,
            use_adv: true,
            baseline: false,
            lambda_t: 1.0,
            lambda_p: 0.1,
            adversary_weight: None,
            identity_head: IdentityHead::Linear,
            recon_face_weight: 0.0,
            // 1.81e-5 · 235², so λ_X = 1.81e-5 exactly as in the paper.
            recon_weight: 0.999_572_5,
        }
    }

    /// A model that trains in minutes on 2 CPU cores: 64×64 input, a 16-channel stem and three
    /// residual stages (32, 64, 128 channels; two blocks at 8×8) to an 8×8 map, 96-channel
    /// branches to 128-d features, and a decoder 4×4 → 64×64 (4 upsamplings; 128, 128, 64, 32,
    /// 16 channels) that keeps two convs at 16 and 32 px, where the mouth and eyes are resolved.
    /// About 0.29 GMAC per image for a training forward, two thirds of it in the two decodes.
    /// Same losses and weights as the paper.
    pub fn small() -> Self {
        Self {
            name: "small".into(),
            image_size: 64,
            encoder: EncoderConfig::Residual {
                stem_channels: 16,
                stages: [(32, 1), (64, 1), (128, 2)]
                    .map(|(channels, blocks)| ResidualStage { channels, blocks })
                    .to_vec(),
            },
            branch: BranchConfig {
                channels: 96,
                feature_dim: 128,
                pool: BranchPool::Average,
                dispel_pool: None,
                dispel_linear_input: None,
            },
            decoder: DecoderConfig {
                stages: [(128, 1), (128, 2), (64, 2), (32, 2), (16, 1)]
                    .map(|(channels, convs)| DecoderStage { channels, convs })
                    .to_vec(),
                linear_image: false,
            },
            stat_aug: StatAugConfig {
                enabled: true,
                momentum: 0.1,
                classifier_noise: ClassifierNoise::All,
                noise_scale: 1.0,
            },
            use_lh: true,
            use_adv: true,
            baseline: false,
            lambda_t: 1.0,
            lambda_p: 0.1,
            adversary_weight: None,
            identity_head: IdentityHead::Linear,
            recon_face_weight: 0.0,
            recon_weight: 1.0,
        }
    }

    /// A preset by name (`small`, `paper`).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name {
            "small" => Ok(Self::small()),
            "paper" => Ok(Self::paper()),
            _ => Err(ConfigError::UnknownName {
                what: "preset",
                name: name.into(),
                expected: PRESETS,
            }),
        }
    }

    /// This config with an ablation applied.
    pub fn with_ablation(mut self, ablation: Ablation) -> Self {
        match ablation {
            Ablation::None => {}
            Ablation::NoLh => self.use_lh = false,
            Ablation::NoAdv => self.use_adv = false,
            Ablation::NoStatAug => self.stat_aug.enabled = false,
            Ablation::Baseline => self.baseline = true,
        }
        self
    }

    /// The weight of L_T^adv: [`ModelConfig::adversary_weight`], else λ_P.
    pub fn lambda_adv(&self) -> f64 {
        self.adversary_weight.unwrap_or(self.lambda_p)
    }

    /// λ_X of eq. 6: `recon_weight` per pixel of the input resolution.
    pub fn lambda_x(&self) -> f64 {
        self.recon_weight / (self.image_size * self.image_size) as f64
    }

    /// Whether the model has the P branch, W_P and the decoder (everything but `baseline`).
    pub fn has_dispelling(&self) -> bool {
        !self.baseline
    }

    /// Whether training adds ε·σ noise and the L̃_X term.
    pub fn uses_stat_aug(&self) -> bool {
        self.stat_aug.enabled && !self.baseline
    }

    /// Map sizes of the decoder, coarsest first, ending at `image_size`.
    pub fn decoder_sizes(&self) -> Vec<i64> {
        let mut sizes = vec![self.image_size];
        for _ in 1..self.decoder.stages.len() {
            let last = *sizes.last().expect("non-empty");
            sizes.push((last + 1) / 2);
        }
        sizes.reverse();
        sizes
    }

    /// Check the fields agree; every constructor of [`crate::model::D2ae`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if let IdentityHead::Cosine { scale, margin } = self.identity_head {
            if !(scale.is_finite() && scale > 0.0) {
                return invalid("identity_head.scale", format!("{scale} is not positive"));
            }
            if !(0.0..1.0).contains(&margin) {
                return invalid("identity_head.margin", format!("{margin} is not in [0, 1)"));
            }
        }
        if self.image_size < 16 {
            return invalid("image_size", format!("{} is below 16 px", self.image_size));
        }
        match &self.encoder {
            EncoderConfig::InceptionResnetV1 { .. } if self.image_size < 75 => {
                return invalid(
                    "image_size",
                    format!(
                        "Inception-ResNet-v1 needs at least 75 px, got {}",
                        self.image_size
                    ),
                );
            }
            EncoderConfig::Residual {
                stem_channels,
                stages,
            } => {
                if *stem_channels < 1 {
                    return invalid("encoder.stem_channels", "must be positive".into());
                }
                if stages.is_empty() || stages.iter().any(|s| s.channels < 1 || s.blocks < 1) {
                    return invalid(
                        "encoder.stages",
                        "needs at least one stage, each with positive channels and blocks".into(),
                    );
                }
                if self.image_size >> stages.len() < 1 {
                    return invalid(
                        "encoder.stages",
                        format!(
                            "{} stride-2 stages do not fit {} px",
                            stages.len(),
                            self.image_size
                        ),
                    );
                }
            }
            _ => {}
        }
        if self.branch.channels < 1 || self.branch.feature_dim < 1 {
            return invalid("branch", "channels and feature_dim must be positive".into());
        }
        if let Some(k) = self.branch.dispel_linear_input {
            if k < 1 || k > self.image_size {
                return invalid(
                    "branch.dispel_linear_input",
                    format!(
                        "{k} is not a size between 1 and the image's {}",
                        self.image_size
                    ),
                );
            }
        }
        if !self.baseline {
            let stages = &self.decoder.stages;
            if stages.is_empty() || stages.iter().any(|s| s.channels < 1) {
                return invalid(
                    "decoder.stages",
                    "needs at least one stage with positive channels".into(),
                );
            }
            if self.decoder_sizes()[0] < 2 && stages.len() > 1 {
                return invalid(
                    "decoder.stages",
                    format!(
                        "{} upsamplings start below 2×2 for {} px",
                        stages.len() - 1,
                        self.image_size
                    ),
                );
            }
        }
        for (field, v) in [
            ("lambda_t", self.lambda_t),
            ("lambda_p", self.lambda_p),
            ("adversary_weight", self.lambda_adv()),
            ("recon_weight", self.recon_weight),
            ("recon_face_weight", self.recon_face_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return invalid(field, format!("{v} is not a finite non-negative weight"));
            }
        }
        let s = self.stat_aug.noise_scale;
        if !(s.is_finite() && s >= 0.0) {
            return invalid(
                "stat_aug.noise_scale",
                format!("{s} is not a finite scale ≥ 0"),
            );
        }
        let m = self.stat_aug.momentum;
        if !(m > 0.0 && m <= 1.0) {
            return invalid("stat_aug.momentum", format!("{m} is not in (0, 1]"));
        }
        Ok(())
    }
}

/// The ablations of the paper's section 5 / Table 2, by the names the CLIs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Ablation {
    /// The full method.
    #[default]
    None,
    /// Without L_H: the P branch no longer tries to fool the adversary.
    NoLh,
    /// Without L_T^adv: only L_H trains the identity classifier W_P (section 5.2), which it can
    /// satisfy by making W_P's outputs uninformative.
    NoAdv,
    /// Without statistical augmentation (no noise, no L̃_X).
    NoStatAug,
    /// Encoder + identity branch only: no P branch, no decoder.
    Baseline,
}

impl std::str::FromStr for Ablation {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as clap::ValueEnum>::from_str(s, false).map_err(|_| ConfigError::UnknownName {
            what: "ablation",
            name: s.into(),
            expected: "none, no-lh, no-adv, no-stat-aug, baseline",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_decoder_reaches_235_from_4x4_in_six_upsamplings_and_20_convs() {
        let cfg = ModelConfig::paper();
        assert_eq!(cfg.decoder_sizes(), vec![4, 8, 15, 30, 59, 118, 235]);
        let convs: usize = cfg.decoder.stages.iter().map(|s| s.convs).sum();
        assert_eq!(convs + 1, 20, "stage convs + the RGB conv");
        assert!((cfg.lambda_x() - 1.81e-5).abs() < 1e-12);
        cfg.validate().unwrap();
    }

    #[test]
    fn small_decoder_is_4_to_64() {
        let cfg = ModelConfig::small();
        assert_eq!(cfg.decoder_sizes(), vec![4, 8, 16, 32, 64]);
        assert!((cfg.lambda_x() - 1.0 / 4096.0).abs() < 1e-15);
        cfg.validate().unwrap();
    }

    #[test]
    fn ablations_by_name_set_one_field() {
        let base = ModelConfig::small();
        let no_lh = base.clone().with_ablation("no-lh".parse().unwrap());
        assert!(!no_lh.use_lh && no_lh.use_adv && no_lh.stat_aug.enabled);
        let no_adv = base.clone().with_ablation("no-adv".parse().unwrap());
        assert!(!no_adv.use_adv && no_adv.use_lh);
        let no_aug = base.clone().with_ablation("no-stat-aug".parse().unwrap());
        assert!(!no_aug.uses_stat_aug());
        let baseline = base.clone().with_ablation("baseline".parse().unwrap());
        assert!(!baseline.has_dispelling() && !baseline.uses_stat_aug());
        let err = "no-such".parse::<Ablation>().unwrap_err().to_string();
        assert!(err.contains("no-such") && err.contains("no-lh"), "{err}");
    }

    #[test]
    fn config_round_trips_through_json_and_rejects_bad_values() {
        let cfg = ModelConfig::paper().with_ablation(Ablation::NoAdv);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"kind\":\"inception_resnet_v1\""), "{json}");
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);

        let mut bad = ModelConfig::small();
        bad.stat_aug.momentum = 0.0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("stat_aug.momentum"), "{err}");
        let mut bad = ModelConfig::small();
        bad.decoder.stages = [DecoderStage {
            channels: 8,
            convs: 1,
        }; 8]
            .to_vec();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("decoder.stages"), "{err}");
        assert!(ModelConfig::preset("huge").is_err());
    }

    #[test]
    fn adversary_weight_defaults_to_lambda_p_and_is_optional_in_json() {
        let cfg = ModelConfig::small();
        assert_eq!(cfg.lambda_adv(), cfg.lambda_p);
        let json = serde_json::to_string(&cfg).unwrap();
        // Configs written before the field existed (and the paper's) do not name it.
        assert!(!json.contains("adversary_weight"), "{json}");
        let mut fast = cfg.clone();
        fast.adversary_weight = Some(2.0);
        assert_eq!(fast.lambda_adv(), 2.0);
        let back: ModelConfig =
            serde_json::from_str(&serde_json::to_string(&fast).unwrap()).unwrap();
        assert_eq!(back, fast);
        fast.adversary_weight = Some(-1.0);
        let err = fast.validate().unwrap_err().to_string();
        assert!(err.contains("adversary_weight"), "{err}");
    }

    #[test]
    fn classifier_noise_is_all_in_configs_written_before_it() {
        let cfg = ModelConfig::small();
        let mut json: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        json["stat_aug"]
            .as_object_mut()
            .unwrap()
            .remove("classifier_noise");
        let old: ModelConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.stat_aug.classifier_noise, ClassifierNoise::All);
        let mut clean = cfg.clone();
        clean.stat_aug.classifier_noise = ClassifierNoise::Identity;
        let text = serde_json::to_string(&clean).unwrap();
        assert!(text.contains("\"classifier_noise\":\"identity\""), "{text}");
        assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), clean);
    }

    #[test]
    fn identity_head_is_linear_unless_named_and_the_cosine_one_is_checked() {
        let cfg = ModelConfig::small();
        let json = serde_json::to_string(&cfg).unwrap();
        // Configs written before the field existed (and the paper's) do not name it.
        assert!(!json.contains("identity_head"), "{json}");
        let mut cos = cfg.clone();
        cos.identity_head = IdentityHead::Cosine {
            scale: 30.0,
            margin: 0.35,
        };
        let text = serde_json::to_string(&cos).unwrap();
        assert!(
            text.contains(r#""identity_head":{"kind":"cosine","scale":30.0,"margin":0.35}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), cos);
        cos.validate().unwrap();
        for (scale, margin, field) in [
            (0.0, 0.2, "identity_head.scale"),
            (16.0, 1.0, "identity_head.margin"),
            (16.0, -0.1, "identity_head.margin"),
        ] {
            cos.identity_head = IdentityHead::Cosine { scale, margin };
            let err = cos.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
