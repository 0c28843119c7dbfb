//! Decoding photos to RGB and encoding crops.
//!
//! JPEGs go through libjpeg-turbo ([`jpeg`]): it is several times faster than the pure-Rust
//! decoders and can decode at 1/2, 1/4 and 1/8 scale and only a region, which [`crate::face`]
//! uses to decode no more than the crop needs. PNG, WebP and BMP go through the `image` crate.
//! Every path checks the pixel count from the header before allocating (decompression bombs),
//! converts grey, RGBA (alpha dropped, as OpenCV and Pillow do) and CMYK to RGB, and applies the
//! EXIF orientation so that coordinates refer to the photo as displayed.

pub mod jpeg;

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

use crate::align::Affine;

/// Decoder limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest `width × height` accepted (decompression-bomb guard; default 40 MP, well above
    /// any camera photo in the face datasets).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 40_000_000,
        }
    }
}

impl DecodeLimits {
    /// `TooManyPixels` when `width × height` exceeds the limit.
    pub fn check(&self, width: u32, height: u32) -> Result<(), ImageError> {
        if width as u64 * height as u64 > self.max_pixels {
            return Err(ImageError::TooManyPixels {
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// Why a photo could not be decoded (or a crop encoded).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("corrupt image: {detail}")]
    Corrupt { detail: String },
    #[error("image is {width}x{height}, more than the {limit} pixel limit")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("unsupported image: {detail}")]
    Unsupported { detail: String },
}

impl ImageError {
    /// Machine-readable reason for `rejects.jsonl`.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Corrupt { .. } => "decode_error",
            ImageError::TooManyPixels { .. } => "too_many_pixels",
            ImageError::Unsupported { .. } => "unsupported_format",
        }
    }
}

/// The formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
    Bmp,
}

impl Format {
    /// Recognise the format from the first bytes (never from the file name).
    pub fn sniff(bytes: &[u8]) -> Result<Format, ImageError> {
        match image::guess_format(bytes) {
            Ok(ImageFormat::Jpeg) => Ok(Format::Jpeg),
            Ok(ImageFormat::Png) => Ok(Format::Png),
            Ok(ImageFormat::WebP) => Ok(Format::WebP),
            Ok(ImageFormat::Bmp) => Ok(Format::Bmp),
            Ok(other) => Err(ImageError::Unsupported {
                detail: format!("{other:?} images are not supported (JPEG, PNG, WebP, BMP are)"),
            }),
            Err(_) if bytes.len() < 12 => Err(ImageError::Corrupt {
                detail: format!("only {} bytes", bytes.len()),
            }),
            // Never the bytes themselves: the file may be anything (a symlink to a secret), and
            // the detail goes to rejects.jsonl.
            Err(_) => Err(ImageError::Unsupported {
                detail: "unrecognised file signature: not a JPEG, PNG, WebP or BMP image".into(),
            }),
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Png => ImageFormat::Png,
            Format::WebP => ImageFormat::WebP,
            Format::Bmp => ImageFormat::Bmp,
        }
    }
}

/// EXIF orientation (tag 0x0112): how the stored ("raw") pixels must be turned to display the
/// photo. Values as in the EXIF standard; 1 is "as stored".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orientation(pub u8);

impl Orientation {
    pub const NORMAL: Orientation = Orientation(1);

    /// Read the orientation from the file's EXIF block; anything missing or malformed is normal.
    pub fn read(bytes: &[u8]) -> Orientation {
        let Ok(exif) = exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) else {
            return Orientation::NORMAL;
        };
        exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .and_then(|f| f.value.get_uint(0))
            .filter(|v| (1..=8).contains(v))
            .map(|v| Orientation(v as u8))
            .unwrap_or(Orientation::NORMAL)
    }

    /// Orientations 5–8 swap width and height.
    pub fn swaps_axes(self) -> bool {
        self.0 >= 5
    }

