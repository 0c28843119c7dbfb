//! Decode stage: image bytes → resized, augmented pixels in the batch layout, plus labels. Runs on
//! dedicated CPU threads fed by a channel, never on the async executor, so a slow JPEG does not
//! stall I/O.
//!
//! JPEGs go through libjpeg-turbo (`turbojpeg`); when the output is at most half the stored size
//! the DCT itself scales by ½, ¼ or ⅛ (several times cheaper than a full decode and a resize), and
//! `fast_image_resize` finishes the remaining factor. PNGs (lossless samples) go through `image`.
//! Each thread decodes whole batches, every image straight into its slot of the batch buffer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use d2ae_shard::SampleMeta;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use turbojpeg::{Decompressor, PixelFormat, ScalingFactor};

use crate::batch::{Batch, BatchSpec};
use crate::config::{Augment, Layout};
use crate::error::SampleFault;
use crate::metrics::{Counters, StageGuard};
use crate::stage::{Done, Job, JobKind, Outcome, Slot};
use d2ae_shard::{ImageKind, RawSample};

/// What every decode thread needs to know.
#[derive(Debug, Clone)]
pub struct DecodeSpec {
    /// Output width and height.
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub augment: Augment,
    /// The index's attribute names, in batch order.
    pub attributes: Arc<[String]>,
    /// The index's factor names, in batch order.
    pub factors: Arc<[String]>,
}

/// A per-thread decoder with its reusable buffers.
pub struct ImageDecoder {
    spec: DecodeSpec,
    jpeg: Decompressor,
    resizer: Resizer,
    decoded: Vec<u8>,
    resized: Vec<u8>,
}

impl ImageDecoder {
    pub fn new(spec: DecodeSpec) -> Result<Self, String> {
        Ok(ImageDecoder {
            spec,
            jpeg: Decompressor::new().map_err(|e| format!("turbojpeg: {e}"))?,
            resizer: Resizer::new(),
            decoded: Vec::new(),
            resized: Vec::new(),
        })
    }

    /// Decode, check and label one sample into slot `i` of `batch`; `aug_seed` drives its
    /// augmentation. On error the slot holds garbage and must be filled or dropped.
    pub(crate) fn decode_into(
        &mut self,
        raw: &RawSample,
        aug_seed: u64,
        batch: &mut Batch,
        i: usize,
    ) -> Result<(), SampleFault> {
        if raw.refused {
            return Err(SampleFault::Oversized(raw.irregular.join("; ")));
        }
        let (kind, bytes) = raw
            .image
            .as_ref()
            .ok_or(SampleFault::MissingMember("image"))?;
        let json = raw
            .json
            .as_ref()
            .ok_or(SampleFault::MissingMember(".json"))?;
        let cls = raw.cls.as_ref().ok_or(SampleFault::MissingMember(".cls"))?;
        let meta: SampleMeta =
            serde_json::from_slice(json).map_err(|e| SampleFault::BadJson(e.to_string()))?;
        let cls = d2ae_shard::parse_class(cls)
            .ok_or_else(|| SampleFault::BadClass(format!("{:?}", String::from_utf8_lossy(cls))))?;
        if cls != meta.identity {
            return Err(SampleFault::BadClass(format!(
                ".cls says {cls}, .json says {}",
                meta.identity
            )));
        }
        let len = batch.image_len();
        self.pixels_into(
            *kind,
            bytes,
            aug_seed,
            &mut batch.images[i * len..(i + 1) * len],
        )?;
        let na = batch.num_attributes;
        for (a, name) in batch.attributes[i * na..(i + 1) * na]
            .iter_mut()
            .zip(self.spec.attributes.iter())
        {
            *a = match meta.attributes.get(name) {
                Some(true) => 1,
                Some(false) => -1,
                None => 0,
            };
        }
        let nf = batch.num_factors;
        for (f, name) in batch.factors[i * nf..(i + 1) * nf]
            .iter_mut()
            .zip(self.spec.factors.iter())
        {
            *f = meta.factors.get(name).copied().unwrap_or(f32::NAN);
        }
        batch.identities[i] = i64::from(cls);
        batch.keys[i].clone_from(&raw.key);
        batch.sources[i] = meta.source;
        Ok(())
    }

