//! Face detection with YuNet (libfacedetection) run in pure Rust by `tract-onnx`.
//!
//! The model takes a BGR image with values 0–255 (`[1,3,H,W]`) and returns 12 already-sigmoided
//! tensors: `cls`, `obj`, `bbox` and `kps` at strides 8, 16 and 32. The exports in
//! `shared/data/models/yunet/` declare a fixed 640×640 input, but the network is fully
//! convolutional: once the export's recorded intermediate shapes are ignored, tract compiles it for
//! any `H × W` that are multiples of 32. The photo is resized to fit `input_size` on its long side
//! with a bilinear (triangle) filter, as the reference detections were made, pasted at the
//! top-left on black, and the input is that fitted image padded only with a black margin of
//! 32–63 px ([`InputShape::Fit`]) instead of to the full square ([`InputShape::Square`], the reference's
//! letterbox): a 4:3 photo then costs ¾ of the square's inference. Decoding follows
//! `shared/data/README.md`; greedy NMS follows OpenCV's `FaceDetectorYN`.
//!
//! Why tract rather than onnxruntime: no binary downloads, no C++ runtime to ship, and one loaded
//! model is shared by all worker threads (`Detector` is `Send + Sync`; the plans compiled per input
//! shape are cached behind a mutex).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fast_image_resize::{self as fr, images::ImageRef, PixelType, ResizeAlg, ResizeOptions};
use image::RgbImage;
use tract_onnx::prelude::*;

/// Detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Keep faces with `sqrt(cls · obj)` at or above this.
    pub score_threshold: f32,
    /// Non-maximum suppression drops a box overlapping a better one by more than this IoU.
    pub nms_iou: f32,
    /// The long side the photo is resized to for detection (a multiple of 32). 640 is what the
    /// reference detections used; smaller is faster and finds fewer small faces.
    pub input_size: u32,
    /// The shape of the model input around the resized photo.
    pub shape: InputShape,
}

/// How the resized photo is placed in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputShape {
    /// A black margin of 32–63 px on the right and bottom (to a multiple of 32), not the whole
    /// square: less inference on black.
    #[default]
    Fit,
    /// Letterboxed into `input_size × input_size` (what the reference detections did).
    Square,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            score_threshold: 0.6,
            nms_iou: 0.4,
            input_size: 640,
            shape: InputShape::Fit,
        }
    }
}

/// One face, in the pixel coordinates of the image given to [`Detector::detect`].
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right mouth corner, left mouth corner (the subject's right
    /// is on the image's left).
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }

    fn intersection(&self, other: &Detection) -> f32 {
        let ix = (self.bbox[2].min(other.bbox[2]) - self.bbox[0].max(other.bbox[0])).max(0.0);
        let iy = (self.bbox[3].min(other.bbox[3]) - self.bbox[1].max(other.bbox[1])).max(0.0);
        ix * iy
    }

    fn iou(&self, other: &Detection) -> f32 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// The same detection in coordinates scaled by `k` (e.g. back to full resolution after
    /// detecting on a reduced decode).
    pub fn scaled(&self, k: f32) -> Detection {
        Detection {
            bbox: self.bbox.map(|v| v * k),
            landmarks: self.landmarks.map(|p| [p[0] * k, p[1] * k]),
            score: self.score,
        }
    }
}

/// The face a photo of one identity is about: the largest box, weighted by the detector's
/// confidence (`area × score`). In face datasets the subject is framed large; bystanders are
/// smaller or blurrier, and a large but doubtful box loses to a slightly smaller sure one.
pub fn most_prominent(dets: &[Detection]) -> Option<&Detection> {
    dets.iter()
        .max_by(|a, b| (a.area() * a.score).total_cmp(&(b.area() * b.score)))
}

/// The detected face that is the labelled person of a given box (`[x1, y1, x2, y2]`, e.g. from
/// CelebA's `list_bbox_celeba.txt`): among faces with at least half of their box inside the given
/// box, the one with the highest IoU with it. Labelled boxes are looser than the detector's (CelebA's
/// include hair and chin), so the containment test, not an IoU threshold, decides who qualifies;
/// IoU then prefers the face whose size matches the box over a small face in its corner. `None`
/// when no face qualifies: the labelled person was not detected, and aligning someone else would
/// mislabel the sample.
pub fn best_in_box(dets: &[Detection], face_box: [f32; 4]) -> Option<&Detection> {
    let given = Detection {
        bbox: face_box,
        landmarks: [[0.0; 2]; 5],
        score: 0.0,
    };
    dets.iter()
        .filter(|d| d.area() > 0.0 && d.intersection(&given) >= 0.5 * d.area())
        .max_by(|a, b| a.iou(&given).total_cmp(&b.iou(&given)))
}

