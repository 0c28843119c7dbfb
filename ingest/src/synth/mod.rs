//! `d2ae-ingest synth`: a face dataset whose generating factors are known.
//!
//! Each identity has fixed identity factors (face shape, eye size, eyebrows, nose, mouth, skin,
//! hair); each image draws identity-independent attributes (smile, open mouth, glasses, hat) and
//! continuous factors (background colour, lighting, pose, noise) on its own. Images come out in
//! CelebA's raw layout with exact landmarks, so the demo goes through the same ingest path as real
//! data; `list_factors_d2ae.txt`, `synth.json` and LFW-style pairs over held-out identities are the
//! extensions. Output is a pure function of the arguments: the same seed gives byte-identical files
//! whatever the worker count. `docs/SYNTH.md` describes the files and factors.
//!
//! Modules: [`factors`] samples, [`geometry`] places features, [`render`] draws, [`pairs`] makes
//! verification folds, [`layout`] writes the text files.

pub mod factors;
pub mod geometry;
pub mod layout;
pub mod pairs;
pub mod render;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use serde::Serialize;

use factors::{attribute_row, IdentityFactors, ImageFactors, ATTRIBUTES, FACTORS};
use geometry::FaceGeometry;
use layout::{ImageRecord, Partition, IMAGE_DIR};
use pairs::HeldOutIdentity;

/// Arguments of `d2ae-ingest synth`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SynthArgs {
    /// Directory to create the dataset in (CelebA layout: `images/`, `identity_CelebA.txt`, ...).
    #[arg(long)]
    #[serde(skip)]
    pub out: PathBuf,
    /// Number of identities.
    #[arg(long, default_value_t = 200)]
    pub identities: u32,
    /// Images generated per identity.
    #[arg(long, default_value_t = 20)]
    pub images_per_identity: u32,
    /// Identities kept out of training (all their images in the test partition, and the only ones
    /// in the pairs): a count (`40`) or a fraction of `--identities` (`0.2`).
    #[arg(long, default_value = "0.2")]
    pub held_out_identities: HeldOut,
    /// Fraction of each training identity's images put in the validation partition.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Width and height of the images in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Seed of every random choice; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image encoding: `jpg` (quality `--quality`, 4:2:0) or `png` (lossless).
    #[arg(long, value_enum, default_value_t = ImageFormat::Jpg)]
    pub format: ImageFormat,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 95)]
    pub quality: u8,
    /// Verification folds in `pairs.txt` (LFW has 10); folds are identity-disjoint. 0 writes no
    /// pairs (and allows `--held-out-identities 0`).
    #[arg(long, default_value_t = 10)]
    pub folds: usize,
    /// Matched pairs per fold, and as many mismatched ones (LFW has 300).
    #[arg(long, default_value_t = 50)]
    pub pairs_per_fold: usize,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    #[serde(skip)]
    pub workers: Option<usize>,
    /// Also write `preview.png`: the first 32 images in a grid.
    #[arg(long)]
    #[serde(skip)]
    pub preview: bool,
    /// Replace an existing dataset in `--out` (removes its `images/` and the generator's files).
    #[arg(long)]
    #[serde(skip)]
    pub overwrite: bool,
    /// Print the summary as JSON (a `SynthSummary`) instead of text.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

/// How many identities to hold out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldOut {
    Count(u32),
    Fraction(f64),
}

impl HeldOut {
    /// The number of held-out identities out of `total` (a fraction rounds to nearest).
    pub fn resolve(self, total: u32) -> u32 {
        match self {
            HeldOut::Count(n) => n,
            HeldOut::Fraction(f) => (f * total as f64).round() as u32,
        }
    }
}

impl FromStr for HeldOut {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u32>() {
            return Ok(HeldOut::Count(n));
        }
        match s.parse::<f64>() {
            Ok(f) if (0.0..1.0).contains(&f) => Ok(HeldOut::Fraction(f)),
            _ => Err(format!(
                "expected a count (e.g. 40) or a fraction in [0, 1) (e.g. 0.2), got {s:?}"
            )),
        }
    }
}

impl fmt::Display for HeldOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeldOut::Count(n) => write!(f, "{n}"),
            HeldOut::Fraction(x) => write!(f, "{x}"),
        }
    }
}

/// Image encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    Jpg,
    Png,
}

