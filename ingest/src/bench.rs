//! `d2ae-ingest bench`: end-to-end ingest throughput against the Python references, in one run.
//!
//! Our side is the real pipeline ([`crate::run::ingest`]: listing, planning, reading files,
//! decode/detect/align/encode, tar + zstd shards, receipts, index) on a manifest of the CelebA
//! mini photos repeated to `--images` entries (symlinks, so every entry has its own key), once
//! with the landmarks given (taken from `models/yunet/reference_detections.jsonl`, as a
//! dataset's landmark file would supply them) and once with the YuNet detector. The references are
//! `scripts/bench/ingest_reference.py` (OpenCV and PIL variants, single-threaded, photos
//! preloaded into memory, `webdataset.TarWriter` to memory) on the same photos and landmarks.
//! Rates are images per second per core; `--workers` adds a run of ours on several cores. With the
//! detector, ours runs once per `--detector-strategy` (rows `ours coarse-fine`, `ours full`); the
//! references always detect on the whole image.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use d2ae_shard::ImageSpec;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{DetectorInputArg, DetectorStrategyArg};
use crate::detect::{Detector, DetectorConfig, InputShape};
use crate::face::FaceConfig;
use crate::make::{Encoding, FaceMaker};
use crate::plan::PlanOptions;
use crate::run::{ingest, IngestOptions};
use crate::source::Layout;

/// Arguments of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The shared test data folder (needs celeba-mini/ and models/yunet/).
    #[arg(long, env = "D2AE_SHARED_DATA", default_value = "../shared/data")]
    pub data: PathBuf,
    /// Images per ingest run of ours (the 20 CelebA mini photos repeated).
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Also run ours on this many worker threads (default: only 1).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Python interpreter for the references (default: $D2AE_VENV/bin/python, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference script.
    #[arg(long, default_value = "scripts/bench/ingest_reference.py")]
    pub reference: PathBuf,
    /// Seconds each Python reference keeps repeating the photos.
    #[arg(long, default_value_t = 3.0)]
    pub python_seconds: f64,
    /// Skip the Python references.
    #[arg(long)]
    pub no_python: bool,
    /// Skip the detector runs.
    #[arg(long)]
    pub no_detector: bool,
    /// Detector input long side, for ours and the references alike.
    #[arg(long, default_value_t = 640)]
    pub detector_size: u32,
    /// Detector input shape (`fit`: photo + black margin, `square`: letterbox), both sides.
    #[arg(long, value_enum, default_value_t = DetectorInputArg::Fit)]
    pub detector_input: DetectorInputArg,
    /// Our detector strategies, each a row (the references always run the full image).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "coarse-fine,full"
    )]
    pub detector_strategy: Vec<DetectorStrategyArg>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `landmarks` or `detector`.
    pub mode: String,
    /// `ours` (with the detector `ours coarse-fine` / `ours full`), `opencv` or `pil`.
    pub variant: String,
    pub workers: usize,
    pub images: u64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub images_per_s_per_core: f64,
    /// Detector input shapes compiled during the timed run (0: all in the untimed warm-up).
    pub shapes_compiled_while_timed: usize,
}

struct Photo {
    path: PathBuf,
    identity: String,
    landmarks: Vec<[f32; 2]>,
}

/// CelebA mini photos with the most prominent reference detection's landmarks.
fn photos(data: &Path) -> anyhow::Result<Vec<Photo>> {
    let ids_path = data.join("celeba-mini/identity_CelebA.txt");
    let ids = std::fs::read_to_string(&ids_path)
        .with_context(|| format!("reading {} (set --data)", ids_path.display()))?;
    let det_path = data.join("models/yunet/reference_detections.jsonl");
    let dets = std::fs::read_to_string(&det_path)
        .with_context(|| format!("reading {}", det_path.display()))?;
    let mut out = Vec::new();
    for line in ids.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let (Some(image), Some(id)) = (f.next(), f.next()) else {
            bail!("{}: bad line {line:?}", ids_path.display());
        };
        let wanted = format!("celeba-mini/images/{image}");
        let det: Value = dets
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["image"] == wanted.as_str())
            .with_context(|| format!("no reference detection for {wanted}"))?;
        let best = det["faces"]
            .as_array()
            .and_then(|faces| {
                faces
                    .iter()
                    .max_by(|a, b| prominence(a).total_cmp(&prominence(b)))
            })
            .with_context(|| format!("no face in the reference detection of {wanted}"))?;
        let landmarks = best["kps5"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                [
                    p[0].as_f64().unwrap_or(0.0) as f32,
                    p[1].as_f64().unwrap_or(0.0) as f32,
                ]
            })
            .collect();
        out.push(Photo {
            path: data.join("celeba-mini/images").join(image),
            identity: id.to_owned(),
            landmarks,
        });
    }
    Ok(out)
}

