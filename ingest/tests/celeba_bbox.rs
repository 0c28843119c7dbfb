//! CelebA's `list_bbox_celeba.txt` picks which detected face is aligned: on a group photo (6 faces,
//! `photos/insightface/t1.jpg`) each labelled box yields its own person, not the most prominent
//! face, and a box around no face is rejected as `no_face_in_box`.

use d2ae_ingest::detect::{Detector, DetectorConfig};
use d2ae_ingest::face::FaceConfig;
use d2ae_ingest::make::{Encoding, FaceMaker, SampleMaker};
use d2ae_ingest::source::celeba;

mod support;
use support::shared_data;

#[test]
fn labelled_box_selects_the_face_in_a_group_photo() {
    let data = shared_data();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("images")).unwrap();
    for name in ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"] {
        std::fs::copy(
            data.join("photos/insightface/t1.jpg"),
            root.join("images").join(name),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("identity_CelebA.txt"),
        "000001.jpg 1\n000002.jpg 2\n000003.jpg 3\n000004.jpg 4\n",
    )
    .unwrap();
    // Loose CelebA-style boxes (x_1 y_1 width height) around: the face at (271,147)-(370,277),
    // reference score 0.892; the one at (1132,274)-(1228,399), 0.914; a patch with no face;
    // 000004 has a box around the most prominent face (462,265)-(576,417), 0.929.
    std::fs::write(
        root.join("list_bbox_celeba.txt"),
        "4\nimage_id x_1 y_1 width height\n\
         000001.jpg 255 120 135 185\n\
         000002.jpg 1115 245 130 175\n\
         000003.jpg 600 20 60 60\n\
         000004.jpg 445 235 150 200\n",
    )
    .unwrap();
    let ds = celeba::load(root).expect("celeba layout with boxes");
    assert_eq!(
        ds.items[0].face_box,
        Some([255.0, 120.0, 390.0, 305.0]),
        "x_1 y_1 width height → corners"
    );

    let detector = Detector::load(
        &data.join("models/yunet/yunet_s_640_640.onnx"),
        DetectorConfig::default(),
    )
    .unwrap();
    let maker = FaceMaker {
        detector: Some(detector),
        config: FaceConfig::default(),
        encoding: Encoding::Jpeg(95),
    };
    let mut scores = Vec::new();
    for item in &ds.items {
        let bytes = std::fs::read(&item.path).unwrap();
        scores.push(
            maker
                .make(&bytes, None, item.face_box)
                .map(|m| m.detector_score.unwrap())
                .map_err(|r| r.reason),
        );
    }
    let near = |s: &Result<f32, String>, want: f32| matches!(s, Ok(v) if (v - want).abs() < 0.004);
    assert!(near(&scores[0], 0.892), "{scores:?}");
    assert!(near(&scores[1], 0.914), "{scores:?}");
    assert_eq!(scores[2], Err("no_face_in_box".to_owned()));
    assert!(near(&scores[3], 0.929), "{scores:?}");
    // Without the box, the most prominent face (0.929) would have been taken for all of them.
    let plain = maker
        .make(&std::fs::read(&ds.items[0].path).unwrap(), None, None)
        .unwrap();
    assert!((plain.detector_score.unwrap() - 0.929).abs() < 0.004);
}
