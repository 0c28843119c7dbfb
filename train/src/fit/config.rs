//! The training configuration: defaults (the paper's), then a TOML file, then the command line.
//!
//! [`ConfigOverrides`] is both the TOML file format and the set of command-line flags, so every key
//! of the file can be given on the command line with the same name (`lr = 0.01` ⇔ `--lr 0.01`).
//! [`TrainConfig`] is the checked, complete result; it is saved as `config.json` in the run
//! directory and inside every checkpoint.

use super::optim::OptimizerKind;
use crate::model::{BranchPool, ClassifierNoise};
use serde::{Deserialize, Serialize};

/// Every training setting, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dataset URL (a directory or bucket prefix with `index.json`).
    pub data: String,
    /// Run directory URL.
    pub out: String,
    /// Endpoint of an S3-compatible server, for `s3://` data or run directories. Saved (in
    /// `config.json` and checkpoints) with any password replaced by `***`.
    #[serde(serialize_with = "serialize_redacted")]
    pub endpoint: Option<String>,
    /// Model preset: `small` or `paper`.
    pub preset: String,
    /// `none`, `no-lh`, `no-adv`, `no-stat-aug` or `baseline`.
    pub ablation: String,
    /// Split to train on.
    pub train_split: String,
    /// Split to validate on (skipped when the dataset has none).
    pub val_split: String,
    /// Epochs to train (ignored when `steps` is set).
    pub epochs: u64,
    /// Optimizer steps to train, overriding `epochs`.
    pub steps: Option<u64>,
    /// Images per optimizer step, over all ranks.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate factor applied every `lr_decay_epochs`.
    pub lr_decay: f64,
    /// Epochs between learning-rate decays.
    pub lr_decay_epochs: u64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD weight decay (L2).
    pub weight_decay: f64,
    /// The update rule (absent in configs written before Adam existed: SGD).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// The decoder's learning rate as a multiple of `lr` (1 in the paper).
    #[serde(default = "one")]
    pub decoder_lr_mult: f64,
    /// The adversary W_P's learning rate as a multiple of `lr` (1 in the paper).
    #[serde(default = "one")]
    pub adversary_lr_mult: f64,
    /// Seed of model initialisation, data order, augmentation and statistical augmentation.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:K`.
    pub device: String,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept (0: all).
    pub keep_checkpoints: usize,
    /// Steps between validations (0: only at the end).
    pub val_every: u64,
    /// Batches per validation (0: the whole split).
    pub val_batches: u64,
    /// Input side in pixels (defaults to the preset's).
    pub image_size: u32,
    /// Decode threads of the loader.
    pub decode_threads: usize,
    /// Random horizontal flips.
    pub hflip: bool,
    /// Largest random translation in pixels.
    pub max_shift: u32,
    /// Sample shuffle buffer of the loader.
    pub shuffle_buffer: usize,
    /// bf16 autocast: `auto` (on for CUDA), `on` or `off`.
    pub bf16: String,
    /// Threads libtorch uses on the CPU (0: its default).
    pub threads: usize,
    /// Loss weights and feature size; `None` keeps the preset's value.
    pub lambda_t: Option<f64>,
    pub lambda_p: Option<f64>,
    pub lambda_adv: Option<f64>,
    pub lambda_x: Option<f64>,
    pub feature_dim: Option<i64>,
    /// Which identity classifiers see the statistically augmented features; `None` keeps the
    /// preset's.
    pub classifier_noise: Option<ClassifierNoise>,
    /// Extra reconstruction weight on the inner face; `None` keeps the preset's (0).
    pub recon_face_weight: Option<f64>,
    /// The branches' reduction before their FC; `None` keeps the preset's (average).
    pub branch_pool: Option<BranchPool>,
    /// The dispelling branch's reduction when it differs from `branch_pool`; `None` keeps the
    /// preset's (the same as B_T's).
    pub dispel_pool: Option<BranchPool>,
    /// Whether the decoder also maps the features linearly to the image; `None` keeps the
    /// preset's (off).
    #[serde(default)]
    pub linear_image: Option<bool>,
    /// B_P's linear read of the input pooled to K×K; `None` keeps the preset's (none).
    #[serde(default)]
    pub dispel_linear_input: Option<i64>,
    /// Scale of the statistical-augmentation noise; `None` keeps the preset's (1, eq. 5).
    #[serde(default)]
    pub stat_aug_noise: Option<f64>,
    /// W_T's form; `None` keeps the preset's (linear, the paper's).
    #[serde(default)]
    pub identity_head: Option<IdentityHeadKind>,
    /// The cosine head's scale s; `None`: 16.
    #[serde(default)]
    pub cosine_scale: Option<f64>,
    /// The cosine head's margin m; `None`: 0.2.
    #[serde(default)]
    pub cosine_margin: Option<f64>,
}

