//! JPEG decoding through libjpeg-turbo's TurboJPEG 3 API, with the two features the `turbojpeg`
//! crate does not expose together: DCT-domain scaling (1/2, 1/4, 1/8) *and* a cropping region.
//! Decoding only the face's region at the coarsest sufficient scale is what makes ingest from
//! landmarks fast: the IDCT, upsampling and colour conversion of everything else are skipped.

use std::ffi::{c_int, CStr};

use turbojpeg::raw;

use super::ImageError;

/// What the header says, read without decoding any pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// TurboJPEG's `TJSAMP_*`; `-1` for unusual sampling (cropping is then not possible).
    pub subsamp: i32,
    /// TurboJPEG's `TJCS_*`.
    pub colorspace: i32,
    /// Lossless JPEGs cannot be decoded at reduced scale.
    pub lossless: bool,
}

impl JpegHeader {
    /// CMYK and YCCK JPEGs decode to CMYK and are converted to RGB by us.
    pub fn is_cmyk(&self) -> bool {
        self.colorspace == raw::TJCS_TJCS_CMYK as i32
            || self.colorspace == raw::TJCS_TJCS_YCCK as i32
    }

    /// Width of an iMCU in full-scale pixels, when known (cropping must start on one).
    fn mcu_width(&self) -> Option<u32> {
        match self.subsamp {
            s if s == raw::TJSAMP_TJSAMP_444 => Some(8),
            s if s == raw::TJSAMP_TJSAMP_422 => Some(16),
            s if s == raw::TJSAMP_TJSAMP_420 => Some(16),
            s if s == raw::TJSAMP_TJSAMP_GRAY => Some(8),
            s if s == raw::TJSAMP_TJSAMP_440 => Some(8),
            s if s == raw::TJSAMP_TJSAMP_411 => Some(32),
            s if s == raw::TJSAMP_TJSAMP_441 => Some(8),
            _ => None,
        }
    }

    /// Size after decoding at `1/denom` (TurboJPEG rounds up).
    pub fn scaled_size(&self, denom: u32) -> (u32, u32) {
        (self.width.div_ceil(denom), self.height.div_ceil(denom))
    }
}

/// A decoded (part of a) JPEG: `image` holds the pixels of the scaled image's rectangle starting
/// at (`x0`, `y0`) in the `1/denom`-scaled raw (un-oriented) frame.
#[derive(Debug)]
pub struct JpegRegion {
    pub image: image::RgbImage,
    pub denom: u32,
    pub x0: u32,
    pub y0: u32,
}

/// One TurboJPEG decompressor; kept per thread because `tj3Init` allocates the libjpeg state.
struct Handle(raw::tjhandle);

impl Handle {
    fn new() -> Result<Handle, ImageError> {
        // SAFETY: tj3Init has no preconditions; a null result is handled.
        let h = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if h.is_null() {
            return Err(ImageError::Corrupt {
                detail: "cannot initialise libjpeg-turbo".into(),
            });
        }
        Ok(Handle(h))
    }

    fn error(&self, what: &str) -> ImageError {
        // SAFETY: the handle is live; the string is owned by the handle and copied at once.
        let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned();
        ImageError::Corrupt {
            detail: format!("{what}: {msg}"),
        }
    }

    fn is_warning(&self) -> bool {
        // SAFETY: the handle is live.
        unsafe { raw::tj3GetErrorCode(self.0) == raw::TJERR_TJERR_WARNING as c_int }
    }

    fn get(&self, param: raw::TJPARAM) -> i32 {
        // SAFETY: the handle is live; unknown parameters return -1.
        unsafe { raw::tj3Get(self.0, param as c_int) }
    }

    fn set(&self, param: raw::TJPARAM, value: i32) -> Result<(), ImageError> {
        // SAFETY: the handle is live.
        if unsafe { raw::tj3Set(self.0, param as c_int, value) } != 0 {
            return Err(self.error("setting a decoder parameter"));
        }
        Ok(())
    }

    fn header(&self, bytes: &[u8]) -> Result<JpegHeader, ImageError> {
        // SAFETY: pointer and length describe `bytes`, which outlives the call.
        let rc = unsafe { raw::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as _) };
        if rc != 0 {
            return Err(self.error("reading the JPEG header"));
        }
        let width = self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT);
        if width <= 0 || height <= 0 {
            return Err(ImageError::Corrupt {
                detail: format!("JPEG header gives a {width}x{height} image"),
            });
        }
        Ok(JpegHeader {
            width: width as u32,
            height: height as u32,
            subsamp: self.get(raw::TJPARAM_TJPARAM_SUBSAMP),
            colorspace: self.get(raw::TJPARAM_TJPARAM_COLORSPACE),
            lossless: self.get(raw::TJPARAM_TJPARAM_LOSSLESS) == 1,
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.0) }
    }
}

