//! Face alignment: the similarity transform of paper §4.1 (eyes level, interpupillary distance
//! = 35% of the crop width) and a filtered warp straight to the output size.
//!
//! Coordinates are continuous pixel coordinates with pixel `(i, j)` covering `[i, i+1) × [j, j+1)`
//! (its centre is at `i + 0.5`). With this convention a 1/d downscale maps `x` to `x / d` exactly,
//! which keeps landmark bookkeeping simple when images are decoded at reduced scale.
//!
//! The warp is bilinear. Bilinear sampling alone aliases once the transform shrinks the source by
//! more than ~1.5×, so [`warp`] then first downsamples just the region the crop covers with a
//! Lanczos-3 convolution (`fast_image_resize`) to about the output scale and warps from that. The
//! geometry is documented with pictures in `docs/ALIGNMENT.md`.

use fast_image_resize::{self as fr, images::ImageRef, PixelType, ResizeAlg, ResizeOptions};
use image::RgbImage;

/// Where the face goes in the crop.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignConfig {
    /// Output side in pixels (paper: 235).
    pub size: u32,
    /// Interpupillary distance as a fraction of `size` (paper: 0.35).
    pub ipd_ratio: f32,
    /// Vertical position of both eyes as a fraction of `size`, from the top. 0.38 leaves the
    /// hairline above and the chin (about 1.6 IPD below the eyes) inside the crop.
    pub eye_y: f32,
    /// Faces whose source interpupillary distance is below this many pixels are rejected: they
    /// would be upscaled more than ~4× into a blur.
    pub min_ipd_px: f32,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            size: 235,
            ipd_ratio: 0.35,
            eye_y: 0.38,
            min_ipd_px: 20.0,
        }
    }
}

/// Facial landmarks in source pixel coordinates: 5 points (right eye, left eye, nose tip, right
/// mouth corner, left mouth corner) or only the 2 eyes. "Right" is the subject's right, which is
/// on the image's left.
#[derive(Debug, Clone, PartialEq)]
pub struct Landmarks(pub Vec<[f32; 2]>);

impl Landmarks {
    /// The subject's right eye (image left).
    pub fn right_eye(&self) -> Option<[f32; 2]> {
        self.0.first().copied()
    }

    /// The subject's left eye (image right).
    pub fn left_eye(&self) -> Option<[f32; 2]> {
        self.0.get(1).copied()
    }

    /// Distance between the eye centres in pixels (0 when there are fewer than 2 points).
    pub fn ipd(&self) -> f32 {
        match (self.right_eye(), self.left_eye()) {
            (Some(r), Some(l)) => ((l[0] - r[0]).powi(2) + (l[1] - r[1]).powi(2)).sqrt(),
            _ => 0.0,
        }
    }
}

/// Why landmarks cannot define an alignment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlignError {
    #[error("expected 5 landmarks or 2 eyes, got {0} points")]
    WrongCount(usize),
    #[error("landmark {index} is not finite: ({x}, {y})")]
    NotFinite { index: usize, x: f32, y: f32 },
    #[error("eyes are at the same point (distance {ipd} px)")]
    Degenerate { ipd: f32 },
}

/// A 2-D affine map `p ↦ [m0 m1; m3 m4]·p + [m2; m5]`, in f64 so that composing a few of them
/// (crop → photo → rotated raw frame → scaled decode) loses nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f64; 6]);

impl Affine {
    pub const IDENTITY: Affine = Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    /// Scale each axis and then translate: `p ↦ (sx·x + tx, sy·y + ty)`.
    pub fn scale_translate(sx: f64, sy: f64, tx: f64, ty: f64) -> Affine {
        Affine([sx, 0.0, tx, 0.0, sy, ty])
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.0;
        [
            m[0] * p[0] + m[1] * p[1] + m[2],
            m[3] * p[0] + m[4] * p[1] + m[5],
        ]
    }

    /// `self ∘ first`: apply `first`, then `self`.
    pub fn after(&self, first: &Affine) -> Affine {
        let a = &self.0;
        let b = &first.0;
        Affine([
            a[0] * b[0] + a[1] * b[3],
            a[0] * b[1] + a[1] * b[4],
            a[0] * b[2] + a[1] * b[5] + a[2],
            a[3] * b[0] + a[4] * b[3],
            a[3] * b[1] + a[4] * b[4],
            a[3] * b[2] + a[4] * b[5] + a[5],
        ])
    }

