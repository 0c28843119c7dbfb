//! Shared by the ingest crate's integration tests and the `detector_sizes` example (which
//! includes this file with `#[path]`): where the shared test data is, and onnxruntime's
//! reference YuNet detections in `models/yunet/reference_detections.jsonl`.
//!
//! Each includer uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use d2ae_ingest::detect::Detection;

/// `../shared/data/` beside the project, or `D2AE_SHARED_DATA`; panics when it is missing (a
/// test must fail, not skip, without its data).
///
/// The crate's directory is the one `cargo test` sets when the test runs, not the one compiled
/// in: checkouts at other paths share one target directory, and a test binary built in another
/// checkout would otherwise look for the data beside that one.
pub fn shared_data() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let dir = std::env::var_os("D2AE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("../../shared/data"));
    assert!(
        dir.join("README.md").exists(),
        "shared test data not found at {} (set D2AE_SHARED_DATA)",
        dir.display()
    );
    dir
}

/// One face of the reference detections, in the photo's pixels.
pub struct RefFace {
    pub score: f32,
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose, right and left mouth corner.
    pub kps: [[f32; 2]; 5],
}

/// The reference detections of one photo.
pub struct RefPhoto {
    /// Path relative to the shared data directory.
    pub image: String,
    pub faces: Vec<RefFace>,
}

/// Every photo of `reference_detections.jsonl` under `data`.
pub fn reference_detections(data: &Path) -> Vec<RefPhoto> {
    let text = std::fs::read_to_string(data.join("models/yunet/reference_detections.jsonl"))
        .expect("reference_detections.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("jsonl line");
            let faces = v["faces"]
                .as_array()
                .expect("faces")
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
            RefPhoto {
                image: v["image"].as_str().expect("image").to_owned(),
                faces,
            }
        })
        .collect()
}

/// The largest coordinate difference between our detection and a reference face, over the box
/// and the five landmarks.
pub fn max_abs_diff(ours: &Detection, r: &RefFace) -> f32 {
    let mut m = 0f32;
    for i in 0..4 {
        m = m.max((ours.bbox[i] - r.bbox[i]).abs());
    }
    for (a, b) in ours.landmarks.iter().zip(&r.kps) {
        m = m.max((a[0] - b[0]).abs()).max((a[1] - b[1]).abs());
    }
    m
}

/// The agreement required of a face: 2 px, or 1% of the box's larger side for boxes over 200 px.
pub fn tolerance(r: &RefFace) -> f32 {
    let side = (r.bbox[2] - r.bbox[0]).max(r.bbox[3] - r.bbox[1]);
    (0.01 * side).max(2.0)
}
