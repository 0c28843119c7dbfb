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
//!
//! # Coarse-to-fine ([`Strategy::CoarseFine`], the default for picking the aligned face)
//!
//! Inference is nearly all of ingest's per-photo time, and a face-dataset photo is about one large
//! face, so [`Detector::pick`] sends fewer pixels through the model ([`coarse_fine`] has the
//! measured constants):
//! 1. *Coarse pass*: the detector-scale image (long side `input_size`) downscaled by `factor`
//!    (4: 640 → 160), fitted like [`InputShape::Fit`], threshold 0.4. It finds the large faces
//!    cheaply (~7% of a full pass's pixels).
//! 2. *Candidates*: every coarse face with `area × score` at least half the best one's: coarse
//!    scores and boxes are noisy, so a runner-up is refined too rather than dropped.
//! 3. *Fine pass*: each candidate's box, widened by a context margin (max(128 px, ½ box side)),
//!    becomes a window of the detector-scale image whose origin is a multiple of 32 (its size one of
//!    64), clipped to the full pass's canvas (black beyond the photo, as there). On that grid
//!    YuNet's stride-8/16/32 anchors sit exactly where they sit in the full image and see the same
//!    pixels, so a window's detections are the full pass's up to the window's border, which the
//!    margin keeps away from the face. Overlapping windows are merged; the refined face matching
//!    each candidate (IoU ≥ 0.3) is kept and [`most_prominent`] picks among them.
//! 4. With a labelled box the coarse pass is skipped: the window is the box plus the margin, and
//!    [`best_in_box`] picks.
//! 5. *Fallbacks* to the full pass, so recall never drops below [`Strategy::Full`]: no coarse
//!    face (small faces), windows as large as the full canvas (nothing to gain), or no refined face
//!    confirming a candidate / none in the labelled box. Rejects therefore always come from a full
//!    pass, and their "best score seen" is the whole image's.
//!
//! The result depends only on the photo (no state carries between photos), so an ingest's
//! output stays the same for any worker count. [`Detector::detect`] always runs the full pass.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fast_image_resize::{self as fr, images::ImageRef, PixelType, ResizeAlg, ResizeOptions};
use image::RgbImage;
use tract_onnx::prelude::*;

pub mod coarse_fine;

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
    /// How [`Detector::pick`] finds the face to align.
    pub strategy: Strategy,
}

/// How [`Detector::pick`] looks for the face it returns (module doc, "Coarse-to-fine").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One pass over the whole detector-scale image.
    Full,
    /// A pass at `1/factor` of the detector scale finds candidates, refined in 32-aligned
    /// windows of the detector-scale image; falls back to [`Strategy::Full`] when that cannot help.
    CoarseFine { factor: u32 },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::CoarseFine {
            factor: coarse_fine::DEFAULT_FACTOR,
        }
    }
}

/// Which detected face [`Detector::pick`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// [`most_prominent`].
    Prominent,
    /// [`best_in_box`] of this labelled box (`[x1, y1, x2, y2]`, image pixels).
    InBox([f32; 4]),
}

/// What [`Detector::pick`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked {
    /// The face, in image pixels; `None` when no face (in the box) passed the threshold.
    pub face: Option<Detection>,
    /// Faces above the threshold in the pixels searched (the whole image after a full pass).
    pub detected: usize,
    /// The highest score of any cell searched (for reject logs).
    pub best_score: Option<f32>,
    /// Which passes ran.
    pub route: Route,
}

/// The passes [`Detector::pick`] ran, for statistics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// [`Strategy::Full`]: one full pass.
    Full,
    /// Coarse pass (none with a labelled box), then windows only.
    Windows,
    /// Coarse-fine fell back to a full pass (module doc, step 5).
    Fallback(FallbackReason),
}

