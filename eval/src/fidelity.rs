//! `d2ae-eval fidelity`: does the decoder carry the face, and do swaps and edits do what the
//! paper's figures show? Four numbers on held-out images, each beside a reference that says what
//! it would be without the effect it measures:
//!
//! 1. **Reconstruction**: the mean PSNR of x against D(E(x)), beside the PSNR of predicting every
//!    image by the training split's mean image (the floor an autoencoder that learned nothing
//!    reaches), with the per-image spread (std, min, 10th percentile).
//! 2. **Identity swap** (`identity_from_t`): for random ordered pairs (A, B) of different
//!    identities, x_s = D(f_T of B, f_P of A) is re-encoded; the share of pairs whose f_T(x_s) is
//!    closer (cosine) to B's identity mean than to A's. The reference is the same share for the
//!    plain reconstruction of B: what re-encoding a decoded face keeps of identity at all.
//! 3. **Attributes from f_P** (`attributes_from_p`): the f_P attribute SVMs applied to f_P(x_s),
//!    scored against A's labels, divided by the same SVMs' accuracy on A's own image: 1 when the
//!    swap keeps every attribute f_P carries.
//! 4. **Edits** (`flip_rate`): per attribute, every image's f_P is moved along the SVM's unit
//!    direction towards the other class by the largest edit `edit` allows (Mahalanobis length
//!    `max_sigma` under the learned σ of f_P), decoded with f_T unchanged, re-encoded, and the
//!    SVM's decision checked for a sign change. The control is the same check after a plain
//!    decode → re-encode: flips that come from the round trip, not from the edit.
//!
//! Everything runs in evaluation mode and encodes without flip test-time augmentation: the
//! decoder sees exactly the features one image gives. Images are read through the loader at the
//! model's input size without augmentation, in batches, so memory holds the features of the
//! split (four `[N, D]` matrices) and one batch of images, whatever the split's size.
//!
//! PSNR is computed between u8 images (`[0, 255]`, peak 255): the input as the loader gives it
//! against the reconstruction denormalised and rounded to u8, and the mean image rounded to u8.
//! Identical images have an infinite PSNR; each image's value is capped at [`PSNR_CAP_DB`] so the
//! mean stays finite.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_loader::{Batch, BlockingLoader, LoaderConfig};
use d2ae_metrics::table::{percent, Align, Table};
use d2ae_train::D2ae;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::attributes::{is_kth, Directions, KindDirections};
use crate::edit::{alpha_max, attribute_edit, short_name, DEFAULT_MAX_SIGMA};
use crate::features::FeatureKind;
use crate::grid::{planar_to_image, Cell, Grid};
use crate::model_io::{self, decode_u8, encode_u8, images_tensor, to_vec_f32};
use crate::progress;

/// An image's PSNR never counts above this (identical images would be infinite).
pub const PSNR_CAP_DB: f64 = 100.0;

/// Swap pairs drawn unless told otherwise (`--swap-pairs`, and `report`).
pub const DEFAULT_SWAP_PAIRS: usize = 1000;

/// Images per forward pass unless told otherwise (`--batch-size`, and `report`).
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Images in the report's and `--grid`'s figure.
pub const GRID_IMAGES: usize = 8;

/// `d2ae-eval fidelity`
#[derive(Debug, Clone, Args)]
pub struct FidelityArgs {
    /// Checkpoint: a step file, a run directory (its newest checkpoint) or a bucket URL.
    #[arg(long)]
    pub checkpoint: String,
    /// Dataset (directory or bucket URL with index.json).
    #[arg(long)]
    pub data: String,
    /// Held-out split the metrics are computed on.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Split whose per-pixel mean image is the PSNR floor.
    #[arg(long, default_value = "train")]
    pub mean_split: String,
    /// f_P attribute SVMs from `d2ae-eval attributes --save-directions` (without it: no
    /// attribute or edit metrics).
    #[arg(long)]
    pub directions: Option<PathBuf>,
    /// Attributes the summary values average over, comma-separated (default: all in the
    /// directions file). Every attribute is still reported on its own.
    #[arg(long, value_delimiter = ',')]
    pub attributes: Vec<String>,
    /// Ordered (A, B) pairs of different identities for the swap metrics.
    #[arg(long, default_value_t = DEFAULT_SWAP_PAIRS)]
    pub swap_pairs: usize,
    /// Largest edit, as the Mahalanobis length ‖Δ/σ‖ under the learned σ of f_P (as `edit`).
    #[arg(long, default_value_t = DEFAULT_MAX_SIGMA)]
    pub max_sigma: f64,
    /// Seed of the swap pairs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use at most this many images of the split (its first, in index order).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Also write a PNG: inputs, reconstructions and one swap row.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:K.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// S3-compatible endpoint for s3:// URLs.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What the computation reads and how much of it; the CLI and `report` fill it.
#[derive(Debug, Clone)]
pub struct FidelityConfig {
    pub data: String,
    pub split: String,
    /// Score only every k-th image of `split` (the last of each k, as `attributes` holds out
    /// training rows when a dataset has no held-out split); those images are then left out of
    /// the mean image when `mean_split` is the same split.
    pub hold_out_every: Option<usize>,
    pub mean_split: String,
    /// The summary values' attributes (empty: all).
    pub attributes: Vec<String>,
    pub swap_pairs: usize,
    pub max_sigma: f64,
    pub seed: u64,
    pub max_images: Option<usize>,
    pub batch_size: usize,
    pub endpoint: Option<String>,
    pub progress: bool,
}

impl FidelityConfig {
    /// The command line's settings.
    pub fn from_args(args: &FidelityArgs) -> FidelityConfig {
        FidelityConfig {
            data: args.data.clone(),
            split: args.split.clone(),
            hold_out_every: None,
            mean_split: args.mean_split.clone(),
            attributes: args.attributes.clone(),
            swap_pairs: args.swap_pairs,
            max_sigma: args.max_sigma,
            seed: args.seed,
            max_images: args.max_images,
            batch_size: args.batch_size,
            endpoint: args.endpoint.clone(),
            progress: true,
        }
    }
}

/// The result (`--json`, `--out`, and `fidelity` in report.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityOutput {
    pub reconstruction: ReconstructionFidelity,
    pub swap: SwapFidelity,
    pub edit: EditFidelity,
}

/// PSNR of D(E(x)) against x, and of the mean image against x.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionFidelity {
    /// Mean over images of PSNR(x, D(E(x))), dB.
    pub psnr_db: f64,
    /// Mean over images of PSNR(x, mean image of `mean_image_split`), dB; `None` without that
    /// split.
    pub psnr_db_mean_image: Option<f64>,
    /// Population standard deviation of the per-image PSNR.
    pub psnr_db_std: f64,
    pub psnr_db_min: f64,
    /// 10th percentile (nearest rank) of the per-image PSNR.
    pub psnr_db_p10: f64,
    /// Images scored.
    pub images: usize,
    /// The split scored (with how rows were held out, if they were).
    pub split: String,
    pub mean_image_split: String,
    /// Images averaged into the mean image.
    pub mean_image_images: usize,
}