    /// Displayed size of a `w × h` stored image.
    pub fn display_size(self, w: u32, h: u32) -> (u32, u32) {
        if self.swaps_axes() {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// Map from displayed coordinates to stored coordinates of a `w × h` (stored) image.
    pub fn display_to_raw(self, w: u32, h: u32) -> Affine {
        let (w, h) = (w as f64, h as f64);
        Affine(match self.0 {
            2 => [-1.0, 0.0, w, 0.0, 1.0, 0.0],
            3 => [-1.0, 0.0, w, 0.0, -1.0, h],
            4 => [1.0, 0.0, 0.0, 0.0, -1.0, h],
            5 => [0.0, 1.0, 0.0, 1.0, 0.0, 0.0],
            6 => [0.0, 1.0, 0.0, -1.0, 0.0, h],
            7 => [0.0, -1.0, w, -1.0, 0.0, h],
            8 => [0.0, -1.0, w, 1.0, 0.0, 0.0],
            _ => Affine::IDENTITY.0,
        })
    }

    /// Turn stored pixels into displayed pixels.
    pub fn apply(self, img: RgbImage) -> RgbImage {
        use image::imageops::{flip_horizontal, flip_vertical, rotate180, rotate270, rotate90};
        match self.0 {
            2 => flip_horizontal(&img),
            3 => rotate180(&img),
            4 => flip_vertical(&img),
            5 => flip_horizontal(&rotate90(&img)),
            6 => rotate90(&img),
            7 => flip_vertical(&rotate90(&img)),
            8 => rotate270(&img),
            _ => img,
        }
    }
}

/// Width and height of the photo as stored (before EXIF orientation), from the header only.
pub fn stored_dimensions(bytes: &[u8], format: Format) -> Result<(u32, u32), ImageError> {
    match format {
        Format::Jpeg => {
            let h = jpeg::read_header(bytes)?;
            Ok((h.width, h.height))
        }
        _ => image::ImageReader::with_format(Cursor::new(bytes), format.image_format())
            .into_dimensions()
            .map_err(image_error),
    }
}

/// Decode a JPEG, PNG, WebP or BMP photo to RGB as displayed (EXIF orientation applied).
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let format = Format::sniff(bytes)?;
    let raw = decode_stored(bytes, format, limits, 1)?;
    Ok(Orientation::read(bytes).apply(raw))
}

/// Decode the stored pixels (no orientation), JPEGs at `1/jpeg_denom` scale.
pub(crate) fn decode_stored(
    bytes: &[u8],
    format: Format,
    limits: &DecodeLimits,
    jpeg_denom: u32,
) -> Result<RgbImage, ImageError> {
    match format {
        Format::Jpeg => {
            let header = jpeg::read_header(bytes)?;
            limits.check(header.width, header.height)?;
            Ok(jpeg::decode_region(bytes, &header, jpeg_denom, None)?.image)
        }
        _ => {
            let (w, h) = stored_dimensions(bytes, format)?;
            limits.check(w, h)?;
            let mut reader =
                image::ImageReader::with_format(Cursor::new(bytes), format.image_format());
            // A second guard inside the decoder: the header check above covers the image itself,
            // this covers decoder-internal buffers.
            let mut lim = image::Limits::default();
            lim.max_alloc = Some(limits.max_pixels.saturating_mul(8));
            reader.limits(lim);
            let img = reader.decode().map_err(image_error)?;
            Ok(img.into_rgb8())
        }
    }
}

fn image_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported {
            detail: u.to_string(),
        },
        image::ImageError::Limits(l) => ImageError::Corrupt {
            detail: format!("decoder memory limit: {l}"),
        },
        other => ImageError::Corrupt {
            detail: other.to_string(),
        },
    }
}