/// Why coarse-fine ran the full pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The coarse pass found no face.
    NoCandidate,
    /// The windows would cover more than [`coarse_fine::MAX_WINDOW_FRACTION`] of the canvas.
    LargeWindows,
    /// No refined face matched a candidate, or none lies in the labelled box.
    NotConfirmed,
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
            strategy: Strategy::default(),
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

    pub fn iou(&self, other: &Detection) -> f32 {
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
        self.scaled_xy(k, k)
    }

    /// The same detection with x scaled by `kx` and y by `ky`.
    pub fn scaled_xy(&self, kx: f32, ky: f32) -> Detection {
        let [x1, y1, x2, y2] = self.bbox;
        Detection {
            bbox: [x1 * kx, y1 * ky, x2 * kx, y2 * ky],
            landmarks: self.landmarks.map(|p| [p[0] * kx, p[1] * ky]),
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
    #[error(
        "coarse-fine factor {factor} leaves no coarse image of at least 32 px from input size {input_size}"
    )]
    CoarseFactor { factor: u32, input_size: u32 },
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
    /// Model input pixels run so far, all passes (what coarse-fine saves; see `input_pixels`).
    pixels: AtomicU64,
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
        if let Strategy::CoarseFine { factor } = cfg.strategy {
            if factor == 0 || cfg.input_size / factor < 32 {
                return Err(DetectError::CoarseFactor {
                    factor,
                    input_size: cfg.input_size,
                });
            }
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
            pixels: AtomicU64::new(0),
            cfg,
        };
        let s = det.cfg.input_size as usize;
        det.plan(s, s)?;
        Ok(det)
    }

    /// The compiled model for a `[1,3,h,w]` input, compiling it on first use. The lock is not
    /// held while compiling (~0.1 s), so other workers keep running on the shapes they have; two
    /// workers meeting a new shape at once may both compile it, and one result is kept.
    fn plan(&self, h: usize, w: usize) -> Result<Arc<Plan>, DetectError> {
        let cached = self.lock_plans().get(&(h, w)).cloned();
        if let Some(p) = cached {
            return Ok(p);
        }
        let plan = Arc::new(self.compile(h, w)?);
        Ok(self.lock_plans().entry((h, w)).or_insert(plan).clone())
    }

    fn lock_plans(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, usize), Arc<Plan>>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many input shapes have been compiled so far (each costs ~0.1 s once).
    pub fn compiled_shapes(&self) -> usize {
        self.lock_plans().len()
    }

    /// Model input pixels (`H × W` per inference, black margins included) run since loading:
    /// inference time is close to proportional to it.
    pub fn input_pixels(&self) -> u64 {
        self.pixels.load(Ordering::Relaxed)
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

    /// All faces above the score threshold after NMS, best first, in `img` pixel coordinates: one
    /// full pass whatever the [`Strategy`].
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        Ok(self.detect_outcome(img)?.faces)
    }

    /// [`Detector::detect`] plus the best score seen (for "no face" rejects).
    pub fn detect_outcome(&self, img: &RgbImage) -> Result<DetectOutcome, DetectError> {
        let scaled = self.scaled(img)?;
        let outcome = self.full_pass(&scaled)?;
        Ok(DetectOutcome {
            faces: outcome.faces.iter().map(|f| scaled.to_image(f)).collect(),
            best_score: outcome.best_score,
        })
    }

    /// The face to align ([`Target`]), found with the configured [`Strategy`].
    pub fn pick(&self, img: &RgbImage, target: Target) -> Result<Picked, DetectError> {
        let scaled = self.scaled(img)?;
        let mut route = Route::Full;
        if let Strategy::CoarseFine { factor } = self.cfg.strategy {
            match coarse_fine::pick(self, &scaled, target, factor)? {
                Ok(picked) => return Ok(scaled.picked_to_image(picked)),
                Err(reason) => route = Route::Fallback(reason),
            }
        }
        let outcome = self.full_pass(&scaled)?;
        let face = match target {
            Target::Prominent => most_prominent(&outcome.faces),
            Target::InBox(b) => best_in_box(&outcome.faces, scaled.box_to_scaled(b)),
        };
        Ok(scaled.picked_to_image(Picked {
            face: face.cloned(),
            detected: outcome.faces.len(),
            best_score: outcome.best_score,
            route,
        }))
    }

    /// `img` resized to the detector scale (long side `input_size`), and the full pass's canvas.
    fn scaled<'a>(&self, img: &'a RgbImage) -> Result<Scaled<'a>, DetectError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(DetectError::Run {
                width: w,
                height: h,
                detail: "empty image".into(),
            });
        }
        let s = self.cfg.input_size;
        let (nw, nh) = letterbox_size(w, h, s);
        let canvas = match self.cfg.shape {
            InputShape::Fit => (fit_side(nw, s), fit_side(nh, s)),
            InputShape::Square => (s, s),
        };
        let pixels =
            resize_rgb(img.as_raw(), (w, h), (nw, nh)).map_err(|detail| DetectError::Run {
                width: w,
                height: h,
                detail,
            })?;
        Ok(Scaled {
            image: PackedRgb {
                pixels,
                size: (nw, nh),
            },
            canvas,
            original: (w, h),
        })
    }

    /// The whole canvas, as without coarse-fine.
    fn full_pass(&self, scaled: &Scaled) -> Result<DetectOutcome, DetectError> {
        let (cw, ch) = scaled.canvas;
        self.run_window(&scaled.image, [0, 0, cw, ch], self.cfg.score_threshold)
    }

    /// Detections scoring at least `threshold` in the `[x0, y0, w, h]` window of `image` (black
    /// where the window leaves the image), in `image` pixel coordinates. `w` and `h` must be
    /// multiples of 32.
    fn run_window(
        &self,
        image: &PackedRgb,
        window: [u32; 4],
        threshold: f32,
    ) -> Result<DetectOutcome, DetectError> {
        let [x0, y0, iw, ih] = window;
        let run_err = |detail: String| DetectError::Run {
            width: image.size.0,
            height: image.size.1,
            detail,
        };
        let input = window_bgr(image, window).map_err(run_err)?;
        let plan = self.plan(ih as usize, iw as usize)?;
        self.pixels
            .fetch_add(iw as u64 * ih as u64, Ordering::Relaxed);
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
        let (ox, oy) = (x0 as f32, y0 as f32);
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
                if score < threshold {
                    continue;
                }
                let (row, col) = ((i / cols) as f32, (i % cols) as f32);
                let b = &bbox[4 * i..4 * i + 4];
                let cx = (col + b[0]) * st + ox;
                let cy = (row + b[1]) * st + oy;
                let bw = b[2].exp() * st;
                let bh = b[3].exp() * st;
                let k = &kps[10 * i..10 * i + 10];
                let mut landmarks = [[0f32; 2]; 5];
                for (j, lm) in landmarks.iter_mut().enumerate() {
                    *lm = [(col + k[2 * j]) * st + ox, (row + k[2 * j + 1]) * st + oy];
                }
                faces.push(Detection {
                    bbox: [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
                    landmarks,
                    score,
                });
            }
        }
        Ok(DetectOutcome {
            faces: nms(faces, self.cfg.nms_iou),
            best_score: best,
        })
    }
}

