//! `d2ae-train`: train and inspect D²AE models.

mod bench_model;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use d2ae_train::info::{ModelSummary, RuntimeInfo};
use d2ae_train::{Ablation, ModelConfig};

/// Train and inspect D²AE models (libtorch via tch).
#[derive(Debug, Parser)]
#[command(name = "d2ae-train", version, about, long_about = None)]
struct Cli {
    /// libtorch CPU threads (default: all available cores).
    #[arg(long, global = true, env = "D2AE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a D²AE model on a dataset made by d2ae-ingest (local or bucket), with exact resume.
    Fit(Box<d2ae_train::fit::cli::FitArgs>),
    /// Print the torch version, CUDA/cuDNN availability, device count and the NCCL library;
    /// with --preset or --config also the model's parameter count and GMAC per image.
    Info(InfoArgs),
    /// Time one training step (forward, losses, backward, SGD) of a preset in tch against the
    /// same model in PyTorch (scripts/bench/model_reference.py), same weights and batch.
    BenchModel(bench_model::BenchArgs),
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// Describe this preset (`small` or `paper`).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// Describe the model config in this JSON or TOML file (a serialised `ModelConfig`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Apply an ablation to the config.
    #[arg(long, value_enum, default_value_t = Ablation::None)]
    ablation: Ablation,
    /// Identities the classifiers W_T and W_P cover (default: 80000 for `paper`, the size of the
    /// paper's MS-Celeb-1M training set; 1000 otherwise).
    #[arg(long)]
    num_identities: Option<i64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() {
    // A file-size limit (`ulimit -f`) must be an error we report and clean up after (EFBIG from
    // the write, the staging file removed), not SIGXFSZ killing the process mid-checkpoint.
    // SAFETY: setting a signal's disposition to ignore before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    d2ae_train::set_threads(cli.threads);
    let result = match cli.command {
        Command::Info(args) => info(&args),
        Command::Fit(args) => fit(&args),
        Command::BenchModel(args) => bench_model::run(&args),
    };
    if let Err(e) = result {
        eprintln!(
            "error: {}",
            d2ae_shard::redact_credentials(&format!("{e:#}"))
        );
        std::process::exit(1);
    }
}

fn load_config(args: &InfoArgs) -> Result<Option<ModelConfig>> {
    let cfg = match (&args.preset, &args.config) {
        (Some(name), _) => ModelConfig::preset(name)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if path.extension().is_some_and(|e| e == "toml") {
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            } else {
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(cfg.with_ablation(args.ablation)))
}

fn info(args: &InfoArgs) -> Result<()> {
    let runtime = RuntimeInfo::gather();
    let model = match load_config(args)? {
        Some(cfg) => {
            let n = args
                .num_identities
                .unwrap_or(if cfg.name == "paper" { 80_000 } else { 1000 });
            Some(ModelSummary::of(&cfg, n).context("building the model")?)
        }
        None => None,
    };
    if args.json {
        let json = serde_json::json!({ "runtime": runtime, "model": model });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", runtime.render());
        if let Some(m) = model {
            print!("{}", m.render());
        }
    }
    Ok(())
}

fn fit(args: &d2ae_train::fit::cli::FitArgs) -> Result<()> {
    if let Some(summary) = d2ae_train::fit::cli::run(args)? {
        d2ae_train::fit::cli::print_summary(&summary, args.json);
    }
    Ok(())
}