    /// Decode, resize to the output size and augment into `out` (`width × height × 3` bytes in
    /// the output layout).
    pub fn pixels_into(
        &mut self,
        kind: ImageKind,
        bytes: &[u8],
        aug_seed: u64,
        out: &mut [u8],
    ) -> Result<(), SampleFault> {
        let (w, h) = match kind {
            ImageKind::Jpeg => self.decode_jpeg(bytes)?,
            ImageKind::Png => self.decode_png(bytes)?,
        };
        let (tw, th) = (self.spec.width, self.spec.height);
        let src = if (w, h) == (tw, th) {
            &self.decoded
        } else {
            let src = ImageRef::new(w, h, &self.decoded, PixelType::U8x3)
                .map_err(|e| SampleFault::BadImage(format!("resize input: {e}")))?;
            self.resized.resize(tw as usize * th as usize * 3, 0);
            let mut dst = Image::from_slice_u8(tw, th, &mut self.resized, PixelType::U8x3)
                .map_err(|e| SampleFault::BadImage(format!("resize output: {e}")))?;
            let options =
                ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
            self.resizer
                .resize(&src, &mut dst, &options)
                .map_err(|e| SampleFault::BadImage(format!("resize: {e}")))?;
            &self.resized
        };
        let (flip, dx, dy) = augment_draw(&self.spec.augment, aug_seed);
        write_augmented(
            src,
            tw as usize,
            th as usize,
            flip,
            dx,
            dy,
            self.spec.layout,
            out,
        );
        Ok(())
    }