    pub fn determinant(&self) -> f64 {
        self.0[0] * self.0[4] - self.0[1] * self.0[3]
    }

    /// The inverse map, or `None` when the map collapses the plane.
    pub fn inverse(&self) -> Option<Affine> {
        let det = self.determinant();
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let m = &self.0;
        let (a, b, c, d) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
        Some(Affine([
            a,
            b,
            -(a * m[2] + b * m[5]),
            c,
            d,
            -(c * m[2] + d * m[5]),
        ]))
    }

    /// Bounding box `[x0, y0, x1, y1]` of the image of the rectangle `[0,w]×[0,h]`.
    pub fn bounds_of_rect(&self, w: f64, h: f64) -> [f64; 4] {
        let corners = [[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]].map(|p| self.apply(p));
        let mut b = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for c in corners {
            b[0] = b[0].min(c[0]);
            b[1] = b[1].min(c[1]);
            b[2] = b[2].max(c[0]);
            b[3] = b[3].max(c[1]);
        }
        b
    }
}

/// A similarity transform from source (photo) pixels to crop pixels:
/// `q = [a −b; b a]·p + t`, i.e. a rotation by `atan2(b, a)` and a uniform scale `hypot(a, b)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// Crop pixels per source pixel (below 1 the crop shrinks the photo).
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    /// Rotation in radians.
    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let q = self.to_affine().apply([p[0] as f64, p[1] as f64]);
        [q[0] as f32, q[1] as f32]
    }

    pub fn to_affine(&self) -> Affine {
        Affine([self.a, -self.b, self.tx, self.b, self.a, self.ty])
    }
}

/// Check landmarks and compute the similarity that puts the eyes level, `ipd_ratio · size` apart,
/// centred horizontally at height `eye_y · size`. The subject's right eye lands at
/// `((1 − ipd_ratio)/2 · size, eye_y · size)`, the left eye at `((1 + ipd_ratio)/2 · size, ...)`.
pub fn similarity_from_landmarks(
    lm: &Landmarks,
    cfg: &AlignConfig,
) -> Result<Similarity, AlignError> {
    if lm.0.len() != 5 && lm.0.len() != 2 {
        return Err(AlignError::WrongCount(lm.0.len()));
    }
    for (index, p) in lm.0.iter().enumerate() {
        if !p[0].is_finite() || !p[1].is_finite() {
            return Err(AlignError::NotFinite {
                index,
                x: p[0],
                y: p[1],
            });
        }
    }
    let r = lm.0[0].map(f64::from);
    let l = lm.0[1].map(f64::from);
    let (vx, vy) = (l[0] - r[0], l[1] - r[1]);
    let ipd = vx.hypot(vy);
    if ipd < 1e-3 {
        return Err(AlignError::Degenerate { ipd: ipd as f32 });
    }
    let size = cfg.size as f64;
    let k = cfg.ipd_ratio as f64 * size / ipd;
    // Rotate by −θ (θ = eye-line angle) and scale by k: [a −b; b a] with a = k cosθ, b = −k sinθ.
    let a = k * vx / ipd;
    let b = -k * vy / ipd;
    let (cx, cy) = ((r[0] + l[0]) / 2.0, (r[1] + l[1]) / 2.0);
    let tx = size / 2.0 - (a * cx - b * cy);
    let ty = cfg.eye_y as f64 * size - (b * cx + a * cy);
    Ok(Similarity { a, b, tx, ty })
}

/// A borrowed packed RGB8 buffer (rows of `width * 3` bytes, no padding).
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

