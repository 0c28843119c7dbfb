//! YuNet accuracy and speed at each detector input size and shape, against onnxruntime's
//! reference detections (640×640 letterbox) on the 55 photos of
//! `shared/data/models/yunet/reference_detections.jsonl`.
//!
//! ```text
//! cargo run --release -p d2ae-ingest --example detector_sizes -- [SIZE...]
//! ```
//!
//! Per configuration: reference faces recovered within 2 px (1% of the side for boxes over
//! 200 px, as in `tests/detection.rs`), faces found at all (box IoU ≥ 0.5), photos where the
//! most prominent face (what alignment uses) is not the reference's, the median and largest eye
//! error of that face in % of the interpupillary distance, and milliseconds per photo for the
//! detector call (resize + inference + decoding; photos decoded beforehand). `VERBOSE=1` names
//! photos with an eye error over 5% of the IPD.

use std::time::Instant;

use d2ae_ingest::detect::{most_prominent, Detector, DetectorConfig, InputShape};
use d2ae_ingest::image_io::{decode_rgb, DecodeLimits};

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
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![640, 480, 320]
    } else {
        sizes
    };
    let photos: Vec<_> = reference_detections(&data)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(data.join(&p.image)).unwrap();
            let img = decode_rgb(&bytes, &DecodeLimits::default()).unwrap();
            (img, p.faces, p.image)
        })
        .collect();
    let verbose = std::env::var_os("VERBOSE").is_some();
    let total: usize = photos.iter().map(|p| p.1.len()).sum();
    println!("{} photos, {total} reference faces", photos.len());
    println!("| input | faces within 2 px | faces found (IoU ≥ 0.5) | photos where another face is picked | picked face: median / max eye error (% of IPD) | ms per photo |");
    println!("|---|---:|---:|---:|---:|---:|");
    let path = data.join("models/yunet/yunet_s_640_640.onnx");
    for &size in &sizes {
        for shape in [InputShape::Square, InputShape::Fit] {
            let cfg = DetectorConfig {
                input_size: size,
                shape,
                ..DetectorConfig::default()
            };
            let det = Detector::load(&path, cfg).expect("load");
            // Warm-up compiles every input shape before timing.
            for (img, _, _) in &photos {
                det.detect(img).unwrap();
            }
            let (mut close, mut found, mut eyes, mut secs, mut other) = (0, 0, Vec::new(), 0.0, 0);
            for (img, faces, name) in &photos {
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
                let best_ref = faces.iter().max_by(|a, b| {
                    let p =
                        |f: &RefFace| (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) * f.score;
                    p(a).total_cmp(&p(b))
                });
                if let (Some(r), Some(o)) = (best_ref, most_prominent(&ours)) {
                    if iou(&o.bbox, &r.bbox) < 0.5 {
                        other += 1;
                        continue;
                    }
                    let ipd = (r.kps[0][0] - r.kps[1][0]).hypot(r.kps[0][1] - r.kps[1][1]);
                    let e = (0..2)
                        .map(|i| {
                            (o.landmarks[i][0] - r.kps[i][0]).hypot(o.landmarks[i][1] - r.kps[i][1])
                        })
                        .fold(0f32, f32::max);
                    if verbose && 100.0 * e / ipd > 5.0 {
                        eprintln!("{name}: eye error {e:.1} px, IPD {ipd:.0} px");
                    }
                    eyes.push(100.0 * e / ipd);
                } else {
                    other += 1;
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