/// Why the detector could not run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot load face detector {path}: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("face detector {path} lacks output {name:?} (is it a YuNet export?)")]
    MissingOutput { path: PathBuf, name: String },
    #[error("detector input size must be a positive multiple of 32, got {0}")]
    InputSize(u32),
    #[error("face detector failed on a {width}x{height} image: {detail}")]
    Run {
        width: u32,
        height: u32,
        detail: String,
    },
}

const STRIDES: [usize; 3] = [8, 16, 32];

/// A loaded YuNet model. Load once and share (`Arc<Detector>`) between worker threads.
pub struct Detector {
    path: PathBuf,
    /// The parsed ONNX graph, compiled on demand for each input shape.
    source: InferenceModel,
    /// Compiled plans by input `(height, width)`. With `InputShape::Fit` there are at most
    /// `2 · input_size / 32` shapes, each compiled once (~0.1 s).
    plans: Mutex<HashMap<(usize, usize), Arc<Plan>>>,
    cfg: DetectorConfig,
}

/// The model optimised for one input shape.
struct Plan {
    model: Arc<TypedRunnableModel>,
    /// Output indices of `[cls, obj, bbox, kps]` for each stride.
    outputs: [[usize; 4]; 3],
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("cfg", &self.cfg).finish()
    }
}

/// Raw detector result: faces above the threshold and the best score seen at all.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOutcome {
    pub faces: Vec<Detection>,
    /// The highest score of any cell, also when nothing passed the threshold (for reject logs).
    pub best_score: Option<f32>,
}

