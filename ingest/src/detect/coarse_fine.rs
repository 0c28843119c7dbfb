//! The coarse-to-fine search behind [`Detector::pick`] with [`Strategy::CoarseFine`]: find
//! candidates at `1/factor` of the detector scale, then run YuNet only on 32-aligned windows of
//! the detector-scale image around them (the parent module's doc says why and when it falls back).
//!
//! Coordinates here are detector-scale pixels (the photo resized to long side `input_size`);
//! [`Detector::pick`] maps the result back to the photo.

use super::{
    best_in_box, fit_side, letterbox_size, most_prominent, nms, resize_rgb, DetectError, Detection,
    Detector, FallbackReason, PackedRgb, Picked, Route, Scaled, Target,
};

/// The coarse pass runs at `input_size / DEFAULT_FACTOR` (640 → 160). Measured against 2: the
/// coarse pass at 320 costs a quarter of a full pass and found no more than 160 did.
pub const DEFAULT_FACTOR: u32 = 4;
/// The coarse pass keeps faces down to this score (or the detector's threshold, if lower): at
/// 160 px a face the full pass scores 0.9 may score 0.5, and a missed candidate costs a full pass.
pub const COARSE_SCORE: f32 = 0.4;
/// Context around a candidate box, each side: at least this many detector-scale pixels...
pub const MIN_MARGIN_PX: f32 = 128.0;
/// ...and at least this fraction of the box's longer side. YuNet's stride-32 branch (upsampled
/// into the finer ones) sees far: with 64 or 96 px of context some faces moved 2–3.5 px from the
/// full pass's result; with 128 px none of the 55 reference photos did.
pub const MARGIN_FRACTION: f32 = 0.5;
/// Coarse faces with `area × score` at least this fraction of the best are refined.
pub const CANDIDATE_FRACTION: f32 = 0.5;
/// Fall back when the windows cover more than this fraction of the full pass's canvas. Once the
/// coarse pass has run, any smaller window is still cheaper than the full pass (and is exact on
/// the sides where it reaches the canvas's edge), so only windows as large as the canvas fall back.
pub const MAX_WINDOW_FRACTION: f32 = 1.0;
/// Window origins are multiples of this: YuNet's largest stride, so its anchor grid in a window
/// coincides with the full image's.
const GRID: u32 = 32;
/// Window sizes are multiples of this (a multiple of [`GRID`]): each new input shape is compiled
/// once (~0.1 s), and 64 bounds them to 10 × 10 at 640 for ~2% more pixels than 32.
const SIZE_QUANTUM: u32 = 64;
/// A refined face confirms a candidate when their boxes overlap by at least this IoU.
const MATCH_IOU: f32 = 0.3;

/// `[x0, y0, x1, y1]` on the [`GRID`], in detector-scale pixels.
type Window = [u32; 4];

/// The picked face in detector-scale pixels, or why the full pass must run instead.
pub(super) fn pick(
    det: &Detector,
    scaled: &Scaled,
    target: Target,
    factor: u32,
) -> Result<Result<Picked, FallbackReason>, DetectError> {
    match target {
        Target::Prominent => pick_prominent(det, scaled, factor),
        Target::InBox(b) => pick_in_box(det, scaled, scaled.box_to_scaled(b)),
    }
}

fn pick_prominent(
    det: &Detector,
    scaled: &Scaled,
    factor: u32,
) -> Result<Result<Picked, FallbackReason>, DetectError> {
    let coarse = coarse_faces(det, &scaled.image, factor)?;
    let candidates = candidates(&coarse);
    if candidates.is_empty() {
        return Ok(Err(FallbackReason::NoCandidate));
    }
    let windows: Vec<Window> = merge(
        candidates
            .iter()
            .map(|c| window_around(c.bbox, scaled.canvas))
            .collect(),
    )
    .into_iter()
    .map(|w| quantise(w, scaled.canvas))
    .collect();
    refine(det, scaled, &windows, |faces| {
        // Each candidate is confirmed by the refined face that overlaps it most.
        let mut confirmed: Vec<Detection> = Vec::new();
        for c in &candidates {
            let best = faces
                .iter()
                .map(|f| (f.iou(c), f))
                .filter(|(iou, _)| *iou >= MATCH_IOU)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, f)) = best {
                if !confirmed.contains(f) {
                    confirmed.push(f.clone());
                }
            }
        }
        most_prominent(&confirmed).cloned()
    })
}

/// With a labelled box the candidate is known: refine in the box plus the margin.
fn pick_in_box(
    det: &Detector,
    scaled: &Scaled,
    face_box: [f32; 4],
) -> Result<Result<Picked, FallbackReason>, DetectError> {
    let windows = [quantise(
        window_around(face_box, scaled.canvas),
        scaled.canvas,
    )];
    refine(det, scaled, &windows, |faces| {
        best_in_box(faces, face_box).cloned()
    })
}

