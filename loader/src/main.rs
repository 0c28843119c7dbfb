//! `d2ae-loader`: inspect a dataset and measure how fast it loads.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use d2ae_loader::bench::{memory_bound, raw_decode, run_loader};
use d2ae_loader::{Augment, Dataset, Layout, Loader, LoaderConfig, Remainder};
use d2ae_shard::StoreOptions;
use indicatif::{ProgressBar, ProgressStyle};

/// Inspect d2ae shard datasets and benchmark the loader.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summary of a dataset's index.json: image spec, splits, shards, samples, identities.
    Stats {
        #[command(flatten)]
        source: Source,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the keys and metadata of a split's samples, one JSON object per line, in index order.
    Cat {
        #[command(flatten)]
        source: Source,
        /// Split to list.
        #[arg(long, default_value = "train")]
        split: String,
        /// Stop after this many samples.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Measure the loader end to end (images/s), and with --compare the raw decode ceiling too.
    Bench(BenchArgs),
}

#[derive(Args)]
struct Source {
    /// Dataset URL: a local path, file://, s3://bucket/prefix, gs://, az://.
    url: String,
    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000 (else AWS_ENDPOINT_URL).
    #[arg(long, env = "D2AE_S3_ENDPOINT")]
    endpoint: Option<String>,
    /// Seconds a bucket connection may stay silent before the request fails and is retried;
    /// retries of one request stop after twice this [default: 30, or D2AE_STORE_IDLE_TIMEOUT].
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
}

impl Source {
    fn store(&self) -> StoreOptions {
        StoreOptions {
            endpoint: self.endpoint.clone(),
            idle_timeout: self
                .idle_timeout
                .filter(|s| *s > 0.0)
                .map(std::time::Duration::from_secs_f64),
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    source: Source,
    /// Split to read.
    #[arg(long, default_value = "train")]
    split: String,
    /// Decode threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Output side in pixels (default: the stored size).
    #[arg(long)]
    image_size: Option<u32>,
    /// Passes over the split.
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// Shuffle buffer size (0 disables sample shuffling).
    #[arg(long, default_value_t = 1024)]
    shuffle_buffer: usize,
    /// Shards read ahead of the one being consumed.
    #[arg(long, default_value_t = 2)]
    readahead: usize,
    /// Batches queued for the consumer.
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
    /// This process's rank: the loader reads only this rank's share of the shards.
    #[arg(long, default_value_t = 0)]
    rank: usize,
    /// Number of ranks the split is divided among.
    #[arg(long, default_value_t = 1)]
    world_size: usize,
    /// Interleaved N×H×W×3 output instead of N×3×H×W.
    #[arg(long)]
    nhwc: bool,
    /// Turn off flip and shift augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Also decode the same images in a tight loop on one thread (the ceiling) and run the loader
    /// with 1 and with --threads decode threads, side by side.
    #[arg(long)]
    compare: bool,
    /// Print one JSON object; `images_per_sec` is the end-to-end rate of the main run.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                d2ae_shard::redact_credentials(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Stats { source, json } => stats(&source, json).await,
        Command::Cat {
            source,
            split,
            limit,
        } => cat(&source, &split, limit).await,
        Command::Bench(args) => bench(&args).await,
    }
}

async fn open(source: &Source) -> Result<Dataset> {
    Dataset::open(&source.url, &source.store())
        .await
        .with_context(|| format!("opening dataset {}", source.url))
}

async fn stats(source: &Source, json: bool) -> Result<()> {
    let ds = open(source).await?;
    let index = ds.index();
    let splits: serde_json::Map<String, serde_json::Value> = index
        .splits
        .iter()
        .map(|(name, s)| {
            let bytes: u64 = s.shards.iter().map(|e| e.bytes).sum();
            (
                name.clone(),
                serde_json::json!({
                    "samples": s.num_samples,
                    "shards": s.shards.len(),
                    "bytes": bytes,
                    "bytes_per_sample": bytes.checked_div(s.num_samples).unwrap_or(0),
                }),
            )
        })
        .collect();
    let summary = serde_json::json!({
        "url": ds.url(),
        "format": index.format,
        "format_version": index.format_version,
        "tool_version": index.tool_version,
        "image": index.image,
        "samples": index.num_samples(),
        "splits": splits,
        "identities": index.identities.len(),
        "attributes": index.attributes,
        "factors": index.factors,
        "rejects": index.rejects,
    });
    if json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{}  ({} {}, by {})",
        ds.url(),
        index.format,
        index.format_version,
        index.tool_version
    );
    println!(
        "images: {}×{} {}{}",
        index.image.width,
        index.image.height,
        index.image.ext,
        if index.image.aligned {
            ", pre-aligned"
        } else {
            ""
        }
    );
    println!(
        "samples: {}   identities: {}",
        index.num_samples(),
        index.identities.len()
    );
    for (name, s) in &index.splits {
        let bytes: u64 = s.shards.iter().map(|e| e.bytes).sum();
        println!(
            "  {name:<8} {:>9} samples in {:>5} shards, {:>10.1} MB",
            s.num_samples,
            s.shards.len(),
            bytes as f64 / 1e6
        );
    }
    println!(
        "attributes ({}): {}",
        index.attributes.len(),
        index.attributes.join(" ")
    );
    if !index.factors.is_empty() {
        println!("factors: {}", index.factors.join(" "));
    }
    let rejected: u64 = index.rejects.values().sum();
    if rejected > 0 {
        let parts: Vec<String> = index
            .rejects
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("rejected inputs: {rejected} ({})", parts.join(", "));
    }
    Ok(())
}

async fn cat(source: &Source, split: &str, limit: Option<u64>) -> Result<()> {
    let ds = open(source).await?;
    let mut config = LoaderConfig::eval(split, 64);
    // Smallest DCT scale: the pixels are not printed, only the decode check matters.
    config.image_size = Some(8);
    config.store = source.store();
    let names = ds.index().attributes.clone();
    let mut loader = Loader::new(&ds, config)?;
    let mut printed = 0u64;
    'batches: while let Some(batch) = loader.next_batch().await {
        let batch = batch.with_context(|| format!("reading {}", ds.url()))?;
        for i in 0..batch.n {
            if limit.is_some_and(|l| printed >= l) {
                break 'batches;
            }
            let attributes: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .zip(batch.attributes_of(i))
                .map(|(n, &v)| (n.clone(), v.into()))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "key": batch.keys[i],
                    "identity": batch.identities[i],
                    "source": batch.sources[i],
                    "attributes": attributes,
                })
            );
            printed += 1;
        }
    }
    let m = loader.metrics();
    if m.samples_skipped + m.samples_lost > 0 {
        eprintln!(
            "{} samples skipped as corrupt, {} lost with {} failed shards",
            m.samples_skipped, m.samples_lost, m.shards_failed
        );
    }
    Ok(())
}