/// `--identity-head`: the form of W_T ([`crate::model::IdentityHead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum IdentityHeadKind {
    /// The paper's FC layer and softmax.
    Linear,
    /// Cosine logits with an additive margin (CosFace), scale --cosine-scale, margin --cosine-margin.
    Cosine,
}

/// The cosine head's scale when `--cosine-scale` is not given.
pub const DEFAULT_COSINE_SCALE: f64 = 16.0;
/// The cosine head's margin when `--cosine-margin` is not given.
pub const DEFAULT_COSINE_MARGIN: f64 = 0.2;

fn one() -> f64 {
    1.0
}

impl TrainConfig {
    /// The paper's settings (section 4.2) for `data` and `out`.
    pub fn paper_defaults(data: String, out: String) -> TrainConfig {
        TrainConfig {
            data,
            out,
            endpoint: None,
            preset: "paper".into(),
            ablation: "none".into(),
            train_split: "train".into(),
            val_split: "val".into(),
            epochs: 31,
            steps: None,
            batch_size: 192,
            lr: 0.01,
            lr_decay: 0.1,
            lr_decay_epochs: 10,
            momentum: 0.9,
            weight_decay: 5e-4,
            optimizer: OptimizerKind::Sgd,
            decoder_lr_mult: 1.0,
            adversary_lr_mult: 1.0,
            seed: 0,
            device: "cpu".into(),
            checkpoint_every: 1000,
            keep_checkpoints: 3,
            val_every: 1000,
            val_batches: 20,
            image_size: 0,
            decode_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            hflip: true,
            max_shift: 4,
            shuffle_buffer: 2048,
            bf16: "auto".into(),
            threads: 0,
            lambda_t: None,
            lambda_p: None,
            lambda_adv: None,
            lambda_x: None,
            feature_dim: None,
            classifier_noise: None,
            recon_face_weight: None,
            branch_pool: None,
            dispel_pool: None,
            linear_image: None,
            dispel_linear_input: None,
            stat_aug_noise: None,
            identity_head: None,
            cosine_scale: None,
            cosine_margin: None,
        }
    }

    /// Learning rate for `epoch` (step decay, section 4.2).
    pub fn lr_at(&self, epoch: u64) -> f64 {
        let decays = epoch.checked_div(self.lr_decay_epochs).unwrap_or(0);
        self.lr * self.lr_decay.powi(decays as i32)
    }

    /// Check values a typo could make meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !["small", "paper"].contains(&self.preset.as_str()) {
            return Err(format!("unknown preset {:?} (small or paper)", self.preset));
        }
        if !["none", "no-lh", "no-adv", "no-stat-aug", "baseline"].contains(&self.ablation.as_str())
        {
            return Err(format!(
                "unknown ablation {:?} (none, no-lh, no-adv, no-stat-aug, baseline)",
                self.ablation
            ));
        }
        if !["auto", "on", "off"].contains(&self.bf16.as_str()) {
            return Err(format!("bf16 must be auto, on or off, not {:?}", self.bf16));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr must be positive, not {}", self.lr));
        }
        if self.epochs == 0 && self.steps.is_none() {
            return Err("train for at least one epoch or step".into());
        }
        Ok(())
    }
}