/// The fine pass shared by both targets: YuNet on `windows` (unless they are as large as the full
/// pass), then `choose` picks the face among the refined ones; `None` falls back to the full pass.
fn refine(
    det: &Detector,
    scaled: &Scaled,
    windows: &[Window],
    choose: impl FnOnce(&[Detection]) -> Option<Detection>,
) -> Result<Result<Picked, FallbackReason>, DetectError> {
    if too_large(windows, scaled.canvas) {
        return Ok(Err(FallbackReason::LargeWindows));
    }
    let (faces, best_score) = run_windows(det, &scaled.image, windows)?;
    let Some(face) = choose(&faces) else {
        return Ok(Err(FallbackReason::NotConfirmed));
    };
    Ok(Ok(Picked {
        face: Some(face),
        detected: faces.len(),
        best_score,
        route: Route::Windows,
    }))
}

/// YuNet on the detector-scale image downscaled to long side `input_size / factor`, fitted with
/// a black margin like [`super::InputShape::Fit`]; faces in detector-scale pixels.
fn coarse_faces(
    det: &Detector,
    image: &PackedRgb,
    factor: u32,
) -> Result<Vec<Detection>, DetectError> {
    let (nw, nh) = image.size;
    let side = det.cfg.input_size / factor;
    let (cw, ch) = letterbox_size(nw, nh, side);
    let pixels =
        resize_rgb(&image.pixels, (nw, nh), (cw, ch)).map_err(|detail| DetectError::Run {
            width: nw,
            height: nh,
            detail,
        })?;
    let small = PackedRgb {
        pixels,
        size: (cw, ch),
    };
    let grid_side = side.next_multiple_of(GRID);
    let canvas = [0, 0, fit_side(cw, grid_side), fit_side(ch, grid_side)];
    let outcome = det.run_window(&small, canvas, det.cfg.score_threshold.min(COARSE_SCORE))?;
    let (kx, ky) = (nw as f32 / cw as f32, nh as f32 / ch as f32);
    Ok(outcome.faces.iter().map(|f| f.scaled_xy(kx, ky)).collect())
}

/// The coarse faces worth refining: `area × score` at least [`CANDIDATE_FRACTION`] of the best.
fn candidates(coarse: &[Detection]) -> Vec<Detection> {
    let prominence = |d: &Detection| d.area() * d.score;
    let best = coarse.iter().map(prominence).fold(0f32, f32::max);
    coarse
        .iter()
        .filter(|d| prominence(d) >= CANDIDATE_FRACTION * best)
        .cloned()
        .collect()
}

/// The window around a box: widened by the margin on every side, snapped outwards to the
/// [`GRID`], clipped to the canvas `(w, h)` (whose sides are multiples of the grid).
fn window_around(b: [f32; 4], (cw, ch): (u32, u32)) -> Window {
    let side = (b[2] - b[0]).max(b[3] - b[1]).max(0.0);
    let m = (MARGIN_FRACTION * side).max(MIN_MARGIN_PX);
    let down = |v: f32, limit: u32| {
        let v = (v.max(0.0) as u32).min(limit.saturating_sub(GRID));
        v - v % GRID
    };
    let up = |v: f32, lo: u32, limit: u32| {
        let v = (v.max(0.0).ceil() as u32).next_multiple_of(GRID);
        v.clamp(lo + GRID, limit)
    };
    let (x0, y0) = (down(b[0] - m, cw), down(b[1] - m, ch));
    [x0, y0, up(b[2] + m, x0, cw), up(b[3] + m, y0, ch)]
}

/// Window sizes rounded up to multiples of [`SIZE_QUANTUM`], growing right and down, or left and
/// up at the canvas's edge (the origin stays on the [`GRID`]).
fn quantise(w: Window, (cw, ch): (u32, u32)) -> Window {
    let widen = |lo: u32, hi: u32, limit: u32| {
        let len = (hi - lo).next_multiple_of(SIZE_QUANTUM).min(limit);
        let lo = lo.min(limit - len);
        (lo, lo + len)
    };
    let (x0, x1) = widen(w[0], w[2], cw);
    let (y0, y1) = widen(w[1], w[3], ch);
    [x0, y0, x1, y1]
}

/// Merge overlapping windows into their bounding windows until none overlap.
fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    let overlap = |a: &Window, b: &Window| a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    'again: loop {
        for i in 0..windows.len() {
            for j in i + 1..windows.len() {
                if overlap(&windows[i], &windows[j]) {
                    let b = windows.swap_remove(j);
                    let a = &mut windows[i];
                    *a = [
                        a[0].min(b[0]),
                        a[1].min(b[1]),
                        a[2].max(b[2]),
                        a[3].max(b[3]),
                    ];
                    continue 'again;
                }
            }
        }
        return windows;
    }
}