fn prominence(face: &Value) -> f64 {
    let b = &face["box_xyxy"];
    let w = b[2].as_f64().unwrap_or(0.0) - b[0].as_f64().unwrap_or(0.0);
    let h = b[3].as_f64().unwrap_or(0.0) - b[1].as_f64().unwrap_or(0.0);
    w.max(0.0) * h.max(0.0) * face["score"].as_f64().unwrap_or(0.0)
}

/// A manifest of `n` symlinked entries cycling through `photos`.
fn write_manifest(
    dir: &Path,
    photos: &[Photo],
    n: usize,
    with_landmarks: bool,
) -> anyhow::Result<PathBuf> {
    let links = dir.join("links");
    std::fs::create_dir_all(&links)?;
    let mut csv = String::from("path,identity,landmarks\n");
    for i in 0..n {
        let p = &photos[i % photos.len()];
        let name = format!("links/{i:06}.jpg");
        let link = dir.join(&name);
        if !link.exists() {
            std::os::unix::fs::symlink(&p.path, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        let lm = if with_landmarks {
            let flat: Vec<String> = p
                .landmarks
                .iter()
                .flat_map(|q| [q[0].to_string(), q[1].to_string()])
                .collect();
            flat.join(" ")
        } else {
            String::new()
        };
        csv.push_str(&format!("{name},{},{lm}\n", p.identity));
    }
    let path = dir.join(if with_landmarks {
        "landmarks.csv"
    } else {
        "plain.csv"
    });
    std::fs::write(&path, csv)?;
    Ok(path)
}

fn run_ours(
    manifest: &Path,
    out: &Path,
    detector: Option<Detector>,
    workers: usize,
    mode: &str,
    variant: &str,
) -> anyhow::Result<BenchRow> {
    let shapes_before = detector.as_ref().map_or(0, Detector::compiled_shapes);
    let maker = FaceMaker {
        detector,
        config: FaceConfig::default(),
        encoding: Encoding::Jpeg(95),
    };
    let options = IngestOptions {
        source: manifest.to_owned(),
        layout: Layout::Manifest,
        out: out.display().to_string(),
        store: Default::default(),
        plan: PlanOptions {
            val_fraction: 0.1,
            seed: 0,
            exclude: Default::default(),
        },
        shard_size: 256 << 20,
        strict: false,
        workers,
        restart: true,
        progress: false,
        needs_source_landmarks: mode == "landmarks",
        settings: serde_json::json!({"bench": mode}),
        image: ImageSpec {
            width: 235,
            height: 235,
            ext: "jpg".into(),
            ipd_ratio: Some(0.35),
            aligned: false,
        },
    };
    let summary = ingest(&options, &maker)?;
    if summary.processed == 0 {
        bail!("bench ingest into {} processed no photo", out.display());
    }
    if summary.rejected > 0 {
        bail!(
            "bench ingest rejected {} photos: {:?}",
            summary.rejected,
            summary.rejects
        );
    }
    let shapes_after = maker.detector.as_ref().map_or(0, Detector::compiled_shapes);
    Ok(BenchRow {
        mode: mode.into(),
        variant: variant.into(),
        workers,
        images: summary.processed,
        seconds: summary.seconds,
        images_per_s: summary.images_per_second,
        images_per_s_per_core: summary.images_per_second / workers as f64,
        shapes_compiled_while_timed: shapes_after - shapes_before,
    })
}

fn run_python(
    args: &BenchArgs,
    items: &Path,
    variant: &str,
    detector: Option<&Path>,
) -> anyhow::Result<BenchRow> {
    let python = args.python.clone().unwrap_or_else(|| {
        std::env::var_os("D2AE_VENV")
            .map(|v| PathBuf::from(v).join("bin/python"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("python3"))
    });
    let mut cmd = Command::new(&python);
    cmd.arg(&args.reference)
        .args(["--variant", variant, "--items"])
        .arg(items)
        .args(["--min-seconds", &args.python_seconds.to_string()]);
    if let Some(d) = detector {
        cmd.arg("--detector")
            .arg(d)
            .args(["--detector-size", &args.detector_size.to_string()])
            .args(["--detector-input", input_name(args.detector_input)]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} {}", python.display(), args.reference.display()))?;
    if !out.status.success() {
        bail!(
            "{} --variant {variant} failed: {}",
            args.reference.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("reference output is not JSON")?;
    let rate = v["images_per_s"].as_f64().unwrap_or(0.0);
    Ok(BenchRow {
        mode: if detector.is_some() {
            "detector"
        } else {
            "landmarks"
        }
        .into(),
        variant: variant.into(),
        workers: 1,
        images: v["images"].as_u64().unwrap_or(0),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        images_per_s: rate,
        images_per_s_per_core: rate,
        shapes_compiled_while_timed: 0,
    })
}

/// Run the benchmark; returns the rows in the order measured.
pub fn run_bench(args: &BenchArgs) -> anyhow::Result<Vec<BenchRow>> {
    let photos = photos(&args.data)?;
    let tmp = tempfile_dir()?;
    let yunet = args.data.join("models/yunet/yunet_s_640_640.onnx");
    let items = tmp.join("items.json");
    let list: Vec<Value> = photos
        .iter()
        .map(|p| serde_json::json!({"path": p.path, "landmarks": p.landmarks}))
        .collect();
    std::fs::write(&items, serde_json::to_vec(&list)?)?;

    let mut rows = Vec::new();
    let mut modes = vec!["landmarks"];
    if !args.no_detector {
        modes.push("detector");
    }
    for mode in modes {
        let with_landmarks = mode == "landmarks";
        let manifest = write_manifest(&tmp, &photos, args.images, with_landmarks)?;
        let mut worker_counts = vec![1];
        worker_counts.extend(args.workers.filter(|w| *w > 1));
        let strategies: Vec<Option<DetectorStrategyArg>> = if with_landmarks {
            vec![None]
        } else {
            args.detector_strategy.iter().copied().map(Some).collect()
        };
        for workers in worker_counts {
            for &strategy in &strategies {
                let (detector, variant) = match strategy {
                    None => (None, "ours".to_string()),
                    Some(s) => (
                        Some(warmed_detector(&yunet, args, s, &photos)?),
                        format!("ours {}", s.name()),
                    ),
                };
                // Its own folder: a finished ingest at the same place would not run again.
                let out = tmp.join(format!(
                    "out-{mode}-{workers}-{}",
                    variant.replace(' ', "-")
                ));
                rows.push(run_ours(
                    &manifest, &out, detector, workers, mode, &variant,
                )?);
            }
        }
        if !args.no_python {
            let det = (!with_landmarks).then_some(yunet.as_path());
            for variant in ["opencv", "pil"] {
                rows.push(run_python(args, &items, variant, det)?);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(rows)
}

fn input_name(arg: DetectorInputArg) -> &'static str {
    match arg {
        DetectorInputArg::Fit => "fit",
        DetectorInputArg::Square => "square",
    }
}

/// The detector as configured, run once on every photo untimed so that each input shape's plan
/// is compiled before the clock starts (the Python reference likewise warms up).
fn warmed_detector(
    path: &Path,
    args: &BenchArgs,
    strategy: DetectorStrategyArg,
    photos: &[Photo],
) -> anyhow::Result<Detector> {
    let cfg = DetectorConfig {
        input_size: args.detector_size,
        shape: match args.detector_input {
            DetectorInputArg::Fit => InputShape::Fit,
            DetectorInputArg::Square => InputShape::Square,
        },
        strategy: strategy.strategy(),
        ..DetectorConfig::default()
    };
    let det = Detector::load(path, cfg)?;
    for p in photos {
        // The pipeline's own per-photo path, so exactly its input shapes are compiled.
        let _ = crate::face::prepare_face(
            &std::fs::read(&p.path)?,
            None,
            Some(&det),
            &FaceConfig::default(),
        );
    }
    Ok(det)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("d2ae-ingest-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The results as a Markdown table: each reference against each of ours (1 worker) in the same
/// mode, and a note if any of ours compiled detector shapes while timed.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = String::from("| mode | variant | workers | images | seconds | images/s | images/s per core | ours ÷ this (per core) |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let ours: Vec<&BenchRow> = rows
            .iter()
            .filter(|o| o.mode == r.mode && o.variant.starts_with("ours") && o.workers == 1)
            .collect();
        let ratio = if r.variant.starts_with("ours") || r.images_per_s_per_core <= 0.0 {
            String::new()
        } else {
            ours.iter()
                .map(|o| {
                    let x = o.images_per_s_per_core / r.images_per_s_per_core;
                    match o.variant.strip_prefix("ours ") {
                        Some(name) if ours.len() > 1 => format!("{name} {x:.2}×"),
                        _ => format!("{x:.2}×"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {} |\n",
            r.mode,
            r.variant,
            r.workers,
            r.images,
            r.seconds,
            r.images_per_s,
            r.images_per_s_per_core,
            ratio
        ));
    }
    for r in rows.iter().filter(|r| r.shapes_compiled_while_timed > 0) {
        s.push_str(&format!(
            "\nNote: {} ({} workers) compiled {} detector input shapes while timed.\n",
            r.variant, r.workers, r.shapes_compiled_while_timed
        ));
    }
    s
}
