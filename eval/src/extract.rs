//! `d2ae-eval extract`: run a checkpoint over a dataset and write f_T, f_P (and f_C) with every
//! sample's labels ([`crate::features`] describes the file).
//!
//! Splits are read one after another through the loader in evaluation mode (index order, no
//! augmentation, every sample once), so the rows of the file follow the dataset's own order and
//! a rerun writes the same file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_loader::{BlockingLoader, LoaderConfig};
use serde::Serialize;

use crate::applied_factors::{self, AppliedFactors};
use crate::features::{FeatureMeta, FeatureSet, FORMAT};
use crate::model_io::{self, encode_with, images_tensor, to_vec_f32};

/// `d2ae-eval extract`
#[derive(Debug, Clone, Args)]
pub struct ExtractArgs {
    /// Checkpoint: a `step-N.safetensors` file, a run directory (its newest checkpoint) or a
    /// `checkpoints/` directory; local or a bucket URL.
    #[arg(long)]
    pub checkpoint: String,
    /// Dataset written by d2ae-ingest: a directory or a bucket URL holding index.json.
    #[arg(long)]
    pub data: String,
    /// Split to extract; repeat for several. Default: every split of the dataset.
    #[arg(long = "split")]
    pub splits: Vec<String>,
    /// Output safetensors file; the JSON sidecar is written to `<out>.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Flip test-time augmentation: each feature is the mean of the features of the image and of
    /// its mirror image (twice the compute).
    #[arg(long)]
    pub flip: bool,
    /// Apply a known mirror flip, brightness offset, shift and scale, drawn for each image from
    /// the seed and its key, before encoding, and store them as the rows' factors
    /// (`applied_flip`, `applied_brightness`, `applied_shift_x`, `applied_shift_y`,
    /// `applied_scale`) in place of the dataset's own (which a flip or a shift would falsify):
    /// `attributes` then says how well f_T and f_P predict each, on photos that have no such
    /// labels of their own.
    #[arg(long)]
    pub apply_factors: bool,
    /// Seed of the --apply-factors draws.
    #[arg(long, default_value_t = 0)]
    pub factor_seed: u64,
    /// Also store f_C = [f_T, f_P] in the file (readers here rebuild it when absent).
    #[arg(long)]
    pub concat: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Device: cpu, cuda or cuda:K.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads decoding images (default: all cores).
    #[arg(long)]
    pub decode_threads: Option<usize>,
    /// S3-compatible endpoint for s3:// URLs (e.g. http://127.0.0.1:9000).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What an extraction did.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractSummary {
    pub out: String,
    pub sidecar: String,
    pub checkpoint: String,
    pub step: u64,
    pub rows: usize,
    /// Rows per split, in extraction order.
    pub splits: Vec<(String, usize)>,
    pub dim_t: usize,
    pub dim_p: usize,
    pub flip: bool,
    /// `--apply-factors`' seed, when it was given.
    pub applied_factors_seed: Option<u64>,
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// The model to extract with and where it came from.
pub struct ModelRef<'a> {
    pub model: &'a d2ae_train::D2ae,
    pub device: tch::Device,
    /// Checkpoint file (recorded in the sidecar).
    pub source: String,
    pub step: u64,
    pub model_config: serde_json::Value,
}

/// Extract features in memory (no file written): the work of `extract` and `report`.
pub fn extract_features(
    args: &ExtractArgs,
    progress: bool,
) -> Result<(FeatureSet, ExtractSummary)> {
    let device = model_io::parse_device(&args.device)?;
    let loaded = model_io::load(&args.checkpoint, args.endpoint.clone(), device)?;
    let m = ModelRef {
        model: &loaded.model,
        device,
        source: loaded.source.clone(),
        step: loaded.meta.step,
        model_config: loaded.meta.model_config.clone(),
    };
    extract_with(&m, args, progress)
}

