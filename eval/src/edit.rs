//! `d2ae-eval edit`: the paper's face-editing figures from a checkpoint.
//!
//! - `attribute` (section 4.3, Figure 10): f_P* = f_P + Σ α_n·w_n along unit SVM directions w_n
//!   learned on f_P (`d2ae-eval attributes --save-directions`). The size of an edit is measured
//!   in the learned σ of f_P (the running estimate statistical augmentation keeps): the
//!   Mahalanobis length ‖Δ/σ‖ of the displacement Δ = Σ α_n·w_n is at most `--max-sigma`, so an
//!   edit never leaves the region the decoder was trained on under eq. 5's noise. One attribute
//!   at a time, α = t·α_max with α_max = max_sigma / ‖w/σ‖ and t from −1 to 1; several at once
//!   are scaled down together when their sum would exceed the bound.
//! - `swap`: decode(f_T of B, f_P of A) for every ordered pair of the chosen samples; the
//!   diagonal is each sample's own reconstruction.
//! - `interpolate` (Figure 9): β·f_T^A + (1 − β)·f_T^B for β from 1 to 0, with f_P of A and,
//!   in a second row, of B.
//! - `interpolate2d` (Figure 1a): f_T interpolated along the columns and f_P along the rows.
//!
//! Inputs (framed in blue) are shown beside the outputs, and every grid is labelled.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use d2ae_loader::{BlockingLoader, LoaderConfig};
use d2ae_train::D2ae;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::attributes::Directions;
use crate::features::FeatureKind;
use crate::grid::{planar_to_image, Cell, Grid};
use crate::model_io::{self, decode_u8, encode_u8, images_tensor};

/// The largest edit unless told otherwise, in learned σ of f_P: `edit`, `report`'s grid and
/// `fidelity`'s flip rate all use it, so the figure shows the edits the flip rate counts.
pub const DEFAULT_MAX_SIGMA: f64 = 3.0;

/// Which figure to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EditMode {
    /// Move f_P along SVM attribute directions (needs --directions and --attributes).
    Attribute,
    /// decode(f_T of B, f_P of A) for every pair of the keys.
    Swap,
    /// Interpolate f_T between consecutive pairs of keys.
    Interpolate,
    /// Interpolate f_T (columns) and f_P (rows) between the first two keys.
    Interpolate2d,
}

/// `d2ae-eval edit`
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Checkpoint: a step file, a run directory (its newest checkpoint) or a bucket URL.
    #[arg(long)]
    pub checkpoint: String,
    /// Dataset holding the samples (directory or bucket URL with index.json).
    #[arg(long)]
    pub data: String,
    /// Samples to edit, by key or source path, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub keys: Vec<String>,
    /// Which figure: attribute, swap, interpolate or interpolate2d.
    #[arg(long, value_enum)]
    pub mode: EditMode,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// SVM directions from `d2ae-eval attributes --save-directions` (attribute mode).
    #[arg(long)]
    pub directions: Option<PathBuf>,
    /// Attributes to edit, comma-separated (attribute mode; default: the first three in the
    /// directions file).
    #[arg(long, value_delimiter = ',')]
    pub attributes: Vec<String>,
    /// Steps per edit or interpolation (columns).
    #[arg(long, default_value_t = 7)]
    pub steps: usize,
    /// Largest edit, as the Mahalanobis length ‖Δ/σ‖ under the learned σ of f_P.
    #[arg(long, default_value_t = DEFAULT_MAX_SIGMA)]
    pub max_sigma: f64,
    /// Side of a grid cell in pixels (default: the model's image size, at least 96).
    #[arg(long)]
    pub cell: Option<u32>,
    /// Device: cpu, cuda or cuda:K.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// S3-compatible endpoint for s3:// URLs.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Print a summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What `edit` made.
#[derive(Debug, Clone, Serialize)]
pub struct EditOutput {
    pub out: String,
    pub mode: EditMode,
    pub checkpoint: String,
    pub keys: Vec<String>,
    /// Decoded cells in the grid.
    pub outputs: usize,
    pub width: u32,
    pub height: u32,
    /// Attribute mode: per attribute, the largest α (= max_sigma / ‖w/σ‖).
    pub alpha_max: Vec<(String, f64)>,
    /// Attribute mode: the largest Mahalanobis length of any edit made (≤ max_sigma).
    pub max_edit_sigma: Option<f64>,
}