/// A fresh decompressor per call. Reusing one is tempting but unsafe here: on a truncated or
/// tables-only stream `tj3DecompressHeader` returns success without updating the image
/// parameters, so a reused handle would report the previous photo's size. `tj3Init` costs
/// microseconds next to a decode.
fn with_handle<T>(f: impl FnOnce(&Handle) -> Result<T, ImageError>) -> Result<T, ImageError> {
    f(&Handle::new()?)
}

/// Read the header (dimensions, sampling, colour space) without decoding pixels.
pub fn read_header(bytes: &[u8]) -> Result<JpegHeader, ImageError> {
    with_handle(|h| h.header(bytes))
}

/// Progressive JPEGs with absurd scan counts are a known CPU-exhaustion attack; real files have
/// at most a few dozen scans.
const SCAN_LIMIT: i32 = 500;

/// Decode the rectangle `[x0, x0+w) × [y0, y0+h)` of the image scaled by `1/denom` (`denom` in
/// 1, 2, 4, 8; `region` in scaled raw pixels; `None` = everything). The left edge is moved left
/// to an iMCU boundary as libjpeg-turbo requires, so the result may start before `x0`; the
/// returned [`JpegRegion`] says where it starts. Pixel limits are the caller's job (check the
/// header first).
pub fn decode_region(
    bytes: &[u8],
    header: &JpegHeader,
    denom: u32,
    region: Option<[u32; 4]>,
) -> Result<JpegRegion, ImageError> {
    let denom = if header.lossless { 1 } else { denom };
    assert!(
        matches!(denom, 1 | 2 | 4 | 8),
        "scale 1/{denom} not supported"
    );
    with_handle(|h| {
        h.header(bytes)?;
        h.set(raw::TJPARAM_TJPARAM_SCANLIMIT, SCAN_LIMIT)?;
        h.set(raw::TJPARAM_TJPARAM_STOPONWARNING, 0)?;
        let factor = raw::tjscalingfactor {
            num: 1,
            denom: denom as c_int,
        };
        // SAFETY: the handle is live and 1/denom is one of libjpeg-turbo's scaling factors.
        if unsafe { raw::tj3SetScalingFactor(h.0, factor) } != 0 {
            return Err(h.error("setting the JPEG scaling factor"));
        }
        let (sw, sh) = header.scaled_size(denom);
        let mut crop = [0, 0, sw, sh];
        if let (Some([x, y, w, hgt]), Some(mcu)) = (region, header.mcu_width()) {
            let step = (mcu / denom).max(1);
            let x1 = (x + w).min(sw);
            let y1 = (y + hgt).min(sh);
            let x = (x.min(sw) / step) * step;
            let y = y.min(sh);
            if x1 > x && y1 > y {
                crop = [x, y, x1 - x, y1 - y];
            }
        }
        let is_full = crop == [0, 0, sw, sh];
        let rect = if is_full {
            raw::tjregion {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            }
        } else {
            raw::tjregion {
                x: crop[0] as c_int,
                y: crop[1] as c_int,
                w: crop[2] as c_int,
                h: crop[3] as c_int,
            }
        };
        // SAFETY: the handle is live; the region lies inside the scaled image with its left
        // edge on a scaled iMCU boundary (or is the empty "no cropping" region).
        if unsafe { raw::tj3SetCroppingRegion(h.0, rect) } != 0 {
            return Err(h.error("setting the JPEG cropping region"));
        }
        let (w, hgt) = (crop[2], crop[3]);
        let cmyk = header.is_cmyk();
        let channels = if cmyk { 4 } else { 3 };
        let format = if cmyk {
            raw::TJPF_TJPF_CMYK
        } else {
            raw::TJPF_TJPF_RGB
        };
        let mut buf = vec![0u8; w as usize * hgt as usize * channels];
        // SAFETY: `buf` holds exactly w·h pixels of `format` with pitch w·channels, the size the
        // scaled, cropped decode writes.
        let rc = unsafe {
            raw::tj3Decompress8(
                h.0,
                bytes.as_ptr(),
                bytes.len() as _,
                buf.as_mut_ptr(),
                (w as usize * channels) as c_int,
                format as c_int,
            )
        };
        if rc != 0 {
            let err = h.error("decoding the JPEG");
            // Benign warnings (extraneous bytes, unknown markers) leave a complete image; a
            // truncated stream leaves grey rows and must not pass as a photo.
            let truncated = matches!(&err, ImageError::Corrupt { detail } if detail.to_ascii_lowercase().contains("premature end"));
            if !h.is_warning() || truncated {
                return Err(err);
            }
        }
        let rgb = if cmyk { cmyk_to_rgb(&buf) } else { buf };
        let image = image::RgbImage::from_raw(w, hgt, rgb).expect("buffer sized for w×h RGB");
        Ok(JpegRegion {
            image,
            denom,
            x0: crop[0],
            y0: crop[1],
        })
    })
}

/// CMYK as libjpeg returns it for Adobe files (inverted: 255 = no ink) → RGB, the same formula
/// as libjpeg-turbo's own CMYK handling and Pillow: `R = C·K/255`.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let k = p[3] as u32;
        for &c in &p[..3] {
            out.push(((c as u32 * k + 127) / 255) as u8);
        }
    }
    out
}