impl<'a> RgbView<'a> {
    pub fn of(img: &'a RgbImage) -> RgbView<'a> {
        RgbView {
            width: img.width(),
            height: img.height(),
            data: img.as_raw(),
        }
    }
}

/// Warp `src` to a `size × size` crop with `t` (source → crop), downsampling first when `t`
/// shrinks the source by more than 1.5× (see the module docs). Outside the source is black.
pub fn warp(src: &RgbImage, t: &Similarity, size: u32) -> RgbImage {
    let inv = t
        .to_affine()
        .inverse()
        .expect("a similarity with non-zero scale is invertible");
    warp_affine(RgbView::of(src), &inv, size)
}

/// Plain bilinear warp with no prefilter: the straightforward reference alignment that tests and
/// benchmarks compare [`warp`] against.
pub fn warp_bilinear(src: &RgbImage, t: &Similarity, size: u32) -> RgbImage {
    let inv = t
        .to_affine()
        .inverse()
        .expect("a similarity with non-zero scale is invertible");
    let mut out = RgbImage::new(size, size);
    sample_bilinear(RgbView::of(src), &inv, &mut out);
    out
}

/// Shrink factor above which [`warp_affine`] prefilters.
const PREFILTER_ABOVE: f64 = 1.5;

/// Warp with an output → source map `inv` (crop pixel coordinates to source coordinates). This is
/// the engine behind [`warp`]; `inv` may include flips and per-axis scales, which lets callers
/// fold EXIF orientation and reduced-scale decoding into the same single resampling.
pub fn warp_affine(src: RgbView<'_>, inv: &Affine, size: u32) -> RgbImage {
    let mut out = RgbImage::new(size, size);
    // Source pixels per output pixel.
    let shrink = inv.determinant().abs().sqrt();
    if shrink > PREFILTER_ABOVE {
        if let Some((small, to_small)) = prefilter(src, inv, size, shrink) {
            let inv_small = to_small.after(inv);
            let view = RgbView {
                width: small.width(),
                height: small.height(),
                data: small.buffer(),
            };
            sample_bilinear(view, &inv_small, &mut out);
            return out;
        }
    }
    sample_bilinear(src, inv, &mut out);
    out
}

/// Downsample the part of `src` that the crop covers to about one source pixel per output pixel.
/// Returns the small image and the map from source coordinates to its coordinates.
fn prefilter(
    src: RgbView<'_>,
    inv: &Affine,
    size: u32,
    shrink: f64,
) -> Option<(fr::images::Image<'static>, Affine)> {
    let b = inv.bounds_of_rect(size as f64, size as f64);
    // Two output pixels of margin so that bilinear taps at the crop border read real data.
    let pad = 2.0 * shrink;
    let x0 = (b[0] - pad).floor().max(0.0);
    let y0 = (b[1] - pad).floor().max(0.0);
    let x1 = (b[2] + pad).ceil().min(src.width as f64);
    let y1 = (b[3] + pad).ceil().min(src.height as f64);
    if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
        return None;
    }
    let (rw, rh) = (x1 - x0, y1 - y0);
    let dw = (rw / shrink).round().max(1.0);
    let dh = (rh / shrink).round().max(1.0);
    let src_ref = ImageRef::new(src.width, src.height, src.data, PixelType::U8x3).ok()?;
    let mut dst = fr::images::Image::new(dw as u32, dh as u32, PixelType::U8x3);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop(x0, y0, rw, rh);
    fr::Resizer::new().resize(&src_ref, &mut dst, &opts).ok()?;
    let to_small = Affine::scale_translate(dw / rw, dh / rh, -x0 * dw / rw, -y0 * dh / rh);
    Some((dst, to_small))
}