/// The identity swap x_s = D(f_T of B, f_P of A), re-encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapFidelity {
    /// Share of pairs with cos(f_T(x_s), mean_B) > cos(f_T(x_s), mean_A); `None` with fewer
    /// than two identities.
    pub identity_from_t: Option<f64>,
    /// The same share for the plain reconstruction of B (the reference).
    pub identity_from_t_reconstruction: Option<f64>,
    pub pairs: usize,
    /// Identities among the scored images.
    pub identities: usize,
    pub seed: u64,
    /// mean(accuracy on swaps) / mean(accuracy on originals) over `attributes`.
    pub attributes_from_p: Option<f64>,
    /// The attributes `attributes_from_p` and the edit's `flip_rate` average over.
    pub attributes: Vec<String>,
    pub per_attribute: Vec<SwapAttribute>,
}

/// One attribute's SVM accuracy against A's labels, over pairs where A's label is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapAttribute {
    pub name: String,
    /// On f_P(x_s).
    pub accuracy_swapped: f64,
    /// On f_P of A's own image.
    pub accuracy_original: f64,
    /// `accuracy_swapped / accuracy_original` (`None` when the latter is 0).
    pub ratio: Option<f64>,
    pub pairs: usize,
}

/// Attribute edits of the largest allowed size, re-encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditFidelity {
    /// Mean of `per_attribute` over the chosen attributes.
    pub flip_rate: Option<f64>,
    pub max_sigma: f64,
    /// Share of images whose SVM decision changes sign after the edit.
    pub per_attribute: BTreeMap<String, f64>,
    /// Mean of `control_per_attribute` over the chosen attributes.
    pub control_flip_rate: Option<f64>,
    /// Share of images whose SVM decision changes sign after decode → re-encode alone.
    pub control_per_attribute: BTreeMap<String, f64>,
    pub images: usize,
}

/// PSNR of two equally long u8 buffers, dB (peak 255); infinite when they are identical.
pub fn psnr_db(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "PSNR of buffers of different lengths");
    let sq: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = u64::from(x.abs_diff(y));
            d * d
        })
        .sum();
    psnr_from_mse(sq as f64 / a.len().max(1) as f64)
}

/// 10·log10(255² / mse); infinite for 0.
pub fn psnr_from_mse(mse: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Mean, population std, min and 10th percentile (nearest rank) of per-image PSNRs, each capped
/// at [`PSNR_CAP_DB`]. All 0 for no values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsnrStats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p10: f64,
}

impl PsnrStats {
    pub fn of(values: &[f64]) -> PsnrStats {
        if values.is_empty() {
            return PsnrStats {
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                p10: 0.0,
            };
        }
        let mut v: Vec<f64> = values.iter().map(|x| x.min(PSNR_CAP_DB)).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let rank = ((0.1 * n).ceil() as usize).clamp(1, v.len());
        PsnrStats {
            mean,
            std: var.sqrt(),
            min: v[0],
            p10: v[rank - 1],
        }
    }
}

/// A running per-pixel mean of u8 images of one size.
#[derive(Debug, Clone, Default)]
pub struct MeanImage {
    sum: Vec<u64>,
    pub count: usize,
}

impl MeanImage {
    pub fn add(&mut self, image: &[u8]) {
        if self.sum.is_empty() {
            self.sum = vec![0; image.len()];
        }
        for (s, &p) in self.sum.iter_mut().zip(image) {
            *s += u64::from(p);
        }
        self.count += 1;
    }

    /// The mean rounded to u8 (`None` before the first image).
    pub fn to_u8(&self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        Some(
            self.sum
                .iter()
                .map(|&s| (s as f64 / n).round().clamp(0.0, 255.0) as u8)
                .collect(),
        )
    }
}

/// SplitMix64: a small seeded generator, enough to draw reproducible pairs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is below 2⁻⁴⁰ for any split size).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `n` seeded ordered pairs (a, b) of rows with different identities: a uniform over the rows,
/// b uniform over the rows of other identities. Empty with fewer than two identities.
pub fn draw_pairs(identity: &[i64], n: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut count: HashMap<i64, usize> = HashMap::new();
    for &id in identity {
        *count.entry(id).or_default() += 1;
    }
    if count.len() < 2 {
        return Vec::new();
    }
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| {
            let a = rng.below(identity.len());
            let others = identity.len() - count[&identity[a]];
            let k = rng.below(others);
            let b = identity
                .iter()
                .enumerate()
                .filter(|(_, &id)| id != identity[a])
                .nth(k)
                .map(|(i, _)| i)
                .expect("k is below the number of rows of other identities");
            (a, b)
        })
        .collect()
}

/// Per identity, the mean of its rows of `f` (row-major, `dim` wide).
pub fn identity_means(f: &[f32], dim: usize, identity: &[i64]) -> HashMap<i64, Vec<f32>> {
    let mut sums: HashMap<i64, (Vec<f64>, usize)> = HashMap::new();
    for (row, &id) in f.chunks(dim).zip(identity) {
        let (s, n) = sums.entry(id).or_insert_with(|| (vec![0.0; dim], 0));
        for (a, &v) in s.iter_mut().zip(row) {
            *a += f64::from(v);
        }
        *n += 1;
    }
    sums.into_iter()
        .map(|(id, (s, n))| (id, s.iter().map(|v| (v / n as f64) as f32).collect()))
        .collect()
}

/// Cosine similarity (0 when either vector is 0).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Share of `(x, mean_to, mean_from)` triples where x is closer (cosine) to `mean_to`.
pub fn closer_share<'a>(
    triples: impl IntoIterator<Item = (&'a [f32], &'a [f32], &'a [f32])>,
) -> Option<f64> {
    let (mut wins, mut n) = (0usize, 0usize);
    for (x, to, from) in triples {
        n += 1;
        if cosine(x, to) > cosine(x, from) {
            wins += 1;
        }
    }
    (n > 0).then(|| wins as f64 / n as f64)
}

/// The SVM's decision w·x + b.
pub fn decision(w: &[f32], b: f32, x: &[f32]) -> f64 {
    w.iter()
        .zip(x)
        .map(|(&w, &x)| f64::from(w) * f64::from(x))
        .sum::<f64>()
        + f64::from(b)
}

/// How many decisions changed sign (a decision is positive when > 0).
pub fn count_flips(before: &[f64], after: &[f64]) -> usize {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| (**b > 0.0) != (**a > 0.0))
        .count()
}

/// Row `i` of a row-major matrix `dim` wide.
fn row(f: &[f32], dim: usize, i: usize) -> &[f32] {
    &f[i * dim..(i + 1) * dim]
}

/// Rows `idx` of a row-major matrix `dim` wide as a `[len, dim]` tensor on `device`.
fn select_rows(f: &[f32], dim: usize, idx: &[usize], device: Device) -> Tensor {
    let flat: Vec<f32> = idx.iter().flat_map(|&i| row(f, dim, i)).copied().collect();
    Tensor::from_slice(&flat)
        .view([idx.len() as i64, dim as i64])
        .to_device(device)
}