/// Extract with a model already in memory (`args.checkpoint` and `args.device` are not used).
pub fn extract_with(
    m: &ModelRef<'_>,
    args: &ExtractArgs,
    progress: bool,
) -> Result<(FeatureSet, ExtractSummary)> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (model, device) = (m.model, m.device);
    let image_size = model.config().image_size as u32;
    let threads = args.decode_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let config = |split: &str| {
        let mut lc = LoaderConfig::eval(split, args.batch_size);
        lc.image_size = Some(image_size);
        lc.decode_threads = threads.max(1);
        lc.store.endpoint = args.endpoint.clone();
        lc
    };
    let index = read_index(&args.data, args.endpoint.clone())?;
    let splits: Vec<String> = if args.splits.is_empty() {
        index.splits.keys().cloned().collect()
    } else {
        for s in &args.splits {
            index.split(s)?;
        }
        args.splits.clone()
    };
    let total: u64 = splits.iter().map(|s| index.splits[s].num_samples).sum();
    let names: HashMap<i64, &str> = index
        .identities
        .iter()
        .map(|e| (i64::from(e.index), e.name.as_str()))
        .collect();
    let bar = crate::progress::bar(total, "", "images", progress);
    let start = Instant::now();
    let mut f_t = Vec::new();
    let mut f_p: Option<Vec<f32>> = None;
    let (mut dim_t, mut dim_p) = (0usize, 0usize);
    let mut meta_rows = Rows::default();
    let mut per_split = Vec::new();
    for split in &splits {
        bar.set_message(split.clone());
        let loader = BlockingLoader::open(&args.data, config(split), None)
            .with_context(|| format!("opening split {split} of {}", args.data))?;
        let mut count = 0usize;
        for batch in loader {
            let batch = batch.with_context(|| format!("reading split {split} of {}", args.data))?;
            let images = images_tensor(&batch.images, batch.n, batch.height, batch.width);
            let applied: Vec<AppliedFactors> = if args.apply_factors {
                batch
                    .keys
                    .iter()
                    .map(|k| AppliedFactors::draw(k, args.factor_seed))
                    .collect()
            } else {
                Vec::new()
            };
            let (t, p) = encode_with(model, &images, device, args.flip, |x| {
                if args.apply_factors {
                    applied_factors::apply(&x, &applied)
                } else {
                    x
                }
            })
            .with_context(|| format!("encoding a batch of split {split}"))?;
            dim_t = t.size()[1] as usize;
            f_t.extend(to_vec_f32(&t)?);
            if let Some(p) = p {
                dim_p = p.size()[1] as usize;
                f_p.get_or_insert_with(Vec::new).extend(to_vec_f32(&p)?);
            }
            for i in 0..batch.n {
                let id = batch.identities[i];
                meta_rows.keys.push(batch.keys[i].clone());
                meta_rows.sources.push(batch.sources[i].clone());
                meta_rows
                    .identity_names
                    .push(names.get(&id).map(|s| s.to_string()).unwrap_or_default());
                meta_rows.splits.push(split.clone());
            }
            meta_rows.identity.extend_from_slice(&batch.identities);
            meta_rows.attributes.extend_from_slice(&batch.attributes);
            if args.apply_factors {
                // The applied factors replace the dataset's own: a flip mirrors a yaw or a light
                // direction, a shift moves a translation, so those labels no longer hold.
                for a in &applied {
                    meta_rows.factors.extend_from_slice(&a.values());
                }
            } else {
                meta_rows.factors.extend_from_slice(&batch.factors);
            }
            count += batch.n;
            bar.inc(batch.n as u64);
        }
        per_split.push((split.clone(), count));
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let rows = meta_rows.keys.len();
    if rows == 0 {
        bail!("no samples in the requested splits of {}", args.data);
    }
    let set = FeatureSet {
        meta: FeatureMeta {
            format: FORMAT.into(),
            rows,
            keys: meta_rows.keys,
            sources: meta_rows.sources,
            identity_names: meta_rows.identity_names,
            splits: meta_rows.splits,
            attribute_names: index.attributes.clone(),
            factor_names: factor_names(&index.factors, args.apply_factors),
            checkpoint: m.source.clone(),
            step: m.step,
            model_config: m.model_config.clone(),
            data: args.data.clone(),
            flip: args.flip,
            dim_t,
            dim_p,
        },
        f_t,
        f_p,
        store_concat: args.concat,
        identity: meta_rows.identity,
        attributes: meta_rows.attributes,
        factors: meta_rows.factors,
    };
    let summary = ExtractSummary {
        out: args.out.display().to_string(),
        sidecar: crate::features::sidecar_path(&args.out)
            .display()
            .to_string(),
        checkpoint: m.source.clone(),
        step: m.step,
        rows,
        splits: per_split,
        dim_t,
        dim_p,
        flip: args.flip,
        applied_factors_seed: args.apply_factors.then_some(args.factor_seed),
        seconds,
        images_per_sec: rows as f64 / seconds.max(1e-9),
    };
    Ok((set, summary))
}

/// The dataset's factor names, or the applied ones instead.
fn factor_names(own: &[String], applied: bool) -> Vec<String> {
    if applied {
        applied_factors::NAMES
            .iter()
            .map(|n| n.to_string())
            .collect()
    } else {
        own.to_vec()
    }
}

/// Read a dataset's `index.json` (to list its splits and names before loading).
pub fn read_index(url: &str, endpoint: Option<String>) -> Result<d2ae_shard::DatasetIndex> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = d2ae_shard::StoreOptions {
        endpoint,
        ..Default::default()
    };
    let dataset = rt
        .block_on(d2ae_loader::Dataset::open(url, &store))
        .with_context(|| format!("opening dataset {url}"))?;
    Ok(dataset.index().clone())
}

#[derive(Default)]
struct Rows {
    keys: Vec<String>,
    sources: Vec<String>,
    identity_names: Vec<String>,
    splits: Vec<String>,
    identity: Vec<i64>,
    attributes: Vec<i8>,
    factors: Vec<f32>,
}

/// Run `extract`: features to `--out`, a summary to stdout.
pub fn run(args: &ExtractArgs) -> Result<()> {
    let (set, summary) = extract_features(args, true)?;
    set.write(&args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let splits: Vec<String> = summary
            .splits
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        println!(
            "extracted {} images ({}) from {} (step {}) in {:.1} s, {:.1} images/s{}",
            summary.rows,
            splits.join(", "),
            summary.checkpoint,
            summary.step,
            summary.seconds,
            summary.images_per_sec,
            if summary.flip { ", flip TTA" } else { "" }
        );
        println!(
            "f_T {}-d, f_P {}-d → {} (+ {})",
            summary.dim_t, summary.dim_p, summary.out, summary.sidecar
        );
    }
    Ok(())
}
