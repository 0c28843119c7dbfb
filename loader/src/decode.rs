//! Decode stage: image bytes → resized, augmented pixels in the batch layout, plus labels. Runs on
//! dedicated CPU threads fed by a channel, never on the async executor, so a slow JPEG does not
//! stall I/O.
//!
//! JPEGs go through libjpeg-turbo (`turbojpeg`); when the output is at most half the stored size
//! the DCT itself scales by ½, ¼ or ⅛ (several times cheaper than a full decode and a resize), and
//! `fast_image_resize` finishes the remaining factor. PNGs (lossless samples) go through `image`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use d2ae_shard::SampleMeta;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use turbojpeg::{Decompressor, PixelFormat, ScalingFactor};

use crate::config::{Augment, Layout};
use crate::error::SampleFault;
use crate::metrics::{Counters, StageGuard};
use crate::sample::{ImageKind, RawSample};
use crate::stage::{Done, Job, JobKind, Outcome};

/// One decoded sample, ready to be copied into a batch.
#[derive(Debug, Clone)]
pub struct DecodedSample {
    /// `3×H×W` or `H×W×3` bytes, per the configured layout.
    pub pixels: Vec<u8>,
    pub identity: i64,
    /// ±1 per index attribute, 0 when the sample does not say.
    pub attributes: Vec<i8>,
    /// Per index factor, NaN when the sample does not say.
    pub factors: Vec<f32>,
    pub key: String,
    pub source: String,
}

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

    /// Decode, check and label one sample; `aug_seed` drives its augmentation.
    pub fn decode(&mut self, raw: &RawSample, aug_seed: u64) -> Result<DecodedSample, SampleFault> {
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
        let cls: i64 = std::str::from_utf8(cls)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| SampleFault::BadClass(format!("{:?}", String::from_utf8_lossy(cls))))?;
        if cls != i64::from(meta.identity) {
            return Err(SampleFault::BadClass(format!(
                ".cls says {cls}, .json says {}",
                meta.identity
            )));
        }
        let pixels = self.pixels(*kind, bytes, aug_seed)?;
        let attributes = self
            .spec
            .attributes
            .iter()
            .map(|name| match meta.attributes.get(name) {
                Some(true) => 1,
                Some(false) => -1,
                None => 0,
            })
            .collect();
        let factors = self
            .spec
            .factors
            .iter()
            .map(|name| meta.factors.get(name).copied().unwrap_or(f32::NAN))
            .collect();
        Ok(DecodedSample {
            pixels,
            identity: cls,
            attributes,
            factors,
            key: raw.key.clone(),
            source: meta.source,
        })
    }

    /// Decode, resize to the output size and augment into the output layout.
    pub fn pixels(
        &mut self,
        kind: ImageKind,
        bytes: &[u8],
        aug_seed: u64,
    ) -> Result<Vec<u8>, SampleFault> {
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
        let mut out = vec![0u8; tw as usize * th as usize * 3];
        let (flip, dx, dy) = augment_draw(&self.spec.augment, aug_seed);
        write_augmented(
            src,
            tw as usize,
            th as usize,
            flip,
            dx,
            dy,
            self.spec.layout,
            &mut out,
        );
        Ok(out)
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
    let identity = !flip && dx == 0 && dy == 0;
    if identity && layout == Layout::Nhwc {
        out.copy_from_slice(&src[..w * h * 3]);
        return;
    }
    // Source column of each output column, computed once per image.
    let cols: Vec<usize> = (0..w as i64)
        .map(|x| {
            let x = if flip { w as i64 - 1 - x } else { x };
            (x - dx).clamp(0, w as i64 - 1) as usize * 3
        })
        .collect();
    let plane = w * h;
    for y in 0..h {
        let sy = (y as i64 - dy).clamp(0, h as i64 - 1) as usize;
        let row = &src[sy * w * 3..(sy + 1) * w * 3];
        match layout {
            Layout::Nhwc => {
                let dst = &mut out[y * w * 3..(y + 1) * w * 3];
                for (d, &c) in dst.chunks_exact_mut(3).zip(&cols) {
                    d.copy_from_slice(&row[c..c + 3]);
                }
            }
            Layout::Nchw => {
                let (r, rest) = out.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                let span = y * w..(y + 1) * w;
                let planes = r[span.clone()]
                    .iter_mut()
                    .zip(&mut g[span.clone()])
                    .zip(&mut b[span]);
                for (((r, g), b), &c) in planes.zip(&cols) {
                    let px = &row[c..c + 3];
                    (*r, *g, *b) = (px[0], px[1], px[2]);
                }
            }
        }
    }
}

/// A decode thread: jobs in, outcomes out, until either side closes.
pub(crate) fn decode_worker(
    spec: DecodeSpec,
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
        let outcome = match job.kind {
            JobKind::Fatal(err) => Outcome::Fatal(err),
            JobKind::Lost { shard, key } => {
                counters.samples_lost.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%shard, key = key.as_deref().unwrap_or("?"), "sample lost with its shard");
                Outcome::Skipped
            }
            JobKind::Sample {
                shard,
                sample,
                aug_seed,
            } => {
                let Some(decoder) = decoder.as_mut() else {
                    let err = crate::LoaderError::Pipeline("no JPEG decoder".into());
                    let _ = done.send_blocking(Done {
                        seq: job.seq,
                        epoch: job.epoch,
                        slot: job.slot,
                        outcome: Outcome::Fatal(err),
                        permit: job.permit,
                    });
                    return;
                };
                let start = Instant::now();
                let result = decoder.decode(&sample, aug_seed);
                counters
                    .decode_ns
                    .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                match result {
                    Ok(d) => Outcome::Decoded(Box::new(d)),
                    Err(fault) => {
                        counters.samples_skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%shard, key = %sample.key, "skipping sample: {fault}");
                        Outcome::Skipped
                    }
                }
            }
        };
        let done_msg = Done {
            seq: job.seq,
            epoch: job.epoch,
            slot: job.slot,
            outcome,
            permit: job.permit,
        };
        if done.send_blocking(done_msg).is_err() {
            return;
        }
    }
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
