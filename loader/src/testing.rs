//! Writing small datasets in the shard format, for tests and benchmarks, with the format's own
//! container writer (`d2ae_shard::ShardWriter`). Also what the tests use to break shards
//! on purpose: every member is given explicitly, so a test can drop, corrupt or reorder members.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use d2ae_shard::container::{CLASS_EXT, META_EXT};
use d2ae_shard::{
    encode_class, member_name, shard_name, DatasetIndex, IdentityEntry, ImageSpec, SampleMeta,
    ShardEntry, ShardWriter, SplitIndex, FORMAT_NAME, FORMAT_VERSION, INDEX_FILE,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One sample's members, in tar order.
#[derive(Debug, Clone)]
pub struct TestSample {
    pub key: String,
    pub members: Vec<(String, Vec<u8>)>,
}

impl TestSample {
    /// A well-formed sample: `<key>.<ext>`, `<key>.cls`, `<key>.json`.
    pub fn new(meta: &SampleMeta, ext: &str, image: Vec<u8>) -> Self {
        let key = meta.key.clone();
        TestSample {
            members: vec![
                (member_name(&key, ext), image),
                (member_name(&key, CLASS_EXT), encode_class(meta.identity)),
                (
                    member_name(&key, META_EXT),
                    serde_json::to_vec(meta).expect("meta serialises"),
                ),
            ],
            key,
        }
    }
}

/// The metadata of synthetic sample `i` (identity `i % identities`, attribute `Even` = `i` even).
pub fn test_meta(i: usize, identities: u32, split: &str) -> SampleMeta {
    let identity = (i as u32) % identities;
    SampleMeta {
        key: format!("s{i:06}"),
        identity,
        identity_name: format!("id{identity}"),
        source: format!("id{identity}/img{i}.jpg"),
        split: split.into(),
        landmarks: vec![],
        detector_score: None,
        attributes: BTreeMap::from([("Even".to_owned(), i.is_multiple_of(2))]),
        factors: BTreeMap::from([("index".to_owned(), i as f32)]),
    }
}

/// A `size×size` RGB image: left half `left`, right half `right`, so flips are visible.
pub fn two_tone_rgb(size: u32, left: [u8; 3], right: [u8; 3]) -> Vec<u8> {
    let s = size as usize;
    let mut px = Vec::with_capacity(s * s * 3);
    for _y in 0..s {
        for x in 0..s {
            px.extend_from_slice(if x < s / 2 { &left } else { &right });
        }
    }
    px
}

/// The colour pair of synthetic sample `i`: distinct, far-apart values.
pub fn test_colours(i: usize) -> ([u8; 3], [u8; 3]) {
    let a = (i * 37 % 200) as u8 + 20;
    ([a, 255 - a, 128], [255 - a, a, 30])
}

/// Encode RGB pixels as a JPEG (libjpeg-turbo, 4:2:0) at `quality`.
pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32, quality: i32) -> Vec<u8> {
    let image = turbojpeg::Image {
        pixels: rgb,
        width: width as usize,
        pitch: width as usize * 3,
        height: height as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, quality, turbojpeg::Subsamp::Sub2x2)
        .expect("JPEG encodes")
        .to_vec()
}

/// Encode RGB pixels as a PNG.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image_rgb(rgb, width, height);
    out
}

trait WriteRgb {
    fn write_image_rgb(self, rgb: &[u8], width: u32, height: u32);
}

impl<W: Write> WriteRgb for image::codecs::png::PngEncoder<W> {
    fn write_image_rgb(self, rgb: &[u8], width: u32, height: u32) {
        use image::ImageEncoder;
        self.write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
            .expect("PNG encodes");
    }
}

/// The `n` well-formed synthetic two-tone samples of a split, `size` pixels square.
pub fn synthetic_samples(
    n: usize,
    size: u32,
    identities: u32,
    split: &str,
    ext: &str,
) -> Vec<TestSample> {
    (0..n)
        .map(|i| {
            let (l, r) = test_colours(i);
            let rgb = two_tone_rgb(size, l, r);
            let image = match ext {
                "png" => encode_png(&rgb, size, size),
                _ => encode_jpeg(&rgb, size, size, 95),
            };
            TestSample::new(&test_meta(i, identities, split), ext, image)
        })
        .collect()
}

/// Write `samples` as shard `dir/name` with the format's own writer, member by member as given.
pub fn write_shard(dir: &Path, name: &str, samples: &[TestSample]) -> std::io::Result<ShardEntry> {
    let mut writer = ShardWriter::new(Vec::new())?;
    for s in samples {
        for (member, data) in &s.members {
            writer.append_member(member, data)?;
        }
    }
    let (compressed, written) = writer.finish()?;
    std::fs::write(dir.join(name), &compressed)?;
    Ok(ShardEntry {
        name: name.into(),
        num_samples: samples.len() as u64,
        bytes: written.bytes,
        sha256: written.sha256,
    })
}

