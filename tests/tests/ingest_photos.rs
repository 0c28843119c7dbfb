//! The `face_recognition` photos as manifest and folder datasets: multi-face photos, the
//! border-cut face and the RGBA PNG; bad inputs rejected with reasons; `--workers` invisible in
//! the output; `--strict`; `--exclude-identities`.

mod ingest_util;

use std::collections::BTreeMap;
use std::path::Path;

use d2ae_tests::{run_ok, shared_data};
use ingest_util::*;
use serde_json::Value;

fn photos() -> std::path::PathBuf {
    shared_data().join("photos/face_recognition")
}

fn by_source(samples: &[Value]) -> BTreeMap<String, Value> {
    samples
        .iter()
        .map(|s| (s["source"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

/// identities.csv (file, identity, faces, note) is used as it is: extra columns are ignored.
#[test]
fn manifest_of_real_photos_is_identical_for_one_and_two_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = photos().join("identities.csv");
    let run = |workers: &str| {
        let out = tmp.path().join(format!("w{workers}"));
        let summary = ingest_json(&[
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--detector",
            yunet().to_str().unwrap(),
            "--val-fraction",
            "0.25",
            "--seed",
            "3",
            "--shard-size",
            "150KB",
            "--workers",
            workers,
        ]);
        (out, summary)
    };
    let (one, s1) = run("1");
    let (two, s2) = run("2");
    assert_same_dataset(&one, &two);
    assert_eq!(s1["accepted"], s2["accepted"]);
    assert_eq!(s1["layout"], "manifest");
    let rows = std::fs::read_to_string(&manifest).unwrap().lines().count() - 1;
    let accepted = s1["accepted"].as_u64().unwrap();
    let rejected = s1["rejected"].as_u64().unwrap();
    assert_eq!(accepted + rejected, rows as u64, "{s1}");
    assert!(accepted >= 22, "most real photos must make it: {s1}");
    assert!(s1["splits"]["val"].as_u64().unwrap() >= 1, "{s1}");
    assert!(s1["shards"].as_u64().unwrap() >= 3, "{s1}");

    let (ok, report) = verify(one.to_str().unwrap(), &[]);
    assert!(ok, "{report}");

    let samples = by_source(&read_samples(&one));
    // Multi-face photos give one sample (the most prominent face); so do the border-cut face and
    // the RGBA PNGs, converted to RGB.
    for source in [
        "examples/knn_examples/test/kit_with_rose.jpg",
        "examples/knn_examples/test/obama_and_biden.jpg",
        "examples/two_people.jpg",
        "examples/knn_examples/train/biden/biden2.jpg",
        "tests/test_images/obama_partial_face.jpg",
        "tests/test_images/obama_partial_face2.jpg",
        "tests/test_images/32bit.png",
        "examples/alex-lacamoire.png",
        "examples/lin-manuel-miranda.png",
    ] {
        let s = samples
            .get(source)
            .unwrap_or_else(|| panic!("{source} was rejected: {:?}", read_rejects(&one)));
        assert_eq!(s["_size"], serde_json::json!([235, 235]));
        assert_eq!(s["_mode"], "RGB");
        assert!(s["detector_score"].as_f64().unwrap() >= 0.6);
    }
    assert_eq!(
        samples["examples/knn_examples/test/kit_with_rose.jpg"]["identity_name"],
        "kit_harington+rose_leslie"
    );
    // Rejects, if any, are listed with a reason the index counts.
    let index = read_json(&one.join("index.json"));
    let rejects = read_rejects(&one);
    assert_eq!(rejects.len() as u64, rejected);
    let counted: u64 = index["rejects"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, rejected);
}

fn link(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(from, to).unwrap();
}

#[test]
fn folders_of_real_photos_with_excluded_identities() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("folders");
    let csv = std::fs::read_to_string(photos().join("identities.csv")).unwrap();
    let mut expected = BTreeMap::<String, usize>::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (file, identity) = (f[0], f[1]);
        if identity == "unknown" || identity.contains('+') {
            continue;
        }
        let name = Path::new(file).file_name().unwrap();
        link(&photos().join(file), &root.join(identity).join(name));
        *expected.entry(identity.to_owned()).or_default() += 1;
    }
    std::fs::write(root.join("README.txt"), "not an image, not an identity").unwrap();
    let exclude = tmp.path().join("exclude.txt");
    std::fs::write(&exclude, "# people to leave out\njoe_biden\n").unwrap();
    let out = tmp.path().join("out");
    let summary = ingest_json(&[
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--detector",
        yunet().to_str().unwrap(),
        "--exclude-identities",
        exclude.to_str().unwrap(),
        "--format",
        "png",
    ]);
    assert_eq!(summary["layout"], "folders");
    let index = read_json(&out.join("index.json"));
    let names: Vec<&str> = index["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "alex_lacamoire",
            "barack_obama",
            "kit_harington",
            "lin_manuel_miranda",
            "rose_leslie"
        ]
    );
    assert_eq!(index["image"]["ext"], "png");
    assert_eq!(
        index["rejects"]["excluded_identity"],
        expected["joe_biden"] as u64
    );
    let rejects = read_rejects(&out);
    let excluded: Vec<&Value> = rejects
        .iter()
        .filter(|r| r["reason"] == "excluded_identity")
        .collect();
    assert!(excluded
        .iter()
        .all(|r| r["source"].as_str().unwrap().starts_with("joe_biden/")));
    let total: usize = expected.values().sum();
    assert_eq!(
        summary["accepted"].as_u64().unwrap() + summary["rejected"].as_u64().unwrap(),
        total as u64
    );
    let samples = read_samples(&out);
    assert!(samples
        .iter()
        .all(|s| s["_size"] == serde_json::json!([235, 235]) && s["_mode"] == "RGB"));
    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");
}

