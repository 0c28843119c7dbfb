//! `d2ae-eval`: see the crate docs of `d2ae_eval` and docs/EVAL_CLI.md.

use clap::{Parser, Subcommand};

/// Score and inspect trained D²AE checkpoints: features, verification, attributes, editing,
/// feature analysis and run reports.
#[derive(Debug, Parser)]
#[command(name = "d2ae-eval", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a checkpoint over a dataset and write f_T, f_P (and f_C) with labels.
    Extract(d2ae_eval::extract::ExtractArgs),
    /// LFW-protocol face verification with f_T, f_P and f_C (Table 1).
    Verify(d2ae_eval::verify::VerifyArgs),
    /// Per-attribute linear SVMs on f_T, f_P, f_C; factor R²; directions for editing.
    Attributes(d2ae_eval::attributes::AttributesArgs),
    /// Face editing grids: attribute edits, identity swap, interpolation.
    Edit(d2ae_eval::edit::EditArgs),
    /// Autoencoder fidelity: reconstruction PSNR, identity swaps and attribute edits re-encoded.
    Fidelity(d2ae_eval::fidelity::FidelityArgs),
    /// Identity probe: fresh linear SVMs over the training identities, scored on other images.
    Probe(d2ae_eval::probe::ProbeArgs),
    /// Per-channel Gaussianity and t-SNE maps of the features.
    Analyze(d2ae_eval::analyze::AnalyzeArgs),
    /// One Markdown + JSON report of a trained run.
    Report(d2ae_eval::report::ReportArgs),
    /// Extraction throughput: model alone vs. the full extract path.
    Bench(d2ae_eval::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Extract(a) => d2ae_eval::extract::run(a),
        Command::Verify(a) => d2ae_eval::verify::run(a),
        Command::Attributes(a) => d2ae_eval::attributes::run(a),
        Command::Edit(a) => d2ae_eval::edit::run(a),
        Command::Fidelity(a) => d2ae_eval::fidelity::run(a),
        Command::Probe(a) => d2ae_eval::probe::run(a),
        Command::Analyze(a) => d2ae_eval::analyze::run(a),
        Command::Report(a) => d2ae_eval::report::run(a),
        Command::Bench(a) => d2ae_eval::bench::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                d2ae_shard::redact_credentials(&format!("{e:#}"))
            );
            std::process::ExitCode::FAILURE
        }
    }
}
