//! Command-line flags (the doc comments are the `--help`) and the glue from flags to a run.
//!
//! `d2ae-ingest <SOURCE> --out <DEST>` and `d2ae-ingest verify|synth|bench ...` share one command:
//! clap's `args_conflicts_with_subcommands` + `subcommand_negates_reqs` make the ingest arguments
//! required only when no subcommand is given. (A source folder literally named `verify`, `synth` or
//! `bench` must be written `./verify`.)

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use d2ae_shard::ImageSpec;
use serde_json::json;

use crate::align::AlignConfig;
use crate::detect::{Detector, DetectorConfig, InputShape, Strategy};
use crate::face::FaceConfig;
use crate::image_io::DecodeLimits;
use crate::make::{Encoding, FaceMaker};
use crate::plan::{read_exclude_list, PlanOptions};
use crate::progress::Summary;
use crate::run::{ingest, IngestOptions};
use crate::sink::StoreArgs;
use crate::source::Layout;

/// Detect, align and shard raw face datasets (D²AE preprocessing, paper §4.1).
///
/// Reads a folder-per-identity tree, a CelebA root or a CSV/JSONL manifest; aligns each face to
/// a SIZE×SIZE crop with the eyes level and IPD-RATIO×SIZE apart; writes zstd-compressed
/// webdataset shards, index.json and rejects.jsonl to a local folder or a bucket. A killed run
/// rerun with the same arguments resumes. See docs/CLI.md and docs/FORMAT.md.
#[derive(Debug, Parser)]
#[command(name = "d2ae-ingest", version, max_term_width = 100)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub ingest: IngestArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-read a dataset: checksums, counts, metadata, and that every sample decodes.
    Verify(VerifyArgs),
    /// Generate a synthetic CelebA-layout dataset with known identity and attribute factors.
    Synth(crate::synth::SynthArgs),
    /// Measure end-to-end ingest images/s per core against the Python references (OpenCV, PIL).
    Bench(crate::bench::BenchArgs),
}

/// Image encoding of the crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageFormatArg {
    /// JPEG (`--quality`), the default.
    Jpg,
    /// Lossless PNG (about 4× larger).
    Png,
}

