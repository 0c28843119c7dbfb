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

use std::path::PathBuf;
use std::time::Instant;

use d2ae_ingest::detect::{most_prominent, Detection, Detector, DetectorConfig, InputShape};
use d2ae_ingest::image_io::{decode_rgb, DecodeLimits};
use serde_json::Value;

struct RefFace {
    score: f32,
    bbox: [f32; 4],
    kps: [[f32; 2]; 5],
}

fn diff(o: &Detection, r: &RefFace) -> f32 {
    let mut m = 0f32;
    for i in 0..4 {
        m = m.max((o.bbox[i] - r.bbox[i]).abs());
    }
    for (a, b) in o.landmarks.iter().zip(&r.kps) {
        m = m.max((a[0] - b[0]).abs()).max((a[1] - b[1]).abs());
    }
    m
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    ix * iy / (area(a) + area(b) - ix * iy)
}

fn main() {
    let data = std::env::var_os("D2AE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![640, 480, 320]
    } else {
        sizes
    };
    let refs = std::fs::read_to_string(data.join("models/yunet/reference_detections.jsonl"))
        .expect("reference_detections.jsonl (set D2AE_SHARED_DATA)");
    let mut photos = Vec::new();
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("jsonl");
        let faces: Vec<RefFace> = v["faces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let b: Vec<f32> = serde_json::from_value(f["box_xyxy"].clone()).unwrap();
                let k: Vec<[f32; 2]> = serde_json::from_value(f["kps5"].clone()).unwrap();
                RefFace {
                    score: f["score"].as_f64().unwrap() as f32,
                    bbox: [b[0], b[1], b[2], b[3]],
                    kps: [k[0], k[1], k[2], k[3], k[4]],
                }
            })
            .collect();
        let bytes = std::fs::read(data.join(v["image"].as_str().unwrap())).unwrap();
        let img = decode_rgb(&bytes, &DecodeLimits::default()).unwrap();
        photos.push((img, faces, v["image"].as_str().unwrap().to_owned()));
    }
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
                    let side = (r.bbox[2] - r.bbox[0]).max(r.bbox[3] - r.bbox[1]);
                    let tol = (0.01 * side).max(2.0);
                    if ours.iter().any(|o| diff(o, r) <= tol) {
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
