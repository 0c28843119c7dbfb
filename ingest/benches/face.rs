//! Per-image ingest throughput on one core, ours vs Python references, side by side in one run.
//!
//! ```text
//! cargo bench -p d2ae-ingest --bench face -- [--seconds S] [--no-python] [--no-detector]
//! ```
//!
//! Work per photo, for every variant: decode, align to 235×235 (similarity warp), JPEG q95
//! encode, append `.jpg`/`.cls`/`.json` to an in-memory tar (webdataset layout). Photos: the
//! CelebA mini set and the `face_recognition` photos from `shared/data`, read into memory first.
//! "landmarks" = the landmarks are given (we precompute them with the detector, as a dataset's
//! landmark file would supply them); "detector" = YuNet runs on every photo.
//!
//! Variants: `ours` (`prepare_face`: scaled + region JPEG decoding), `ours-full-decode` (full
//! decode + plain bilinear warp, to show what decoding less buys), and the two Python references
//! in `scripts/bench/ingest_reference.py` (`opencv`, `pil`), each run single-threaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use d2ae_ingest::align::{similarity_from_landmarks, warp_bilinear, Landmarks};
use d2ae_ingest::detect::{most_prominent, Detector, DetectorConfig};
use d2ae_ingest::face::{prepare_face, FaceConfig};
use d2ae_ingest::image_io::{decode_rgb, encode_jpeg};

struct Photo {
    path: PathBuf,
    bytes: Vec<u8>,
    landmarks: Landmarks,
}

struct Args {
    seconds: f64,
    python: bool,
    detector: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 3.0,
        python: true,
        detector: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                a.seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds takes a number")
            }
            "--no-python" => a.python = false,
            "--no-detector" => a.detector = false,
            _ => {} // cargo passes --bench
        }
    }
    a
}

fn shared_data() -> PathBuf {
    std::env::var_os("D2AE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

fn photo_sets(data: &Path) -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut celeba: Vec<PathBuf> = std::fs::read_dir(data.join("celeba-mini/images"))
        .expect("celeba-mini/images")
        .map(|e| e.expect("dir entry").path())
        .collect();
    celeba.sort();
    let fr = data.join("photos/face_recognition");
    let csv = std::fs::read_to_string(fr.join("identities.csv")).expect("identities.csv");
    let fr_files = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(|f| fr.join(f))
        .collect();
    vec![("celeba-mini", celeba), ("face_recognition", fr_files)]
}

/// "Given" landmarks: the detector's most prominent face on the full-resolution photo.
fn load_photos(paths: &[PathBuf], det: &Detector) -> Vec<Photo> {
    paths
        .iter()
        .filter_map(|p| {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let img = decode_rgb(&bytes, &Default::default()).ok()?;
            let dets = det.detect(&img).expect("detector runs");
            let face = most_prominent(&dets)?;
            Some(Photo {
                path: p.clone(),
                bytes,
                landmarks: Landmarks(face.landmarks.to_vec()),
            })
        })
        .collect()
}

fn append(tar: &mut tar::Builder<Vec<u8>>, key: &str, ext: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, format!("{key}.{ext}"), data)
        .expect("tar into memory");
}

fn write_sample(
    tar: &mut tar::Builder<Vec<u8>>,
    n: usize,
    cls: usize,
    jpg: &[u8],
    lm: &[[f32; 2]],
) {
    let key = format!("s{n:08}");
    append(tar, &key, "jpg", jpg);
    append(tar, &key, "cls", cls.to_string().as_bytes());
    let json = serde_json::json!({ "identity": cls, "source": cls.to_string(), "landmarks": lm });
    append(tar, &key, "json", &serde_json::to_vec(&json).expect("json"));
}

