//! A manifest's face box picks which detected face is aligned, as CelebA's `list_bbox_celeba.txt`
//! does (`celeba_bbox.rs`): on a group photo (6 faces, `photos/insightface/t1.jpg`, 1280×886) each
//! CSV or JSONL row's box yields its own person, not the most prominent face; a box around no face
//! is `no_face_in_box`, and a box with no area or outside the photo is `bad_box`, also through a
//! whole `d2ae-ingest` run.

use std::path::{Path, PathBuf};
use std::process::Command;

use d2ae_ingest::detect::{Detector, DetectorConfig};
use d2ae_ingest::face::FaceConfig;
use d2ae_ingest::make::{Encoding, FaceMaker, SampleMaker};
use d2ae_ingest::source::manifest;

mod support;
use support::shared_data;

fn detector_path() -> PathBuf {
    shared_data().join("models/yunet/yunet_s_640_640.onnx")
}

/// What each row should give: a detector score (reference detections) or a reject reason.
#[derive(Debug)]
enum Want {
    Score(f32),
    Reject(&'static str),
}

/// Per row: the box as corners (`None`: no box), and what it should give. Loose CelebA-style boxes
/// around the faces at (271,147)-(370,277), score 0.892, and (1132,274)-(1228,399), 0.914; a patch
/// with no face; the most prominent face (462,265)-(576,417), 0.929; then a box with no area, one
/// right of the photo, and a row without a box (the most prominent face).
const ROWS: [(Option<[f32; 4]>, Want); 7] = [
    (Some([255.0, 120.0, 390.0, 305.0]), Want::Score(0.892)),
    (Some([1115.0, 245.0, 1245.0, 420.0]), Want::Score(0.914)),
    (
        Some([600.0, 20.0, 660.0, 80.0]),
        Want::Reject("no_face_in_box"),
    ),
    (Some([445.0, 235.0, 595.0, 435.0]), Want::Score(0.929)),
    (Some([300.0, 300.0, 300.0, 400.0]), Want::Reject("bad_box")),
    (
        Some([1300.0, 100.0, 1400.0, 200.0]),
        Want::Reject("bad_box"),
    ),
    (None, Want::Score(0.929)),
];

/// Copies of the group photo, one per row (sample keys come from the paths).
fn photos(root: &Path) {
    std::fs::create_dir(root.join("photos")).unwrap();
    for i in 0..ROWS.len() {
        std::fs::copy(
            shared_data().join("photos/insightface/t1.jpg"),
            root.join(format!("photos/{i}.jpg")),
        )
        .unwrap();
    }
}

/// CSV with `x1, y1, x2, y2` columns.
fn write_csv(path: &Path) {
    let mut text = String::from("path,identity,split,x1,y1,x2,y2\n");
    for (i, (b, _)) in ROWS.iter().enumerate() {
        let cells = b.map_or(",,,".to_owned(), |b| {
            format!("{},{},{},{}", b[0], b[1], b[2], b[3])
        });
        text += &format!("photos/{i}.jpg,person{i},train,{cells}\n");
    }
    std::fs::write(path, text).unwrap();
}

/// JSONL alternating `"box": [x1, y1, x2, y2]` and `"box": {"x", "y", "w", "h"}`.
fn write_jsonl(path: &Path) {
    let mut text = String::new();
    for (i, (b, _)) in ROWS.iter().enumerate() {
        let bx = match b {
            None => serde_json::Value::Null,
            Some(b) if i % 2 == 0 => serde_json::json!(b),
            Some(b) => {
                serde_json::json!({"x": b[0], "y": b[1], "w": b[2] - b[0], "h": b[3] - b[1]})
            }
        };
        let row = serde_json::json!({
            "path": format!("photos/{i}.jpg"), "identity": format!("person{i}"), "box": bx
        });
        text += &format!("{row}\n");
    }
    std::fs::write(path, text).unwrap();
}

fn check(all: &[Result<f32, String>]) {
    assert_eq!(all.len(), ROWS.len());
    for ((_, want), got) in ROWS.iter().zip(all) {
        let ok = match (want, got) {
            (Want::Score(s), Ok(v)) => (v - s).abs() < 0.004,
            (Want::Reject(r), Err(reason)) => r == reason,
            _ => false,
        };
        assert!(ok, "want {want:?}, got {got:?}; all: {all:?}");
    }
}

#[test]
fn manifest_box_selects_the_face_in_a_group_photo() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    photos(root);
    write_csv(&root.join("list.csv"));
    write_jsonl(&root.join("list.jsonl"));
    let maker = FaceMaker {
        detector: Some(Detector::load(&detector_path(), DetectorConfig::default()).unwrap()),
        config: FaceConfig::default(),
        encoding: Encoding::Jpeg(95),
    };
    for name in ["list.csv", "list.jsonl"] {
        let ds = manifest::load(&root.join(name)).unwrap();
        let boxes: Vec<_> = ds.items.iter().map(|i| i.face_box).collect();
        assert_eq!(boxes, ROWS.map(|(b, _)| b), "{name}");
        let got: Vec<Result<f32, String>> = ds
            .items
            .iter()
            .map(|item| {
                let bytes = std::fs::read(&item.path).unwrap();
                maker
                    .make(&bytes, None, item.face_box)
                    .map(|m| m.detector_score.unwrap())
                    .map_err(|r| r.reason)
            })
            .collect();
        check(&got);
    }
}

#[test]
fn whole_run_rejects_bad_boxes_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    photos(root);
    write_csv(&root.join("list.csv"));
    let out = root.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_d2ae-ingest"))
        .arg(root.join("list.csv"))
        .arg("--out")
        .arg(&out)
        .arg("--detector")
        .arg(detector_path())
        .args(["--workers", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["accepted"], 4, "{summary}");
    assert_eq!(
        summary["rejects"],
        serde_json::json!({"bad_box": 2, "no_face_in_box": 1}),
        "{summary}"
    );
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let detail = |source: &str| {
        lines
            .iter()
            .find(|l| l["source"] == source)
            .map(|l| format!("{} {}", l["reason"], l["detail"]))
            .unwrap_or_default()
    };
    let d = detail("photos/4.jpg");
    assert!(d.contains("bad_box") && d.contains("no area"), "{d}");
    let d = detail("photos/5.jpg");
    assert!(
        d.contains("bad_box") && d.contains("outside the 1280x886 image"),
        "{d}"
    );
    assert!(detail("photos/2.jpg").contains("no_face_in_box"));
}
