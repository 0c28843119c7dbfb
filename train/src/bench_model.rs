//! `d2ae-train bench-model`: one training step (forward, losses, backward, SGD step) of a model
//! in tch, timed side by side with the same model written in PyTorch
//! (`scripts/bench/model_reference.py`), from the same initial weights on the same batch.
//!
//! Both run in turns (`--rounds`), so load from other processes on the machine hits both alike;
//! the report compares median step times.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use d2ae_train::checkpoint::{self, Header};
use d2ae_train::model::normalise;
use d2ae_train::{D2ae, ModelConfig};
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Flags of `bench-model`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Preset to benchmark (the Python mirror has the residual encoder only: `small`).
    #[arg(long, default_value = "small")]
    preset: String,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch: i64,
    /// Timed steps per round and implementation.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps before each round's timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Rounds of (tch steps, PyTorch steps).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Identities of the classifiers.
    #[arg(long, default_value_t = 100)]
    num_identities: i64,
    /// Seed of the weights and the batch.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Python interpreter with torch 2.13 (default: $D2AE_VENV/bin/python, else `python3`).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The PyTorch mirror of the model.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench/model_reference.py"))]
    script: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Step times of one implementation.
#[derive(Debug, Clone, Serialize)]
struct Timing {
    implementation: String,
    steps: usize,
    median_s: f64,
    min_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    preset: String,
    batch: i64,
    image_size: i64,
    threads: i32,
    tch: Timing,
    pytorch: Timing,
    /// tch median / PyTorch median (goal ≤ 1.1).
    ratio: f64,
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn python(args: &BenchArgs) -> PathBuf {
    args.python.clone().unwrap_or_else(|| {
        std::env::var_os("D2AE_VENV")
            .map(|v| PathBuf::from(v).join("bin/python"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("python3"))
    })
}

/// Run the benchmark and print the report.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.batch < 2 || args.steps == 0 || args.rounds == 0 {
        bail!("--batch must be at least 2 and --steps, --rounds at least 1");
    }
    let cfg = ModelConfig::preset(&args.preset)?;
    let threads = tch::get_num_threads();
    tch::manual_seed(args.seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = D2ae::new(&vs.root(), &cfg, args.num_identities)?;
    let s = cfg.image_size;
    let pixels = Tensor::randint(256, [args.batch, 3, s, s], (Kind::Uint8, Device::Cpu));
    let images = normalise(&pixels, Device::Cpu)?;
    let labels =
        Tensor::arange(args.batch, (Kind::Int64, Device::Cpu)).remainder(args.num_identities);

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let weights = dir.path().join("weights.safetensors");
    let batch = dir.path().join("batch.safetensors");
    let header = Header {
        config: cfg.clone(),
        num_identities: args.num_identities,
        extra: Default::default(),
    };
    checkpoint::save_model(&vs, &header, &weights)?;
    Tensor::write_safetensors(&[("images", &images), ("labels", &labels)], &batch)
        .context("writing the batch")?;

    let sgd = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = sgd.build(&vs, 0.01)?;
    let python = python(args);
    let mut tch_times = Vec::new();
    let mut py_times = Vec::new();
    let mut py_impl = String::new();
    for round in 0..args.rounds {
        for step in 0..args.warmup + args.steps {
            let t0 = Instant::now();
            let out = model.forward_t(&images, true)?;
            let terms = model.losses(&out, &labels, &images)?;
            opt.backward_step(&terms.total);
            let loss = terms.total.double_value(&[]);
            let dt = t0.elapsed().as_secs_f64();
            if !loss.is_finite() {
                bail!("tch loss is not finite at step {step}");
            }
            if step >= args.warmup {
                tch_times.push(dt);
            }
        }
        let out = Command::new(&python)
            .arg(&args.script)
            .arg("bench")
            .arg("--weights")
            .arg(&weights)
            .arg("--batch")
            .arg(&batch)
            .args(["--steps", &args.steps.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--threads", &threads.to_string()])
            .output()
            .with_context(|| format!("running {} {}", python.display(), args.script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                args.script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing {}", String::from_utf8_lossy(&out.stdout)))?;
        let times = v["times_s"]
            .as_array()
            .context("no times_s from the script")?;
        let round_times: Vec<f64> = times.iter().filter_map(|t| t.as_f64()).collect();
        let med = median(&mut round_times.clone());
        py_times.extend(round_times);
        py_impl = v["impl"].as_str().unwrap_or("pytorch").to_string();
        let tch_med = median(&mut tch_times.clone());
        eprintln!(
            "round {}/{}: tch median {:.1} ms, PyTorch median {:.1} ms",
            round + 1,
            args.rounds,
            tch_med * 1e3,
            med * 1e3
        );
    }
    let tch = Timing {
        implementation: "tch 0.26".into(),
        steps: tch_times.len(),
        min_s: tch_times.iter().copied().fold(f64::INFINITY, f64::min),
        median_s: median(&mut tch_times),
    };
    let pytorch = Timing {
        implementation: py_impl,
        steps: py_times.len(),
        min_s: py_times.iter().copied().fold(f64::INFINITY, f64::min),
        median_s: median(&mut py_times),
    };
    let report = Report {
        preset: cfg.name.clone(),
        batch: args.batch,
        image_size: s,
        threads,
        ratio: tch.median_s / pytorch.median_s,
        tch,
        pytorch,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "preset {} batch {} at {}×{} px, {} CPU threads; forward + losses + backward + SGD step",
            report.preset, report.batch, s, s, threads
        );
        for t in [&report.tch, &report.pytorch] {
            println!(
                "  {:<24} median {:>8.1} ms  min {:>8.1} ms  ({} steps)",
                t.implementation,
                t.median_s * 1e3,
                t.min_s * 1e3,
                t.steps
            );
        }
        println!("  ratio tch/PyTorch {:.3} (goal ≤ 1.1)", report.ratio);
    }
    Ok(())
}