/// A manifest mixing good photos with every kind of bad input.
fn bad_inputs(dir: &Path) -> std::path::PathBuf {
    let obama =
        std::fs::read(photos().join("examples/knn_examples/train/obama/obama.jpg")).unwrap();
    std::fs::write(dir.join("truncated.jpg"), &obama[..obama.len() / 3]).unwrap();
    std::fs::write(
        dir.join("garbage.jpg"),
        b"this is not an image at all, just text",
    )
    .unwrap();
    link(
        &photos().join("examples/knn_examples/train/obama/obama.jpg"),
        &dir.join("obama.jpg"),
    );
    link(
        &photos().join("examples/obama-1080p.jpg"),
        &dir.join("big.jpg"),
    );
    link(
        &photos().join("examples/knn_examples/train/rose_leslie/img1.jpg"),
        &dir.join("rose.jpg"),
    );
    // A photo without any face (dlib's dogs.jpg is no good: YuNet finds a dog's face in it).
    d2ae_tests::run_python(
        "import sys\nfrom PIL import Image\n\
         Image.linear_gradient('L').resize((480, 360)).convert('RGB').save(sys.argv[1], quality=90)",
        &[dir.join("noface.jpg").to_str().unwrap()],
    );
    link(
        &photos().join("examples/knn_examples/train/obama/obama.jpg"),
        &dir.join("same_eyes.jpg"),
    );
    link(
        &photos().join("examples/knn_examples/train/rose_leslie/img1.jpg"),
        &dir.join("outside.jpg"),
    );
    let manifest = dir.join("list.csv");
    std::fs::write(
        &manifest,
        "path,identity,landmarks\n\
         obama.jpg,obama,\n\
         rose.jpg,rose,\n\
         truncated.jpg,obama,\n\
         garbage.jpg,obama,\n\
         big.jpg,obama,\n\
         missing.jpg,obama,\n\
         noface.jpg,nobody,\n\
         same_eyes.jpg,obama,\"300 300 300 300\"\n\
         outside.jpg,rose,\"5000 100 5100 100\"\n",
    )
    .unwrap();
    manifest
}

#[test]
fn bad_inputs_are_rejected_with_reasons_and_strict_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = bad_inputs(tmp.path());
    let out = tmp.path().join("out");
    let summary = ingest_json(&[
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--detector",
        yunet().to_str().unwrap(),
        "--max-pixels",
        "1500000",
        "--val-fraction",
        "0",
    ]);
    let rejects: BTreeMap<String, String> = read_rejects(&out)
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(summary["accepted"], 2, "{summary} {rejects:?}");
    assert_eq!(rejects["garbage.jpg"], "unsupported_format", "{rejects:?}");
    assert_eq!(rejects["truncated.jpg"], "decode_error", "{rejects:?}");
    assert_eq!(rejects["big.jpg"], "too_many_pixels");
    assert_eq!(rejects["missing.jpg"], "missing_file");
    assert_eq!(rejects["noface.jpg"], "no_face");
    assert_eq!(rejects["same_eyes.jpg"], "bad_landmarks");
    assert_eq!(rejects["outside.jpg"], "bad_landmarks");
    assert_eq!(rejects.len(), 7, "{rejects:?}");
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["rejects"]["bad_landmarks"], 2);
    assert_eq!(index["splits"]["train"]["num_samples"], 2);
    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");

    // --strict: the first reject fails the run, naming the file, and no dataset is published.
    let strict_out = tmp.path().join("strict");
    let res = ingest()
        .arg(&manifest)
        .args([
            "--out",
            strict_out.to_str().unwrap(),
            "--detector",
            yunet().to_str().unwrap(),
        ])
        .args(["--max-pixels", "1500000", "--strict", "--workers", "1"])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("--strict") && err.contains("was rejected"),
        "{err}"
    );
    assert!(!strict_out.join("index.json").exists());
    assert!(
        shard_files(&strict_out).is_empty(),
        "no shard under a final name"
    );
}

#[test]
fn landmarks_are_required_without_a_detector() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = bad_inputs(tmp.path());
    let res = ingest()
        .arg(&manifest)
        .args(["--out", tmp.path().join("o").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("7 of 9 images have no landmarks") && err.contains("--detector"),
        "{err}"
    );
}

#[test]
fn help_and_both_command_forms() {
    let help = run_ok(ingest().arg("--help"));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--out",
        "--layout",
        "--detector",
        "--aligned",
        "--workers",
        "--shard-size",
        "--val-fraction",
        "--exclude-identities",
        "--strict",
        "--endpoint",
        "--json",
        "verify",
        "synth",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let verify_help = run_ok(ingest().args(["verify", "--help"]));
    assert!(String::from_utf8_lossy(&verify_help.stdout).contains("--json"));
    // Verifying something that is not a dataset is a clear error.
    let tmp = tempfile::tempdir().unwrap();
    let res = ingest()
        .args(["verify", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("has no index.json"));
}