fn mean_of(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for v in values {
        s += v;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// The f_P SVMs the attribute metrics use, with each attribute's column in the dataset.
struct Svms<'a> {
    names: &'a [String],
    p: &'a KindDirections,
    /// Column of each attribute in the dataset's labels.
    columns: Vec<usize>,
    /// Indices (into `names`) of the attributes the summary values average over.
    chosen: Vec<usize>,
}

impl<'a> Svms<'a> {
    fn new(
        dirs: &'a Directions,
        dataset_attributes: &[String],
        chosen: &[String],
        dim: usize,
    ) -> Result<Svms<'a>> {
        let p = dirs
            .kinds
            .get(&FeatureKind::P)
            .context("the directions have no f_P SVMs")?;
        let a = dirs.attributes.len();
        if p.weights.len() != a || p.bias.len() != a || p.directions.len() != a {
            bail!(
                "the f_P SVMs are incomplete: {a} attributes, {} weights, {} biases, {} directions",
                p.weights.len(),
                p.bias.len(),
                p.directions.len()
            );
        }
        if let Some(w) = p
            .weights
            .iter()
            .chain(&p.directions)
            .find(|w| w.len() != dim)
        {
            bail!(
                "the f_P SVMs have {} channels but the model's f_P has {dim}",
                w.len()
            );
        }
        let columns = dirs
            .attributes
            .iter()
            .map(|n| {
                dataset_attributes
                    .iter()
                    .position(|d| d == n)
                    .with_context(|| {
                        format!(
                            "attribute {n:?} of the SVMs is not in the dataset (it has: {})",
                            dataset_attributes.join(", ")
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let chosen = if chosen.is_empty() {
            (0..a).collect()
        } else {
            chosen
                .iter()
                .map(|n| {
                    dirs.attributes
                        .iter()
                        .position(|d| d == n)
                        .with_context(|| {
                            format!(
                                "attribute {n:?} has no f_P SVM (there are: {})",
                                dirs.attributes.join(", ")
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Svms {
            names: &dirs.attributes,
            p,
            columns,
            chosen,
        })
    }

    fn decision(&self, a: usize, x: &[f32]) -> f64 {
        decision(&self.p.weights[a], self.p.bias[a], x)
    }

    fn chosen_names(&self) -> Vec<String> {
        self.chosen.iter().map(|&a| self.names[a].clone()).collect()
    }
}

/// What the pass over the scored split keeps: features of the originals and of their
/// reconstructions re-encoded, labels, and the first images of distinct identities for the grid.
#[derive(Default)]
struct Scored {
    f_t: Vec<f32>,
    f_p: Vec<f32>,
    rec_t: Vec<f32>,
    rec_p: Vec<f32>,
    identity: Vec<i64>,
    /// Row-major `[N, dataset attributes]`.
    labels: Vec<i8>,
    num_attributes: usize,
    psnr: Vec<f64>,
    psnr_mean_image: Vec<f64>,
    /// The first images of up to [`GRID_IMAGES`] identities, for the figure.
    grid: Vec<GridImage>,
}

/// One column of the figure.
struct GridImage {
    source: String,
    /// u8 `[3, S, S]`.
    input: Vec<u8>,
    recon: Vec<u8>,
    /// Its row in [`Scored`].
    row: usize,
}

impl Scored {
    fn rows(&self) -> usize {
        self.identity.len()
    }

    /// Row `i`'s label of dataset attribute `a` (+1, −1, 0 unknown).
    fn label(&self, i: usize, a: usize) -> i8 {
        self.labels[i * self.num_attributes + a]
    }
}

/// Which rows of a split a pass keeps (the held-out ones as `attributes` picks them).
#[derive(Debug, Clone, Copy)]
enum Rows {
    All,
    /// The last of every k.
    Held(usize),
    /// All but the last of every k.
    NotHeld(usize),
}

impl Rows {
    fn keeps(self, i: usize) -> bool {
        match self {
            Rows::All => true,
            Rows::Held(k) => is_kth(i, k),
            Rows::NotHeld(k) => !is_kth(i, k),
        }
    }
}

/// Stream `split` in batches through `f` (which gets the batch and the split-wide index of its
/// first row, and returns false to stop).
fn for_each_batch(
    cfg: &FidelityConfig,
    split: &str,
    image_size: u32,
    mut f: impl FnMut(&Batch, usize) -> Result<bool>,
) -> Result<()> {
    let mut lc = LoaderConfig::eval(split, cfg.batch_size);
    lc.image_size = Some(image_size);
    lc.decode_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    lc.store.endpoint = cfg.endpoint.clone();
    let loader = BlockingLoader::open(&cfg.data, lc, None)
        .with_context(|| format!("opening split {split} of {}", cfg.data))?;
    let mut first = 0;
    for batch in loader {
        let batch = batch.with_context(|| format!("reading split {split} of {}", cfg.data))?;
        if !f(&batch, first)? {
            break;
        }
        first += batch.n;
    }
    Ok(())
}

/// A model and where it runs.
pub struct ModelOn<'a> {
    pub model: &'a D2ae,
    pub device: Device,
}

/// The figure: inputs, reconstructions and one swap row (f_T of each column with f_P of the
/// first image).
pub struct FidelityRun {
    pub output: FidelityOutput,
    pub grid: Option<Grid>,
}

/// Compute every metric with a model already in memory. `directions` holds the f_P SVMs
/// (without them the attribute and edit metrics are empty).
pub fn fidelity_with(
    m: &ModelOn<'_>,
    cfg: &FidelityConfig,
    directions: Option<&Directions>,
) -> Result<FidelityRun> {
    if cfg.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(cfg.max_sigma > 0.0 && cfg.max_sigma.is_finite()) {
        bail!("--max-sigma must be positive, got {}", cfg.max_sigma);
    }
    if cfg.hold_out_every == Some(0) {
        bail!("hold_out_every must be at least 1");
    }
    let model = m.model;
    let size = model.config().image_size as u32;
    let dim = model.config().branch.feature_dim as usize;
    let sigma = model
        .feature_std()
        .1
        .context("fidelity needs f_P, but this checkpoint is a baseline model without the dispelling branch")?
        .to_device(m.device);
    let index = crate::extract::read_index(&cfg.data, cfg.endpoint.clone())?;
    let num_samples = index
        .split(&cfg.split)
        .with_context(|| format!("dataset {}", cfg.data))?
        .num_samples;
    let svms = directions
        .map(|d| Svms::new(d, &index.attributes, &cfg.attributes, dim))
        .transpose()?;

    // The mean image first, so the scoring pass can compare each image with it.
    let mut mean = MeanImage::default();
    if let Some(info) = index.splits.get(&cfg.mean_split) {
        let rows = match cfg.hold_out_every {
            Some(k) if cfg.mean_split == cfg.split => Rows::NotHeld(k),
            _ => Rows::All,
        };
        let bar = progress::bar(info.num_samples, "mean image", "images", cfg.progress);
        for_each_batch(cfg, &cfg.mean_split, size, |batch, first| {
            for i in (0..batch.n).filter(|&i| rows.keeps(first + i)) {
                mean.add(batch.image(i));
            }
            bar.inc(batch.n as u64);
            Ok(true)
        })?;
        bar.finish_and_clear();
    }
    let total = cfg
        .max_images
        .map_or(num_samples, |n| num_samples.min(n as u64));
    let s = score_split(m, cfg, size, mean.to_u8().as_deref(), total)?;
    let stats = PsnrStats::of(&s.psnr);
    let reconstruction = ReconstructionFidelity {
        psnr_db: stats.mean,
        psnr_db_mean_image: (!s.psnr_mean_image.is_empty())
            .then(|| PsnrStats::of(&s.psnr_mean_image).mean),
        psnr_db_std: stats.std,
        psnr_db_min: stats.min,
        psnr_db_p10: stats.p10,
        images: s.rows(),
        split: match cfg.hold_out_every {
            Some(k) => format!("{} (every {k}th image)", cfg.split),
            None => cfg.split.clone(),
        },
        mean_image_split: cfg.mean_split.clone(),
        mean_image_images: mean.count,
    };
    let swap = swap_metrics(m, cfg, &s, dim, svms.as_ref())?;
    let edit = edit_metrics(m, cfg, &s, dim, &sigma, svms.as_ref())?;
    let grid = figure(m, &s, dim, size)?;
    Ok(FidelityRun {
        output: FidelityOutput {
            reconstruction,
            swap,
            edit,
        },
        grid,
    })
}

/// Encode, reconstruct and re-encode the scored images (at most `total`), with each one's PSNR
/// against its reconstruction and against `mean_image`.
fn score_split(
    m: &ModelOn<'_>,
    cfg: &FidelityConfig,
    size: u32,
    mean_image: Option<&[u8]>,
    total: u64,
) -> Result<Scored> {
    let (model, device) = (m.model, m.device);
    let rows = cfg.hold_out_every.map_or(Rows::All, Rows::Held);
    let limit = cfg.max_images.unwrap_or(usize::MAX);
    let bar = progress::bar(total, "reconstruct", "images", cfg.progress);
    let mut s = Scored::default();
    for_each_batch(cfg, &cfg.split, size, |batch, first| {
        let keep: Vec<usize> = (0..batch.n)
            .filter(|&i| rows.keeps(first + i))
            .take(limit - s.rows())
            .collect();
        if keep.is_empty() {
            return Ok(s.rows() < limit);
        }
        let pixels: Vec<u8> = keep.iter().flat_map(|&i| batch.image(i)).copied().collect();
        let images = images_tensor(&pixels, keep.len(), batch.height, batch.width);
        let (t, p) = encode_u8(model, &images, device, false)?;
        let p = p.context("the model gave no f_P")?;
        let recon = decode_u8(model, &t, &p)?;
        let (rt, rp) = encode_u8(model, &recon, device, false)?;
        let recon_px = Vec::<u8>::try_from(&recon.contiguous().view([-1]))?;
        let (len, na) = (batch.image_len(), batch.num_attributes);
        for (j, &i) in keep.iter().enumerate() {
            let (x, r) = (batch.image(i), &recon_px[j * len..(j + 1) * len]);
            s.psnr.push(psnr_db(x, r));
            if let Some(mi) = mean_image {
                s.psnr_mean_image.push(psnr_db(x, mi));
            }
            let id = batch.identities[i];
            if s.grid.len() < GRID_IMAGES && !s.grid.iter().any(|g| s.identity[g.row] == id) {
                s.grid.push(GridImage {
                    source: batch.sources[i].clone(),
                    input: x.to_vec(),
                    recon: r.to_vec(),
                    row: s.rows(),
                });
            }
            s.identity.push(id);
            s.labels
                .extend_from_slice(&batch.attributes[i * na..(i + 1) * na]);
        }
        s.num_attributes = na;
        s.f_t.extend(to_vec_f32(&t)?);
        s.f_p.extend(to_vec_f32(&p)?);
        s.rec_t.extend(to_vec_f32(&rt)?);
        s.rec_p
            .extend(to_vec_f32(&rp.context("the model gave no f_P")?)?);
        bar.inc(keep.len() as u64);
        Ok(s.rows() < limit)
    })?;
    bar.finish_and_clear();
    if s.rows() == 0 {
        bail!("no images to score in split {} of {}", cfg.split, cfg.data);
    }
    Ok(s)
}

/// mean(accuracy on swaps) / mean(accuracy on originals) over the attributes in `chosen`
/// (`None` when none of them was scored or the originals' mean is 0).
pub fn attributes_kept(per_attribute: &[SwapAttribute], chosen: &[String]) -> Option<f64> {
    let picked: Vec<&SwapAttribute> = per_attribute
        .iter()
        .filter(|r| chosen.contains(&r.name))
        .collect();
    let swapped = mean_of(picked.iter().map(|r| r.accuracy_swapped))?;
    let original = mean_of(picked.iter().map(|r| r.accuracy_original))?;
    (original > 0.0).then(|| swapped / original)
}

/// The swap metrics: `cfg.swap_pairs` pairs decoded as D(f_T of B, f_P of A) and re-encoded.
fn swap_metrics(
    m: &ModelOn<'_>,
    cfg: &FidelityConfig,
    s: &Scored,
    dim: usize,
    svms: Option<&Svms<'_>>,
) -> Result<SwapFidelity> {
    let means = identity_means(&s.f_t, dim, &s.identity);
    let pairs = draw_pairs(&s.identity, cfg.swap_pairs, cfg.seed);
    let names = svms.map_or(&[][..], |v| v.names);
    // Per attribute: (right on swaps, right on originals, pairs whose A has a known label).
    let mut counts = vec![(0usize, 0usize, 0usize); names.len()];
    let mut swapped_t: Vec<f32> = Vec::with_capacity(pairs.len() * dim);
    let bar = progress::bar(pairs.len() as u64, "swap", "pairs", cfg.progress);
    for chunk in pairs.chunks(cfg.batch_size) {
        let a: Vec<usize> = chunk.iter().map(|p| p.0).collect();
        let b: Vec<usize> = chunk.iter().map(|p| p.1).collect();
        let xs = decode_u8(
            m.model,
            &select_rows(&s.f_t, dim, &b, m.device),
            &select_rows(&s.f_p, dim, &a, m.device),
        )?;
        let (st, sp) = encode_u8(m.model, &xs, m.device, false)?;
        swapped_t.extend(to_vec_f32(&st)?);
        let sp = to_vec_f32(&sp.context("the model gave no f_P")?)?;
        if let Some(svm) = svms {
            for (k, &ai) in a.iter().enumerate() {
                let (fp_s, fp_a) = (row(&sp, dim, k), row(&s.f_p, dim, ai));
                for (j, c) in counts.iter_mut().enumerate() {
                    let y = s.label(ai, svm.columns[j]);
                    if y == 0 {
                        continue;
                    }
                    c.0 += usize::from((svm.decision(j, fp_s) > 0.0) == (y > 0));
                    c.1 += usize::from((svm.decision(j, fp_a) > 0.0) == (y > 0));
                    c.2 += 1;
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mean_of_row = |i: usize| means[&s.identity[i]].as_slice();
    let identity_from_t = closer_share(
        pairs
            .iter()
            .enumerate()
            .map(|(k, &(a, b))| (row(&swapped_t, dim, k), mean_of_row(b), mean_of_row(a))),
    );
    let identity_from_t_reconstruction = closer_share(
        pairs
            .iter()
            .map(|&(a, b)| (row(&s.rec_t, dim, b), mean_of_row(b), mean_of_row(a))),
    );
    let per_attribute: Vec<SwapAttribute> = names
        .iter()
        .zip(&counts)
        .filter(|(_, c)| c.2 > 0)
        .map(|(name, &(right_s, right_o, k))| {
            let (acc_s, acc_o) = (right_s as f64 / k as f64, right_o as f64 / k as f64);
            SwapAttribute {
                name: name.clone(),
                accuracy_swapped: acc_s,
                accuracy_original: acc_o,
                ratio: (acc_o > 0.0).then(|| acc_s / acc_o),
                pairs: k,
            }
        })
        .collect();
    let chosen = svms.map(Svms::chosen_names).unwrap_or_default();
    Ok(SwapFidelity {
        identity_from_t,
        identity_from_t_reconstruction,
        pairs: pairs.len(),
        identities: means.len(),
        seed: cfg.seed,
        attributes_from_p: attributes_kept(&per_attribute, &chosen),
        attributes: chosen,
        per_attribute,
    })
}

/// The edit metrics: per attribute, every image's f_P moved by `max_sigma` towards the other
/// class of the SVM, decoded with its own f_T, re-encoded and classified again.
fn edit_metrics(
    m: &ModelOn<'_>,
    cfg: &FidelityConfig,
    s: &Scored,
    dim: usize,
    sigma: &Tensor,
    svms: Option<&Svms<'_>>,
) -> Result<EditFidelity> {
    let mut per_attribute = BTreeMap::new();
    let mut control = BTreeMap::new();
    let n = s.rows();
    let Some(svm) = svms else {
        return Ok(EditFidelity {
            flip_rate: None,
            max_sigma: cfg.max_sigma,
            per_attribute,
            control_flip_rate: None,
            control_per_attribute: control,
            images: 0,
        });
    };
    let bar = progress::bar((n * svm.names.len()) as u64, "edit", "edits", cfg.progress);
    let all: Vec<usize> = (0..n).collect();
    for (j, name) in svm.names.iter().enumerate() {
        let w = Tensor::from_slice(&svm.p.directions[j]).to_device(m.device);
        let before: Vec<f64> = (0..n)
            .map(|i| svm.decision(j, row(&s.f_p, dim, i)))
            .collect();
        let mut flips = 0usize;
        for chunk in all.chunks(cfg.batch_size) {
            let fp = select_rows(&s.f_p, dim, chunk, m.device);
            let now = &before[chunk[0]..chunk[0] + chunk.len()];
            let edited = edit_towards_other_class(&fp, &w, now, sigma, cfg.max_sigma);
            let x = decode_u8(m.model, &select_rows(&s.f_t, dim, chunk, m.device), &edited)?;
            let (_, p2) = encode_u8(m.model, &x, m.device, false)?;
            let p2 = to_vec_f32(&p2.context("the model gave no f_P")?)?;
            let after: Vec<f64> = p2.chunks(dim).map(|r| svm.decision(j, r)).collect();
            flips += count_flips(now, &after);
            bar.inc(chunk.len() as u64);
        }
        let round_trip: Vec<f64> = (0..n)
            .map(|i| svm.decision(j, row(&s.rec_p, dim, i)))
            .collect();
        per_attribute.insert(name.clone(), flips as f64 / n as f64);
        control.insert(
            name.clone(),
            count_flips(&before, &round_trip) as f64 / n as f64,
        );
    }
    bar.finish_and_clear();
    let chosen = svm.chosen_names();
    Ok(EditFidelity {
        flip_rate: chosen_mean(&per_attribute, &chosen),
        max_sigma: cfg.max_sigma,
        control_flip_rate: chosen_mean(&control, &chosen),
        per_attribute,
        control_per_attribute: control,
        images: n,
    })
}

/// Each row of `f_p` (`[B, D]`) moved along the unit direction `w` by the largest edit within
/// `max_sigma` ([`alpha_max`], [`attribute_edit`]): down the direction where the row's SVM
/// decision (`decisions`) is positive, up where it is not, i.e. towards the other class.
pub fn edit_towards_other_class(
    f_p: &Tensor,
    w: &Tensor,
    decisions: &[f64],
    sigma: &Tensor,
    max_sigma: f64,
) -> Tensor {
    let amax = alpha_max(w, sigma, max_sigma);
    let edit =
        |alpha: f64| attribute_edit(f_p, std::slice::from_ref(w), &[alpha], sigma, max_sigma);
    let positive: Vec<f32> = decisions
        .iter()
        .map(|&d| f32::from(u8::from(d > 0.0)))
        .collect();
    let mask = Tensor::from_slice(&positive)
        .view([decisions.len() as i64, 1])
        .to_device(f_p.device());
    edit(-amax) * &mask + edit(amax) * (1.0 - &mask)
}

/// The mean of the values of `chosen` in `rates` (`None` when none is there).
pub fn chosen_mean(rates: &BTreeMap<String, f64>, chosen: &[String]) -> Option<f64> {
    mean_of(chosen.iter().filter_map(|name| rates.get(name).copied()))
}

/// Inputs, reconstructions, and decode(f_T of each column, f_P of the first column).
fn figure(m: &ModelOn<'_>, s: &Scored, dim: usize, size: u32) -> Result<Option<Grid>> {
    if s.grid.is_empty() {
        return Ok(None);
    }
    let idx: Vec<usize> = s.grid.iter().map(|g| g.row).collect();
    let first = vec![idx[0]; idx.len()];
    let swaps = decode_u8(
        m.model,
        &select_rows(&s.f_t, dim, &idx, m.device),
        &select_rows(&s.f_p, dim, &first, m.device),
    )?;
    let swap_px = Vec::<u8>::try_from(&swaps.contiguous().view([-1]))?;
    let len = (3 * size * size) as usize;
    let cell = |px: &[u8], input: bool| {
        Some(Cell {
            image: planar_to_image(px, size, size),
            input,
        })
    };
    Ok(Some(Grid {
        title: "Autoencoder fidelity: inputs, reconstructions D(f_T, f_P), swap D(f_T of column, f_P of the first)".into(),
        col_labels: s.grid.iter().map(|g| short_name(&g.source)).collect(),
        row_labels: vec![
            "input".into(),
            "reconstruction".into(),
            format!("swap: f_P of {}", short_name(&s.grid[0].source)),
        ],
        cells: vec![
            s.grid.iter().map(|g| cell(&g.input, true)).collect(),
            s.grid.iter().map(|g| cell(&g.recon, false)).collect(),
            (0..idx.len())
                .map(|k| cell(&swap_px[k * len..(k + 1) * len], false))
                .collect(),
        ],
        cell: size.max(96),
    }))
}

/// Per attribute: SVM accuracy on swaps and on the originals, their ratio, and the edit's and
/// the round trip's flip rates, in percent; chosen attributes are marked `*`.
pub fn attribute_table(out: &FidelityOutput) -> Table {
    let mut t = Table::new([
        "attribute",
        "swap acc %",
        "original acc %",
        "kept",
        "edit flips %",
        "round-trip flips %",
    ]);
    let (w, e) = (&out.swap, &out.edit);
    for (name, flips) in &e.per_attribute {
        let sw = w.per_attribute.iter().find(|a| &a.name == name);
        let mark = if w.attributes.contains(name) && w.attributes.len() < e.per_attribute.len() {
            " *"
        } else {
            ""
        };
        t.row([
            format!("{name}{mark}"),
            sw.map_or("–".into(), |a| percent(a.accuracy_swapped)),
            sw.map_or("–".into(), |a| percent(a.accuracy_original)),
            sw.and_then(|a| a.ratio)
                .map_or("–".into(), |r| format!("{r:.3}")),
            percent(*flips),
            e.control_per_attribute
                .get(name)
                .map_or("–".into(), |c| percent(*c)),
        ]);
    }
    t
}

fn pct_or_dash(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{}%", percent(v)))
}

/// The four headline numbers beside their references, one line each.
fn headline(out: &FidelityOutput) -> Vec<(String, String, String)> {
    let (r, w, e) = (&out.reconstruction, &out.swap, &out.edit);
    vec![
        (
            "reconstruction PSNR".into(),
            format!(
                "{:.2} dB (std {:.2}, min {:.2}, 10th percentile {:.2})",
                r.psnr_db, r.psnr_db_std, r.psnr_db_min, r.psnr_db_p10
            ),
            r.psnr_db_mean_image.map_or("–".into(), |m| {
                format!(
                    "mean image of {} ({} images): {m:.2} dB",
                    r.mean_image_split, r.mean_image_images
                )
            }),
        ),
        (
            "swap: f_T nearer B's identity".into(),
            format!("{} of {} pairs", pct_or_dash(w.identity_from_t), w.pairs),
            format!(
                "plain reconstruction of B: {}",
                pct_or_dash(w.identity_from_t_reconstruction)
            ),
        ),
        (
            "swap: f_P attributes kept".into(),
            w.attributes_from_p.map_or("–".into(), |v| {
                format!("{v:.3} of the originals' accuracy")
            }),
            "1 = every attribute as on A's own image".into(),
        ),
        (
            format!("edit flip rate at {}σ", e.max_sigma),
            pct_or_dash(e.flip_rate),
            format!(
                "decode → re-encode alone: {}",
                pct_or_dash(e.control_flip_rate)
            ),
        ),
    ]
}

/// The human summary `fidelity` prints.
pub fn summary(out: &FidelityOutput) -> String {
    let r = &out.reconstruction;
    let mut s = format!(
        "{} images of {}, {} identities\n",
        r.images, r.split, out.swap.identities
    );
    for (what, value, reference) in headline(out) {
        s += &format!("{what}: {value}; {reference}\n");
    }
    if !out.edit.per_attribute.is_empty() {
        s += &attribute_table(out).to_string();
    }
    s
}

/// The report's "Autoencoder fidelity" section.
pub fn markdown(out: &FidelityOutput) -> String {
    let r = &out.reconstruction;
    let mut md = String::from("## Autoencoder fidelity\n\n");
    md += &format!(
        "Does the decoder carry the face, and do swaps and edits work? On {} held-out images of `{}` \
         ({} identities), in evaluation mode without flip augmentation: PSNR of D(E(x)) against x beside \
         predicting every image by the training mean image; the swap D(f_T of B, f_P of A) re-encoded \
         over {} random pairs of different identities (is its f_T nearer B's mean f_T than A's, and do \
         the f_P attribute SVMs still read A's labels off it); and f_P moved {}σ towards the other \
         class of each attribute SVM, decoded, re-encoded and classified again.\n\n",
        r.images, r.split, out.swap.identities, out.swap.pairs, out.edit.max_sigma
    );
    let mut t = Table::new(["measure", "value", "reference"])
        .align(1, Align::Left)
        .align(2, Align::Left);
    for (what, value, reference) in headline(out) {
        t.row([what, value, reference]);
    }
    md += &t.to_markdown();
    if !out.edit.per_attribute.is_empty() {
        md += "\nPer attribute (`kept`: accuracy on swaps / on originals";
        if out.swap.attributes.len() < out.edit.per_attribute.len() {
            md += "; `*`: in the summary values";
        }
        md += "):\n\n";
        md += &attribute_table(out).to_markdown();
    }
    md
}

/// Run `fidelity`.
pub fn run(args: &FidelityArgs) -> Result<()> {
    let device = model_io::parse_device(&args.device)?;
    let loaded = model_io::load(&args.checkpoint, args.endpoint.clone(), device)?;
    let directions = args
        .directions
        .as_ref()
        .map(|p| Directions::read(p))
        .transpose()?;
    let m = ModelOn {
        model: &loaded.model,
        device,
    };
    let run = fidelity_with(&m, &FidelityConfig::from_args(args), directions.as_ref())?;
    if let (Some(path), Some(grid)) = (&args.grid, &run.grid) {
        grid.save(path)?;
    }
    if let Some(path) = &args.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&run.output)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run.output)?);
    } else {
        println!("fidelity of {} (step {})", loaded.source, loaded.meta.step);
        print!("{}", summary(&run.output));
        if directions.is_none() {
            println!("(no --directions: attribute and edit metrics skipped)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::DIRECTIONS_FORMAT;
    use d2ae_loader::testing::{
        encode_jpeg, image_spec, test_colours, test_meta, two_tone_rgb, write_dataset, TestSample,
    };
    use d2ae_train::ModelConfig;
    use tch::nn;

    #[test]
    fn psnr_of_known_buffers_and_identical_images() {
        assert_eq!(psnr_db(&[7, 8, 9], &[7, 8, 9]), f64::INFINITY);
        assert!(
            psnr_db(&[0; 12], &[255; 12]).abs() < 1e-12,
            "full-scale error is 0 dB"
        );
        // One of two values off by 10: MSE 50, 10·log10(65025 / 50) = 31.1411 dB.
        assert!((psnr_db(&[0, 0], &[10, 0]) - 31.141_110).abs() < 1e-5);
        assert_eq!(psnr_from_mse(0.0), f64::INFINITY);
        // Identical images count as the cap, so the mean stays finite.
        let st = PsnrStats::of(&[f64::INFINITY, 20.0]);
        assert_eq!((st.mean, st.min), ((PSNR_CAP_DB + 20.0) / 2.0, 20.0));
        assert!(st.mean.is_finite() && st.std.is_finite());
    }

    #[test]
    fn psnr_spread_is_population_std_min_and_nearest_rank_p10() {
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let st = PsnrStats::of(&v);
        assert_eq!(st.mean, 10.5);
        assert!(
            (st.std - (399.0f64 / 12.0).sqrt()).abs() < 1e-12,
            "{}",
            st.std
        );
        assert_eq!((st.min, st.p10), (1.0, 2.0));
        assert_eq!(PsnrStats::of(&[5.0]).p10, 5.0);
        assert_eq!(PsnrStats::of(&[]).mean, 0.0);
    }

    #[test]
    fn mean_image_rounds_the_per_pixel_mean() {
        let mut m = MeanImage::default();
        assert_eq!(m.to_u8(), None);
        m.add(&[0, 10, 255, 1]);
        m.add(&[10, 21, 255, 0]);
        assert_eq!(m.count, 2);
        let mean = m.to_u8().unwrap();
        assert_eq!(mean, vec![5, 16, 255, 1], "15.5 and 0.5 round up");
        // Predicting [5, 16, 255, 1] by itself and by an image 3 off everywhere: MSE 9.
        assert_eq!(psnr_db(&mean, &mean), f64::INFINITY);
        let off = [8, 13, 252, 4];
        assert!((psnr_db(&off, &mean) - 10.0 * (65025.0f64 / 9.0).log10()).abs() < 1e-9);
    }

    #[test]
    fn pairs_are_seeded_and_always_of_different_identities() {
        let identity = [0, 0, 0, 1, 2, 2, 0, 1];
        let pairs = draw_pairs(&identity, 500, 7);
        assert_eq!(pairs.len(), 500);
        assert!(pairs.iter().all(|&(a, b)| identity[a] != identity[b]));
        assert_eq!(pairs, draw_pairs(&identity, 500, 7));
        assert_ne!(pairs, draw_pairs(&identity, 500, 8));
        // Every row is drawn as A and, with another identity, as B.
        for i in 0..identity.len() {
            assert!(pairs.iter().any(|p| p.0 == i) && pairs.iter().any(|p| p.1 == i));
        }
        assert!(draw_pairs(&[3, 3, 3], 10, 0).is_empty());
        assert!(draw_pairs(&[], 10, 0).is_empty());
    }

    #[test]
    fn identity_share_counts_swaps_nearer_the_target_mean() {
        // Two identities along the axes; rows 0-1 are identity 5, rows 2-3 identity 9.
        let f = [1.0, 0.2, 1.0, -0.2, 0.1, 1.0, -0.1, 1.0];
        let means = identity_means(&f, 2, &[5, 5, 9, 9]);
        assert_eq!(means[&5], vec![1.0, 0.0]);
        assert_eq!(means[&9], vec![0.0, 1.0]);
        let (m5, m9) = (means[&5].as_slice(), means[&9].as_slice());
        // Three swaps meant to carry identity 9 (from A of 5): two land nearer 9, one nearer 5.
        let swaps: [&[f32]; 3] = [&[0.2, 0.9], &[-0.5, 2.0], &[0.9, 0.3]];
        let share = closer_share(swaps.iter().map(|x| (*x, m9, m5))).unwrap();
        assert!((share - 2.0 / 3.0).abs() < 1e-12);
        // A tie (equal cosine) is not a win.
        assert_eq!(closer_share([(&[1.0f32, 1.0][..], m9, m5)]), Some(0.0));
        assert_eq!(closer_share(std::iter::empty()), None);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn flips_count_sign_changes_with_zero_negative() {
        let before = [1.0, -1.0, 0.5, 0.0, -2.0];
        let after = [-0.1, 2.0, 0.4, 0.0, 1e-9];
        assert_eq!(count_flips(&before, &after), 3);
        assert_eq!(count_flips(&before, &before), 0);
        assert_eq!(decision(&[1.0, -2.0], 0.5, &[3.0, 1.0]), 1.5);
    }

    fn swap_attribute(name: &str, swapped: f64, original: f64) -> SwapAttribute {
        SwapAttribute {
            name: name.into(),
            accuracy_swapped: swapped,
            accuracy_original: original,
            ratio: Some(swapped / original),
            pairs: 10,
        }
    }

    #[test]
    fn summary_values_average_over_the_chosen_attributes() {
        let per = [
            swap_attribute("A", 0.6, 0.8),
            swap_attribute("B", 0.9, 1.0),
            swap_attribute("C", 0.5, 0.5),
        ];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A ratio of means, not a mean of ratios: (0.6 + 0.9) / (0.8 + 1.0).
        let kept = attributes_kept(&per, &names(&["A", "B"])).unwrap();
        assert!((kept - 1.5 / 1.8).abs() < 1e-12, "{kept}");
        assert_eq!(attributes_kept(&per, &names(&["C"])), Some(1.0));
        assert_eq!(attributes_kept(&per, &names(&["Z"])), None);
        let rates = BTreeMap::from([("A".to_owned(), 0.2), ("B".to_owned(), 0.6)]);
        let m = chosen_mean(&rates, &names(&["A", "B", "Z"])).unwrap();
        assert!((m - 0.4).abs() < 1e-12);
        assert_eq!(chosen_mean(&rates, &[]), None);
    }

    #[test]
    fn edits_move_each_row_towards_the_other_class_by_the_bound() {
        let dim = 6;
        let f_p = Tensor::from_slice(&[
            0.5f32, 0.1, -0.3, 0.0, 0.2, 0.4, //
            -0.4, 0.3, 0.1, -0.2, 0.0, 0.1,
        ])
        .view([2, dim]);
        let w_raw = [0.5f32, -0.5, 0.5, 0.5, 0.0, 0.0];
        let w = Tensor::from_slice(&w_raw);
        let sigma = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6]);
        let rows = |t: &Tensor| -> Vec<Vec<f32>> {
            let v = to_vec_f32(t).unwrap();
            v.chunks(dim as usize).map(<[f32]>::to_vec).collect()
        };
        let before: Vec<f64> = rows(&f_p)
            .iter()
            .map(|r| decision(&w_raw, 0.0, r))
            .collect();
        assert!(before[0] > 0.0 && before[1] < 0.0, "{before:?}");
        // ‖w/σ‖ = 5.966, so α_max = 4 / 5.966 = 0.670 moves each decision by 0.670 (w is a unit
        // vector): enough to cross from 0.05 and from −0.4.
        assert!((before[0] - 0.05).abs() < 1e-6 && (before[1] + 0.4).abs() < 1e-6);
        let edited = edit_towards_other_class(&f_p, &w, &before, &sigma, 4.0);
        let after: Vec<f64> = rows(&edited)
            .iter()
            .map(|r| decision(&w_raw, 0.0, r))
            .collect();
        assert!(after[0] < before[0] && after[1] > before[1], "{after:?}");
        // Both edits are exactly at the bound, and only along w.
        for len in sigma_length_of(&(&edited - &f_p), &sigma) {
            assert!((len - 4.0).abs() < 1e-4, "{len}");
        }
        let delta = rows(&(&edited - &f_p));
        assert_eq!((delta[0][4], delta[1][5]), (0.0, 0.0));
        assert!((after[0] - (0.05 - 0.6704)).abs() < 1e-3, "{after:?}");
        assert_eq!(count_flips(&before, &after), 2);
        // Half the bound leaves the second row on its side.
        let half = edit_towards_other_class(&f_p, &w, &before, &sigma, 2.0);
        let after: Vec<f64> = rows(&half)
            .iter()
            .map(|r| decision(&w_raw, 0.0, r))
            .collect();
        assert_eq!(count_flips(&before, &after), 1);
    }

    fn sigma_length_of(delta: &Tensor, sigma: &Tensor) -> Vec<f64> {
        crate::edit::sigma_length(delta, sigma)
    }

    fn model() -> (nn::VarStore, D2ae) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig::preset("small").unwrap();
        let m = D2ae::new(&vs.root(), &cfg, 4).unwrap();
        (vs, m)
    }

    /// `train` (16 images) and `test` (12 images, identities 0-2) splits of two-tone JPEGs;
    /// `Even` is known on every image, `Unknown` on none.
    fn dataset(dir: &std::path::Path) -> Vec<(i64, bool)> {
        let sample = |i: usize, split: &str| {
            let (l, r) = test_colours(i);
            let jpeg = encode_jpeg(&two_tone_rgb(64, l, r), 64, 64, 95);
            TestSample::new(&test_meta(i, 3, split), "jpg", jpeg)
        };
        let train: Vec<TestSample> = (100..116).map(|i| sample(i, "train")).collect();
        let test: Vec<TestSample> = (0..12).map(|i| sample(i, "test")).collect();
        write_dataset(
            dir,
            &[("train", train), ("test", test)],
            5,
            image_spec(64, "jpg"),
            3,
        )
        .unwrap();
        (0..12).map(|i| ((i % 3) as i64, i % 2 == 0)).collect()
    }

    fn directions(w: Vec<f32>, bias: f32) -> Directions {
        let norm = w.iter().map(|v| v * v).sum::<f32>().sqrt();
        Directions {
            format: DIRECTIONS_FORMAT.into(),
            attributes: vec!["Even".into()],
            kinds: BTreeMap::from([(
                FeatureKind::P,
                KindDirections {
                    directions: vec![w.iter().map(|v| v / norm).collect()],
                    weights: vec![w],
                    bias: vec![bias],
                },
            )]),
        }
    }

    fn config(data: &std::path::Path) -> FidelityConfig {
        FidelityConfig {
            data: data.display().to_string(),
            split: "test".into(),
            hold_out_every: None,
            mean_split: "train".into(),
            attributes: vec![],
            swap_pairs: 10,
            max_sigma: 3.0,
            seed: 0,
            max_images: None,
            batch_size: 5,
            endpoint: None,
            progress: false,
        }
    }

    #[test]
    fn end_to_end_on_a_tiny_dataset() {
        let (_vs, model) = model();
        let dir = tempfile::tempdir().unwrap();
        let truth = dataset(dir.path());
        let m = ModelOn {
            model: &model,
            device: Device::Cpu,
        };
        let dim = model.config().branch.feature_dim as usize;
        let cfg = config(dir.path());
        // An SVM whose huge bias calls every face `Even`: nothing can flip, and its accuracy is
        // the share of A's that are even, on swaps and originals alike.
        let always = directions(vec![0.01; dim], 1e6);
        let run = fidelity_with(&m, &cfg, Some(&always)).unwrap();
        let out = &run.output;
        let r = &out.reconstruction;
        assert_eq!((r.images, r.mean_image_images), (12, 16));
        assert_eq!(
            (r.split.as_str(), r.mean_image_split.as_str()),
            ("test", "train")
        );
        assert!(r.psnr_db.is_finite() && r.psnr_db > 0.0, "{r:?}");
        assert!(r.psnr_db_min <= r.psnr_db_p10 && r.psnr_db_p10 <= r.psnr_db + 1e-9);
        assert!(r.psnr_db_mean_image.unwrap() > 0.0);
        let w = &out.swap;
        assert_eq!((w.pairs, w.identities), (10, 3));
        let pairs = draw_pairs(&truth.iter().map(|t| t.0).collect::<Vec<_>>(), 10, cfg.seed);
        let even_a = pairs.iter().filter(|p| truth[p.0].1).count() as f64 / 10.0;
        assert_eq!(w.per_attribute.len(), 1);
        let even = &w.per_attribute[0];
        assert_eq!((even.name.as_str(), even.pairs), ("Even", 10));
        assert_eq!(even.accuracy_original, even_a);
        assert_eq!(even.accuracy_swapped, even_a);
        assert_eq!(w.attributes_from_p, Some(1.0));
        for v in [w.identity_from_t, w.identity_from_t_reconstruction] {
            assert!((0.0..=1.0).contains(&v.unwrap()), "{v:?}");
        }
        let e = &out.edit;
        assert_eq!(
            (e.flip_rate, e.control_flip_rate, e.images),
            (Some(0.0), Some(0.0), 12)
        );
        assert_eq!(e.per_attribute.keys().collect::<Vec<_>>(), ["Even"]);
        // The figure: one column per identity, input / reconstruction / swap rows.
        let grid = run.grid.unwrap();
        assert_eq!(grid.cells.len(), 3);
        assert!(grid.cells.iter().all(|row| row.len() == 3));
        assert!(grid.cells[0].iter().all(|c| c.as_ref().unwrap().input));
        // The same seed gives the same numbers; JSON has exactly the three sections.
        assert_eq!(fidelity_with(&m, &cfg, Some(&always)).unwrap().output, *out);
        let json = serde_json::to_value(out).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["edit", "reconstruction", "swap"]);

        // Without a held-out split: every 4th training image, the mean image of the rest.
        let mut held = config(dir.path());
        held.split = "train".into();
        held.hold_out_every = Some(4);
        held.max_images = Some(3);
        let out = fidelity_with(&m, &held, None).unwrap().output;
        assert_eq!(
            (
                out.reconstruction.images,
                out.reconstruction.mean_image_images
            ),
            (3, 12)
        );
        assert_eq!(out.reconstruction.split, "train (every 4th image)");
        assert!(out.swap.per_attribute.is_empty() && out.edit.flip_rate.is_none());
        assert_eq!(out.swap.attributes_from_p, None);
    }

    #[test]
    fn bad_directions_and_attribute_names_are_errors() {
        let (_vs, model) = model();
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let m = ModelOn {
            model: &model,
            device: Device::Cpu,
        };
        let dim = model.config().branch.feature_dim as usize;
        let mut cfg = config(dir.path());
        cfg.attributes = vec!["Smiling".into()];
        let err = fidelity_with(&m, &cfg, Some(&directions(vec![1.0; dim], 0.0)))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("Smiling") && err.contains("Even"), "{err}");
        let err = fidelity_with(
            &m,
            &config(dir.path()),
            Some(&directions(vec![1.0; 3], 0.0)),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("3 channels") && err.contains(&dim.to_string()),
            "{err}"
        );
        let mut other = directions(vec![1.0; dim], 0.0);
        other.attributes = vec!["Bald".into()];
        let err = fidelity_with(&m, &config(dir.path()), Some(&other))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("Bald") && err.contains("not in the dataset"),
            "{err}"
        );
        let mut none = config(dir.path());
        none.split = "val".into();
        let err = format!("{:#}", fidelity_with(&m, &none, None).err().unwrap());
        assert!(err.contains("val"), "{err}");
    }

    #[test]
    fn markdown_and_summary_show_every_number() {
        let out = FidelityOutput {
            reconstruction: ReconstructionFidelity {
                psnr_db: 16.43,
                psnr_db_mean_image: Some(14.21),
                psnr_db_std: 1.5,
                psnr_db_min: 12.0,
                psnr_db_p10: 14.0,
                images: 480,
                split: "test".into(),
                mean_image_split: "train".into(),
                mean_image_images: 880,
            },
            swap: SwapFidelity {
                identity_from_t: Some(0.731),
                identity_from_t_reconstruction: Some(0.952),
                pairs: 1000,
                identities: 20,
                seed: 0,
                attributes_from_p: Some(0.912),
                attributes: vec!["Smiling".into()],
                per_attribute: vec![
                    swap_attribute("Smiling", 0.6, 0.8),
                    swap_attribute("Bald", 0.5, 0.5),
                ],
            },
            edit: EditFidelity {
                flip_rate: Some(0.42),
                max_sigma: 3.0,
                per_attribute: BTreeMap::from([
                    ("Smiling".to_owned(), 0.42),
                    ("Bald".to_owned(), 0.1),
                ]),
                control_flip_rate: Some(0.03),
                control_per_attribute: BTreeMap::from([
                    ("Smiling".to_owned(), 0.03),
                    ("Bald".to_owned(), 0.0),
                ]),
                images: 480,
            },
        };
        let md = markdown(&out);
        for needle in [
            "## Autoencoder fidelity",
            "16.43 dB",
            "14.21 dB",
            "73.10% of 1000 pairs",
            "95.20%",
            "0.912",
            "42.00%",
            "3.00%",
            "Smiling *",
            "| Bald ",
            "0.750",
        ] {
            assert!(md.contains(needle), "{needle} missing from\n{md}");
        }
        let text = summary(&out);
        assert!(text.contains("480 images of test, 20 identities"), "{text}");
        assert!(
            text.contains("16.43 dB") && text.contains("Smiling *"),
            "{text}"
        );
    }
}