    /// Decode into `self.decoded`, DCT-scaled as far as the output size allows.
    fn decode_jpeg(&mut self, bytes: &[u8]) -> Result<(u32, u32), SampleFault> {
        let bad = |e: turbojpeg::Error| SampleFault::BadImage(format!("JPEG: {e}"));
        let header = self.jpeg.read_header(bytes).map_err(bad)?;
        let scale = dct_scale(
            header.width,
            header.height,
            self.spec.width,
            self.spec.height,
        );
        self.jpeg.set_scaling_factor(scale).map_err(bad)?;
        let scaled = header.scaled(scale);
        let (w, h) = (scaled.width, scaled.height);
        if w * h > 64 << 20 {
            return Err(SampleFault::BadImage(format!(
                "JPEG of {w}×{h} pixels is too large"
            )));
        }
        self.decoded.resize(w * h * 3, 0);
        let image = turbojpeg::Image {
            pixels: &mut self.decoded[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        };
        self.jpeg.decompress(bytes, image).map_err(bad)?;
        Ok((w as u32, h as u32))
    }

    fn decode_png(&mut self, bytes: &[u8]) -> Result<(u32, u32), SampleFault> {
        let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .map_err(|e| SampleFault::BadImage(format!("PNG: {e}")))?
            .into_rgb8();
        let (w, h) = image.dimensions();
        self.decoded = image.into_raw();
        Ok((w, h))
    }
}

/// The smallest DCT scale (1, ½, ¼, ⅛) that still leaves at least the target size.
pub fn dct_scale(width: usize, height: usize, target_w: u32, target_h: u32) -> ScalingFactor {
    [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ]
    .into_iter()
    .find(|s| s.scale(width) >= target_w as usize && s.scale(height) >= target_h as usize)
    .unwrap_or(ScalingFactor::ONE)
}

/// (flip, dx, dy) of one sample, from its seed alone.
fn augment_draw(augment: &Augment, seed: u64) -> (bool, i64, i64) {
    let r = crate::plan::mix(seed);
    let flip = augment.hflip && r & 1 == 1;
    let m = i64::from(augment.max_shift_px);
    if m == 0 {
        return (flip, 0, 0);
    }
    let span = (2 * m + 1) as u64;
    let dx = ((r >> 8) % span) as i64 - m;
    let dy = ((r >> 36) % span) as i64 - m;
    (flip, dx, dy)
}

/// Copy an RGB `w×h` image into `out` in `layout`, mirrored if `flip`, shifted by `(dx, dy)` with
/// the edge pixels repeated into the uncovered border.
///
/// Row by row, the covered span of each output row reads one contiguous run of source pixels
/// (backwards when flipped), so that loop has no index table and no bounds checks and compiles to
/// straight copies / de-interleaving; only the few border pixels go through the clamp.
#[allow(clippy::too_many_arguments)]
fn write_augmented(
    src: &[u8],
    w: usize,
    h: usize,
    flip: bool,
    dx: i64,
    dy: i64,
    layout: Layout,
    out: &mut [u8],
) {
    let (wi, plane) = (w as i64, w * h);
    let out = &mut out[..plane * 3];
    if !flip && dx == 0 && dy == 0 && layout == Layout::Nhwc {
        out.copy_from_slice(&src[..plane * 3]);
        return;
    }
    // Source column of output column x (clamped), and the output span [lo, hi) that needs no clamp.
    let col = |x: i64| {
        let x = if flip { wi - 1 - x } else { x };
        (x - dx).clamp(0, wi - 1) as usize
    };
    let (lo, hi) = if flip {
        ((-dx).clamp(0, wi), (wi - dx).clamp(0, wi))
    } else {
        (dx.clamp(0, wi), (wi + dx).clamp(0, wi))
    };
    let (lo, hi) = (lo as usize, hi.max(lo) as usize);
    // The covered span's source pixels, in source order.
    let run = if hi > lo {
        col(lo as i64).min(col(hi as i64 - 1))
    } else {
        0
    };
    let run = run * 3..(run + hi - lo) * 3;
    for y in 0..h {
        let sy = (y as i64 - dy).clamp(0, h as i64 - 1) as usize;
        let row = &src[sy * w * 3..(sy + 1) * w * 3];
        let border = (0..lo).chain(hi..w);
        match layout {
            Layout::Nhwc => {
                let dst = &mut out[y * w * 3..(y + 1) * w * 3];
                for x in border {
                    let c = col(x as i64) * 3;
                    dst[x * 3..x * 3 + 3].copy_from_slice(&row[c..c + 3]);
                }
                let (dst, src) = (&mut dst[lo * 3..hi * 3], &row[run.clone()]);
                if flip {
                    for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3).rev()) {
                        d.copy_from_slice(s);
                    }
                } else {
                    dst.copy_from_slice(src);
                }
            }
            Layout::Nchw => {
                let (r, rest) = out.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                let span = y * w..(y + 1) * w;
                let (r, g, b) = (&mut r[span.clone()], &mut g[span.clone()], &mut b[span]);
                for x in border {
                    let c = col(x as i64) * 3;
                    (r[x], g[x], b[x]) = (row[c], row[c + 1], row[c + 2]);
                }
                let (r, g, b) = (&mut r[lo..hi], &mut g[lo..hi], &mut b[lo..hi]);
                deinterleave(&row[run.clone()], flip, r, g, b);
            }
        }
    }
}