/// Arguments of an ingest run.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// The raw dataset: a folder (`folders` or `celeba` layout) or a manifest file (.csv/.jsonl).
    #[arg(required = true, value_name = "SOURCE")]
    pub source: Option<PathBuf>,

    /// Destination: a local folder, or file://, s3://bucket/prefix, gs://..., az://... .
    #[arg(long, required = true, value_name = "DIR-or-URL")]
    pub out: Option<String>,

    /// How SOURCE is laid out; `auto` picks manifest for a file, celeba when
    /// identity_CelebA.txt is present, else folders.
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    pub layout: Layout,

    /// YuNet ONNX face detector for photos without landmarks (e.g.
    /// shared/data/models/yunet/yunet_s_640_640.onnx).
    #[arg(long, value_name = "ONNX", conflicts_with = "aligned")]
    pub detector: Option<PathBuf>,

    /// Inputs are already aligned (e.g. img_align_celeba): centre crop and resize only.
    #[arg(long)]
    pub aligned: bool,

    /// Output crop side in pixels (paper: 235).
    #[arg(long, default_value_t = 235, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub size: u32,

    /// Interpupillary distance as a fraction of the crop width (paper: 0.35).
    #[arg(long, default_value_t = 0.35)]
    pub ipd_ratio: f32,

    /// Image encoding inside the shards.
    #[arg(long, value_enum, default_value_t = ImageFormatArg::Jpg)]
    pub format: ImageFormatArg,

    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,

    /// Target compressed shard size, e.g. 256MiB, 500MB, 1GiB or a byte count. A shard is
    /// closed at the first sample after it reaches this size.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub shard_size: u64,

    /// Fraction of images put in `val` when the dataset has no split of its own (paper: 0.1).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,

    /// Seed of the train/val split and of the shuffled write order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// File of identity names to leave out, one per line (`#` comments allowed), e.g. the LFW
    /// overlap of MS-Celeb-1M.
    #[arg(long, value_name = "FILE")]
    pub exclude_identities: Option<PathBuf>,

    /// Fail on the first rejected image instead of listing it in rejects.jsonl.
    #[arg(long)]
    pub strict: bool,

    /// Worker threads (default: all cores). The output is identical for any value.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Reject photos with more pixels than this (decompression-bomb guard).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,

    /// Reject faces whose interpupillary distance in the photo is below this many pixels.
    #[arg(long, default_value_t = 20.0, value_name = "PX")]
    pub min_face: f32,

    /// Detector score threshold (with --detector).
    #[arg(long, default_value_t = 0.6)]
    pub min_score: f32,

    /// Long side, in pixels, the photo is resized to for the detector (a multiple of 32).
    /// 640 matches the reference detections; 320 runs ~4× faster but misses faces under ~20 px
    /// and localises landmarks less precisely (see docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 640, value_name = "PX")]
    pub detector_size: u32,

    /// Detector input around the resized photo: `fit` pads only to a multiple of 32, `square`
    /// letterboxes into detector-size × detector-size as the reference detections did.
    #[arg(long, value_enum, default_value_t = DetectorInputArg::Fit)]
    pub detector_input: DetectorInputArg,

    /// How the face to align is searched: `coarse-fine` finds candidates at 1/4 of the detector
    /// size and refines them in windows of the photo (same faces as `full` on the reference
    /// photos, fewer pixels through the model; docs/ALIGNMENT.md), `full` runs the whole photo.
    #[arg(long, value_enum, default_value_t = DetectorStrategyArg::CoarseFine)]
    pub detector_strategy: DetectorStrategyArg,

    /// Discard the unfinished state of an earlier run at --out instead of resuming it.
    #[arg(long)]
    pub restart: bool,

    /// Print the summary as JSON on stdout (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The dataset: a local folder or file://, s3://, gs://, az:// URL.
    #[arg(value_name = "DIR-or-URL")]
    pub dataset: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Threads reading shards (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parse `256MiB`, `500MB`, `64k`, `1GiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256MiB, 500MB, 1000000)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    let bytes = (value * multiplier as f64).round() as u64;
    if bytes == 0 {
        return Err("size must be positive".into());
    }
    Ok(bytes)
}

/// `--detector-input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectorInputArg {
    Fit,
    Square,
}

/// `--detector-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectorStrategyArg {
    CoarseFine,
    Full,
}

impl DetectorStrategyArg {
    pub fn strategy(self) -> Strategy {
        match self {
            DetectorStrategyArg::CoarseFine => Strategy::default(),
            DetectorStrategyArg::Full => Strategy::Full,
        }
    }

    /// The flag's value, as recorded in `index.json`.
    pub fn name(self) -> &'static str {
        match self {
            DetectorStrategyArg::CoarseFine => "coarse-fine",
            DetectorStrategyArg::Full => "full",
        }
    }
}

/// Default worker count: every core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl IngestArgs {
    /// The output-affecting settings as recorded in `index.json` (`config`).
    fn settings(&self, exclude_count: usize) -> serde_json::Value {
        json!({
            "aligned": self.aligned,
            "detector": self.detector.as_ref().map(|p| p.display().to_string()),
            "min_score": self.detector.as_ref().map(|_| self.min_score),
            "detector_size": self.detector.as_ref().map(|_| self.detector_size),
            "detector_input": self.detector.as_ref().map(|_| match self.detector_input {
                DetectorInputArg::Fit => "fit",
                DetectorInputArg::Square => "square",
            }),
            "detector_strategy": self.detector.as_ref().map(|_| self.detector_strategy.name()),
            "size": self.size,
            "ipd_ratio": self.ipd_ratio,
            "format": match self.format { ImageFormatArg::Jpg => "jpg", ImageFormatArg::Png => "png" },
            "quality": matches!(self.format, ImageFormatArg::Jpg).then_some(self.quality),
            "shard_size": self.shard_size,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "exclude_identities": self.exclude_identities.as_ref().map(|p| p.display().to_string()),
            "excluded_identity_names": exclude_count,
            "max_pixels": self.max_pixels,
            "min_face": self.min_face,
        })
    }
}