impl ImageFormat {
    pub fn ext(self) -> &'static str {
        match self {
            ImageFormat::Jpg => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

/// What a run made.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub out: PathBuf,
    pub images: u64,
    pub identities: u32,
    pub held_out_identities: u32,
    pub train_images: u64,
    pub val_images: u64,
    pub test_images: u64,
    pub folds: usize,
    pub pairs_per_fold: usize,
    /// Bytes of all images written.
    pub image_bytes: u64,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "synthetic dataset in {}: {} images of {} identities ({} held out)",
            self.out.display(),
            self.images,
            self.identities,
            self.held_out_identities
        )?;
        writeln!(
            f,
            "  partitions: {} train, {} val, {} test",
            self.train_images, self.val_images, self.test_images
        )?;
        writeln!(
            f,
            "  pairs: {} folds x ({} matched + {} mismatched)",
            self.folds, self.pairs_per_fold, self.pairs_per_fold
        )?;
        writeln!(
            f,
            "  {:.1} MB of images in {:.1} s ({:.0} images/s)",
            self.image_bytes as f64 / 1e6,
            self.seconds,
            self.images_per_second
        )
    }
}

/// Which identity and which of its images each file is, and its partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub identities: u32,
    pub per_identity: u32,
    pub held_out: u32,
    /// Per file number (0-based): `(identity index, image slot)`, both 0-based.
    pub files: Vec<(u32, u32)>,
    pub partitions: Vec<Partition>,
}

impl Plan {
    /// Shuffle the images into file order (as CelebA's files are not grouped by identity) and
    /// assign partitions: the last `held_out` identities are test; of every other identity, the
    /// slots `j >= per_identity - round(per_identity · val_fraction)` are val.
    pub fn new(args: &SynthArgs) -> anyhow::Result<Plan> {
        let (n, m) = (args.identities, args.images_per_identity);
        ensure!(
            n >= 1 && m >= 1,
            "--identities and --images-per-identity must be at least 1"
        );
        let held_out = args.held_out_identities.resolve(n);
        ensure!(
            held_out < n,
            "--held-out-identities {} leaves no training identity out of {n}",
            args.held_out_identities
        );
        ensure!(
            (0.0..1.0).contains(&args.val_fraction),
            "--val-fraction must be in [0, 1), got {}",
            args.val_fraction
        );
        let total = n as u64 * m as u64;
        ensure!(total <= u32::MAX as u64, "{total} images is too many");
        let mut files: Vec<(u32, u32)> = (0..n).flat_map(|i| (0..m).map(move |j| (i, j))).collect();
        files.shuffle(&mut factors::stream(args.seed, "order", 0));
        let n_val = (m as f64 * args.val_fraction).round() as u32;
        let partitions = files
            .iter()
            .map(|&(i, j)| {
                if i >= n - held_out {
                    Partition::Test
                } else if j >= m - n_val {
                    Partition::Val
                } else {
                    Partition::Train
                }
            })
            .collect();
        Ok(Plan {
            identities: n,
            per_identity: m,
            held_out,
            files,
            partitions,
        })
    }

    /// The image stream index of a file: its slot in identity-major order, so an identity's images
    /// do not change when the file order does.
    pub fn image_index(&self, file: usize) -> u64 {
        let (i, j) = self.files[file];
        i as u64 * self.per_identity as u64 + j as u64
    }
}

/// One image with its factors and geometry, before drawing.
pub struct Sample {
    pub identity: IdentityFactors,
    pub image: ImageFactors,
    pub geometry: FaceGeometry,
}

impl Sample {
    pub fn new(seed: u64, plan: &Plan, file: usize, size: u32) -> Sample {
        let identity = IdentityFactors::sample(seed, plan.files[file].0 as u64);
        let image = ImageFactors::sample(seed, plan.image_index(file));
        let geometry = FaceGeometry::new(&identity, &image, size);
        Sample {
            identity,
            image,
            geometry,
        }
    }

    /// The finished image (drawn, lit, noised) as tightly packed RGBA.
    pub fn render(&self, size: u32) -> tiny_skia::Pixmap {
        let mut pm = render::draw(&self.identity, &self.image, &self.geometry, size);
        render::light_and_noise(&mut pm, &self.image);
        pm
    }

    /// Landmarks rounded to integers, as CelebA's file holds them. Coordinates are continuous with
    /// pixel `(i, j)` covering `[i, i+1) × [j, j+1)` (tiny-skia's and the aligner's convention), so
    /// rounding moves a point by at most half a pixel and adds no bias.
    pub fn integer_landmarks(&self) -> [[i32; 2]; 5] {
        self.geometry
            .landmarks()
            .map(|p| p.map(|v| v.round() as i32))
    }
}