/// Settings given in a TOML file or on the command line; unset ones keep their default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    /// Model preset: `small` (64 px, minutes on a CPU) or `paper` (Inception-ResNet at 235 px).
    #[arg(long)]
    pub preset: Option<String>,
    /// Train an ablation: none, no-lh, no-adv, no-stat-aug or baseline (Table 1 and 2 of the paper).
    #[arg(long)]
    pub ablation: Option<String>,
    /// Split to train on [default: train].
    #[arg(long)]
    pub train_split: Option<String>,
    /// Split to validate on [default: val].
    #[arg(long)]
    pub val_split: Option<String>,
    /// Epochs to train [default: 31, the paper's].
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Optimizer steps to train; overrides --epochs.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step over all ranks [default: 192, the paper's].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate [default: 0.01].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate factor every --lr-decay-epochs [default: 0.1].
    #[arg(long)]
    pub lr_decay: Option<f64>,
    /// Epochs between learning-rate decays [default: 10].
    #[arg(long)]
    pub lr_decay_epochs: Option<u64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// SGD weight decay [default: 5e-4].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// The decoder's learning rate as a multiple of --lr [default: 1, the paper's]. The decoder
    /// learns only from L_X, whose paper weight λ_X ≈ 1/(pixels) makes its gradients tiny: on
    /// short runs a faster decoder reconstructs more than colour blobs (docs/TRAINING.md).
    #[arg(long)]
    pub decoder_lr_mult: Option<f64>,
    /// The adversary W_P's learning rate as a multiple of --lr [default: 1, the paper's]. With
    /// Adam, L_T^adv's weight does not set the adversary's speed (Adam normalises it away); a
    /// lagging adversary lets L_H fool it while a fresh classifier still reads identity off f_P.
    #[arg(long)]
    pub adversary_lr_mult: Option<f64>,
    /// The update rule: sgd (momentum, as the paper's schedule implies) or adam (per-parameter
    /// step sizes: the decoder and the adversary learn at full speed whatever λ_X and λ_adv;
    /// use a learning rate near 1e-3) [default: sgd].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Seed for initialisation, data order and noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device: cpu, cuda or cuda:K [default: cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// Steps between checkpoints; 0 writes one only at the end [default: 1000].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints to keep; 0 keeps all [default: 3].
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Steps between validations; 0 validates only at the end [default: 1000].
    #[arg(long)]
    pub val_every: Option<u64>,
    /// Batches per validation; 0 uses the whole split [default: 20].
    #[arg(long)]
    pub val_batches: Option<u64>,
    /// Input side in pixels [default: the preset's: 64 small, 235 paper].
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Image decode threads [default: all cores].
    #[arg(long)]
    pub decode_threads: Option<usize>,
    /// Random horizontal flips [default: true].
    #[arg(long)]
    pub hflip: Option<bool>,
    /// Largest random translation in pixels [default: 4].
    #[arg(long)]
    pub max_shift: Option<u32>,
    /// Sample shuffle buffer size [default: 2048].
    #[arg(long)]
    pub shuffle_buffer: Option<usize>,
    /// bf16 autocast: auto (on with CUDA), on or off [default: auto].
    #[arg(long)]
    pub bf16: Option<String>,
    /// libtorch CPU threads; 0 keeps libtorch's default [default: 0].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Weight of L_T [default: the preset's, 1].
    #[arg(long)]
    pub lambda_t: Option<f64>,
    /// Weight of L_T^adv + L_H [default: the preset's, 0.1].
    #[arg(long)]
    pub lambda_p: Option<f64>,
    /// Weight of L_T^adv alone, i.e. the adversary W_P's learning speed [default: λ_P, as in
    /// eq. 6]. Short runs need a faster adversary than the paper's 0.1 (docs/TRAINING.md).
    #[arg(long)]
    pub lambda_adv: Option<f64>,
    /// Weight of L_X + L̃_X [default: the preset's].
    #[arg(long)]
    pub lambda_x: Option<f64>,
    /// Size of f_T and f_P [default: the preset's, 256].
    #[arg(long)]
    pub feature_dim: Option<i64>,
    /// Which identity classifiers train on the statistically augmented features (eq. 5): `all`
    /// (W_T and the adversary W_P), `identity` (W_T only; the adversary and L_H see the clean
    /// f_P) or `none` (the noise feeds only the augmented reconstruction) [default: the preset's].
    #[arg(long, value_enum)]
    pub classifier_noise: Option<ClassifierNoise>,
    /// Extra reconstruction weight k on the inner face (eyes, nose, mouth of an aligned crop):
    /// pixel weights 1 + k·Gaussian, averaging 1 [default: 0, every pixel alike as in the paper].
    /// Makes a short run reconstruct the mouth, so f_P learns expressions (docs/TRAINING.md).
    #[arg(long)]
    pub recon_face_weight: Option<f64>,
    /// How each branch reduces its conv map before the FC: average (global average pooling, the
    /// paper's) or flatten (the FC sees where things are in the crop) [default: the preset's].
    #[arg(long, value_enum)]
    pub branch_pool: Option<BranchPool>,
    /// The dispelling branch B_P's reduction, overriding --branch-pool for B_P only: `flatten`
    /// with B_T's `average` keeps the paper's identity branch and lets f_P say where things are
    /// (a smile at the mouth) [default: the same as --branch-pool].
    #[arg(long, value_enum)]
    pub dispel_pool: Option<BranchPool>,
    /// The decoder also maps the features linearly to a full-size image that its conv stages
    /// refine (`true`), instead of the paper's conv stages alone: on short runs the conv stages
    /// alone draw a blurred mean face (docs/MODEL.md) [default: the preset's, false].
    #[arg(long)]
    pub linear_image: Option<bool>,
    /// The dispelling branch B_P also maps the input image, average-pooled to K×K, linearly into
    /// f_P; 0 turns it off. With --linear-image the dispelling path is a linear autoencoder from
    /// the first step that the convs refine (docs/MODEL.md) [default: the preset's, off].
    #[arg(long)]
    pub dispel_linear_input: Option<i64>,
    /// Scale s of the statistical-augmentation noise, f̃ = f + s·ε·σ: the paper's 1 makes the
    /// decoder, trained on f and f̃ alike, shrink every reconstruction towards the mean face
    /// (docs/MODEL.md) [default: the preset's, 1].
    #[arg(long)]
    pub stat_aug_noise: Option<f64>,
    /// The identity classifier W_T: `linear` (the paper's FC and softmax) or `cosine` (cosine
    /// logits with an additive margin, CosFace; f_T is then trained on the angle that
    /// verification scores; the adversary W_P stays linear) [default: the preset's, linear].
    #[arg(long, value_enum)]
    pub identity_head: Option<IdentityHeadKind>,
    /// The cosine head's scale s (logits are s·cos θ) [default: 16].
    #[arg(long)]
    pub cosine_scale: Option<f64>,
    /// The cosine head's margin m, taken off the true class's cosine in training [default: 0.2].
    #[arg(long)]
    pub cosine_margin: Option<f64>,
    /// Endpoint of an S3-compatible server (e.g. http://127.0.0.1:9000).
    #[arg(long)]
    pub endpoint: Option<String>,
}