/// One sample fetched from the dataset.
#[derive(Debug, Clone)]
pub struct Sample {
    pub key: String,
    pub source: String,
    /// u8 `[3, S, S]` planar RGB at the model's input size.
    pub pixels: Vec<u8>,
}

/// Find `wanted` (keys or source paths) in the dataset, scanning split by split; every one not
/// found is listed in the error.
pub fn fetch_samples(
    data: &str,
    wanted: &[String],
    image_size: u32,
    endpoint: Option<String>,
) -> Result<Vec<Sample>> {
    let index = crate::extract::read_index(data, endpoint.clone())?;
    let mut found: HashMap<String, Sample> = HashMap::new();
    for split in index.splits.keys() {
        if wanted.iter().all(|w| found.contains_key(w)) {
            break;
        }
        let mut lc = LoaderConfig::eval(split, 64);
        lc.image_size = Some(image_size);
        lc.store.endpoint = endpoint.clone();
        let loader = BlockingLoader::open(data, lc, None)
            .with_context(|| format!("opening split {split} of {data}"))?;
        for batch in loader {
            let batch = batch.with_context(|| format!("reading split {split} of {data}"))?;
            for i in 0..batch.n {
                for w in wanted {
                    if (&batch.keys[i] == w || &batch.sources[i] == w) && !found.contains_key(w) {
                        found.insert(
                            w.clone(),
                            Sample {
                                key: batch.keys[i].clone(),
                                source: batch.sources[i].clone(),
                                pixels: batch.image(i).to_vec(),
                            },
                        );
                    }
                }
            }
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !found.contains_key(*w))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} samples not found in {data} (by key or source path): {}",
            missing.len(),
            wanted.len(),
            missing.join(", ")
        );
    }
    Ok(wanted.iter().map(|w| found[w].clone()).collect())
}

/// A label for a sample: its source file name without folders and extension.
pub fn short_name(source: &str) -> String {
    let name = source.rsplit('/').next().unwrap_or(source);
    name.rsplit_once('.')
        .map_or(name, |(stem, _)| stem)
        .to_owned()
}

/// β·a + (1 − β)·b: exactly `a` at β = 1 and exactly `b` at β = 0.
pub fn interpolate(a: &Tensor, b: &Tensor, beta: f64) -> Tensor {
    a * beta + b * (1.0 - beta)
}

/// `n` evenly spaced values from `from` to `to` (both included; `from` alone when `n` is 1).
pub fn linspace(from: f64, to: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![from],
        _ => (0..n)
            .map(|k| {
                if k == n - 1 {
                    to
                } else {
                    from + (to - from) * k as f64 / (n - 1) as f64
                }
            })
            .collect(),
    }
}

/// σ with tiny values floored, so a channel that never varied does not make every edit infinite.
fn safe_sigma(sigma: &Tensor) -> Tensor {
    sigma.to_kind(Kind::Float).clamp_min(1e-6)
}

/// ‖Δ/σ‖ per row of `delta` (`[B, D]` or `[D]`): an edit's length in learned standard deviations.
pub fn sigma_length(delta: &Tensor, sigma: &Tensor) -> Vec<f64> {
    let d = if delta.dim() == 1 {
        delta.unsqueeze(0)
    } else {
        delta.shallow_clone()
    };
    let z = (d / safe_sigma(sigma).to_device(delta.device()))
        .square()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .sqrt();
    Vec::<f32>::try_from(&z.to_device(Device::Cpu))
        .map(|v| v.into_iter().map(f64::from).collect())
        .unwrap_or_default()
}

/// The largest α along unit direction `w` whose edit stays within `max_sigma`: max_sigma / ‖w/σ‖.
pub fn alpha_max(w: &Tensor, sigma: &Tensor, max_sigma: f64) -> f64 {
    let len = sigma_length(w, sigma).first().copied().unwrap_or(0.0);
    if len > 0.0 {
        max_sigma / len
    } else {
        0.0
    }
}

