//! `d2ae-ingest`: parse flags, run the library, map errors to an exit code.

use std::process::ExitCode;

use clap::Parser;
use d2ae_ingest::cli::{default_workers, run_ingest, Cli, Command};
use d2ae_ingest::{bench, synth, verify};

fn main() -> ExitCode {
    // A file-size limit (`ulimit -f`) must be a write error we report and clean up after, not
    // SIGXFSZ killing the process with a temporary shard left behind.
    // SAFETY: setting a signal's disposition to ignore before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", d2ae_shard::redact_credentials(&message(&err)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text the message already holds
/// (most of our errors print their source inline, so `{:#}` would say it twice).
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => {
            let summary = run_ingest(&cli.ingest)?;
            if cli.ingest.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Verify(args)) => {
            let workers = args.workers.unwrap_or_else(default_workers);
            let report = verify::verify(&args.dataset, &args.store, workers, !args.json)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for p in &report.problems {
                    println!("problem: {p}");
                }
                println!(
                    "{}: {} samples in {} shards ({}), {} identities, {} rejects listed; {}",
                    report.url,
                    report.samples,
                    report.shards,
                    d2ae_ingest::progress::human_bytes(report.bytes),
                    report.identities,
                    report.rejects,
                    if report.ok {
                        "OK".to_owned()
                    } else {
                        format!("{} PROBLEMS", report.problems.len())
                    }
                );
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Some(Command::Bench(args)) => {
            let rows = bench::run_bench(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", bench::table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Synth(args)) => {
            print!("{}", synth::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
