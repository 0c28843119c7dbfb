//! The whole per-image job of ingest: bytes in, an aligned `size × size` face out (or a reason
//! to reject the photo). The pipeline's worker threads call [`prepare_face`] once per photo.
//!
//! Decode only what the crop needs. With landmarks known before decoding, a JPEG is decoded at
//! the coarsest DCT scale (1/2, 1/4, 1/8) that still has at least one source pixel per crop pixel,
//! and only the rectangle the crop covers; EXIF orientation, the scale and the crop offset are
//! folded into the one affine map the warp samples through, so the pixels are resampled once.
//! With the detector, the JPEG is decoded at the coarsest scale whose long side still fills the
//! detector's input, and that same reduced image feeds the warp when it is sharp enough;
//! otherwise only the face's region is decoded again at the scale the crop needs.

use image::RgbImage;

use crate::align::{
    center_crop_resize, center_crop_transform, similarity_from_landmarks, warp_affine, Affine,
    AlignConfig, AlignError, Landmarks, RgbView, Similarity,
};
use crate::detect::{Detector, Target};
use crate::image_io::{
    decode_stored,
    jpeg::{self, JpegHeader},
    DecodeLimits, Format, ImageError, Orientation,
};

/// Everything [`prepare_face`] needs to know besides the photo.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceConfig {
    pub align: AlignConfig,
    pub limits: DecodeLimits,
    /// Inputs are already aligned (e.g. CelebA's `img_align_celeba`): centre crop and resize
    /// only, no detection and no warp.
    pub aligned_input: bool,
}

/// An aligned face ready to be encoded into a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedFace {
    /// `size × size` RGB.
    pub image: RgbImage,
    /// The landmarks (5, or 2 eyes) in crop pixel coordinates; empty for aligned inputs that came
    /// without landmarks.
    pub landmarks: Vec<[f32; 2]>,
    /// The detector's score when the detector supplied the landmarks.
    pub detector_score: Option<f32>,
}

/// Why a photo yields no face. Each is a reject with a reason, never a failed run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaceReject {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("no face above the detector threshold (best score {best_score:?})")]
    NoFace { best_score: Option<f32> },
    #[error("none of the {detected} detected faces lies inside the labelled box {face_box:?}")]
    NoFaceInBox { detected: usize, face_box: [f32; 4] },
    #[error("bad landmarks: {detail}")]
    BadLandmarks { detail: String },
    #[error("bad face box: {detail}")]
    BadBox { detail: String },
    #[error("face too small: interpupillary distance {ipd_px:.1} px < {min} px")]
    TooSmall { ipd_px: f32, min: f32 },
    #[error("face detector failed: {0}")]
    Detector(String),
}

impl FaceReject {
    /// Machine-readable reason for `rejects.jsonl`.
    pub fn reason(&self) -> &'static str {
        match self {
            FaceReject::Image(e) => e.reason(),
            FaceReject::NoFace { .. } => "no_face",
            FaceReject::NoFaceInBox { .. } => "no_face_in_box",
            FaceReject::BadLandmarks { .. } => "bad_landmarks",
            FaceReject::BadBox { .. } => "bad_box",
            FaceReject::TooSmall { .. } => "too_small",
            FaceReject::Detector(_) => "detector_error",
        }
    }
}

impl From<AlignError> for FaceReject {
    fn from(e: AlignError) -> Self {
        FaceReject::BadLandmarks {
            detail: e.to_string(),
        }
    }
}

/// [`prepare_face_in_box`] without a labelled box.
pub fn prepare_face(
    bytes: &[u8],
    landmarks: Option<&Landmarks>,
    detector: Option<&Detector>,
    cfg: &FaceConfig,
) -> Result<PreparedFace, FaceReject> {
    prepare_face_in_box(bytes, landmarks, None, detector, cfg)
}