/// f_P + Σ α_n·w_n (`f_p` `[B, D]`, each `w_n` `[D]`), with the displacement scaled down when its
/// length ‖Δ/σ‖ would exceed `max_sigma`.
pub fn attribute_edit(
    f_p: &Tensor,
    directions: &[Tensor],
    alphas: &[f64],
    sigma: &Tensor,
    max_sigma: f64,
) -> Tensor {
    let mut delta = Tensor::zeros([f_p.size()[1]], (Kind::Float, f_p.device()));
    for (w, &a) in directions.iter().zip(alphas) {
        delta += w.to_device(f_p.device()) * a;
    }
    let len = sigma_length(&delta, sigma)[0];
    if len > max_sigma && len > 0.0 {
        delta *= max_sigma / len;
    }
    f_p + delta.unsqueeze(0)
}

/// Reconstructions D(f_T, f_P) of a batch, u8.
pub fn reconstruct(model: &D2ae, f_t: &Tensor, f_p: &Tensor) -> Result<Tensor> {
    decode_u8(model, f_t, f_p)
}

/// The swap matrix: row A (f_P source) holds decode(f_T of B, f_P of A) for every B, u8
/// `[n, 3, S, S]`. Each row is decoded as one batch of `n`, like [`reconstruct`] of all samples,
/// so the diagonal equals the reconstructions bit for bit.
pub fn swap_matrix(model: &D2ae, f_t: &Tensor, f_p: &Tensor) -> Result<Vec<Tensor>> {
    let n = f_t.size()[0];
    (0..n)
        .map(|a| {
            let p = f_p.get(a).unsqueeze(0).expand([n, -1], false).contiguous();
            decode_u8(model, f_t, &p)
        })
        .collect()
}

fn cell_of(images: &Tensor, i: i64, input: bool) -> Result<Cell> {
    let img = images.get(i).contiguous();
    let (h, w) = (img.size()[1] as u32, img.size()[2] as u32);
    let pixels = Vec::<u8>::try_from(&img.view([-1]))?;
    Ok(Cell {
        image: planar_to_image(&pixels, w, h),
        input,
    })
}