/// Bilinear sampling of `src` at `inv(output pixel centre)`; taps outside the source read black.
fn sample_bilinear(src: RgbView<'_>, inv: &Affine, out: &mut RgbImage) {
    let (w, h) = (src.width as i64, src.height as i64);
    let stride = src.width as usize * 3;
    let data = src.data;
    let m = inv.0;
    let size_x = out.width() as usize;
    let out_buf: &mut [u8] = out;
    for (j, row) in out_buf.chunks_exact_mut(size_x * 3).enumerate() {
        let yc = j as f64 + 0.5;
        // Source position of this row's first pixel centre, minus 0.5 to index pixel centres.
        let mut u = m[0] * 0.5 + m[1] * yc + m[2] - 0.5;
        let mut v = m[3] * 0.5 + m[4] * yc + m[5] - 0.5;
        for px in row.chunks_exact_mut(3) {
            let (fx, fy) = (u.floor(), v.floor());
            let (x, y) = (fx as i64, fy as i64);
            let (ax, ay) = ((u - fx) as f32, (v - fy) as f32);
            if x >= 0 && y >= 0 && x + 1 < w && y + 1 < h {
                let i00 = y as usize * stride + x as usize * 3;
                let i10 = i00 + stride;
                for c in 0..3 {
                    let p00 = data[i00 + c] as f32;
                    let p01 = data[i00 + 3 + c] as f32;
                    let p10 = data[i10 + c] as f32;
                    let p11 = data[i10 + 3 + c] as f32;
                    let top = p00 + (p01 - p00) * ax;
                    let bot = p10 + (p11 - p10) * ax;
                    px[c] = (top + (bot - top) * ay + 0.5) as u8;
                }
            } else if x >= -1 && y >= -1 && x < w && y < h {
                let tap = |xx: i64, yy: i64, c: usize| -> f32 {
                    if xx >= 0 && yy >= 0 && xx < w && yy < h {
                        data[yy as usize * stride + xx as usize * 3 + c] as f32
                    } else {
                        0.0
                    }
                };
                for (c, out) in px.iter_mut().enumerate() {
                    let top = tap(x, y, c) * (1.0 - ax) + tap(x + 1, y, c) * ax;
                    let bot = tap(x, y + 1, c) * (1.0 - ax) + tap(x + 1, y + 1, c) * ax;
                    *out = (top * (1.0 - ay) + bot * ay + 0.5) as u8;
                }
            } else {
                px.fill(0);
            }
            u += m[0];
            v += m[3];
        }
    }
}

/// The crop [`center_crop_resize`] takes: the largest centred square, `[x0, y0, side]`.
pub fn center_square(width: u32, height: u32) -> [u32; 3] {
    let side = width.min(height);
    [(width - side) / 2, (height - side) / 2, side]
}

/// For already-aligned inputs (`--aligned`): take the largest centred square and resize it to
/// `size × size` with a Lanczos-3 convolution. No rotation, no detection. The map from source to
/// output coordinates is [`center_crop_transform`].
pub fn center_crop_resize(src: &RgbImage, size: u32) -> RgbImage {
    let [x0, y0, side] = center_square(src.width(), src.height());
    let mut out = RgbImage::new(size, size);
    if side == 0 || size == 0 {
        return out;
    }
    let src_ref = ImageRef::new(src.width(), src.height(), src.as_raw(), PixelType::U8x3)
        .expect("an RgbImage buffer has the size its dimensions say");
    let mut dst = fr::images::Image::new(size, size, PixelType::U8x3);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop(x0 as f64, y0 as f64, side as f64, side as f64);
    fr::Resizer::new()
        .resize(&src_ref, &mut dst, &opts)
        .expect("same pixel type on both sides and a crop inside the image");
    out.copy_from_slice(dst.buffer());
    out
}

