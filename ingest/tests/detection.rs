//! YuNet in tract against onnxruntime's reference detections on the real photos in
//! `shared/data` (`models/yunet/reference_detections.jsonl`): same letterbox (fit, bilinear,
//! top-left on black), threshold 0.6, NMS 0.4; boxes and landmarks must agree within 2 px, both
//! with the reference's 640×640 square input and with our default fitted input.
//!
//! The one allowance: for boxes larger than 200 px the tolerance is 1% of the box's larger side.
//! Box sizes are `exp(regression) · stride`, so on a 400 px box a resampling difference of 0.2%
//! in the regression output is already 1 px per side, scaled again from the letterbox to the
//! photo. That case occurs twice here, on `biden2.jpg` (420 px boxes at scores 0.70 and 0.64: 3.0
//! and 2.0 px); every face of 200 px or less is held to 2 px.

use d2ae_ingest::detect::{
    best_in_box, Detector, DetectorConfig, FallbackReason, InputShape, Route, Strategy, Target,
};
use d2ae_ingest::image_io::{decode_rgb, DecodeLimits};

mod support;
use support::{max_abs_diff, reference_detections, shared_data, tolerance};

#[test]
fn yunet_matches_reference_detections_within_2px() {
    check_against_reference(InputShape::Square, 2);
}

/// The default input (photo plus a black margin, not the whole square) finds the same faces. One
/// more large box exceeds 2 px (within its 1% allowance): the border-cut face of
/// `obama_partial_face2.jpg`, 2.9 px on a 318 px box, whose cut edge the network sees next to a
/// 32–63 px black margin instead of the square's wide black area.
#[test]
fn fitted_input_matches_reference_detections_within_2px() {
    check_against_reference(InputShape::Fit, 3);
}