/// Run `one` over all photos in passes until `seconds` have passed; images/s.
fn measure(
    photos: &[Photo],
    seconds: f64,
    mut one: impl FnMut(&Photo) -> Option<(Vec<u8>, Vec<[f32; 2]>)>,
) -> (f64, usize) {
    let start = Instant::now();
    let mut done = 0;
    loop {
        let mut tar = tar::Builder::new(Vec::new());
        for (i, p) in photos.iter().enumerate() {
            if let Some((jpg, lm)) = one(p) {
                write_sample(&mut tar, done, i, &jpg, &lm);
                done += 1;
            }
        }
        std::hint::black_box(tar.into_inner().expect("tar").len());
        if start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    (done as f64 / start.elapsed().as_secs_f64(), done)
}

fn python_reference(
    variant: &str,
    items: &Path,
    detector: Option<&Path>,
    seconds: f64,
) -> Option<f64> {
    let venv = std::env::var_os("D2AE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/d2ae/venv")
        });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/ingest_reference.py");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(&script)
        .args(["--variant", variant, "--min-seconds", &seconds.to_string()])
        .arg("--items")
        .arg(items)
        // One core for the reference too.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1");
    if let Some(d) = detector {
        cmd.arg("--detector").arg(d);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "{variant} reference failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["images_per_s"].as_f64()
}

fn main() {
    let args = parse_args();
    let data = shared_data();
    let model = data.join("models/yunet/yunet_s_640_640.onnx");
    let det = Detector::load(&model, DetectorConfig::default()).expect("load YuNet");
    let cfg = FaceConfig::default();
    let tmp = std::env::temp_dir().join(format!("d2ae-face-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");

    println!("| photos | path | variant | images/s (1 core) | vs opencv | vs pil |");
    println!("|---|---|---|---:|---:|---:|");
    for (set, paths) in photo_sets(&data) {
        let photos = load_photos(&paths, &det);
        let mp: f64 = photos
            .iter()
            .map(|p| {
                let img = decode_rgb(&p.bytes, &Default::default()).expect("decodes");
                img.width() as f64 * img.height() as f64 / 1e6
            })
            .sum::<f64>()
            / photos.len() as f64;
        let kb =
            photos.iter().map(|p| p.bytes.len()).sum::<usize>() as f64 / photos.len() as f64 / 1e3;
        eprintln!(
            "{set}: {} photos with a face, mean {mp:.2} MP, {kb:.0} KB",
            photos.len()
        );
        let items: Vec<serde_json::Value> = photos
            .iter()
            .map(|p| serde_json::json!({ "path": p.path, "landmarks": p.landmarks.0 }))
            .collect();
        let items_path = tmp.join(format!("{set}.json"));
        std::fs::write(&items_path, serde_json::to_vec(&items).expect("json"))
            .expect("write items");

        let mut modes = vec!["landmarks"];
        if args.detector {
            modes.push("detector");
        }
        for mode in modes {
            let mut rows: Vec<(&str, f64)> = Vec::new();
            let (ours, _) = measure(&photos, args.seconds, |p| {
                let lm = (mode == "landmarks").then_some(&p.landmarks);
                let d = (mode == "detector").then_some(&det);
                let face = prepare_face(&p.bytes, lm, d, &cfg).ok()?;
                Some((encode_jpeg(&face.image, 95).ok()?, face.landmarks))
            });
            rows.push(("ours", ours));
            if mode == "landmarks" {
                let (plain, _) = measure(&photos, args.seconds, |p| {
                    let img = decode_rgb(&p.bytes, &cfg.limits).ok()?;
                    let t = similarity_from_landmarks(&p.landmarks, &cfg.align).ok()?;
                    let crop = warp_bilinear(&img, &t, cfg.align.size);
                    let lm = p.landmarks.0.iter().map(|q| t.apply(*q)).collect();
                    Some((encode_jpeg(&crop, 95).ok()?, lm))
                });
                rows.push(("ours-full-decode", plain));
            }
            let (mut cv, mut pil) = (None, None);
            if args.python {
                let d = (mode == "detector").then_some(model.as_path());
                cv = python_reference("opencv", &items_path, d, args.seconds);
                pil = python_reference("pil", &items_path, d, args.seconds);
                if let Some(v) = cv {
                    rows.push(("python-opencv", v));
                }
                if let Some(v) = pil {
                    rows.push(("python-pil", v));
                }
            }
            for (name, ips) in rows {
                let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.2}×", ips / r));
                println!(
                    "| {set} | {mode} | {name} | {ips:.1} | {} | {} |",
                    ratio(cv),
                    ratio(pil)
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