impl ConfigOverrides {
    /// Parse a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<ConfigOverrides, toml::de::Error> {
        toml::from_str(text)
    }

    /// Apply every set value to `cfg`.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { cfg.$field = v.clone(); } )* };
        }
        set!(
            preset,
            ablation,
            train_split,
            val_split,
            epochs,
            batch_size,
            lr,
            lr_decay,
            lr_decay_epochs,
            momentum,
            weight_decay,
            decoder_lr_mult,
            adversary_lr_mult,
            optimizer,
            seed,
            device,
            checkpoint_every,
            keep_checkpoints,
            val_every,
            val_batches,
            image_size,
            decode_threads,
            hflip,
            max_shift,
            shuffle_buffer,
            bf16,
            threads
        );
        macro_rules! set_opt {
            ($($field:ident),*) => { $( if self.$field.is_some() { cfg.$field = self.$field.clone(); } )* };
        }
        set_opt!(
            steps,
            lambda_t,
            lambda_p,
            lambda_adv,
            lambda_x,
            feature_dim,
            classifier_noise,
            recon_face_weight,
            branch_pool,
            dispel_pool,
            linear_image,
            dispel_linear_input,
            stat_aug_noise,
            identity_head,
            cosine_scale,
            cosine_margin,
            endpoint
        );
    }
}

/// Serialise an optional URL with its password redacted ([`d2ae_shard::redact_credentials`]).
fn serialize_redacted<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&d2ae_shard::redact_credentials(u)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_endpoint_is_never_saved() {
        let mut cfg = TrainConfig::paper_defaults("s3://b/d".into(), "o".into());
        cfg.endpoint = Some("http://ann:s3cret@127.0.0.1:9000".into());
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("http://ann:***@127.0.0.1:9000"), "{json}");
        // The run itself still uses the real endpoint.
        assert_eq!(
            cfg.endpoint.as_deref(),
            Some("http://ann:s3cret@127.0.0.1:9000")
        );
    }

    #[test]
    fn file_then_command_line_override_defaults() {
        let mut cfg = TrainConfig::paper_defaults("d".into(), "o".into());
        let file =
            ConfigOverrides::from_toml("lr = 0.05\nbatch_size = 32\npreset = \"small\"").unwrap();
        let cli = ConfigOverrides {
            lr: Some(0.1),
            ..Default::default()
        };
        file.apply(&mut cfg);
        cli.apply(&mut cfg);
        assert_eq!(cfg.lr, 0.1);
        assert_eq!(cfg.batch_size, 32);
        assert_eq!(cfg.preset, "small");
        assert_eq!(cfg.momentum, 0.9);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(ConfigOverrides::from_toml("learning_rate = 0.1").is_err());
        let mut cfg = TrainConfig::paper_defaults("d".into(), "o".into());
        cfg.ablation = "no-thing".into();
        assert!(cfg.validate().unwrap_err().contains("ablation"));
    }

    #[test]
    fn learning_rate_decays_every_ten_epochs() {
        let cfg = TrainConfig::paper_defaults("d".into(), "o".into());
        assert_eq!(cfg.lr_at(0), 0.01);
        assert!((cfg.lr_at(10) - 0.001).abs() < 1e-12);
        assert!((cfg.lr_at(30) - 1e-5).abs() < 1e-15);
    }
}