/// Source → output map of [`center_crop_resize`] (to carry landmarks into the crop).
pub fn center_crop_transform(width: u32, height: u32, size: u32) -> Affine {
    let [x0, y0, side] = center_square(width, height);
    let k = size as f64 / side.max(1) as f64;
    Affine::scale_translate(k, k, -(x0 as f64) * k, -(y0 as f64) * k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AlignConfig {
        AlignConfig::default()
    }

    #[test]
    fn eyes_land_where_documented() {
        let lm = Landmarks(vec![
            [100.0, 220.0],
            [180.0, 200.0],
            [150.0, 250.0],
            [120.0, 290.0],
            [175.0, 280.0],
        ]);
        let c = cfg();
        let t = similarity_from_landmarks(&lm, &c).unwrap();
        let r = t.apply(lm.0[0]);
        let l = t.apply(lm.0[1]);
        let size = c.size as f32;
        let want_r = [(1.0 - c.ipd_ratio) / 2.0 * size, c.eye_y * size];
        let want_l = [(1.0 + c.ipd_ratio) / 2.0 * size, c.eye_y * size];
        for (got, want) in [(r, want_r), (l, want_l)] {
            assert!((got[0] - want[0]).abs() < 1e-3, "{got:?} vs {want:?}");
            assert!((got[1] - want[1]).abs() < 1e-3, "{got:?} vs {want:?}");
        }
        // IPD 82.25 px in the crop; the source IPD is hypot(80, 20).
        assert!((l[0] - r[0] - 0.35 * 235.0).abs() < 1e-3);
        assert!((t.scale() - 82.25 / 80f64.hypot(20.0)).abs() < 1e-6);
        // The eye line rose to the right by atan(20/80); the transform undoes that.
        assert!((t.angle() - (20f64 / 80.0).atan()).abs() < 1e-9);
    }

    #[test]
    fn two_eyes_are_enough_and_bad_counts_are_rejected() {
        let c = cfg();
        assert!(similarity_from_landmarks(&Landmarks(vec![[0.0, 0.0], [10.0, 0.0]]), &c).is_ok());
        assert_eq!(
            similarity_from_landmarks(&Landmarks(vec![[0.0, 0.0]; 3]), &c),
            Err(AlignError::WrongCount(3))
        );
        assert!(matches!(
            similarity_from_landmarks(&Landmarks(vec![[5.0, 5.0], [5.0, 5.0]]), &c),
            Err(AlignError::Degenerate { .. })
        ));
        assert!(matches!(
            similarity_from_landmarks(&Landmarks(vec![[f32::NAN, 5.0], [9.0, 5.0]]), &c),
            Err(AlignError::NotFinite { index: 0, .. })
        ));
    }

    #[test]
    fn affine_inverse_and_composition() {
        let a = Affine([2.0, 0.5, 3.0, -0.25, 1.5, -7.0]);
        let inv = a.inverse().unwrap();
        let p = [12.5, -3.0];
        let q = inv.apply(a.apply(p));
        assert!((q[0] - p[0]).abs() < 1e-12 && (q[1] - p[1]).abs() < 1e-12);
        let id = inv.after(&a);
        for (x, y) in id.0.iter().zip(Affine::IDENTITY.0) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    /// A horizontal gradient image warped by a pure translation of whole pixels is copied exactly.
    #[test]
    fn integer_translation_copies_pixels() {
        let src = RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 77]));
        let t = Similarity {
            a: 1.0,
            b: 0.0,
            tx: -10.0,
            ty: -5.0,
        };
        let out = warp(&src, &t, 20);
        for (x, y, p) in out.enumerate_pixels() {
            assert_eq!(*p, *src.get_pixel(x + 10, y + 5), "at {x},{y}");
        }
    }

    /// A one-pixel checkerboard shrunk 4× so that every plain bilinear tap lands on a white pixel
    /// centre: the plain warp aliases to solid white, the prefiltered warp averages to grey.
    #[test]
    fn prefilter_removes_aliasing() {
        let src = RgbImage::from_fn(400, 400, |x, y| {
            let v = if (x + y) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        let t = Similarity {
            a: 0.25,
            b: 0.0,
            tx: 0.375,
            ty: 0.375,
        };
        let mean = |img: &RgbImage| {
            let inner: Vec<f64> = img
                .enumerate_pixels()
                .filter(|(x, y, _)| (5..95).contains(x) && (5..95).contains(y))
                .map(|(_, _, p)| p[0] as f64)
                .collect();
            inner.iter().sum::<f64>() / inner.len() as f64
        };
        let filtered = warp(&src, &t, 100);
        let plain = warp_bilinear(&src, &t, 100);
        assert!(
            (mean(&filtered) - 127.5).abs() < 3.0,
            "filtered mean {}",
            mean(&filtered)
        );
        assert!(mean(&plain) > 250.0, "plain mean {}", mean(&plain));
    }

    #[test]
    fn center_crop_takes_the_middle_square() {
        // 30×50 image: rows 10..40 are the square. Paint it by row band.
        let src = RgbImage::from_fn(30, 50, |_, y| {
            if (10..40).contains(&y) {
                image::Rgb([200, 100, 50])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        assert_eq!(center_square(30, 50), [0, 10, 30]);
        let out = center_crop_resize(&src, 60);
        assert_eq!(out.dimensions(), (60, 60));
        // Lanczos taps at the top and bottom edges reach a little into the black bands; inside
        // that, only the square's colour.
        for (_, y, p) in out.enumerate_pixels() {
            // Upscaling 2×, Lanczos-3 reaches 6 output rows into each band.
            if (6..54).contains(&y) {
                assert_eq!(p.0, [200, 100, 50], "row {y}");
            }
        }
        // The middle row of the output is the middle row of the photo, not the black bands.
        assert!(out.get_pixel(30, 0)[0] > 100);
        let t = center_crop_transform(30, 50, 60);
        assert_eq!(t.apply([15.0, 25.0]), [30.0, 30.0]);
    }
}