/// Make the grid `args` asks for.
pub fn edit(args: &EditArgs) -> Result<EditOutput> {
    if args.steps < 2 {
        bail!("--steps must be at least 2");
    }
    if !(args.max_sigma > 0.0 && args.max_sigma.is_finite()) {
        bail!("--max-sigma must be positive, got {}", args.max_sigma);
    }
    match args.mode {
        EditMode::Swap | EditMode::Interpolate2d if args.keys.len() < 2 => {
            bail!("{:?} needs at least two --keys", args.mode)
        }
        EditMode::Interpolate if args.keys.len() < 2 || !args.keys.len().is_multiple_of(2) => {
            bail!(
                "interpolate needs keys in pairs (A,B[,C,D...]), got {}",
                args.keys.len()
            )
        }
        _ => {}
    }
    let device = model_io::parse_device(&args.device)?;
    let loaded = model_io::load(&args.checkpoint, args.endpoint.clone(), device)?;
    let model = &loaded.model;
    let size = model.config().image_size as u32;
    let samples = fetch_samples(&args.data, &args.keys, size, args.endpoint.clone())?;
    let pixels: Vec<u8> = samples
        .iter()
        .flat_map(|s| s.pixels.iter().copied())
        .collect();
    let inputs = images_tensor(&pixels, samples.len(), size, size);
    let (f_t, f_p) = encode_u8(model, &inputs, device, false)?;
    let f_p = f_p.context(
        "editing needs f_P, but this checkpoint is a baseline model without the dispelling branch",
    )?;
    let recon = reconstruct(model, &f_t, &f_p)?;
    let short = |s: &Sample| short_name(&s.source);
    let mut grid = Grid {
        cell: args.cell.unwrap_or(size.max(96)),
        ..Grid::default()
    };
    let mut outputs = 0usize;
    let mut alpha_maxes = Vec::new();
    let mut max_edit_sigma = None;
    match args.mode {
        EditMode::Swap => {
            let n = samples.len() as i64;
            let rows = swap_matrix(model, &f_t, &f_p)?;
            grid.title = "Identity swap: decode(f_T of column, f_P of row)".into();
            grid.col_labels.push("f_P from ↓".into());
            grid.col_labels
                .extend(samples.iter().map(|s| format!("f_T {}", short(s))));
            grid.cells.push(
                std::iter::once(None)
                    .chain((0..n).map(|b| cell_of(&inputs, b, true).ok()))
                    .collect(),
            );
            for (a, row) in rows.iter().enumerate() {
                let mut cells = vec![Some(cell_of(&inputs, a as i64, true)?)];
                for b in 0..n {
                    cells.push(Some(cell_of(row, b, false)?));
                    outputs += 1;
                }
                grid.cells.push(cells);
            }
            grid.row_labels.push(String::new());
            grid.row_labels.extend(samples.iter().map(short));
        }
        EditMode::Interpolate => {
            let betas = linspace(1.0, 0.0, args.steps);
            grid.title = "Identity interpolation: β·f_T(A) + (1 − β)·f_T(B)".into();
            grid.col_labels.push("input A".into());
            grid.col_labels
                .extend(betas.iter().map(|b| format!("β={b:.2}")));
            grid.col_labels.push("input B".into());
            for pair in 0..samples.len() / 2 {
                let (a, b) = (2 * pair as i64, 2 * pair as i64 + 1);
                let codes = Tensor::stack(
                    &betas
                        .iter()
                        .map(|&beta| interpolate(&f_t.get(a), &f_t.get(b), beta))
                        .collect::<Vec<_>>(),
                    0,
                );
                for (p_src, which) in [(a, "A"), (b, "B")] {
                    let p = f_p
                        .get(p_src)
                        .unsqueeze(0)
                        .expand([betas.len() as i64, -1], false)
                        .contiguous();
                    let imgs = decode_u8(model, &codes, &p)?;
                    let mut cells = vec![Some(cell_of(&inputs, a, true)?)];
                    for k in 0..betas.len() as i64 {
                        cells.push(Some(cell_of(&imgs, k, false)?));
                        outputs += 1;
                    }
                    cells.push(Some(cell_of(&inputs, b, true)?));
                    grid.cells.push(cells);
                    grid.row_labels.push(format!(
                        "{}→{}, f_P of {which}",
                        short(&samples[a as usize]),
                        short(&samples[b as usize])
                    ));
                }
            }
        }
        EditMode::Interpolate2d => {
            let steps = linspace(1.0, 0.0, args.steps);
            grid.title = "2-D interpolation: f_T A→B across, f_P A→B down".into();
            grid.col_labels.push("input".into());
            grid.col_labels
                .extend(steps.iter().map(|b| format!("f_T β={b:.2}")));
            let n = steps.len() as i64;
            let codes_t = Tensor::stack(
                &steps
                    .iter()
                    .map(|&b| interpolate(&f_t.get(0), &f_t.get(1), b))
                    .collect::<Vec<_>>(),
                0,
            );
            for (r, &gamma) in steps.iter().enumerate() {
                let p = interpolate(&f_p.get(0), &f_p.get(1), gamma)
                    .unsqueeze(0)
                    .expand([n, -1], false)
                    .contiguous();
                let imgs = decode_u8(model, &codes_t, &p)?;
                let first = if r == 0 {
                    Some(cell_of(&inputs, 0, true)?)
                } else if r + 1 == steps.len() {
                    Some(cell_of(&inputs, 1, true)?)
                } else {
                    None
                };
                let mut cells = vec![first];
                for k in 0..n {
                    cells.push(Some(cell_of(&imgs, k, false)?));
                    outputs += 1;
                }
                grid.cells.push(cells);
                grid.row_labels.push(format!("f_P γ={gamma:.2}"));
            }
            grid.row_labels[0] = format!("A {} · f_P γ=1.00", short(&samples[0]));
            let last = grid.row_labels.len() - 1;
            grid.row_labels[last] = format!("B {} · f_P γ=0.00", short(&samples[1]));
        }
        EditMode::Attribute => {
            let path = args.directions.as_ref().context(
                "attribute mode needs --directions (from `d2ae-eval attributes --save-directions`)",
            )?;
            let dirs = Directions::read(path)?;
            let p_dirs = dirs
                .kinds
                .get(&FeatureKind::P)
                .with_context(|| format!("{} has no f_P directions", path.display()))?;
            let names: Vec<String> = if args.attributes.is_empty() {
                dirs.attributes.iter().take(3).cloned().collect()
            } else {
                args.attributes.clone()
            };
            let dim = f_p.size()[1] as usize;
            let mut ws = Vec::new();
            for name in &names {
                let Some(a) = dirs.attributes.iter().position(|n| n == name) else {
                    bail!(
                        "attribute {name:?} is not in {} (it has: {})",
                        path.display(),
                        dirs.attributes.join(", ")
                    );
                };
                let w = &p_dirs.directions[a];
                if w.len() != dim {
                    bail!(
                        "direction of {name} has {} channels but f_P has {dim}",
                        w.len()
                    );
                }
                ws.push(Tensor::from_slice(w).to_device(device));
            }
            let sigma = model
                .feature_std()
                .1
                .context("the model has no running σ of f_P")?
                .to_device(device);
            let ts = linspace(-1.0, 1.0, args.steps);
            grid.title = format!(
                "Attribute editing along f_P SVM directions, |edit| ≤ {}σ",
                args.max_sigma
            );
            grid.col_labels.push("input".into());
            grid.col_labels.push("recon".into());
            grid.col_labels
                .extend(ts.iter().map(|t| format!("{:+.1}σ", t * args.max_sigma)));
            let amax: Vec<f64> = ws
                .iter()
                .map(|w| alpha_max(w, &sigma, args.max_sigma))
                .collect();
            alpha_maxes = names.iter().cloned().zip(amax.iter().copied()).collect();
            let mut largest = 0f64;
            let mut rows: Vec<(String, Vec<f64>)> = names
                .iter()
                .enumerate()
                .map(|(n, name)| {
                    let mut unit = vec![0.0; names.len()];
                    unit[n] = 1.0;
                    (name.clone(), unit)
                })
                .collect();
            if names.len() > 1 {
                rows.push(("all".into(), vec![1.0; names.len()]));
            }
            for (i, s) in samples.iter().enumerate() {
                let i = i as i64;
                for (label, mask) in &rows {
                    let mut edited = Vec::new();
                    for &t in &ts {
                        let alphas: Vec<f64> =
                            mask.iter().zip(&amax).map(|(m, a)| m * a * t).collect();
                        let e = attribute_edit(
                            &f_p.get(i).unsqueeze(0),
                            &ws,
                            &alphas,
                            &sigma,
                            args.max_sigma,
                        );
                        let len = sigma_length(&(&e - f_p.get(i).unsqueeze(0)), &sigma)[0];
                        largest = largest.max(len);
                        edited.push(e);
                    }
                    let codes_p = Tensor::cat(&edited, 0);
                    let codes_t = f_t
                        .get(i)
                        .unsqueeze(0)
                        .expand([ts.len() as i64, -1], false)
                        .contiguous();
                    let imgs = decode_u8(model, &codes_t, &codes_p)?;
                    let mut cells = vec![
                        Some(cell_of(&inputs, i, true)?),
                        Some(cell_of(&recon, i, false)?),
                    ];
                    for k in 0..ts.len() as i64 {
                        cells.push(Some(cell_of(&imgs, k, false)?));
                        outputs += 1;
                    }
                    grid.cells.push(cells);
                    grid.row_labels.push(format!("{} · {label}", short(s)));
                }
            }
            max_edit_sigma = Some(largest);
        }
    }
    grid.save(&args.out)?;
    let img = image::image_dimensions(&args.out)
        .with_context(|| format!("reading back {}", args.out.display()))?;
    Ok(EditOutput {
        out: args.out.display().to_string(),
        mode: args.mode,
        checkpoint: loaded.source.clone(),
        keys: samples.iter().map(|s| s.key.clone()).collect(),
        outputs,
        width: img.0,
        height: img.1,
        alpha_max: alpha_maxes,
        max_edit_sigma,
    })
}