impl Detector {
    /// Load a YuNet ONNX export, and compile it for the square input (which also checks that it
    /// is a YuNet export).
    pub fn load(path: &Path, cfg: DetectorConfig) -> Result<Self, DetectError> {
        if cfg.input_size == 0 || !cfg.input_size.is_multiple_of(32) {
            return Err(DetectError::InputSize(cfg.input_size));
        }
        let source = tract_onnx::onnx()
            // The export records 640×640 shapes for every tensor; let tract infer them instead.
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true)
            .model_for_path(path)
            .map_err(|e| DetectError::Load {
                path: path.to_owned(),
                detail: format!("{e:#}"),
            })?;
        let det = Detector {
            path: path.to_owned(),
            source,
            plans: Mutex::new(HashMap::new()),
            cfg,
        };
        let s = det.cfg.input_size as usize;
        det.plan(s, s)?;
        Ok(det)
    }

    /// The compiled model for a `[1,3,h,w]` input, compiling it on first use.
    fn plan(&self, h: usize, w: usize) -> Result<Arc<Plan>, DetectError> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = plans.get(&(h, w)) {
            return Ok(p.clone());
        }
        let plan = Arc::new(self.compile(h, w)?);
        plans.insert((h, w), plan.clone());
        Ok(plan)
    }

    fn compile(&self, h: usize, w: usize) -> Result<Plan, DetectError> {
        let path = &self.path;
        let load_err = |e: TractError| DetectError::Load {
            path: path.clone(),
            detail: format!("{e:#} (input 1x3x{h}x{w})"),
        };
        let model = self
            .source
            .clone()
            .with_input_fact(0, f32::fact([1, 3, h, w]).into())
            .map_err(load_err)?
            .into_optimized()
            .map_err(load_err)?;
        let names: Vec<String> = model
            .output_outlets()
            .map_err(load_err)?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_owned)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let mut outputs = [[0usize; 4]; 3];
        for (si, stride) in STRIDES.iter().enumerate() {
            for (ki, kind) in ["cls", "obj", "bbox", "kps"].iter().enumerate() {
                let name = format!("{kind}_{stride}");
                outputs[si][ki] = names.iter().position(|n| *n == name).ok_or_else(|| {
                    DetectError::MissingOutput {
                        path: path.clone(),
                        name: name.clone(),
                    }
                })?;
            }
        }
        let model = model.into_runnable().map_err(load_err)?;
        Ok(Plan { model, outputs })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Faces above the score threshold after NMS, best first, in `img` pixel coordinates.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        Ok(self.detect_outcome(img)?.faces)
    }

    /// [`Detector::detect`] plus the best score seen (for "no face" rejects).
    pub fn detect_outcome(&self, img: &RgbImage) -> Result<DetectOutcome, DetectError> {
        let (w, h) = img.dimensions();
        let run_err = |detail: String| DetectError::Run {
            width: w,
            height: h,
            detail,
        };
        if w == 0 || h == 0 {
            return Err(run_err("empty image".into()));
        }
        let s = self.cfg.input_size;
        let (nw, nh) = letterbox_size(w, h, s);
        let (iw, ih) = match self.cfg.shape {
            InputShape::Fit => (fit_side(nw, s), fit_side(nh, s)),
            InputShape::Square => (s, s),
        };
        let input = letterbox_bgr(img, (nw, nh), (iw, ih)).map_err(run_err)?;
        let plan = self.plan(ih as usize, iw as usize)?;
        let out = plan
            .model
            .run(tvec!(input.into()))
            .map_err(|e| run_err(format!("{e:#}")))?;
        let views = |i: usize| -> Result<&[f32], DetectError> {
            out[i]
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .map_err(|e| run_err(format!("output {i}: {e:#}")))
        };
        let mut faces = Vec::new();
        let mut best: Option<f32> = None;
        for (si, &stride) in STRIDES.iter().enumerate() {
            let [ci, oi, bi, ki] = plan.outputs[si];
            let (cls, obj, bbox, kps) = (views(ci)?, views(oi)?, views(bi)?, views(ki)?);
            let cols = iw as usize / stride;
            let n = cols * (ih as usize / stride);
            if cls.len() < n || obj.len() < n || bbox.len() < 4 * n || kps.len() < 10 * n {
                return Err(run_err(format!("stride {stride} outputs are too short")));
            }
            let st = stride as f32;
            for i in 0..n {
                let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
                best = Some(best.map_or(score, |b: f32| b.max(score)));
                if score < self.cfg.score_threshold {
                    continue;
                }
                let (row, col) = ((i / cols) as f32, (i % cols) as f32);
                let b = &bbox[4 * i..4 * i + 4];
                let cx = (col + b[0]) * st;
                let cy = (row + b[1]) * st;
                let bw = b[2].exp() * st;
                let bh = b[3].exp() * st;
                let k = &kps[10 * i..10 * i + 10];
                let mut landmarks = [[0f32; 2]; 5];
                for (j, lm) in landmarks.iter_mut().enumerate() {
                    *lm = [(col + k[2 * j]) * st, (row + k[2 * j + 1]) * st];
                }
                faces.push(Detection {
                    bbox: [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
                    landmarks,
                    score,
                });
            }
        }
        let mut faces = nms(faces, self.cfg.nms_iou);
        // Letterbox → image: the resized image of nw × nh pixels shows the whole w × h image.
        let (kx, ky) = (w as f32 / nw as f32, h as f32 / nh as f32);
        for f in &mut faces {
            f.bbox = [
                f.bbox[0] * kx,
                f.bbox[1] * ky,
                f.bbox[2] * kx,
                f.bbox[3] * ky,
            ];
            for p in &mut f.landmarks {
                *p = [p[0] * kx, p[1] * ky];
            }
        }
        Ok(DetectOutcome {
            faces,
            best_score: best,
        })
    }
}

/// Greedy NMS: best score first, drop any box overlapping a kept one by more than `iou`.
fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.iter().all(|k| k.iou(&d) <= iou) {
            keep.push(d);
        }
    }
    keep
}

/// Size of the image inside the `size × size` letterbox: scaled to fit, at least 1 pixel.
pub fn letterbox_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let r = (size as f64 / w as f64).min(size as f64 / h as f64);
    let nw = ((w as f64 * r).round() as u32).clamp(1, size);
    let nh = ((h as f64 * r).round() as u32).clamp(1, size);
    (nw, nh)
}

/// The input side for a resized side `n` in [`InputShape::Fit`]: a multiple of 32 that leaves at
/// least 32 px of black after the photo (unless the photo fills `size`). Without that margin the
/// network's zero padding, not a black area, borders the photo, and a face cut by that border is
/// localised differently from the square letterbox (8 px on a 93 px IPD in
/// `obama_partial_face2.jpg`; within 2 px with the margin).
fn fit_side(n: u32, size: u32) -> u32 {
    if n >= size {
        size
    } else {
        (n + 32).next_multiple_of(32).min(size)
    }
}