/// RGB pixels (`src`, read backwards when `rev`) into three planes.
///
/// Stride-3 de-interleaving does not auto-vectorise (it stays one byte at a time, a fifth of the
/// decode thread's time); with SSSE3 (every x86-64 CPU of the last 15 years) 16 pixels take nine
/// byte shuffles.
fn deinterleave(src: &[u8], rev: bool, r: &mut [u8], g: &mut [u8], b: &mut [u8]) {
    let n = r.len();
    assert!(g.len() == n && b.len() == n && src.len() == 3 * n);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU supports SSSE3 (checked just above); lengths were checked.
        done = unsafe { simd::deinterleave(src, rev, r, g, b) };
    }
    for i in done..n {
        let j = if rev { n - 1 - i } else { i };
        (r[i], g[i], b[i]) = (src[3 * j], src[3 * j + 1], src[3 * j + 2]);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// `pshufb` masks picking channel `c` out of the `p`-th 16 bytes of 16 RGB pixels (-1: zero).
    const fn mask(c: usize, p: usize) -> [i8; 16] {
        let mut m = [-1i8; 16];
        let mut i = 0;
        while i < 16 {
            let at = 3 * i + c;
            if at / 16 == p {
                m[i] = (at % 16) as i8;
            }
            i += 1;
        }
        m
    }

    const MASKS: [[[i8; 16]; 3]; 3] = [
        [mask(0, 0), mask(0, 1), mask(0, 2)],
        [mask(1, 0), mask(1, 1), mask(1, 2)],
        [mask(2, 0), mask(2, 1), mask(2, 2)],
    ];
    const REVERSE: [i8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];

    /// The whole 16-pixel chunks of [`super::deinterleave`]; returns how many output pixels it
    /// wrote (the rest is the caller's).
    ///
    /// # Safety
    /// The CPU must support SSSE3; `src.len() == 3 * r.len()` and `g`, `b` as long as `r`.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn deinterleave(
        src: &[u8],
        rev: bool,
        r: &mut [u8],
        g: &mut [u8],
        b: &mut [u8],
    ) -> usize {
        const L: usize = 16;
        let n = r.len();
        let load = |p: *const i8| unsafe { _mm_loadu_si128(p.cast()) };
        let reverse = load(REVERSE.as_ptr());
        let m: [[__m128i; 3]; 3] = [0, 1, 2].map(|c| [0, 1, 2].map(|p| load(MASKS[c][p].as_ptr())));
        for k in 0..n / L {
            // Output pixels k·L.. read source pixels k·L.. (or, reversed, the L ending at n − k·L).
            let s0 = if rev { n - (k + 1) * L } else { k * L };
            let px = src[3 * s0..3 * (s0 + L)].as_ptr();
            let parts = [0, 16, 32].map(|o| unsafe { _mm_loadu_si128(px.add(o).cast()) });
            for (c, plane) in [&mut *r, &mut *g, &mut *b].into_iter().enumerate() {
                let mut v = _mm_or_si128(
                    _mm_or_si128(
                        _mm_shuffle_epi8(parts[0], m[c][0]),
                        _mm_shuffle_epi8(parts[1], m[c][1]),
                    ),
                    _mm_shuffle_epi8(parts[2], m[c][2]),
                );
                if rev {
                    v = _mm_shuffle_epi8(v, reverse);
                }
                let out = plane[k * L..(k + 1) * L].as_mut_ptr();
                unsafe { _mm_storeu_si128(out.cast(), v) };
            }
        }
        n / L * L
    }
}

/// A decode thread: batch jobs in, finished batches out, until either side closes.
pub(crate) fn decode_worker(
    spec: DecodeSpec,
    batches: BatchSpec,
    jobs: async_channel::Receiver<Job>,
    done: async_channel::Sender<Done>,
    counters: Arc<Counters>,
) {
    let _guard = StageGuard::new(&counters);
    let mut decoder = match ImageDecoder::new(spec) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!("cannot create a JPEG decoder: {e}");
            None
        }
    };
    while let Ok(job) = jobs.recv_blocking() {
        let outcome = match (job.kind, decoder.as_mut()) {
            (JobKind::Fatal(err), _) => Outcome::Fatal(err),
            (JobKind::Batch { .. }, None) => {
                Outcome::Fatal(crate::LoaderError::Pipeline("no JPEG decoder".into()))
            }
            (
                JobKind::Batch {
                    epoch,
                    batch,
                    slots,
                },
                Some(decoder),
            ) => {
                let start = Instant::now();
                let outcome = decode_batch(decoder, &batches, &counters, epoch, batch, slots);
                counters
                    .decode_ns
                    .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                outcome
            }
        };
        let stop = matches!(outcome, Outcome::Fatal(_));
        let done_msg = Done {
            seq: job.seq,
            outcome,
            permit: job.permit,
        };
        if done.send_blocking(done_msg).is_err() || stop {
            return;
        }
    }
}