async fn bench(args: &BenchArgs) -> Result<()> {
    let ds = open(&args.source).await?;
    let split = ds.index().split(&args.split)?;
    let config = LoaderConfig {
        split: args.split.clone(),
        batch_size: args.batch_size,
        image_size: args.image_size,
        layout: if args.nhwc {
            Layout::Nhwc
        } else {
            Layout::Nchw
        },
        shuffle: true,
        shuffle_buffer: args.shuffle_buffer,
        decode_threads: args.threads,
        readahead_shards: args.readahead,
        prefetch_batches: args.prefetch,
        remainder: Remainder::Drop,
        augment: if args.no_augment {
            Augment::NONE
        } else {
            LoaderConfig::default().augment
        },
        epochs: Some(args.epochs),
        rank: args.rank,
        world_size: args.world_size,
        store: args.source.store(),
        ..Default::default()
    };
    let total = d2ae_loader::batches_per_epoch(ds.index(), &config)? * args.epochs;
    let stored = (ds.index().image.width, ds.index().image.height);
    let out = args.image_size.map_or(stored, |s| (s, s));
    let mut report = serde_json::Map::new();
    let mut sample_bytes =
        split.shards.iter().map(|s| s.bytes).sum::<u64>() / split.num_samples.max(1) * 2;
    if args.compare {
        let sp = spinner(args.json, "raw decode (1 thread)");
        let raw = raw_decode(&ds, &config, args.epochs as usize).await?;
        sp.finish_and_clear();
        sample_bytes = raw.max_sample_bytes;
        report.insert("raw_decode".into(), serde_json::to_value(&raw)?);
        if args.threads != 1 {
            let sp = spinner(args.json, "loader, 1 decode thread");
            let one = run_loader(
                &ds,
                LoaderConfig {
                    decode_threads: 1,
                    ..config.clone()
                },
                None,
                |_| {},
            )
            .await?;
            sp.finish_and_clear();
            report.insert("loader_1_thread".into(), serde_json::to_value(&one)?);
        }
    }
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {pos}/{len} batches, {per_sec}, eta {eta}",
            )
            .expect("template"),
        )
    };
    bar.set_message(format!("loader, {} decode threads", args.threads));
    let main = run_loader(&ds, config.clone(), None, |_| bar.inc(1)).await?;
    bar.finish_and_clear();
    let bound = memory_bound(&config, sample_bytes, stored, out);
    // What no shard can exceed: every member at the limit the index's image size sets.
    let limits = d2ae_shard::MemberLimits::for_image(stored.0, stored.1);
    let worst = memory_bound(&config, limits.max_sample(), stored, out);
    report.insert("url".into(), ds.url().into());
    report.insert("split".into(), args.split.clone().into());
    report.insert("decode_threads".into(), args.threads.into());
    report.insert("batch_size".into(), args.batch_size.into());
    report.insert("rank".into(), args.rank.into());
    report.insert("world_size".into(), args.world_size.into());
    report.insert("image_size".into(), out.0.into());
    report.insert("images".into(), main.images.into());
    report.insert("images_per_sec".into(), main.images_per_sec.into());
    report.insert("images_per_cpu_sec".into(), main.images_per_cpu_sec.into());
    report.insert("bytes_per_sec".into(), main.metrics.bytes_per_sec.into());
    report.insert("peak_rss_bytes".into(), main.peak_rss_bytes.into());
    report.insert("memory_bound_bytes".into(), bound.total.into());
    report.insert("memory_bound".into(), serde_json::to_value(&bound)?);
    report.insert("memory_bound_enforced_bytes".into(), worst.total.into());
    report.insert("loader".into(), serde_json::to_value(&main)?);
    if args.json {
        println!("{}", serde_json::Value::Object(report));
        return Ok(());
    }
    if let Some(raw) = report.get("raw_decode") {
        println!(
            "raw decode, 1 thread:     {:>8.0} images/s",
            raw["images_per_sec"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(one) = report.get("loader_1_thread") {
        println!(
            "loader, 1 decode thread:  {:>8.0} images/s ({:.0} per CPU-second)",
            one["images_per_sec"].as_f64().unwrap_or(0.0),
            one["images_per_cpu_sec"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "loader, {} decode threads: {:>7.0} images/s ({:.0} per CPU-second), {} images in {:.2} s",
        args.threads, main.images_per_sec, main.images_per_cpu_sec, main.images, main.wall_s
    );
    println!(
        "rank {} of {}: read {:.1} MB from {} shard reads",
        args.rank,
        args.world_size,
        main.metrics.bytes_read as f64 / 1e6,
        main.metrics.shards_opened
    );
    println!(
        "consumer waited {:.3} s in total; {:.1} MB/s read; peak RSS {:.1} MB (bound {:.1} MB for these samples, {:.1} MB for any shard, above the {:.1} MB before)",
        main.metrics.consumer_wait_s,
        main.metrics.bytes_per_sec / 1e6,
        main.peak_rss_bytes as f64 / 1e6,
        bound.total as f64 / 1e6,
        worst.total as f64 / 1e6,
        main.rss_before_bytes as f64 / 1e6
    );
    if main.metrics.samples_skipped + main.metrics.samples_lost > 0 {
        println!(
            "{} samples skipped, {} lost, {} shards failed",
            main.metrics.samples_skipped, main.metrics.samples_lost, main.metrics.shards_failed
        );
    }
    Ok(())
}

fn spinner(hidden: bool, msg: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner().with_message(msg.to_owned());
    s.enable_steady_tick(std::time::Duration::from_millis(200));
    s
}