/// The model input: `img` resized to `nw × nh` with a bilinear convolution (Pillow's filter,
/// which the reference detections used), pasted top-left on a black `iw × ih` canvas, as a BGR
/// `[1,3,ih,iw]` tensor.
fn letterbox_bgr(
    img: &RgbImage,
    (nw, nh): (u32, u32),
    (iw, ih): (u32, u32),
) -> Result<Tensor, String> {
    let (w, h) = img.dimensions();
    let resized;
    let pixels: &[u8] = if (nw, nh) == (w, h) {
        img.as_raw()
    } else {
        let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3).map_err(|e| e.to_string())?;
        let mut dst = fr::images::Image::new(nw, nh, PixelType::U8x3);
        fr::Resizer::new()
            .resize(
                &src,
                &mut dst,
                &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Bilinear)),
            )
            .map_err(|e| e.to_string())?;
        resized = dst.into_vec();
        &resized
    };
    let (iw, ih) = (iw as usize, ih as usize);
    let plane = iw * ih;
    let mut data = vec![0f32; 3 * plane];
    for y in 0..nh as usize {
        let row = &pixels[y * nw as usize * 3..(y + 1) * nw as usize * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let o = y * iw + x;
            data[o] = px[2] as f32;
            data[plane + o] = px[1] as f32;
            data[2 * plane + o] = px[0] as f32;
        }
    }
    Tensor::from_shape(&[1, 3, ih, iw], &data).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(b: [f32; 4], score: f32) -> Detection {
        Detection {
            bbox: b,
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let kept = nms(
            vec![
                det([0.0, 0.0, 10.0, 10.0], 0.7),
                det([1.0, 1.0, 11.0, 11.0], 0.9),
                det([50.0, 50.0, 60.0, 60.0], 0.65),
            ],
            0.4,
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].bbox, [50.0, 50.0, 60.0, 60.0]);
    }

    #[test]
    fn most_prominent_weighs_area_by_score() {
        let dets = [
            det([0.0, 0.0, 100.0, 100.0], 0.62),  // 6200
            det([200.0, 0.0, 290.0, 90.0], 0.95), // 7695
            det([0.0, 200.0, 40.0, 240.0], 0.99),
        ];
        assert_eq!(most_prominent(&dets).unwrap().score, 0.95);
        assert!(most_prominent(&[]).is_none());
    }

    #[test]
    fn best_in_box_picks_the_labelled_face() {
        let dets = [
            det([0.0, 0.0, 200.0, 200.0], 0.95), // the most prominent, elsewhere
            det([310.0, 320.0, 390.0, 410.0], 0.8), // inside the loose labelled box
            det([300.0, 300.0, 330.0, 330.0], 0.9), // small, in its corner
            det([380.0, 380.0, 480.0, 480.0], 0.99), // mostly outside
        ];
        let labelled = [290.0, 290.0, 410.0, 440.0];
        assert_eq!(best_in_box(&dets, labelled).unwrap().score, 0.8);
        assert_eq!(most_prominent(&dets).unwrap().score, 0.95);
        // Nobody detected inside the box.
        assert!(best_in_box(&dets[..1], labelled).is_none());
        assert!(best_in_box(&[], labelled).is_none());
    }

    #[test]
    fn letterbox_fits_the_long_side() {
        assert_eq!(letterbox_size(2500, 2000, 640), (640, 512));
        assert_eq!(letterbox_size(250, 250, 640), (640, 640));
        assert_eq!(letterbox_size(300, 1200, 640), (160, 640));
    }

    #[test]
    fn fit_input_keeps_a_black_margin() {
        assert_eq!(fit_side(640, 640), 640);
        assert_eq!(fit_side(512, 640), 544);
        assert_eq!(fit_side(480, 640), 512);
        assert_eq!(fit_side(481, 640), 544);
        assert_eq!(fit_side(620, 640), 640);
        assert_eq!(fit_side(1, 320), 64);
    }

    #[test]
    fn input_size_must_be_a_multiple_of_32() {
        for bad in [0, 100, 650] {
            let cfg = DetectorConfig {
                input_size: bad,
                ..DetectorConfig::default()
            };
            let err = Detector::load(Path::new("/nonexistent.onnx"), cfg).unwrap_err();
            assert!(
                matches!(err, DetectError::InputSize(b) if b == bad),
                "{err}"
            );
        }
    }

    #[test]
    fn detector_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Detector>();
    }
}