/// Write `splits` (name → samples) as shards of `per_shard` samples plus `index.json` into `dir`.
pub fn write_dataset(
    dir: &Path,
    splits: &[(&str, Vec<TestSample>)],
    per_shard: usize,
    image: ImageSpec,
    identities: u32,
) -> std::io::Result<DatasetIndex> {
    std::fs::create_dir_all(dir)?;
    let mut index_splits = BTreeMap::new();
    for (split, samples) in splits {
        let mut shards = Vec::new();
        for (n, chunk) in samples.chunks(per_shard.max(1)).enumerate() {
            shards.push(write_shard(dir, &shard_name(split, n), chunk)?);
        }
        index_splits.insert(
            (*split).to_owned(),
            SplitIndex {
                num_samples: samples.len() as u64,
                shards,
            },
        );
    }
    let index = DatasetIndex {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        tool_version: "d2ae-loader testing".into(),
        config: serde_json::json!({"writer": "d2ae_loader::testing"}),
        image,
        splits: index_splits,
        identities: (0..identities)
            .map(|i| IdentityEntry {
                index: i,
                name: format!("id{i}"),
                num_images: 0,
            })
            .collect(),
        attributes: vec!["Even".into(), "Unknown".into()],
        factors: vec!["index".into()],
        rejects: BTreeMap::new(),
    };
    std::fs::write(dir.join(INDEX_FILE), index.to_json())?;
    Ok(index)
}

/// The image spec of square `ext` images of `size` pixels.
pub fn image_spec(size: u32, ext: &str) -> ImageSpec {
    ImageSpec {
        width: size,
        height: size,
        ext: ext.into(),
        ipd_ratio: Some(0.35),
        aligned: false,
    }
}

/// A synthetic `train` split of `n` JPEG samples, `size` square, in shards of `per_shard`.
pub fn synthetic_dataset(
    dir: &Path,
    n: usize,
    per_shard: usize,
    size: u32,
) -> std::io::Result<DatasetIndex> {
    let samples = synthetic_samples(n, size, 10, "train", "jpg");
    write_dataset(
        dir,
        &[("train", samples)],
        per_shard,
        image_spec(size, "jpg"),
        10,
    )
}

/// Photos (JPEG or PNG) under `dir`, recursively, sorted.
pub fn find_photos(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("jpg" | "jpeg" | "png")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `n` JPEGs (q95, 4:2:0) of `size`² made from random square crops of real photos at random
/// scales: realistic bytes and content for benchmarks.
pub fn photo_crops(photos: &[PathBuf], n: usize, size: u32, seed: u64) -> Vec<Vec<u8>> {
    // Shrink big photos first so that each crop's resize is cheap; 4× the output keeps detail.
    let images: Vec<image::RgbImage> = photos
        .iter()
        .filter_map(|p| image::open(p).ok())
        .map(|i| {
            let short = i.width().min(i.height());
            if short > 4 * size {
                let f = f64::from(4 * size) / f64::from(short);
                let (w, h) = (
                    (f64::from(i.width()) * f).round() as u32,
                    (f64::from(i.height()) * f).round() as u32,
                );
                i.resize_exact(w, h, image::imageops::FilterType::Triangle)
                    .into_rgb8()
            } else {
                i.into_rgb8()
            }
        })
        .filter(|i| i.width() >= size / 2 && i.height() >= size / 2)
        .collect();
    assert!(!images.is_empty(), "no usable photos");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let img = &images[rng.random_range(0..images.len())];
            let max_side = img.width().min(img.height());
            let side = rng.random_range((max_side / 4).max(16)..=max_side);
            let x = rng.random_range(0..=img.width() - side);
            let y = rng.random_range(0..=img.height() - side);
            let crop = image::imageops::crop_imm(img, x, y, side, side).to_image();
            let resized =
                image::imageops::resize(&crop, size, size, image::imageops::FilterType::Triangle);
            encode_jpeg(resized.as_raw(), size, size, 95)
        })
        .collect()
}

/// Decompress every `.tar.zst` in `dir` into `out_dir` as `.tar` (for the Python reference).
pub fn decompress_shards(dir: &Path, out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)?;
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let target = out_dir.join(name.trim_end_matches(".zst"));
        let data = zstd::decode_all(std::fs::File::open(&p)?)?;
        std::fs::write(&target, data)?;
        out.push(target);
    }
    Ok(out)
}

/// Copy every file of a local dataset directory into `location` (a bucket), for S3 tests.
pub async fn upload_dir(
    dir: &Path,
    location: &d2ae_shard::DatasetLocation,
) -> Result<usize, object_store::Error> {
    use object_store::ObjectStoreExt;
    let mut n = 0;
    for e in std::fs::read_dir(dir).map_err(|e| object_store::Error::Generic {
        store: "local",
        source: Box::new(e),
    })? {
        let path = e
            .map_err(|e| object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let data = std::fs::read(&path).map_err(|e| object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        })?;
        location
            .store
            .put(&location.child(&name), data.into())
            .await?;
        n += 1;
    }
    Ok(n)
}
