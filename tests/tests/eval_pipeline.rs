//! `d2ae-eval` end to end on real photos: the CelebA mini set ingested by `d2ae-ingest`, a few
//! steps of the `small` preset, then extract (read back by Python), verify with an LFW-format
//! pairs file over the same photos laid out as LFW, attributes on CelebA's 40 labels, editing
//! grids and the run report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use d2ae_tests::{cmd, run_ok, run_python, shared_data};
use serde_json::Value;

/// Everything the tests share, made once per test binary.
struct Fixture {
    /// CelebA mini set, celeba layout.
    celeba: PathBuf,
    /// The same photos laid out as LFW (`<id>/<id>_000N.jpg`), folders layout.
    lfw: PathBuf,
    run: PathBuf,
    /// Features of `celeba` (with f_C stored).
    features: PathBuf,
    /// Features of `lfw` with flip TTA.
    lfw_features: PathBuf,
    dir: PathBuf,
}

fn detector() -> PathBuf {
    shared_data().join("models/yunet/yunet_s_640_640.onnx")
}

fn ingest(source: &Path, out: &Path, layout: &str) {
    run_ok(
        cmd("d2ae-ingest")
            .arg(source)
            .arg("--out")
            .arg(out)
            .args(["--layout", layout, "--size", "80", "--json", "--detector"])
            .arg(detector()),
    );
    assert!(out.join("index.json").exists());
}

/// Copy the CelebA mini photos into LFW's layout, one folder per identity.
fn lfw_layout(dir: &Path) -> PathBuf {
    let src = shared_data().join("celeba-mini");
    let root = dir.join("lfw-raw");
    let ids = std::fs::read_to_string(src.join("identity_CelebA.txt")).unwrap();
    let mut count: BTreeMap<String, u32> = BTreeMap::new();
    for line in ids.lines().filter(|l| !l.trim().is_empty()) {
        let (file, id) = line.split_once(' ').unwrap();
        let name = format!("celeb{}", id.trim());
        let n = count.entry(name.clone()).or_default();
        *n += 1;
        std::fs::create_dir_all(root.join(&name)).unwrap();
        std::fs::copy(
            src.join("images").join(file),
            root.join(&name).join(format!("{name}_{:04}.jpg", *n)),
        )
        .unwrap();
    }
    root
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("d2ae-eval")
            .tempdir()
            .unwrap()
            .keep();
        let celeba = dir.join("celeba");
        ingest(&shared_data().join("celeba-mini"), &celeba, "celeba");
        let lfw = dir.join("lfw");
        ingest(&lfw_layout(&dir), &lfw, "folders");
        let run = dir.join("run");
        run_ok(
            cmd("d2ae-train")
                .args(["fit", "--data"])
                .arg(&celeba)
                .arg("--out")
                .arg(&run)
                .args([
                    "--preset",
                    "small",
                    "--steps",
                    "6",
                    "--batch-size",
                    "8",
                    "--threads",
                    "2",
                ])
                .args([
                    "--decode-threads",
                    "2",
                    "--checkpoint-every",
                    "6",
                    "--val-every",
                    "3",
                    "--val-split",
                    "train",
                ])
                .args(["--val-batches", "1", "--no-progress"]),
        );
        let features = dir.join("feat/celeba.safetensors");
        let out = run_ok(
            cmd("d2ae-eval")
                .args(["extract", "--checkpoint"])
                .arg(&run)
                .arg("--data")
                .arg(&celeba)
                .arg("--out")
                .arg(&features)
                .args(["--concat", "--batch-size", "8", "--json"]),
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(summary["rows"].as_u64().unwrap() >= 16, "{summary}");
        assert!(summary["images_per_sec"].as_f64().unwrap() > 0.0);
        let lfw_features = dir.join("feat/lfw.safetensors");
        run_ok(
            cmd("d2ae-eval")
                .args(["extract", "--flip", "--checkpoint"])
                .arg(run.join("checkpoints/step-00000006.safetensors"))
                .arg("--data")
                .arg(&lfw)
                .arg("--out")
                .arg(&lfw_features),
        );
        Fixture {
            celeba,
            lfw,
            run,
            features,
            lfw_features,
            dir,
        }
    })
}