/// Run `edit`.
pub fn run(args: &EditArgs) -> Result<()> {
    let out = edit(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:?} grid of {} decoded faces from {} → {} ({}×{})",
            out.mode, out.outputs, out.checkpoint, out.out, out.width, out.height
        );
        for (name, a) in &out.alpha_max {
            println!("  {name}: α_max = {a:.4} (= {}σ)", args.max_sigma);
        }
        if let Some(m) = out.max_edit_sigma {
            println!("  largest edit: {m:.3}σ (bound {}σ)", args.max_sigma);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2ae_train::ModelConfig;
    use tch::nn;

    fn model() -> (nn::VarStore, D2ae) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig::preset("small").unwrap();
        let m = D2ae::new(&vs.root(), &cfg, 4).unwrap();
        (vs, m)
    }

    fn features(m: &D2ae, n: i64) -> (Tensor, Tensor) {
        let s = m.config().image_size;
        let imgs = Tensor::randint(256, [n, 3, s, s], (Kind::Uint8, Device::Cpu));
        let (t, p) = encode_u8(m, &imgs, Device::Cpu, false).unwrap();
        (t, p.unwrap())
    }

    #[test]
    fn swap_with_a_equal_b_is_the_reconstruction_exactly() {
        let (_vs, m) = model();
        let (t, p) = features(&m, 3);
        let recon = reconstruct(&m, &t, &p).unwrap();
        let rows = swap_matrix(&m, &t, &p).unwrap();
        for a in 0..3 {
            assert!(
                rows[a as usize].get(a).equal(&recon.get(a)),
                "diagonal {a} differs"
            );
        }
        // Off the diagonal the identity code changes the decoder output (an untrained decoder's
        // output is too flat to show it after rounding to u8, so compare before).
        let own = m.decode(&t.narrow(0, 0, 1), &p.narrow(0, 0, 1)).unwrap();
        let other = m.decode(&t.narrow(0, 1, 1), &p.narrow(0, 0, 1)).unwrap();
        assert!(!own.equal(&other));
    }

    #[test]
    fn interpolation_endpoints_are_exact() {
        let (_vs, m) = model();
        let (t, _) = features(&m, 2);
        let (a, b) = (t.get(0), t.get(1));
        assert!(interpolate(&a, &b, 1.0).equal(&a));
        assert!(interpolate(&a, &b, 0.0).equal(&b));
        let mid = interpolate(&a, &b, 0.5);
        assert!(mid.allclose(&((&a + &b) / 2.0), 1e-6, 1e-6, false));
        assert_eq!(linspace(1.0, 0.0, 5), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn edits_stay_within_the_sigma_bound() {
        let (_vs, m) = model();
        let (_, p) = features(&m, 1);
        let dim = p.size()[1];
        let sigma = Tensor::linspace(0.1, 2.0, dim, (Kind::Float, Device::Cpu));
        let w1 = Tensor::randn([dim], (Kind::Float, Device::Cpu));
        let w1 = &w1 / w1.norm();
        let w2 = Tensor::randn([dim], (Kind::Float, Device::Cpu));
        let w2 = &w2 / w2.norm();
        let a1 = alpha_max(&w1, &sigma, 3.0);
        // A single direction at α_max lands exactly on the bound; beyond it is clipped.
        let e = attribute_edit(&p, std::slice::from_ref(&w1), &[a1], &sigma, 3.0);
        let len = sigma_length(&(&e - &p), &sigma)[0];
        assert!((len - 3.0).abs() < 1e-3, "{len}");
        for alphas in [[10.0 * a1, 0.0], [a1, a1], [-5.0 * a1, 7.0 * a1]] {
            let e = attribute_edit(
                &p,
                &[w1.shallow_clone(), w2.shallow_clone()],
                &alphas,
                &sigma,
                3.0,
            );
            let len = sigma_length(&(&e - &p), &sigma)[0];
            assert!(len <= 3.0 + 1e-3, "{alphas:?}: {len}");
        }
        // Small edits pass unchanged.
        let e = attribute_edit(&p, std::slice::from_ref(&w1), &[0.5 * a1], &sigma, 3.0);
        assert!((&e - &p).allclose(&(&w1 * (0.5 * a1)).unsqueeze(0), 1e-5, 1e-6, false));
    }
}
