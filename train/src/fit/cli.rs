//! The `fit` subcommand's flags and its start-up: config resolution, the local launcher, the
//! distributed rendezvous, Ctrl-C handling and the final summary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::{fit, ConfigOverrides, FitContext, FitSummary, Parallel, TrainConfig};
use crate::dist::{self, DistEnv, LaunchOutcome};

/// `d2ae-train fit`: train a D²AE model on a dataset made by `d2ae-ingest`.
#[derive(Debug, Args)]
pub struct FitArgs {
    /// Dataset: a directory or bucket URL (s3://, gs://, az://, file://) holding index.json.
    #[arg(long)]
    pub data: String,
    /// Run directory (local or a bucket URL): config.json, metrics.jsonl, val/, checkpoints/.
    #[arg(long)]
    pub out: String,
    /// TOML file of settings; any of them can also be given as a flag, which wins.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the newest checkpoint in --out (starts fresh if there is none).
    #[arg(long)]
    pub resume: bool,
    /// Start N local ranks (one per GPU, or N CPU processes with --device cpu) and wait for them.
    #[arg(long)]
    pub nproc_per_node: Option<usize>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (logs only).
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

impl FitArgs {
    /// Defaults, then the config file, then the flags.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let mut cfg = TrainConfig::paper_defaults(self.data.clone(), self.out.clone());
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            ConfigOverrides::from_toml(&text)
                .with_context(|| format!("parsing {}", path.display()))?
                .apply(&mut cfg);
        }
        self.overrides.apply(&mut cfg);
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

/// Run `fit` from the command line; `Ok(None)` when this process only launched the ranks or is
/// not rank 0.
pub fn run(args: &FitArgs) -> Result<Option<FitSummary>> {
    let mut cfg = args.resolve()?;
    if dist::maybe_launch(args.nproc_per_node)? == LaunchOutcome::Done {
        return Ok(None);
    }
    let env = DistEnv::from_env()?;
    let mut device = super::parse_device(&cfg.device)?;
    if env.world_size > 1 {
        // One GPU per local rank: `--device cuda` means this rank's own.
        if let tch::Device::Cuda(_) = device {
            device = tch::Device::Cuda(env.local_rank);
            cfg.device = format!("cuda:{}", env.local_rank);
        }
    }
    let parallel = if env.world_size > 1 {
        let comm = dist::init(&env, device, dist::Timeouts::default())
            .with_context(|| format!("joining the process group at {}", env.master()))?;
        Some(Parallel { comm })
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second Ctrl-C kills the process the usual way.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to abort)"
            );
        });
    }
    let progress =
        !args.no_progress && env.rank == 0 && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let summary = fit(
        cfg,
        FitContext {
            stop,
            parallel,
            resume: args.resume,
            progress,
        },
    )?;
    // Only rank 0 reports: the others' view is the same run.
    Ok((env.rank == 0).then_some(summary))
}

/// Print the summary for people (stderr) or scripts (`--json`, stdout).
pub fn print_summary(summary: &FitSummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serialises")
        );
        return;
    }
    let loss = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
    eprintln!(
        "{} {} steps ({} images) in {:.1}s: {:.1} images/s, data wait {:.1}% of the time",
        if summary.interrupted {
            "interrupted after"
        } else {
            "trained"
        },
        summary.steps,
        summary.images,
        summary.seconds,
        summary.images_per_sec,
        100.0 * summary.data_wait_share
    );
    eprintln!(
        "loss {} → {}",
        loss(summary.first_loss),
        loss(summary.last_loss)
    );
    if let Some(v) = &summary.last_val {
        let acc = |a: Option<f64>| a.map_or("-".into(), |a| format!("{a:.3}"));
        let identities = if v.identity_images == 0 {
            " (none is of a training identity: no identity accuracy)".to_owned()
        } else if v.identity_images < v.images {
            format!(", {} of a training identity", v.identity_images)
        } else {
            String::new()
        };
        eprintln!(
            "validation at step {} on {} images{identities}: identity acc f_T {}, adversary acc f_P {}, chance {:.3}, PSNR {}",
            v.step,
            v.images,
            acc(v.acc_t),
            acc(v.acc_p),
            v.chance,
            v.psnr_db.map_or("-".into(), |p| format!("{p:.2} dB"))
        );
    }
    if summary.samples_skipped > 0 {
        eprintln!(
            "{} corrupt samples skipped (see the log)",
            summary.samples_skipped
        );
    }
    if let Some(c) = &summary.checkpoint {
        eprintln!("checkpoint: {c}");
    }
    eprintln!("run directory: {}", summary.run);
}
