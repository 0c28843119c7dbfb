//! YuNet accuracy and speed at each detector input size and shape, and of each face-picking
//! strategy, against onnxruntime's reference detections (640×640 letterbox) on the 55 photos of
//! `shared/data/models/yunet/reference_detections.jsonl`.
//!
//! ```text
//! cargo run --release -p d2ae-ingest --example detector_sizes -- [SIZE...] [--factor F]... [--pick-only] [--only PREFIX]
//! ```
//!
//! Table 1, all faces (one full pass), per configuration: reference faces recovered within 2 px
//! (1% of the side for boxes over 200 px, as in `tests/detection.rs`), faces found at all (box
//! IoU ≥ 0.5), photos where the most prominent face (what alignment uses) is not the
//! reference's, the median and largest eye error of that face in % of the interpupillary
//! distance, and milliseconds per photo for the detector call (resize + inference + decoding;
//! photos decoded beforehand). `VERBOSE=1` names photos with an eye error over 5% of the IPD.
//! `--pick-only` skips it. `--only PREFIX` keeps the photos whose path starts with it (e.g.
//! `celeba-mini/`, the photos `d2ae-ingest bench` uses).
//!
//! Table 2, the face alignment uses ([`Detector::pick`], fitted input), `full` and coarse-fine
//! at each `--factor` (default 4 and 2): photos whose picked face agrees with its reference face
//! within the tolerance above, photos where it is not the face `full` picks, the eye error as
//! above, how many photos were settled in windows and how many fell back to the full pass, the
//! input shapes compiled (each a one-off ~0.1 s, in the untimed warm-up here), the warm-up's
//! time per photo (compiles included) and milliseconds per photo once warm.

use std::time::Instant;

use d2ae_ingest::detect::{
    most_prominent, Detection, Detector, DetectorConfig, InputShape, Route, Strategy, Target,
};
use d2ae_ingest::image_io::{decode_rgb, DecodeLimits};
use image::RgbImage;

#[path = "../tests/support/mod.rs"]
mod support;
use support::{max_abs_diff, reference_detections, shared_data, tolerance, RefFace};

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    ix * iy / (area(a) + area(b) - ix * iy)
}

fn main() {
    let data = shared_data();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pick_only = args.iter().any(|a| a == "--pick-only");
    let mut factors = Vec::new();
    let mut sizes: Vec<u32> = Vec::new();
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--factor" => factors.push(
                it.next()
                    .and_then(|f| f.parse().ok())
                    .expect("--factor takes a number"),
            ),
            "--pick-only" => {}
            "--only" => only = Some(it.next().expect("--only takes a path prefix").clone()),
            _ => sizes.push(
                a.parse()
                    .unwrap_or_else(|_| panic!("unknown argument {a:?}")),
            ),
        }
    }
    if factors.is_empty() {
        factors = vec![4, 2];
    }
    let sizes = if sizes.is_empty() {
        vec![640, 480, 320]
    } else {
        sizes
    };
    let photos: Vec<_> = reference_detections(&data)
        .into_iter()
        .filter(|p| {
            only.as_ref()
                .is_none_or(|o| p.image.starts_with(o.as_str()))
        })
        .map(|p| {
            let bytes = std::fs::read(data.join(&p.image)).unwrap();
            let img = decode_rgb(&bytes, &DecodeLimits::default()).unwrap();
            (img, p.faces, p.image)
        })
        .collect();
    let verbose = std::env::var_os("VERBOSE").is_some();
    let total: usize = photos.iter().map(|p| p.1.len()).sum();
    println!("{} photos, {total} reference faces", photos.len());
    if !pick_only {
        all_faces_table(&photos, &sizes, verbose);
    }
    pick_table(&photos, &sizes, &factors, verbose);
}

type Photos = [(RgbImage, Vec<RefFace>, String)];

fn all_faces_table(photos: &Photos, sizes: &[u32], verbose: bool) {
    let data = shared_data();
    let total: usize = photos.iter().map(|p| p.1.len()).sum();
    println!("| input | faces within 2 px | faces found (IoU ≥ 0.5) | photos where another face is picked | picked face: median / max eye error (% of IPD) | ms per photo |");
    println!("|---|---:|---:|---:|---:|---:|");
    let path = data.join("models/yunet/yunet_s_640_640.onnx");
    for &size in sizes {
        for shape in [InputShape::Square, InputShape::Fit] {
            let cfg = DetectorConfig {
                input_size: size,
                shape,
                ..DetectorConfig::default()
            };
            let det = Detector::load(&path, cfg).expect("load");
            // Warm-up compiles every input shape before timing.
            for (img, _, _) in photos {
                det.detect(img).unwrap();
            }
            let (mut close, mut found, mut eyes, mut secs, mut other) = (0, 0, Vec::new(), 0.0, 0);
            for (img, faces, name) in photos {
                let t = Instant::now();
                let ours = det.detect(img).unwrap();
                secs += t.elapsed().as_secs_f64();
                for r in faces {
                    if ours.iter().any(|o| max_abs_diff(o, r) <= tolerance(r)) {
                        close += 1;
                    }
                    if ours.iter().any(|o| iou(&o.bbox, &r.bbox) >= 0.5) {
                        found += 1;
                    }
                }
                match eye_error(faces, most_prominent(&ours), name, verbose) {
                    Some(e) => eyes.push(e),
                    None => other += 1,
                }
            }
            eyes.sort_by(f32::total_cmp);
            println!(
                "| {size} {} | {close}/{total} | {found}/{total} | {other} | {:.2} / {:.2} | {:.1} |",
                match shape {
                    InputShape::Fit => "fit",
                    InputShape::Square => "square",
                },
                eyes.get(eyes.len() / 2).copied().unwrap_or(f32::NAN),
                eyes.last().copied().unwrap_or(f32::NAN),
                secs * 1e3 / photos.len() as f64
            );
        }
    }
}