fn sidecar(features: &Path) -> Value {
    let mut p = features.as_os_str().to_owned();
    p.push(".json");
    serde_json::from_slice(&std::fs::read(PathBuf::from(p)).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn python_reads_the_extracted_features() {
    let f = fixture();
    let code = r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
m = json.load(open(sys.argv[1] + ".json"))
n = m["rows"]
assert m["format"] == "d2ae-features/1"
assert t["f_t"].shape == (n, m["dim_t"]) and t["f_t"].dtype == np.float32
assert t["f_p"].shape == (n, m["dim_p"])
assert np.array_equal(t["f_c"], np.concatenate([t["f_t"], t["f_p"]], axis=1))
assert t["identity"].dtype == np.int64 and t["identity"].shape == (n,)
assert t["attributes"].dtype == np.int8 and t["attributes"].shape == (n, len(m["attribute_names"]))
assert set(np.unique(t["attributes"])) <= {-1, 0, 1}
assert np.isfinite(t["f_t"]).all() and np.abs(t["f_t"]).sum() > 0
names = {}
for i, name in zip(t["identity"].tolist(), m["identity_names"]):
    assert names.setdefault(i, name) == name
assert len(m["keys"]) == len(set(m["keys"])) == n
print(json.dumps({"rows": n, "identities": len(names), "attributes": len(m["attribute_names"]),
                  "smiling": int((t["attributes"][:, m["attribute_names"].index("Smiling")] > 0).sum())}))
"#;
    let out = run_python(code, &[f.features.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let meta = sidecar(&f.features);
    assert_eq!(v["rows"], meta["rows"]);
    assert_eq!(v["identities"], 5);
    assert_eq!(v["attributes"], 40);
    assert_eq!(
        meta["splits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| *s == "train")
            .count() as u64,
        meta["rows"].as_u64().unwrap()
    );
    assert_eq!(meta["step"], 6);
    assert_eq!(meta["flip"], false);
    // CelebA's own labels for these 20 photos: the Smiling column is not constant.
    let smiling = v["smiling"].as_u64().unwrap();
    assert!(
        smiling > 0 && smiling < meta["rows"].as_u64().unwrap(),
        "{v}"
    );
}

/// An LFW View 2 file with 2 folds over the LFW-layout copy of the photos.
fn write_lfw_pairs(f: &Fixture) -> (PathBuf, usize) {
    let meta = sidecar(&f.lfw_features);
    let mut by_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for s in strings(&meta["sources"]) {
        let (id, file) = s.split_once('/').unwrap();
        let n: u32 = file
            .trim_end_matches(".jpg")
            .rsplit('_')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        by_id.entry(id.to_owned()).or_default().push(n);
    }
    let ids: Vec<(&String, &Vec<u32>)> = by_id.iter().filter(|(_, v)| v.len() >= 2).collect();
    assert!(ids.len() >= 4, "{by_id:?}");
    let (mut matched, mut mismatched) = (Vec::new(), Vec::new());
    for (k, (id, nums)) in ids.iter().enumerate() {
        matched.push(format!("{id}\t{}\t{}", nums[0], nums[1]));
        let (other, onums) = ids[(k + 1) % ids.len()];
        mismatched.push(format!(
            "{id}\t{}\t{other}\t{}",
            nums[0],
            onums[onums.len() - 1]
        ));
    }
    let per = matched.len() / 2;
    let mut text = format!("2\t{per}\n");
    for fold in 0..2 {
        for l in &matched[fold * per..(fold + 1) * per] {
            text += &format!("{l}\n");
        }
        for l in &mismatched[fold * per..(fold + 1) * per] {
            text += &format!("{l}\n");
        }
    }
    let path = f.dir.join("pairs.txt");
    std::fs::write(&path, text).unwrap();
    (path, 4 * per)
}

#[test]
fn verify_resolves_lfw_pairs_through_identity_and_file_names() {
    let f = fixture();
    assert!(sidecar(&f.lfw_features)["flip"].as_bool().unwrap());
    let (pairs, n) = write_lfw_pairs(f);
    let roc = f.dir.join("roc.png");
    let out = run_ok(
        cmd("d2ae-eval")
            .args(["verify", "--json", "--features"])
            .arg(&f.lfw_features)
            .arg("--pairs")
            .arg(&pairs)
            .arg("--plot")
            .arg(&roc),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pairs_format"], "lfw_view2");
    assert_eq!(v["pairs_used"].as_u64().unwrap() as usize, n);
    let results = v["results"].as_array().unwrap();
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| r["feature"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["t", "p", "c"]);
    for r in results {
        let rep = &r["report"];
        assert_eq!(rep["folds"].as_array().unwrap().len(), 2);
        assert_eq!(rep["protocol"]["kind"], "cross_validated");
        let acc = rep["accuracy_mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc) && rep["auc"].as_f64().unwrap() >= 0.0);
    }
    let (w, h) = png_size(&roc);
    assert!(w >= 400 && h >= 300);
    // People get the Table 1 rows.
    let out = run_ok(
        cmd("d2ae-eval")
            .args(["verify", "--features"])
            .arg(&f.lfw_features)
            .arg("--pairs")
            .arg(&pairs),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for row in ["D2AE-T (f_T)", "D2AE-P (f_P)", "D2AE (f_C)", "TPR@FPR=1e-3"] {
        assert!(text.contains(row), "{text}");
    }
}

#[test]
fn verify_lists_every_missing_sample_or_skips_them() {
    let f = fixture();
    // The official pairs.txt names thousands of LFW images these features do not have.
    let official = shared_data().join("lfw/pairs.txt");
    let out = cmd("d2ae-eval")
        .args(["verify", "--features"])
        .arg(&f.lfw_features)
        .arg("--pairs")
        .arg(&official)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("6000 of 6000 pairs name samples missing"),
        "{err}"
    );
    assert!(err.contains("Abel_Pacheco/Abel_Pacheco_0001.jpg"), "{err}");
    // A CSV by source path with two pairs naming photos that are not there.
    let sources = strings(&sidecar(&f.lfw_features)["sources"]);
    let id = |s: &str| s.split('/').next().unwrap().to_owned();
    let mut csv = String::new();
    let mut n = 0;
    for (i, a) in sources.iter().enumerate() {
        for b in &sources[i + 1..] {
            csv += &format!("{a},{b},{}\n", u8::from(id(a) == id(b)));
            n += 1;
        }
    }
    csv += "Nobody/Nobody_0001.jpg,Nobody/Nobody_0002.jpg,1\n";
    csv += &format!("{},Noone/Noone_0001.jpg,0\n", sources[0]);
    let bad = f.dir.join("pairs_missing.csv");
    std::fs::write(&bad, csv).unwrap();
    let out = cmd("d2ae-eval")
        .args(["verify", "--features"])
        .arg(&f.lfw_features)
        .arg("--pairs")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Nobody/Nobody_0001.jpg")
            && err.contains("Nobody/Nobody_0002.jpg")
            && err.contains("Noone/Noone_0001.jpg"),
        "{err}"
    );
    let out = run_ok(
        cmd("d2ae-eval")
            .args(["verify", "--json", "--skip-missing", "--features"])
            .arg(&f.lfw_features)
            .arg("--pairs")
            .arg(&bad),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["skipped"], 2);
    assert_eq!(v["pairs_used"].as_u64().unwrap() as usize, n);
    assert_eq!(v["pairs_format"], "csv");
    assert_eq!(v["missing"].as_array().unwrap().len(), 3);
}

#[test]
fn attributes_on_the_celeba_mini_set() {
    let f = fixture();
    let bars = f.dir.join("bars.png");
    let dirs = f.dir.join("directions.safetensors");
    let out = run_ok(
        cmd("d2ae-eval")
            .args(["attributes", "--json", "--features"])
            .arg(&f.features)
            .arg("--plot")
            .arg(&bars)
            .arg("--save-directions")
            .arg(&dirs),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = sidecar(&f.features)["rows"].as_u64().unwrap();
    // Every photo is in CelebA's training partition, so a quarter is held out for scoring.
    assert_eq!(v["test_rows"].as_u64().unwrap(), rows / 4);
    assert_eq!(v["train_rows"].as_u64().unwrap(), rows - rows / 4);
    assert!(
        v["notes"][0].as_str().unwrap().contains("every fourth"),
        "{}",
        v["notes"]
    );
    assert_eq!(v["attributes"].as_array().unwrap().len(), 40);
    for s in v["summaries"].as_array().unwrap() {
        let acc = s["mean_test_accuracy"].as_f64().unwrap();
        assert!((0.3..=1.0).contains(&acc), "{s}");
        assert_eq!(s["selection"], "holdout");
    }
    assert_eq!(v["difference_p_minus_t"].as_array().unwrap().len(), 40);
    let (w, h) = png_size(&bars);
    assert_eq!(w, 900);
    assert!(h > 40 * 20, "{h}");
    // Python reads the directions: unit rows, one per attribute.
    let code = r#"
import sys, json
import numpy as np
from safetensors import safe_open
with safe_open(sys.argv[1], "np") as f:
    meta = f.metadata()
    d = f.get_tensor("p.directions")
print(json.dumps({"attrs": len(json.loads(meta["attributes"])), "shape": list(d.shape),
                  "norm": float(np.abs(np.linalg.norm(d, axis=1) - 1).max())}))
"#;
    let out = run_python(code, &[dirs.to_str().unwrap()]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["attrs"], 40);
    assert_eq!(d["shape"][0], 40);
    assert!(d["norm"].as_f64().unwrap() < 1e-4, "{d}");
}

#[test]
fn edit_grids_from_the_checkpoint() {
    let f = fixture();
    let meta = sidecar(&f.features);
    let keys = strings(&meta["keys"]);
    let names = strings(&meta["identity_names"]);
    let second = names.iter().position(|n| *n != names[0]).unwrap();
    let pair = format!("{},{}", keys[0], keys[second]);
    let dirs = f.dir.join("edit_dirs.json");
    run_ok(
        cmd("d2ae-eval")
            .args(["attributes", "--feature", "p", "--features"])
            .arg(&f.features)
            .arg("--save-directions")
            .arg(&dirs),
    );
    let grid = |mode: &str, extra: &[&str]| -> Value {
        let out_png = f.dir.join(format!("{mode}.png"));
        let out = run_ok(
            cmd("d2ae-eval")
                .args([
                    "edit",
                    "--json",
                    "--mode",
                    mode,
                    "--steps",
                    "5",
                    "--checkpoint",
                ])
                .arg(&f.run)
                .arg("--data")
                .arg(&f.celeba)
                .arg("--out")
                .arg(&out_png)
                .args(extra),
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            png_size(&out_png),
            (
                v["width"].as_u64().unwrap() as u32,
                v["height"].as_u64().unwrap() as u32
            )
        );
        v
    };
    let swap = grid("swap", &["--keys", &format!("{pair},{}", keys[1])]);
    assert_eq!(swap["outputs"], 9);
    let interp = grid("interpolate", &["--keys", &pair]);
    assert_eq!(interp["outputs"], 10);
    let two_d = grid("interpolate2d", &["--keys", &pair]);
    assert_eq!(two_d["outputs"], 25);
    let attr = grid(
        "attribute",
        &[
            "--keys",
            &pair,
            "--directions",
            dirs.to_str().unwrap(),
            "--attributes",
            "Smiling,Male",
            "--max-sigma",
            "2",
        ],
    );
    // 2 samples × (2 attributes + both at once) × 5 steps, every edit within 2σ.
    assert_eq!(attr["outputs"], 30);
    let largest = attr["max_edit_sigma"].as_f64().unwrap();
    assert!(largest <= 2.0 + 1e-3 && largest > 1.9, "{attr}");
    // Unknown keys are listed.
    let out = cmd("d2ae-eval")
        .args([
            "edit",
            "--mode",
            "swap",
            "--keys",
            "nope1,nope2",
            "--checkpoint",
        ])
        .arg(&f.run)
        .arg("--data")
        .arg(&f.celeba)
        .arg("--out")
        .arg(f.dir.join("x.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 of 2 samples not found") && err.contains("nope1, nope2"),
        "{err}"
    );
}

#[test]
fn report_of_a_short_run_has_every_figure() {
    let f = fixture();
    let meta = sidecar(&f.features);
    let keys = strings(&meta["keys"]);
    let ids = strings(&meta["identity_names"]);
    // A CSV of key pairs over the CelebA photos: same identity and different identity.
    let mut csv = String::from("a,b,label\n");
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            if (ids[i] == ids[j]) || (i + j) % 5 == 0 {
                csv += &format!("{},{},{}\n", keys[i], keys[j], u8::from(ids[i] == ids[j]));
            }
        }
    }
    let pairs = f.dir.join("pairs.csv");
    std::fs::write(&pairs, csv).unwrap();
    let report = f.dir.join("report/report.md");
    run_ok(
        cmd("d2ae-eval")
            .args(["report", "--run"])
            .arg(&f.run)
            .arg("--out")
            .arg(&report)
            .arg("--features")
            .arg(&f.features)
            .arg("--data")
            .arg(&f.celeba)
            .arg("--pairs")
            .arg(&pairs)
            .args(["--tsne-epochs", "300"]),
    );
    let md = std::fs::read_to_string(&report).unwrap();
    let json: Value =
        serde_json::from_slice(&std::fs::read(f.dir.join("report/report.json")).unwrap()).unwrap();
    for needle in [
        "# D²AE run report",
        "99.78",
        "81.99",
        "83.16",
        "D2AE-P (f_P)",
        "![",
        "report_files/",
    ] {
        assert!(md.contains(needle), "{needle} missing from\n{md}");
    }
    let figures = json["figures"].as_array().unwrap();
    let paths: Vec<&str> = figures
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for expected in [
        "report_files/losses.png",
        "report_files/accuracy.png",
        "report_files/roc.png",
        "report_files/attributes_p_minus_t.png",
        "report_files/analysis/gauss_r2_f_t.png",
        "report_files/analysis/channels_f_p.png",
        "report_files/analysis/tsne_identity_f_t.png",
        "report_files/analysis/tsne_attribute_f_p.png",
        "report_files/swap.png",
        "report_files/interpolate.png",
        "report_files/interpolate2d.png",
        "report_files/attribute_edit.png",
    ] {
        assert!(paths.contains(&expected), "{expected} not in {paths:?}");
    }
    for p in &paths {
        let (w, h) = png_size(&f.dir.join("report").join(p));
        assert!(w >= 100 && h >= 100, "{p}: {w}×{h}");
        assert!(md.contains(&format!("]({p})")), "{p} not linked");
    }
    assert!(json["verification"]["results"].as_array().unwrap().len() == 3);
    assert_eq!(
        json["omitted"].as_array().unwrap().len(),
        0,
        "{}",
        json["omitted"]
    );
    // Keep a copy where a person can look at it after the run.
    if let Ok(keep) = std::env::var("D2AE_KEEP_REPORT") {
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(f.dir.join("report"))
            .arg(keep)
            .status();
    }
    let _ = &f.lfw;
}