/// Generate the dataset described by `args`.
pub fn run(args: &SynthArgs) -> anyhow::Result<SynthSummary> {
    let start = Instant::now();
    ensure!(
        (16..=4096).contains(&args.size),
        "--size must be between 16 and 4096, got {}",
        args.size
    );
    ensure!(
        (1..=100).contains(&args.quality),
        "--quality must be between 1 and 100"
    );
    let plan = Plan::new(args)?;
    let ext = args.format.ext();
    let total = plan.files.len();
    let names: Vec<String> = (0..total)
        .map(|n| layout::file_name(n, total, ext))
        .collect();

    // Pairs first: a scale that cannot give the requested pairs fails before any drawing.
    let mut by_identity: Vec<Vec<usize>> = vec![Vec::new(); plan.identities as usize];
    for (n, &(i, _)) in plan.files.iter().enumerate() {
        by_identity[i as usize].push(n);
    }
    let held_out: Vec<HeldOutIdentity> = (plan.identities - plan.held_out..plan.identities)
        .map(|i| HeldOutIdentity {
            id: i + 1,
            files: by_identity[i as usize].clone(),
        })
        .collect();
    let folds = pairs::make_folds(args.seed, &held_out, args.folds, args.pairs_per_fold)
        .context("cannot make the verification pairs")?;

    prepare_out(&args.out, args.overwrite)?;
    let image_dir = args.out.join(IMAGE_DIR);
    let image_bytes = write_images(args, &plan, &names, &image_dir)?;

    let records: Vec<ImageRecord> = (0..total)
        .map(|n| {
            let s = Sample::new(args.seed, &plan, n, args.size);
            ImageRecord {
                file: names[n].clone(),
                identity: plan.files[n].0 + 1,
                partition: plan.partitions[n],
                attributes: attribute_row(&s.identity, &s.image),
                landmarks: s.integer_landmarks(),
                factors: s.image.values(),
            }
        })
        .collect();
    let path_of = |id: u32, i: u32| {
        let file = by_identity[id as usize - 1][i as usize - 1];
        format!("{IMAGE_DIR}/{}", names[file])
    };
    let mut files = vec![
        (
            layout::ATTRIBUTE_FILE,
            layout::attribute_file(&records).into_bytes(),
        ),
        (
            layout::PARTITION_FILE,
            layout::partition_file(&records).into_bytes(),
        ),
        (
            layout::LANDMARK_FILE,
            layout::landmark_file(&records).into_bytes(),
        ),
        (
            layout::FACTOR_FILE,
            layout::factor_file(&records).into_bytes(),
        ),
        (
            layout::PAIRS_FILE,
            layout::pairs_file(&folds, args.pairs_per_fold).into_bytes(),
        ),
        (
            layout::PAIR_KEYS_FILE,
            layout::pair_keys_file(&folds, path_of).into_bytes(),
        ),
        (layout::META_FILE, metadata(args, &plan)?),
    ];
    if args.preview {
        files.push((
            layout::PREVIEW_FILE,
            preview(args.seed, &plan, args.size, 32)?,
        ));
    }
    // The identity list goes last: it is what makes a folder a CelebA dataset to ingest, so a
    // killed run never leaves something that looks complete.
    files.push((
        layout::IDENTITY_FILE,
        layout::identity_file(&records).into_bytes(),
    ));
    for (name, bytes) in &files {
        layout::write(&args.out, name, bytes)?;
    }

    let count = |p: Partition| plan.partitions.iter().filter(|&&q| q == p).count() as u64;
    let seconds = start.elapsed().as_secs_f64();
    Ok(SynthSummary {
        out: args.out.clone(),
        images: total as u64,
        identities: plan.identities,
        held_out_identities: plan.held_out,
        train_images: count(Partition::Train),
        val_images: count(Partition::Val),
        test_images: count(Partition::Test),
        folds: folds.len(),
        pairs_per_fold: args.pairs_per_fold,
        image_bytes,
        seconds,
        images_per_second: total as f64 / seconds.max(1e-9),
    })
}