/// An RGB image as packed bytes.
struct PackedRgb<'a> {
    pixels: Cow<'a, [u8]>,
    size: (u32, u32),
}

/// A photo at the detector scale.
struct Scaled<'a> {
    /// The photo resized to fit `input_size` (the "detector-scale image").
    image: PackedRgb<'a>,
    /// The full pass's input size: the image plus black, at the top-left.
    canvas: (u32, u32),
    /// The photo's own size.
    original: (u32, u32),
}

impl Scaled<'_> {
    /// Detector-scale pixel → photo pixel factors: the resized image shows the whole photo.
    fn factors(&self) -> (f32, f32) {
        (
            self.original.0 as f32 / self.image.size.0 as f32,
            self.original.1 as f32 / self.image.size.1 as f32,
        )
    }

    fn to_image(&self, d: &Detection) -> Detection {
        let (kx, ky) = self.factors();
        d.scaled_xy(kx, ky)
    }

    fn box_to_scaled(&self, b: [f32; 4]) -> [f32; 4] {
        let (kx, ky) = self.factors();
        [b[0] / kx, b[1] / ky, b[2] / kx, b[3] / ky]
    }

    fn picked_to_image(&self, p: Picked) -> Picked {
        Picked {
            face: p.face.map(|f| self.to_image(&f)),
            ..p
        }
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

/// `pixels` (packed RGB, `w × h`) resized to `nw × nh` with a bilinear convolution (Pillow's
/// filter, which the reference detections used); borrowed when the size is already right.
fn resize_rgb(
    pixels: &[u8],
    (w, h): (u32, u32),
    (nw, nh): (u32, u32),
) -> Result<Cow<'_, [u8]>, String> {
    if (nw, nh) == (w, h) {
        return Ok(Cow::Borrowed(pixels));
    }
    let src = ImageRef::new(w, h, pixels, PixelType::U8x3).map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(nw, nh, PixelType::U8x3);
    fr::Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Bilinear)),
        )
        .map_err(|e| e.to_string())?;
    Ok(Cow::Owned(dst.into_vec()))
}

/// The model input for the `[x0, y0, w, h]` window of `image`: a BGR `[1,3,h,w]` tensor, black
/// where the window extends past the image (as the full pass's canvas is black there).
fn window_bgr(image: &PackedRgb, [x0, y0, iw, ih]: [u32; 4]) -> Result<Tensor, String> {
    let (nw, nh) = image.size;
    let (iw, ih) = (iw as usize, ih as usize);
    let plane = iw * ih;
    let mut data = vec![0f32; 3 * plane];
    let cols = nw.saturating_sub(x0).min(iw as u32) as usize;
    for y in 0..nh.saturating_sub(y0).min(ih as u32) as usize {
        let start = ((y0 as usize + y) * nw as usize + x0 as usize) * 3;
        let row = &image.pixels[start..start + cols * 3];
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

    /// A detection with a box and score only (shared with `coarse_fine`'s tests).
    pub(super) fn det(b: [f32; 4], score: f32) -> Detection {
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