/// Align one photo.
///
/// - `cfg.aligned_input`: centre crop and resize ([`center_crop_resize`]); `landmarks`, if
///   given, are carried into the crop.
/// - `landmarks` given: align to them (they are in the displayed photo's pixels, after EXIF
///   orientation). All points must lie inside the photo.
/// - otherwise `detector`: align to the landmarks of the face [`best_in_box`] picks when
///   `face_box` (displayed photo pixels) is given, else of the most prominent face. Only its eyes
///   must lie inside the photo: for a face cut by the border the detector extrapolates the rest.
///   The box must have an area and overlap the photo ([`check_box`]); given landmarks or
///   `aligned_input` make it unused and unchecked.
pub fn prepare_face_in_box(
    bytes: &[u8],
    landmarks: Option<&Landmarks>,
    face_box: Option<[f32; 4]>,
    detector: Option<&Detector>,
    cfg: &FaceConfig,
) -> Result<PreparedFace, FaceReject> {
    let photo = Photo::open(bytes, &cfg.limits)?;
    if cfg.aligned_input {
        return photo.center_crop(landmarks, cfg);
    }
    if let Some(lm) = landmarks {
        let t = checked_similarity(lm, photo.display, Inside::All, &cfg.align)?;
        let image = photo.warp(&t, cfg.align.size)?;
        return Ok(PreparedFace {
            image,
            landmarks: lm.0.iter().map(|p| t.apply(*p)).collect(),
            detector_score: None,
        });
    }
    match detector {
        Some(det) => photo.detect_and_align(det, face_box, cfg),
        None => Err(FaceReject::BadLandmarks {
            detail: "no landmarks given and no detector configured".into(),
        }),
    }
}

/// Which landmarks must lie inside the photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inside {
    All,
    Eyes,
}

/// Validate landmarks against the displayed photo size (count, finite, inside, eyes apart) and
/// compute the alignment.
fn check_points(
    lm: &Landmarks,
    (w, h): (u32, u32),
    inside: Inside,
    cfg: &AlignConfig,
) -> Result<Similarity, FaceReject> {
    let t = similarity_from_landmarks(lm, cfg)?;
    let must = match inside {
        Inside::All => lm.0.len(),
        Inside::Eyes => 2,
    };
    for (i, p) in lm.0.iter().take(must).enumerate() {
        if p[0] < 0.0 || p[1] < 0.0 || p[0] > w as f32 || p[1] > h as f32 {
            return Err(FaceReject::BadLandmarks {
                detail: format!(
                    "landmark {i} ({:.1}, {:.1}) is outside the {w}x{h} image",
                    p[0], p[1]
                ),
            });
        }
    }
    Ok(t)
}

/// Validate a labelled face box `[x1, y1, x2, y2]` against the displayed photo size: finite, a
/// positive width and height, and some overlap with the photo (a box may cross the border, as a
/// border-cut face's does, but one wholly outside labels no one in this photo).
pub fn check_box(b: [f32; 4], (w, h): (u32, u32)) -> Result<(), FaceReject> {
    let bad = |why: &str| {
        Err(FaceReject::BadBox {
            detail: format!("[{}, {}, {}, {}] {why}", b[0], b[1], b[2], b[3]),
        })
    };
    if b.iter().any(|v| !v.is_finite()) {
        return bad("is not finite");
    }
    if !(b[2] > b[0] && b[3] > b[1]) {
        return bad("has no area (needs x2 > x1 and y2 > y1)");
    }
    if b[2] <= 0.0 || b[3] <= 0.0 || b[0] >= w as f32 || b[1] >= h as f32 {
        return bad(&format!("lies outside the {w}x{h} image"));
    }
    Ok(())
}

/// [`check_points`], then reject faces too small to align well.
fn checked_similarity(
    lm: &Landmarks,
    dims: (u32, u32),
    inside: Inside,
    cfg: &AlignConfig,
) -> Result<Similarity, FaceReject> {
    let t = check_points(lm, dims, inside, cfg)?;
    let ipd = lm.ipd();
    if ipd < cfg.min_ipd_px {
        return Err(FaceReject::TooSmall {
            ipd_px: ipd,
            min: cfg.min_ipd_px,
        });
    }
    Ok(t)
}

/// A photo whose header has been read: format, sizes and orientation, no pixels yet.
struct Photo<'a> {
    bytes: &'a [u8],
    format: Format,
    jpeg: Option<JpegHeader>,
    orientation: Orientation,
    /// As stored.
    stored: (u32, u32),
    /// As displayed (after orientation).
    display: (u32, u32),
    limits: &'a DecodeLimits,
}