/// Run an ingest from parsed flags.
pub fn run_ingest(args: &IngestArgs) -> anyhow::Result<Summary> {
    let (Some(source), Some(out)) = (&args.source, &args.out) else {
        bail!("SOURCE and --out are required");
    };
    if !(0.05..=0.95).contains(&args.ipd_ratio) {
        bail!(
            "--ipd-ratio must be between 0.05 and 0.95, got {}",
            args.ipd_ratio
        );
    }
    let exclude = match &args.exclude_identities {
        Some(path) => read_exclude_list(path)?,
        None => Default::default(),
    };
    let detector = match &args.detector {
        Some(path) => {
            let cfg = DetectorConfig {
                score_threshold: args.min_score,
                input_size: args.detector_size,
                shape: match args.detector_input {
                    DetectorInputArg::Fit => InputShape::Fit,
                    DetectorInputArg::Square => InputShape::Square,
                },
                strategy: args.detector_strategy.strategy(),
                ..DetectorConfig::default()
            };
            Some(
                Detector::load(path, cfg)
                    .with_context(|| format!("loading the face detector {}", path.display()))?,
            )
        }
        None => None,
    };
    let maker = FaceMaker {
        detector,
        config: FaceConfig {
            align: AlignConfig {
                size: args.size,
                ipd_ratio: args.ipd_ratio,
                min_ipd_px: args.min_face,
                ..AlignConfig::default()
            },
            limits: DecodeLimits {
                max_pixels: args.max_pixels,
            },
            aligned_input: args.aligned,
        },
        encoding: match args.format {
            ImageFormatArg::Jpg => Encoding::Jpeg(args.quality),
            ImageFormatArg::Png => Encoding::Png,
        },
    };
    let options = IngestOptions {
        source: source.clone(),
        layout: args.layout,
        out: out.clone(),
        store: args.store.clone(),
        settings: args.settings(exclude.len()),
        plan: PlanOptions {
            val_fraction: args.val_fraction,
            seed: args.seed,
            exclude,
        },
        shard_size: args.shard_size,
        strict: args.strict,
        workers: args.workers.map_or_else(default_workers, |n| n as usize),
        restart: args.restart,
        progress: !args.json,
        needs_source_landmarks: args.detector.is_none() && !args.aligned,
        image: ImageSpec {
            width: args.size,
            height: args.size,
            ext: crate::make::SampleMaker::ext(&maker).to_owned(),
            ipd_ratio: (!args.aligned).then_some(args.ipd_ratio),
            aligned: args.aligned,
        },
    };
    Ok(ingest(&options, &maker)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("64k").unwrap(), 64_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("12345").unwrap(), 12345);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn ingest_form_and_subcommands_coexist() {
        let cli = Cli::try_parse_from([
            "d2ae-ingest",
            "photos",
            "--out",
            "s3://b/p",
            "--workers",
            "2",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.ingest.source, Some(PathBuf::from("photos")));
        assert_eq!(cli.ingest.out.as_deref(), Some("s3://b/p"));
        assert_eq!(cli.ingest.workers, Some(2));
        assert_eq!(cli.ingest.shard_size, 256 << 20);

        let cli = Cli::try_parse_from(["d2ae-ingest", "verify", "/data/x", "--json"]).unwrap();
        match cli.command {
            Some(Command::Verify(v)) => assert!(v.json && v.dataset == "/data/x"),
            other => panic!("expected verify, got {other:?}"),
        }
        // The ingest form needs --out; verify does not accept ingest flags.
        assert!(Cli::try_parse_from(["d2ae-ingest", "photos"]).is_err());
        assert!(Cli::try_parse_from(["d2ae-ingest", "verify", "x", "--aligned"]).is_err());
        // --detector and --aligned exclude each other.
        assert!(Cli::try_parse_from([
            "d2ae-ingest",
            "p",
            "--out",
            "o",
            "--aligned",
            "--detector",
            "m.onnx"
        ])
        .is_err());
    }
}