/// Create `out`, refusing to mix with an earlier dataset unless `overwrite` (then only the
/// generator's own files and `images/` are removed).
fn prepare_out(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    let image_dir = out.join(IMAGE_DIR);
    let existing = layout::ROOT_FILES.iter().any(|f| out.join(f).exists()) || image_dir.exists();
    if existing {
        if !overwrite {
            bail!(
                "{} already holds a dataset; pass --overwrite to replace it",
                out.display()
            );
        }
        if image_dir.exists() {
            std::fs::remove_dir_all(&image_dir)
                .with_context(|| format!("cannot remove {}", image_dir.display()))?;
        }
        for f in layout::ROOT_FILES {
            let p = out.join(f);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(&image_dir)
        .with_context(|| format!("cannot create {}", image_dir.display()))
}

/// Render and write every image on `--workers` threads; returns the bytes written. Each file
/// depends only on its number, so the thread count changes nothing but speed.
fn write_images(
    args: &SynthArgs,
    plan: &Plan,
    names: &[String],
    dir: &Path,
) -> anyhow::Result<u64> {
    let total = plan.files.len();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("synth {bar:40} {pos}/{len} images {per_sec} ETA {eta}")
            .expect("static template"),
    );
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut encoder = match Encoder::new(args.format, args.quality) {
                    Ok(e) => e,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                };
                while !failed.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let result = (|| {
                        let pm = Sample::new(args.seed, plan, n, args.size).render(args.size);
                        let data = encoder.encode(&pm)?;
                        let path = dir.join(&names[n]);
                        std::fs::write(&path, &data)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        anyhow::Ok(data.len() as u64)
                    })();
                    match result {
                        Ok(b) => {
                            bytes.fetch_add(b, Ordering::Relaxed);
                            bar.inc(1);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(bytes.into_inner())
}

/// Encodes RGBA pixmaps (fully opaque) to the chosen format.
pub struct Encoder {
    format: ImageFormat,
    jpeg: Option<turbojpeg::Compressor>,
}

impl Encoder {
    pub fn new(format: ImageFormat, quality: u8) -> anyhow::Result<Encoder> {
        let jpeg = match format {
            ImageFormat::Jpg => {
                let mut c = turbojpeg::Compressor::new().context("cannot start libjpeg-turbo")?;
                c.set_quality(quality as i32)?;
                c.set_subsamp(turbojpeg::Subsamp::Sub2x2)?;
                Some(c)
            }
            ImageFormat::Png => None,
        };
        Ok(Encoder { format, jpeg })
    }

    pub fn encode(&mut self, pm: &tiny_skia::Pixmap) -> anyhow::Result<Vec<u8>> {
        let (w, h) = (pm.width() as usize, pm.height() as usize);
        match (self.format, self.jpeg.as_mut()) {
            (ImageFormat::Jpg, Some(c)) => {
                let image = turbojpeg::Image {
                    pixels: pm.data(),
                    width: w,
                    pitch: w * 4,
                    height: h,
                    format: turbojpeg::PixelFormat::RGBX,
                };
                Ok(c.compress_to_vec(image).context("JPEG encoding failed")?)
            }
            _ => encode_png(&rgb(pm), w as u32, h as u32),
        }
    }
}

fn rgb(pm: &tiny_skia::Pixmap) -> Vec<u8> {
    pm.data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, w, h, image::ExtendedColorType::Rgb8)
        .context("PNG encoding failed")?;
    Ok(out)
}

/// The first `count` images in a grid of 8 columns, each scaled to at most 128 px.
pub fn preview(seed: u64, plan: &Plan, size: u32, count: usize) -> anyhow::Result<Vec<u8>> {
    let count = count.min(plan.files.len()).max(1);
    let tile = size.min(128);
    let cols = count.min(8) as u32;
    let rows = count.div_ceil(8) as u32;
    let mut grid = image::RgbImage::new(cols * tile, rows * tile);
    for n in 0..count {
        let pm = Sample::new(seed, plan, n, size).render(size);
        let img = image::RgbImage::from_raw(size, size, rgb(&pm)).context("pixmap size")?;
        let small =
            image::imageops::resize(&img, tile, tile, image::imageops::FilterType::Triangle);
        let (x, y) = ((n as u32 % 8) * tile, (n as u32 / 8) * tile);
        image::imageops::replace(&mut grid, &small, x as i64, y as i64);
    }
    encode_png(grid.as_raw(), grid.width(), grid.height())
}

/// `synth.json`: the arguments, the names and kinds of every label, and each identity's factors.
fn metadata(args: &SynthArgs, plan: &Plan) -> anyhow::Result<Vec<u8>> {
    let identities: Vec<serde_json::Value> = (0..plan.identities)
        .map(|i| {
            let f = IdentityFactors::sample(args.seed, i as u64);
            serde_json::json!({
                "id": i + 1,
                "held_out": i >= plan.identities - plan.held_out,
                "factors": f,
            })
        })
        .collect();
    let meta = serde_json::json!({
        "generator": format!("d2ae-ingest synth {}", env!("CARGO_PKG_VERSION")),
        "seed": args.seed,
        "config": args,
        "images": plan.files.len(),
        "image_size": args.size,
        "ipd_fraction_at_scale_1": geometry::NOMINAL_IPD,
        "attributes": ATTRIBUTES,
        "identity_independent": factors::IDENTITY_INDEPENDENT,
        "identity_dependent": factors::IDENTITY_DEPENDENT,
        "factors": FACTORS,
        "held_out_identities": (plan.identities - plan.held_out + 1..=plan.identities).collect::<Vec<_>>(),
        "pairs": {
            "file": layout::PAIRS_FILE,
            "keys_file": layout::PAIR_KEYS_FILE,
            "folds": args.folds,
            "pairs_per_fold": args.pairs_per_fold,
            "names": "identity id as in identity_CelebA.txt; image i = the i-th (1-based) file of \
                      that identity in file-name order",
        },
        "identities": identities,
    });
    let mut bytes = serde_json::to_vec_pretty(&meta)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests;
