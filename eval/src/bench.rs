//! `d2ae-eval bench`: extraction throughput, measured side by side in one run.
//!
//! Three measurements over the same images and model:
//! 1. `model only`: the encoder on batches already in memory as u8 tensors (the reference: what
//!    the network alone costs);
//! 2. `extract`: the full `extract` path (shard fetch, JPEG decode and resize in the loader,
//!    encoding, copying features and labels out);
//! 3. `extract --flip`: the same with flip test-time augmentation (two forward passes).
//!
//! When (2) is close to (1), the loader keeps up and the model is the bottleneck. Weights do not
//! change the cost, so without `--checkpoint` a freshly initialised model of `--preset` is used,
//! and `--synthetic N` writes a dataset of N crops of real photos to a temporary directory, so the
//! benchmark needs nothing but the binary and the photos.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_metrics::table::Table;
use serde::Serialize;
use tch::{nn, Tensor};

use crate::extract::{extract_with, ExtractArgs, ModelRef};
use crate::model_io::{self, encode_u8};

/// `d2ae-eval bench`
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Checkpoint to time (default: a freshly initialised model of --preset).
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// Model preset when no checkpoint is given: small or paper.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Dataset to read (default: a synthetic one, see --synthetic).
    #[arg(long)]
    pub data: Option<String>,
    /// Without --data: write this many JPEG crops of the photos under --photos as a temporary
    /// dataset (stored at 2× the model's input size, so the loader resizes as in real use).
    #[arg(long, default_value_t = 512)]
    pub synthetic: usize,
    /// Photos for --synthetic.
    #[arg(long, default_value = "../shared/data/photos")]
    pub photos: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Timed repetitions of each measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Device: cpu, cuda or cuda:K.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub name: String,
    pub images: usize,
    /// Best of the repetitions.
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOutput {
    pub device: String,
    pub torch_threads: usize,
    pub image_size: i64,
    pub preset: String,
    pub batch_size: usize,
    pub rows: Vec<BenchRow>,
}

/// Run the three measurements.
pub fn bench(args: &BenchArgs) -> Result<BenchOutput> {
    if args.repeat == 0 || args.batch_size == 0 {
        bail!("--repeat and --batch-size must be at least 1");
    }
    let threads = d2ae_train::set_threads(args.threads);
    let device = model_io::parse_device(&args.device)?;
    let _vs;
    let model;
    let source;
    let preset;
    let loaded;
    let model_ref = match &args.checkpoint {
        Some(c) => {
            loaded = model_io::load(c, None, device)?;
            preset = loaded.meta.preset.clone();
            ModelRef {
                model: &loaded.model,
                device,
                source: loaded.source.clone(),
                step: loaded.meta.step,
                model_config: loaded.meta.model_config.clone(),
            }
        }
        None => {
            let cfg = d2ae_train::ModelConfig::preset(&args.preset)?;
            let vs = nn::VarStore::new(device);
            model = d2ae_train::D2ae::new(&vs.root(), &cfg, 100)?;
            _vs = vs;
            source = format!("fresh {} model", args.preset);
            preset = args.preset.clone();
            ModelRef {
                model: &model,
                device,
                source: source.clone(),
                step: 0,
                model_config: serde_json::to_value(&cfg)?,
            }
        }
    };
    let size = model_ref.model.config().image_size;
    let tmp;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            let photos = d2ae_loader::testing::find_photos(&args.photos);
            if photos.is_empty() {
                bail!(
                    "no photos under {} for --synthetic (give --data or --photos)",
                    args.photos.display()
                );
            }
            let stored = (2 * size) as u32;
            let jpegs = d2ae_loader::testing::photo_crops(&photos, args.synthetic, stored, 0);
            let samples: Vec<_> = jpegs
                .into_iter()
                .enumerate()
                .map(|(i, jpg)| {
                    d2ae_loader::testing::TestSample::new(
                        &d2ae_loader::testing::test_meta(i, 10, "train"),
                        "jpg",
                        jpg,
                    )
                })
                .collect();
            d2ae_loader::testing::write_dataset(
                tmp.path(),
                &[("train", samples)],
                128,
                d2ae_loader::testing::image_spec(stored, "jpg"),
                10,
            )
            .context("writing the synthetic dataset")?;
            tmp.path().display().to_string()
        }
    };
    let ex = |flip: bool| ExtractArgs {
        checkpoint: String::new(),
        data: data.clone(),
        splits: vec![],
        out: PathBuf::new(),
        flip,
        apply_factors: false,
        factor_seed: 0,
        concat: false,
        batch_size: args.batch_size,
        device: args.device.clone(),
        decode_threads: None,
        endpoint: None,
        json: false,
    };
    // Warm-up (allocator, kernels, page cache) and the images for the model-only reference.
    let (set, _) = extract_with(&model_ref, &ex(false), false)?;
    let n = set.rows();
    let batches: Vec<Tensor> = (0..n)
        .step_by(args.batch_size)
        .map(|start| {
            let k = (n - start).min(args.batch_size) as i64;
            Tensor::randint(
                256,
                [k, 3, size, size],
                (tch::Kind::Uint8, tch::Device::Cpu),
            )
        })
        .collect();
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..args.repeat {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let model_only = best(&mut || {
        for b in &batches {
            let (t, _) = encode_u8(model_ref.model, b, device, false)?;
            let _ = t.sum(tch::Kind::Float).double_value(&[]);
        }
        Ok(())
    })?;
    let full = best(&mut || extract_with(&model_ref, &ex(false), false).map(|_| ()))?;
    let flip = best(&mut || extract_with(&model_ref, &ex(true), false).map(|_| ()))?;
    let row = |name: &str, s: f64| BenchRow {
        name: name.into(),
        images: n,
        seconds: s,
        images_per_sec: n as f64 / s.max(1e-9),
    };
    Ok(BenchOutput {
        device: args.device.clone(),
        torch_threads: threads,
        image_size: size,
        preset,
        batch_size: args.batch_size,
        rows: vec![
            row("model only (encode of in-memory u8 batches)", model_only),
            row("extract (loader + encode + copy out)", full),
            row("extract --flip", flip),
        ],
    })
}

/// Run `bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let out = bench(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} preset, {}×{} input, batch {}, device {}, {} torch threads, best of {}",
        out.preset,
        out.image_size,
        out.image_size,
        out.batch_size,
        out.device,
        out.torch_threads,
        args.repeat
    );
    let mut t = Table::new(["measurement", "images", "seconds", "images/s"]);
    for r in &out.rows {
        t.row([
            r.name.clone(),
            r.images.to_string(),
            format!("{:.3}", r.seconds),
            format!("{:.1}", r.images_per_sec),
        ]);
    }
    print!("{t}");
    Ok(())
}