impl<'a> Photo<'a> {
    fn open(bytes: &'a [u8], limits: &'a DecodeLimits) -> Result<Photo<'a>, ImageError> {
        let format = Format::sniff(bytes)?;
        let (jpeg, stored) = match format {
            Format::Jpeg => {
                let h = jpeg::read_header(bytes)?;
                (Some(h), (h.width, h.height))
            }
            _ => (None, crate::image_io::stored_dimensions(bytes, format)?),
        };
        limits.check(stored.0, stored.1)?;
        let orientation = Orientation::read(bytes);
        Ok(Photo {
            bytes,
            format,
            jpeg,
            orientation,
            stored,
            display: orientation.display_size(stored.0, stored.1),
            limits,
        })
    }

    /// Largest usable JPEG scale denominator not above `max_denom` (1 for other formats and
    /// lossless JPEGs).
    fn denom_at_most(&self, max_denom: f64) -> u32 {
        match self.jpeg {
            Some(h) if !h.lossless => [8, 4, 2]
                .into_iter()
                .find(|&d| d as f64 <= max_denom)
                .unwrap_or(1),
            _ => 1,
        }
    }

    /// The whole photo as displayed, JPEGs at `1/denom` scale.
    fn decode_display(&self, denom: u32) -> Result<RgbImage, ImageError> {
        let raw = decode_stored(self.bytes, self.format, self.limits, denom)?;
        Ok(self.orientation.apply(raw))
    }

    /// Warp to the crop, decoding no more of the photo than the crop needs.
    fn warp(&self, t: &Similarity, size: u32) -> Result<RgbImage, ImageError> {
        let crop_to_display = t
            .to_affine()
            .inverse()
            .expect("validated landmarks give an invertible similarity");
        let crop_to_raw = self
            .orientation
            .display_to_raw(self.stored.0, self.stored.1)
            .after(&crop_to_display);
        let Some(header) = self.jpeg else {
            let raw = decode_stored(self.bytes, self.format, self.limits, 1)?;
            return Ok(warp_affine(RgbView::of(&raw), &crop_to_raw, size));
        };
        let scale = t.scale();
        let denom = self.denom_at_most(1.0 / scale);
        // The crop's footprint in stored pixels, with room for the filter taps.
        let b = crop_to_raw.bounds_of_rect(size as f64, size as f64);
        let pad = 3.0 * (1.0 / scale).max(1.0);
        let d = denom as f64;
        let (sw, sh) = header.scaled_size(denom);
        let x0 = ((b[0] - pad) / d).floor().clamp(0.0, sw as f64) as u32;
        let y0 = ((b[1] - pad) / d).floor().clamp(0.0, sh as f64) as u32;
        let x1 = ((b[2] + pad) / d).ceil().clamp(0.0, sw as f64) as u32;
        let y1 = ((b[3] + pad) / d).ceil().clamp(0.0, sh as f64) as u32;
        let region = jpeg::decode_region(
            self.bytes,
            &header,
            denom,
            Some([x0, y0, x1.saturating_sub(x0), y1.saturating_sub(y0)]),
        )?;
        let raw_to_buf =
            Affine::scale_translate(1.0 / d, 1.0 / d, -(region.x0 as f64), -(region.y0 as f64));
        let inv = raw_to_buf.after(&crop_to_raw);
        Ok(warp_affine(RgbView::of(&region.image), &inv, size))
    }

    fn detect_and_align(
        &self,
        det: &Detector,
        face_box: Option<[f32; 4]>,
        cfg: &FaceConfig,
    ) -> Result<PreparedFace, FaceReject> {
        if let Some(b) = face_box {
            check_box(b, self.display)?;
        }
        // Decode at the coarsest scale whose long side still fills the detector input.
        let long = self.display.0.max(self.display.1) as f64;
        let denom = self.denom_at_most(long / det.config().input_size as f64);
        let small = self.decode_display(denom)?;
        // Detections are in the 1/denom-scaled image: scale the box the same way.
        let target = match face_box {
            Some(b) => Target::InBox(b.map(|v| v / denom as f32)),
            None => Target::Prominent,
        };
        let picked = det
            .pick(&small, target)
            .map_err(|e| FaceReject::Detector(e.to_string()))?;
        let Some(face) = picked.face else {
            return Err(match face_box {
                Some(b) if picked.detected > 0 => FaceReject::NoFaceInBox {
                    detected: picked.detected,
                    face_box: b,
                },
                _ => FaceReject::NoFace {
                    best_score: picked.best_score,
                },
            });
        };
        let face = face.scaled(denom as f32);
        let lm = Landmarks(face.landmarks.to_vec());
        let t = checked_similarity(&lm, self.display, Inside::Eyes, &cfg.align)?;
        let size = cfg.align.size;
        let image = if t.scale() * denom as f64 <= 1.0 {
            // The reduced decode has at least one pixel per crop pixel: warp from it.
            let d = denom as f64;
            let inv = Affine::scale_translate(1.0 / d, 1.0 / d, 0.0, 0.0).after(
                &t.to_affine()
                    .inverse()
                    .expect("validated landmarks give an invertible similarity"),
            );
            warp_affine(RgbView::of(&small), &inv, size)
        } else {
            self.warp(&t, size)?
        };
        Ok(PreparedFace {
            image,
            landmarks: lm.0.iter().map(|p| t.apply(*p)).collect(),
            detector_score: Some(face.score),
        })
    }

    fn center_crop(
        &self,
        landmarks: Option<&Landmarks>,
        cfg: &FaceConfig,
    ) -> Result<PreparedFace, FaceReject> {
        let size = cfg.align.size;
        let short = self.display.0.min(self.display.1) as f64;
        let denom = self.denom_at_most(short / size as f64);
        let img = self.decode_display(denom)?;
        let image = center_crop_resize(&img, size);
        let landmarks = match landmarks {
            Some(lm) => {
                // Aligned inputs are not re-aligned, so a small face is no reason to drop them.
                check_points(lm, self.display, Inside::All, &cfg.align)?;
                let t = center_crop_transform(self.display.0, self.display.1, size);
                lm.0.iter()
                    .map(|p| {
                        let q = t.apply([p[0] as f64, p[1] as f64]);
                        [q[0] as f32, q[1] as f32]
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(PreparedFace {
            image,
            landmarks,
            detector_score: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::encode_jpeg;

    /// A synthetic "face": dark eye dots on a light background at known positions.
    fn photo(w: u32, h: u32, eyes: [[f32; 2]; 2]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let near = eyes
                .iter()
                .any(|e| (x as f32 + 0.5 - e[0]).hypot(y as f32 + 0.5 - e[1]) < 4.0);
            if near {
                image::Rgb([10, 10, 10])
            } else {
                image::Rgb([200, 180, 160])
            }
        })
    }

    fn five(eyes: [[f32; 2]; 2]) -> Landmarks {
        let [r, l] = eyes;
        let c = [(r[0] + l[0]) / 2.0, (r[1] + l[1]) / 2.0];
        Landmarks(vec![
            r,
            l,
            [c[0], c[1] + 20.0],
            [r[0] + 5.0, c[1] + 40.0],
            [l[0] - 5.0, c[1] + 40.0],
        ])
    }

    #[test]
    fn landmarks_outside_or_degenerate_are_bad() {
        let img = photo(200, 160, [[70.0, 80.0], [130.0, 80.0]]);
        let jpeg = encode_jpeg(&img, 95).unwrap();
        let cfg = FaceConfig::default();
        let outside = Landmarks(vec![[70.0, 80.0], [230.0, 80.0]]);
        let err = prepare_face(&jpeg, Some(&outside), None, &cfg).unwrap_err();
        assert_eq!(err.reason(), "bad_landmarks", "{err}");
        let same = Landmarks(vec![[70.0, 80.0], [70.0, 80.0]]);
        let err = prepare_face(&jpeg, Some(&same), None, &cfg).unwrap_err();
        assert_eq!(err.reason(), "bad_landmarks", "{err}");
        let nan = Landmarks(vec![[f32::NAN, 80.0], [130.0, 80.0]]);
        let err = prepare_face(&jpeg, Some(&nan), None, &cfg).unwrap_err();
        assert_eq!(err.reason(), "bad_landmarks", "{err}");
        let tiny = Landmarks(vec![[70.0, 80.0], [80.0, 80.0]]);
        assert_eq!(
            prepare_face(&jpeg, Some(&tiny), None, &cfg),
            Err(FaceReject::TooSmall {
                ipd_px: 10.0,
                min: 20.0
            })
        );
        let err = prepare_face(
            &jpeg[..100],
            Some(&five([[70.0, 80.0], [130.0, 80.0]])),
            None,
            &cfg,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "decode_error", "{err}");
    }

    #[test]
    fn boxes_without_area_or_outside_the_photo_are_bad() {
        let dims = (200, 160);
        assert!(check_box([10.0, 20.0, 60.0, 90.0], dims).is_ok());
        // Crossing the border is fine (a border-cut face).
        assert!(check_box([-30.0, -10.0, 40.0, 50.0], dims).is_ok());
        assert!(check_box([180.0, 140.0, 260.0, 220.0], dims).is_ok());
        for (b, why) in [
            ([10.0, 20.0, 10.0, 90.0], "no area"),
            ([60.0, 20.0, 10.0, 90.0], "no area"),
            ([10.0, 90.0, 60.0, 20.0], "no area"),
            ([f32::NAN, 20.0, 60.0, 90.0], "not finite"),
            ([10.0, 20.0, f32::INFINITY, 90.0], "not finite"),
            ([200.0, 20.0, 260.0, 90.0], "outside the 200x160"),
            ([10.0, 160.0, 60.0, 200.0], "outside"),
            ([-80.0, 20.0, -10.0, 90.0], "outside"),
            ([10.0, -90.0, 60.0, 0.0], "outside"),
        ] {
            let err = check_box(b, dims).unwrap_err();
            assert_eq!(err.reason(), "bad_box");
            assert!(err.to_string().contains(why), "{b:?}: {err}");
        }
    }

    /// The eyes of the synthetic face land where the alignment puts them, through the scaled,
    /// cropped JPEG path (photo 8× larger than needed → 1/8 decode).
    #[test]
    fn eyes_land_on_target_through_scaled_region_decode() {
        let eyes = [[900.0, 1000.0], [1500.0, 1000.0]];
        let img = photo(2400, 2000, eyes);
        let jpeg = encode_jpeg(&img, 95).unwrap();
        let cfg = FaceConfig::default();
        let face = prepare_face(&jpeg, Some(&five(eyes)), None, &cfg).unwrap();
        assert_eq!(face.image.dimensions(), (235, 235));
        let target = face.landmarks[0];
        assert!((target[0] - 235.0 * 0.325).abs() < 1e-3);
        assert!((target[1] - 235.0 * 0.38).abs() < 1e-3);
        // The darkest pixel near each eye target is within 1.5 px of it.
        for e in &face.landmarks[..2] {
            let mut best = (u32::MAX, 0.0f32);
            for y in (e[1] as i32 - 8)..(e[1] as i32 + 8) {
                for x in (e[0] as i32 - 8)..(e[0] as i32 + 8) {
                    let p = face.image.get_pixel(x as u32, y as u32);
                    let v = p.0.iter().map(|&c| c as u32).sum::<u32>();
                    let d = (x as f32 + 0.5 - e[0]).hypot(y as f32 + 0.5 - e[1]);
                    if v < best.0 || (v == best.0 && d < best.1) {
                        best = (v, d);
                    }
                }
            }
            assert!(
                best.1 < 1.5,
                "eye at {e:?}: darkest pixel {} px away",
                best.1
            );
        }
    }

    #[test]
    fn aligned_input_is_centre_cropped() {
        let img = photo(178, 218, [[70.0, 110.0], [110.0, 110.0]]);
        let jpeg = encode_jpeg(&img, 95).unwrap();
        let cfg = FaceConfig {
            aligned_input: true,
            ..FaceConfig::default()
        };
        let lm = Landmarks(vec![[70.0, 110.0], [110.0, 110.0]]);
        let face = prepare_face(&jpeg, Some(&lm), None, &cfg).unwrap();
        assert_eq!(face.image.dimensions(), (235, 235));
        // Square rows 20..198 → ×235/178.
        let k = 235.0 / 178.0;
        assert!((face.landmarks[0][0] - 70.0 * k).abs() < 1e-3);
        assert!((face.landmarks[0][1] - 90.0 * k).abs() < 1e-3);
        let none = prepare_face(&jpeg, None, None, &cfg).unwrap();
        assert!(none.landmarks.is_empty());
    }
}