/// The eye error of our picked face against the reference's most prominent face, in % of its
/// IPD; `None` when we picked nothing or another face (box IoU < 0.5).
fn eye_error(
    faces: &[RefFace],
    ours: Option<&Detection>,
    name: &str,
    verbose: bool,
) -> Option<f32> {
    let r = faces.iter().max_by(|a, b| {
        let p = |f: &RefFace| (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) * f.score;
        p(a).total_cmp(&p(b))
    })?;
    let o = ours?;
    if iou(&o.bbox, &r.bbox) < 0.5 {
        return None;
    }
    let ipd = (r.kps[0][0] - r.kps[1][0]).hypot(r.kps[0][1] - r.kps[1][1]);
    let e = (0..2)
        .map(|i| (o.landmarks[i][0] - r.kps[i][0]).hypot(o.landmarks[i][1] - r.kps[i][1]))
        .fold(0f32, f32::max);
    if verbose && 100.0 * e / ipd > 5.0 {
        eprintln!("{name}: eye error {e:.1} px, IPD {ipd:.0} px");
    }
    Some(100.0 * e / ipd)
}

fn pick_table(photos: &Photos, sizes: &[u32], factors: &[u32], verbose: bool) {
    let data = shared_data();
    let path = data.join("models/yunet/yunet_s_640_640.onnx");
    let n = photos.len();
    println!();
    println!("| input | strategy | picked face within tolerance | photos where another face than `full`'s is picked | picked face: median / max eye error (% of IPD) | settled in windows / fell back | model input pixels vs `full` | shapes compiled | warm-up ms per photo (compiles) | ms per photo |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &size in sizes {
        let mut full_picks: Vec<Option<Detection>> = Vec::new();
        let mut full_pixels = 0.0;
        let strategies = std::iter::once(Strategy::Full).chain(
            factors
                .iter()
                .map(|&factor| Strategy::CoarseFine { factor }),
        );
        for strategy in strategies {
            let cfg = DetectorConfig {
                input_size: size,
                strategy,
                ..DetectorConfig::default()
            };
            let det = Detector::load(&path, cfg).expect("load");
            let t = Instant::now();
            for (img, _, _) in photos {
                det.pick(img, Target::Prominent).unwrap();
            }
            let warm_ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            let pixels_before = det.input_pixels();
            let (mut close, mut other, mut windows, mut fallback, mut secs) = (0, 0, 0, 0, 0.0);
            let mut eyes = Vec::new();
            let mut picks = Vec::new();
            for (i, (img, faces, name)) in photos.iter().enumerate() {
                let t = Instant::now();
                let picked = det.pick(img, Target::Prominent).unwrap();
                secs += t.elapsed().as_secs_f64();
                match picked.route {
                    Route::Windows => windows += 1,
                    Route::Fallback(why) => {
                        fallback += 1;
                        if verbose {
                            eprintln!("{name}: fell back ({why:?})");
                        }
                    }
                    Route::Full => {}
                }
                let face = picked.face;
                if let Some(o) = &face {
                    let d = faces
                        .iter()
                        .map(|r| (max_abs_diff(o, r), tolerance(r)))
                        .min_by(|a, b| a.0.total_cmp(&b.0));
                    if matches!(d, Some((d, tol)) if d <= tol) {
                        close += 1;
                    } else if verbose {
                        eprintln!("{name}: picked face off by {d:?} px");
                    }
                }
                if let Some(full) = full_picks.get(i) {
                    let same = match (full, &face) {
                        (Some(a), Some(b)) => iou(&a.bbox, &b.bbox) >= 0.5,
                        (None, None) => true,
                        _ => false,
                    };
                    if !same {
                        other += 1;
                        if verbose {
                            eprintln!("{name}: picked {face:?}, full picked {full:?}");
                        }
                    }
                }
                if let Some(e) = eye_error(faces, face.as_ref(), name, verbose) {
                    eyes.push(e);
                }
                picks.push(face);
            }
            let pixels = (det.input_pixels() - pixels_before) as f64;
            if full_picks.is_empty() {
                full_picks = picks;
                full_pixels = pixels;
            }
            eyes.sort_by(f32::total_cmp);
            println!(
                "| {size} fit | {} | {close}/{n} | {other} | {:.2} / {:.2} | {windows} / {fallback} | {:.0}% | {} | {warm_ms:.1} | {:.1} |",
                match strategy {
                    Strategy::Full => "full".to_string(),
                    Strategy::CoarseFine { factor } => format!("coarse-fine /{factor}"),
                },
                eyes.get(eyes.len() / 2).copied().unwrap_or(f32::NAN),
                eyes.last().copied().unwrap_or(f32::NAN),
                100.0 * pixels / full_pixels,
                det.compiled_shapes(),
                secs * 1e3 / n as f64
            );
        }
    }
}