/// Encode a crop as baseline JPEG with 4:2:0 chroma subsampling (libjpeg-turbo).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let image = turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width: img.width() as usize,
        pitch: img.width() as usize * 3,
        height: img.height() as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(
        image,
        quality.clamp(1, 100) as i32,
        turbojpeg::Subsamp::Sub2x2,
    )
    .map(|buf| buf.to_vec())
    .map_err(|e| ImageError::Unsupported {
        detail: format!("JPEG encoding failed: {e}"),
    })
}

/// Encode a crop as PNG (lossless).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| ImageError::Unsupported {
            detail: format!("PNG encoding failed: {e}"),
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
        })
    }

    /// Insert an APP1 EXIF block with the given orientation right after the JPEG SOI marker.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF, IFD0 at offset 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// PNG's CRC-32 (to forge a valid header in a test).
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let s: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y) as u64)
            .sum();
        s as f64 / a.as_raw().len() as f64
    }

    /// A photo-like test card: red block top-left, green bottom-left, blue right half.
    fn card(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if x >= w / 2 {
                image::Rgb([20, 40, 220])
            } else if y < h / 2 {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([30, 200, 40])
            }
        })
    }

    #[test]
    fn exif_orientation_is_applied() {
        let src = card(64, 32);
        let jpeg = encode_jpeg(&src, 95).unwrap();
        let limits = DecodeLimits::default();
        let plain = decode_rgb(&jpeg, &limits).unwrap();
        assert_eq!(plain.dimensions(), (64, 32));
        for o in 1..=8u16 {
            let tagged = with_exif_orientation(&jpeg, o);
            assert_eq!(Orientation::read(&tagged), Orientation(o as u8));
            let shown = decode_rgb(&tagged, &limits).unwrap();
            let want = Orientation(o as u8).apply(plain.clone());
            assert_eq!(shown, want, "orientation {o}");
            // display_to_raw agrees with apply(): the displayed pixel centre maps to the same
            // stored pixel.
            let t = Orientation(o as u8).display_to_raw(64, 32);
            for (x, y) in [(3u32, 5u32), (20, 10), (30, 1)] {
                let (dw, dh) = shown.dimensions();
                if x >= dw || y >= dh {
                    continue;
                }
                let p = t.apply([x as f64 + 0.5, y as f64 + 0.5]);
                let raw = plain.get_pixel(p[0] as u32, p[1] as u32);
                assert_eq!(shown.get_pixel(x, y), raw, "orientation {o} at {x},{y}");
            }
        }
        // Orientation 6 (rotate 90° clockwise to display): the red top-left block is top-right.
        let six = decode_rgb(&with_exif_orientation(&jpeg, 6), &limits).unwrap();
        assert_eq!(six.dimensions(), (32, 64));
        let p = six.get_pixel(28, 4);
        assert!(p[0] > 180 && p[2] < 80, "{p:?}");
    }

    #[test]
    fn rgba_png_and_grayscale_become_rgb() {
        let rgba = image::RgbaImage::from_fn(10, 6, |x, _| image::Rgba([200, 10 * x as u8, 5, 40]));
        let mut png = Vec::new();
        rgba.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let rgb = decode_rgb(&png, &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.dimensions(), (10, 6));
        assert_eq!(rgb.get_pixel(3, 2).0, [200, 30, 5]);

        let gray = image::GrayImage::from_fn(9, 7, |x, y| image::Luma([(x * 20 + y) as u8]));
        let mut png = Vec::new();
        gray.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let rgb = decode_rgb(&png, &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.get_pixel(4, 3).0, [83, 83, 83]);

        // Grey JPEG through libjpeg-turbo.
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(100).unwrap();
        c.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
        let g = image::GrayImage::from_pixel(16, 16, image::Luma([77]));
        let jpg = c
            .compress_to_vec(turbojpeg::Image {
                pixels: g.as_raw().as_slice(),
                width: 16,
                pitch: 16,
                height: 16,
                format: turbojpeg::PixelFormat::GRAY,
            })
            .unwrap();
        let rgb = decode_rgb(&jpg, &DecodeLimits::default()).unwrap();
        assert!(rgb
            .pixels()
            .all(|p| p.0.iter().all(|v| v.abs_diff(77) <= 1)));
    }

    /// `cmyk_16x32.jpg` was written by Pillow 13 (`Image.convert("CMYK").save(..., quality=100)`,
    /// Adobe-inverted CMYK): left half RGB (200, 100, 50), right half (30, 60, 220); Pillow reads
    /// it back as exactly those colours.
    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        let bytes = include_bytes!("image_io/cmyk_16x32.jpg");
        let header = jpeg::read_header(bytes).unwrap();
        assert!(header.is_cmyk());
        let rgb = decode_rgb(bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.dimensions(), (32, 16));
        for (x, want) in [(4, [200, 100, 50]), (28, [30, 60, 220])] {
            let got = rgb.get_pixel(x, 8).0;
            for c in 0..3 {
                assert!(got[c].abs_diff(want[c]) <= 3, "x={x}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn truncated_jpeg_is_corrupt() {
        let jpeg = encode_jpeg(&gradient(200, 150), 90).unwrap();
        let cut = &jpeg[..jpeg.len() / 2];
        let err = decode_rgb(cut, &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.reason(), "decode_error", "{err}");
        let err = decode_rgb(&jpeg[..20], &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.reason(), "decode_error", "{err}");
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let jpeg = encode_jpeg(&gradient(300, 200), 80).unwrap();
        let limits = DecodeLimits { max_pixels: 59_999 };
        assert_eq!(
            decode_rgb(&jpeg, &limits),
            Err(ImageError::TooManyPixels {
                width: 300,
                height: 200,
                limit: 59_999
            })
        );
        let png = encode_png(&gradient(300, 200)).unwrap();
        assert_eq!(
            decode_rgb(&png, &limits).unwrap_err().reason(),
            "too_many_pixels"
        );
        // A PNG header claiming 100000×100000 is refused without allocating 30 GB.
        let mut bomb = encode_png(&gradient(4, 4)).unwrap();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]); // IHDR type + data
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_rgb(&bomb, &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(err, ImageError::TooManyPixels { width: 100_000, .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_formats_are_unsupported() {
        let err = decode_rgb(
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
            &DecodeLimits::default(),
        );
        assert_eq!(err.unwrap_err().reason(), "unsupported_format");
        let err = decode_rgb(b"hello world, not an image", &DecodeLimits::default());
        assert_eq!(err.unwrap_err().reason(), "unsupported_format");
    }

    #[test]
    fn jpeg_round_trip_and_png_is_lossless() {
        let img = gradient(120, 80);
        let back = decode_rgb(&encode_jpeg(&img, 95).unwrap(), &DecodeLimits::default()).unwrap();
        assert!(mean_abs_diff(&img, &back) < 2.0);
        let back = decode_rgb(&encode_png(&img).unwrap(), &DecodeLimits::default()).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn region_decode_matches_full_decode() {
        let img = gradient(333, 251);
        let jpeg = encode_jpeg(&img, 95).unwrap();
        let header = jpeg::read_header(&jpeg).unwrap();
        let full = jpeg::decode_region(&jpeg, &header, 2, None).unwrap();
        assert_eq!(full.image.dimensions(), (167, 126));
        let part = jpeg::decode_region(&jpeg, &header, 2, Some([37, 20, 50, 40])).unwrap();
        // The left edge moves to the 8-pixel (scaled iMCU of 4:2:0 at 1/2) boundary.
        assert_eq!((part.x0, part.y0), (32, 20));
        assert_eq!(part.image.dimensions(), (55, 40));
        for (x, y, p) in part.image.enumerate_pixels() {
            let q = full.image.get_pixel(x + part.x0, y + part.y0);
            for c in 0..3 {
                assert!(p[c].abs_diff(q[c]) <= 2, "{x},{y}: {p:?} vs {q:?}");
            }
        }
    }
}
