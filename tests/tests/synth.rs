//! `d2ae-ingest synth`: the real binary writes a deterministic CelebA-layout dataset, and the real
//! ingest reads it back with every label, factor and landmark intact.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use d2ae_tests::{cmd, python, run_ok};

fn synth(out: &Path, seed: u64, workers: u32) -> Command {
    let mut c = cmd("d2ae-ingest");
    c.arg("synth")
        .arg("--out")
        .arg(out)
        .args(["--identities", "30", "--images-per-identity", "6"])
        .args([
            "--held-out-identities",
            "10",
            "--folds",
            "5",
            "--pairs-per-fold",
            "8",
        ])
        .args([
            "--size",
            "128",
            "--seed",
            &seed.to_string(),
            "--workers",
            &workers.to_string(),
        ]);
    c
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["", "images"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn synth_cli_is_deterministic_and_writes_the_celeba_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let out = run_ok(&mut synth(&a, 4, 2));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("180 images of 30 identities (10 held out)")
            && summary.contains("100 train, 20 val, 60 test"),
        "{summary}"
    );
    run_ok(&mut synth(&b, 4, 1));
    run_ok(&mut synth(&c, 5, 2));
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 180 + 8);
    assert!(fa == fb, "same seed, different bytes");
    assert!(fa
        .keys()
        .filter(|k| k.starts_with("images/"))
        .all(|k| fa[k] != fc[k]));

    let text = |name: &str| String::from_utf8(fa[name].clone()).unwrap();
    let attrs = text("list_attr_celeba.txt");
    let mut lines = attrs.lines();
    assert_eq!(lines.next(), Some("180"));
    assert_eq!(
        lines.next(),
        Some("Big_Nose Black_Hair Bushy_Eyebrows Eyeglasses Mouth_Slightly_Open Smiling Wearing_Hat ")
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("000001.jpg "), "{row}");
    assert_eq!(
        row.len(),
        "000001.jpg".len() + 7 * 3,
        "values padded to width 2: {row:?}"
    );
    let pairs = text("pairs.txt");
    assert_eq!(pairs.lines().next(), Some("5\t8"));
    assert_eq!(pairs.lines().count(), 1 + 5 * 16);
    let meta: serde_json::Value = serde_json::from_slice(&fa["synth.json"]).unwrap();
    assert_eq!(
        meta["identity_independent"],
        serde_json::json!([
            "Eyeglasses",
            "Mouth_Slightly_Open",
            "Smiling",
            "Wearing_Hat"
        ])
    );

    // An existing dataset is never silently mixed with a new one.
    let refused = synth(&a, 4, 2).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--overwrite"));
}

#[test]
fn synth_help_documents_every_flag() {
    let out = run_ok(cmd("d2ae-ingest").args(["synth", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--out",
        "--identities",
        "--images-per-identity",
        "--held-out-identities",
        "--val-fraction",
        "--size",
        "--seed",
        "--format",
        "--quality",
        "--folds",
        "--pairs-per-fold",
        "--workers",
        "--preview",
        "--overwrite",
        "--json",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

/// The samples' `.json` members of every shard under `dir`, read with Python's tarfile.
fn sample_metas(dir: &Path) -> Vec<serde_json::Value> {
    let code = r#"
import glob, json, subprocess, sys, tarfile, io
out = []
for shard in sorted(glob.glob(sys.argv[1] + "/*.tar.zst")):
    raw = subprocess.run(["zstd", "-dc", shard], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for m in tar.getmembers():
            if m.name.endswith(".json"):
                out.append(json.load(tar.extractfile(m)))
print(json.dumps(out))
"#;
    let out = run_ok(Command::new(python()).arg("-c").arg(code).arg(dir));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn synth_dataset_ingests_with_labels_factors_and_aligned_landmarks() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let shards = tmp.path().join("shards");
    run_ok(&mut synth(&raw, 8, 2));
    run_ok(
        cmd("d2ae-ingest")
            .arg(&raw)
            .arg("--out")
            .arg(&shards)
            .args(["--layout", "celeba", "--size", "64", "--workers", "2"]),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shards.join("index.json")).unwrap()).unwrap();
    let count = |split: &str| index["splits"][split]["num_samples"].as_u64().unwrap_or(0);
    assert_eq!((count("train"), count("val"), count("test")), (100, 20, 60));
    assert_eq!(index["attributes"].as_array().unwrap().len(), 7);
    assert_eq!(index["factors"].as_array().unwrap().len(), 12);

    let factor_rows: BTreeMap<String, Vec<f64>> =
        std::fs::read_to_string(raw.join("list_factors_d2ae.txt"))
            .unwrap()
            .lines()
            .skip(2)
            .map(|l| {
                let mut f = l.split(' ');
                let name = f.next().unwrap().to_owned();
                (name, f.map(|v| v.parse().unwrap()).collect())
            })
            .collect();
    let metas = sample_metas(&shards);
    assert_eq!(metas.len(), 180);
    for m in &metas {
        let source = m["source"].as_str().unwrap();
        let file = source.strip_prefix("images/").unwrap();
        // Factors arrive as f32 of the 6-decimal text.
        let bg_r = m["factors"]["background_r"].as_f64().unwrap();
        assert!((bg_r - factor_rows[file][0]).abs() < 1e-5, "{source}");
        // The generator's landmarks, aligned by ingest, put the eyes where the aligner promises:
        // level at 38% of the height, 35% of the width apart (within the half-pixel rounding of
        // the integer landmarks, scaled by 64/(IPD ≈ 26 px at 128 px)).
        let lm = m["landmarks"].as_array().unwrap();
        assert_eq!(lm.len(), 5, "{source}");
        let p = |i: usize| [lm[i][0].as_f64().unwrap(), lm[i][1].as_f64().unwrap()];
        let (r, l) = (p(0), p(1));
        let ipd = (l[0] - r[0]).hypot(l[1] - r[1]);
        assert!((ipd / 64.0 - 0.35).abs() < 0.015, "{source}: ipd {ipd}");
        assert!(
            (r[1] - 0.38 * 64.0).abs() < 1.0 && (l[1] - r[1]).abs() < 1.0,
            "{source}"
        );
        // Nose and mouth lie below the eyes in the crop, mouth below nose.
        assert!(
            p(2)[1] > r[1] + 5.0 && p(3)[1] > p(2)[1] && p(4)[1] > p(2)[1],
            "{source}"
        );
    }
}