/// Decode every slot of one batch into a fresh batch buffer.
fn decode_batch(
    decoder: &mut ImageDecoder,
    spec: &BatchSpec,
    counters: &Counters,
    epoch: u64,
    batch: u64,
    slots: Vec<Slot>,
) -> Outcome {
    let mut b = spec.open(epoch, batch, slots.len());
    let mut good = vec![false; slots.len()];
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Slot::Lost { shard } => {
                counters.samples_lost.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%shard, "sample lost with its shard");
            }
            Slot::Sample {
                shard,
                sample,
                aug_seed,
            } => match decoder.decode_into(&sample, aug_seed, &mut b, i) {
                Ok(()) => good[i] = true,
                Err(fault) => {
                    counters.samples_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%shard, key = %sample.key, "skipping sample: {fault}");
                }
            },
        }
    }
    spec.finish(b, &good)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_scale_picks_the_smallest_factor_that_keeps_the_target() {
        assert_eq!(dct_scale(235, 235, 235, 235), ScalingFactor::ONE);
        assert_eq!(dct_scale(235, 235, 128, 128), ScalingFactor::ONE);
        assert_eq!(dct_scale(235, 235, 112, 112), ScalingFactor::ONE_HALF);
        assert_eq!(dct_scale(235, 235, 64, 64), ScalingFactor::ONE_HALF);
        assert_eq!(dct_scale(235, 235, 56, 56), ScalingFactor::ONE_QUARTER);
        assert_eq!(dct_scale(235, 235, 29, 29), ScalingFactor::ONE_EIGHTH);
    }

    #[test]
    fn flips_and_shifts_move_pixels_where_expected() {
        // 3×2 image, pixel value = 10·x + y in all channels.
        let (w, h) = (3usize, 2usize);
        let src: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(10 * x + y) as u8; 3]))
            .collect();
        let mut out = vec![0u8; w * h * 3];
        write_augmented(&src, w, h, true, 0, 0, Layout::Nchw, &mut out);
        assert_eq!(&out[..w * h], &[20, 10, 0, 21, 11, 1]);
        write_augmented(&src, w, h, false, 1, 1, Layout::Nhwc, &mut out);
        let red: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, vec![0, 0, 10, 0, 0, 10]);
        write_augmented(&src, w, h, false, 0, 0, Layout::Nchw, &mut out);
        assert_eq!(&out[w * h..2 * w * h], &[0, 10, 20, 1, 11, 21]);
    }

    /// The plain per-pixel definition `write_augmented` must match.
    fn reference(
        src: &[u8],
        w: usize,
        h: usize,
        flip: bool,
        dx: i64,
        dy: i64,
        layout: Layout,
    ) -> Vec<u8> {
        let mut out = vec![0u8; w * h * 3];
        for y in 0..h {
            let sy = (y as i64 - dy).clamp(0, h as i64 - 1) as usize;
            for x in 0..w {
                let fx = if flip { w - 1 - x } else { x } as i64;
                let sx = (fx - dx).clamp(0, w as i64 - 1) as usize;
                for c in 0..3 {
                    let v = src[(sy * w + sx) * 3 + c];
                    match layout {
                        Layout::Nhwc => out[(y * w + x) * 3 + c] = v,
                        Layout::Nchw => out[c * w * h + y * w + x] = v,
                    }
                }
            }
        }
        out
    }

    #[test]
    fn row_spans_match_the_per_pixel_definition() {
        // 37 columns: two 16-pixel chunks and a tail, minus the shift.
        let (w, h) = (37usize, 5usize);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = vec![0u8; w * h * 3];
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for flip in [false, true] {
                for dx in (-40i64..=40).filter(|d| *d % 5 == 0 || d.abs() < 4) {
                    for dy in [-6, -2, 0, 1, 6] {
                        write_augmented(&src, w, h, flip, dx, dy, layout, &mut out);
                        let want = reference(&src, w, h, flip, dx, dy, layout);
                        assert_eq!(out, want, "{layout:?} flip {flip} dx {dx} dy {dy}");
                    }
                }
            }
        }
    }

    #[test]
    fn augmentation_draws_stay_in_range_and_vary() {
        let aug = Augment {
            hflip: true,
            max_shift_px: 3,
        };
        let draws: Vec<_> = (0..200).map(|s| augment_draw(&aug, s)).collect();
        assert!(draws
            .iter()
            .all(|&(_, dx, dy)| dx.abs() <= 3 && dy.abs() <= 3));
        assert!(draws.iter().any(|d| d.0) && draws.iter().any(|d| !d.0));
        assert!(draws.iter().any(|d| d.1 == -3) && draws.iter().any(|d| d.1 == 3));
        assert_eq!(augment_draw(&Augment::NONE, 5), (false, 0, 0));
    }
}