fn area(w: &Window) -> u64 {
    (w[2] - w[0]) as u64 * (w[3] - w[1]) as u64
}

/// Do the windows cover more than [`MAX_WINDOW_FRACTION`] of the canvas?
fn too_large(windows: &[Window], (cw, ch): (u32, u32)) -> bool {
    let covered: u64 = windows.iter().map(area).sum();
    covered as f64 > MAX_WINDOW_FRACTION as f64 * (cw as u64 * ch as u64) as f64
}

/// Faces of all windows (NMS across them) and the best score seen in any.
fn run_windows(
    det: &Detector,
    image: &PackedRgb,
    windows: &[Window],
) -> Result<(Vec<Detection>, Option<f32>), DetectError> {
    let mut faces = Vec::new();
    let mut best: Option<f32> = None;
    for w in windows {
        let out = det.run_window(
            image,
            [w[0], w[1], w[2] - w[0], w[3] - w[1]],
            det.cfg.score_threshold,
        )?;
        faces.extend(out.faces);
        best = match (best, out.best_score) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    Ok((nms(faces, det.cfg.nms_iou), best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::det;

    #[test]
    fn windows_are_on_the_grid_and_inside_the_canvas() {
        // 40 px face: margin 128 px → [172, 72, 468, 368] → snapped outwards to the grid.
        assert_eq!(
            window_around([300.0, 200.0, 340.0, 240.0], (640, 640)),
            [160, 64, 480, 384]
        );
        // 300 px face: margin 150 px, clipped to the canvas.
        assert_eq!(
            window_around([400.0, 300.0, 700.0, 600.0], (640, 544)),
            [224, 128, 640, 544]
        );
        // Boxes partly or wholly outside still give a window inside the canvas.
        assert_eq!(
            window_around([-50.0, -50.0, -10.0, -10.0], (640, 640)),
            [0, 0, 128, 128]
        );
        assert_eq!(
            window_around([700.0, 700.0, 720.0, 720.0], (640, 640)),
            [544, 544, 640, 640]
        );
    }

    #[test]
    fn window_sizes_are_quantised_within_the_canvas() {
        // Already multiples of 64.
        assert_eq!(
            quantise([160, 64, 480, 384], (640, 640)),
            [160, 64, 480, 384]
        );
        // 352 wide → 384, growing right.
        assert_eq!(quantise([0, 0, 352, 384], (640, 544)), [0, 0, 384, 384]);
        // 96 → 128 at the canvas's edge: grows left and up instead.
        assert_eq!(
            quantise([544, 544, 640, 640], (640, 640)),
            [512, 512, 640, 640]
        );
        // 480 → 512 at the bottom edge: grows up, stays on the 32 grid.
        assert_eq!(quantise([0, 64, 352, 544], (640, 544)), [0, 32, 384, 544]);
        // Never beyond the canvas, whose side need not be a multiple of 64.
        assert_eq!(quantise([0, 0, 352, 544], (640, 544)), [0, 0, 384, 544]);
    }

    #[test]
    fn overlapping_windows_merge_transitively() {
        let merged = merge(vec![
            [0, 0, 64, 64],
            [128, 0, 192, 64],
            [32, 32, 160, 96],
            [320, 320, 384, 384],
        ]);
        assert_eq!(merged.len(), 2);
        assert!(merged.contains(&[0, 0, 192, 96]));
        assert!(merged.contains(&[320, 320, 384, 384]));
        // Touching is not overlapping.
        assert_eq!(merge(vec![[0, 0, 32, 32], [32, 0, 64, 32]]).len(), 2);
    }

    #[test]
    fn candidates_are_the_faces_near_the_most_prominent() {
        let coarse = [
            det([0.0, 0.0, 100.0, 100.0], 0.9),   // 9000, the best
            det([200.0, 0.0, 280.0, 80.0], 0.8),  // 5120 ≥ 4500
            det([300.0, 0.0, 360.0, 60.0], 0.95), // 3420 < 4500
        ];
        let c = candidates(&coarse);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].score, 0.8);
        assert!(candidates(&[]).is_empty());
    }

    #[test]
    fn only_windows_larger_than_the_canvas_are_refused() {
        assert!(!too_large(&[[0, 0, 320, 320]], (640, 640)));
        assert!(!too_large(&[[0, 0, 640, 544]], (640, 544)));
        // Windows overlapping after quantisation can add up to more than the canvas.
        assert!(too_large(
            &[[0, 0, 640, 384], [0, 256, 640, 640]],
            (640, 640)
        ));
    }
}