fn check_against_reference(shape: InputShape, max_over_2px: usize) {
    let data = shared_data();
    let model = data.join("models/yunet/yunet_s_640_640.onnx");
    let cfg = DetectorConfig {
        shape,
        ..DetectorConfig::default()
    };
    let det = Detector::load(&model, cfg).expect("load YuNet");
    let limits = DecodeLimits::default();
    let (mut images, mut matched, mut worst, mut over_2px) = (0, 0, 0f32, 0);
    let mut failures = Vec::new();
    for photo in reference_detections(&data) {
        let (rel, faces) = (photo.image.as_str(), photo.faces);
        let bytes = std::fs::read(data.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let img = decode_rgb(&bytes, &limits).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let ours = det.detect(&img).unwrap_or_else(|e| panic!("{rel}: {e}"));
        images += 1;
        // Every reference face has a counterpart (the one with the closest box).
        for r in &faces {
            let best = ours
                .iter()
                .map(|o| (max_abs_diff(o, r), o))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((d, o)) if d <= tolerance(r) => {
                    matched += 1;
                    worst = worst.max(d);
                    if d > 2.0 {
                        over_2px += 1;
                        eprintln!("{rel}: {d:.2} px on a {:.0} px box", tolerance(r) * 100.0);
                    }
                    assert!(
                        (o.score - r.score).abs() < 0.02,
                        "{rel}: score {} vs {}",
                        o.score,
                        r.score
                    );
                }
                // Faces at the threshold may fall either side of it after resampling.
                None if r.score < 0.62 => {}
                Some((d, _)) if r.score < 0.62 && d > 20.0 => {}
                other => failures.push(format!(
                    "{rel}: reference face {:?} (score {}) off by {:?} px",
                    r.bbox,
                    r.score,
                    other.map(|o| o.0)
                )),
            }
        }
        // And we found nothing confident that onnxruntime did not.
        for o in &ours {
            let known = faces.iter().any(|r| max_abs_diff(o, r) <= tolerance(r));
            if !known && o.score >= 0.62 {
                failures.push(format!("{rel}: extra face {:?} score {}", o.bbox, o.score));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(images, 55);
    // 55 images with 153 reference faces, 4 of them scored below 0.62.
    assert!(matched >= 149, "matched only {matched} of 153 faces");
    assert!(over_2px <= max_over_2px, "{over_2px} faces beyond 2 px");
    eprintln!("{images} images, {matched} faces matched, worst difference {worst:.2} px");
}

/// Coarse-to-fine picks the face `full` picks on every reference photo (multi-face ones
/// included), and that face agrees with its reference detection as the full pass must (2 px, 1%
/// of the side for boxes over 200 px). Most photos must be settled in windows, or the test would
/// only be checking the fallback.
#[test]
fn coarse_fine_picks_the_full_pass_face_within_2px() {
    let data = shared_data();
    let model = data.join("models/yunet/yunet_s_640_640.onnx");
    let load = |strategy| {
        let cfg = DetectorConfig {
            strategy,
            ..DetectorConfig::default()
        };
        Detector::load(&model, cfg).expect("load YuNet")
    };
    let full = load(Strategy::Full);
    let coarse_fine = load(Strategy::default());
    assert!(matches!(
        coarse_fine.config().strategy,
        Strategy::CoarseFine { .. }
    ));
    let limits = DecodeLimits::default();
    let (mut windows, mut failures) = (0, Vec::new());
    let photos = reference_detections(&data);
    for photo in &photos {
        let rel = photo.image.as_str();
        let bytes = std::fs::read(data.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let img = decode_rgb(&bytes, &limits).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let a = full.pick(&img, Target::Prominent).unwrap();
        let b = coarse_fine.pick(&img, Target::Prominent).unwrap();
        assert_eq!(a.route, Route::Full);
        if b.route == Route::Windows {
            windows += 1;
        }
        let (Some(fa), Some(fb)) = (&a.face, &b.face) else {
            failures.push(format!(
                "{rel}: full picked {:?}, coarse-fine {:?}",
                a.face, b.face
            ));
            continue;
        };
        // The reference face each pick corresponds to (closest box and landmarks).
        let closest = |f| {
            photo
                .faces
                .iter()
                .enumerate()
                .map(|(i, r)| (i, max_abs_diff(f, r)))
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .unwrap()
        };
        let ((ia, _), (ib, d)) = (closest(fa), closest(fb));
        if ia != ib {
            failures.push(format!(
                "{rel}: coarse-fine picked reference face {ib}, full {ia} ({:?})",
                b.route
            ));
        } else if d > tolerance(&photo.faces[ib]) {
            failures.push(format!(
                "{rel}: picked face {d:.2} px from the reference ({:?})",
                b.route
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(photos.len(), 55);
    assert!(
        windows >= 45,
        "only {windows} of 55 photos settled in windows"
    );
    eprintln!("{windows} of 55 photos settled in windows, the rest fell back to the full pass");
}

/// A labelled box around each face of the multi-face photos (CelebA-style: looser than the
/// detector's) picks the same face by refining in the box's window as from the full pass.
#[test]
fn coarse_fine_in_a_labelled_box_picks_the_full_pass_face() {
    let data = shared_data();
    let model = data.join("models/yunet/yunet_s_640_640.onnx");
    let full = Detector::load(&model, DetectorConfig::default()).expect("load YuNet");
    let limits = DecodeLimits::default();
    let (mut checked, mut windows) = (0, 0);
    for photo in reference_detections(&data) {
        let n = photo.faces.len();
        if !(2..=10).contains(&n) {
            continue;
        }
        let rel = photo.image.as_str();
        let bytes = std::fs::read(data.join(rel)).unwrap();
        let img = decode_rgb(&bytes, &limits).unwrap();
        let all = full.detect(&img).unwrap();
        for r in photo.faces.iter().filter(|r| r.score >= 0.62) {
            let [x1, y1, x2, y2] = r.bbox;
            let (mx, my) = (0.15 * (x2 - x1), 0.15 * (y2 - y1));
            let labelled = [x1 - mx, y1 - 2.0 * my, x2 + mx, y2 + my];
            let expected = best_in_box(&all, labelled).unwrap_or_else(|| panic!("{rel}"));
            let got = full.pick(&img, Target::InBox(labelled)).unwrap();
            if got.route == Route::Windows {
                windows += 1;
            }
            let face = got
                .face
                .unwrap_or_else(|| panic!("{rel}: nothing in {labelled:?}"));
            let d = max_abs_diff(&face, r);
            assert!(
                face.iou(expected) > 0.9 && d <= tolerance(r),
                "{rel}: in {labelled:?} picked {face:?} ({d:.2} px from the reference), full pass {expected:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} faces checked");
    assert!(
        windows * 10 >= checked * 9,
        "{windows} of {checked} in windows"
    );
    eprintln!("{checked} labelled faces, {windows} settled in windows");
}

/// A photo without a face falls back to the full pass, so the reject's best score is the whole
/// image's.
#[test]
fn coarse_fine_without_a_face_reports_the_full_pass() {
    let data = shared_data();
    let det = Detector::load(
        &data.join("models/yunet/yunet_s_640_640.onnx"),
        DetectorConfig::default(),
    )
    .unwrap();
    let grey = image::RgbImage::from_pixel(400, 300, image::Rgb([128, 128, 128]));
    let picked = det.pick(&grey, Target::Prominent).unwrap();
    assert_eq!(picked.face, None);
    assert_eq!(picked.detected, 0);
    assert_eq!(picked.route, Route::Fallback(FallbackReason::NoCandidate));
    assert!(matches!(picked.best_score, Some(s) if s < 0.6));
}
