//! The CelebA mini set through `d2ae-ingest` with detector landmarks, checked by `verify`, by
//! reading the shards back, and by the real `webdataset` package.

mod ingest_util;

use std::collections::{BTreeMap, BTreeSet};

use d2ae_tests::{run_python, shared_data};
use ingest_util::*;

#[test]
fn celeba_mini_with_detector_landmarks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("celeba");
    let src = shared_data().join("celeba-mini");
    let summary = ingest_json(&[
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--detector",
        yunet().to_str().unwrap(),
        "--shard-size",
        "200KB",
        "--workers",
        "2",
    ]);
    assert_eq!(summary["layout"], "celeba");
    assert_eq!(summary["accepted"], 20, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert_eq!(summary["identities"], 5);
    assert_eq!(summary["splits"]["train"], 20);
    assert!(
        summary["shards"].as_u64().unwrap() >= 2,
        "200KB shards: {summary}"
    );

    let index = read_json(&out.join("index.json"));
    assert_eq!(index["format"], "d2ae-shards");
    assert_eq!(index["image"]["width"], 235);
    assert_eq!(index["image"]["ext"], "jpg");
    assert_eq!(index["attributes"].as_array().unwrap().len(), 40);
    assert_eq!(index["attributes"][31], "Smiling");
    let ids: Vec<(u64, String, u64)> = index["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["index"].as_u64().unwrap(),
                i["name"].as_str().unwrap().to_owned(),
                i["num_images"].as_u64().unwrap(),
            )
        })
        .collect();
    // Sorted identity names → 0..N, 4 photos each.
    let mut names: Vec<String> = ids.iter().map(|i| i.1.clone()).collect();
    names.sort();
    assert_eq!(ids.iter().map(|i| i.1.clone()).collect::<Vec<_>>(), names);
    assert!(
        ids.iter()
            .enumerate()
            .all(|(k, i)| i.0 == k as u64 && i.2 == 4),
        "{ids:?}"
    );
    assert_eq!(index["splits"].as_object().unwrap().len(), 1);
    assert!(out.join("rejects.jsonl").exists());
    assert!(!out.join("_partial").exists());

    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");
    assert_eq!(report["samples"], 20);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);

    // Every sample: 235x235 RGB, .cls = identity, CelebA attributes carried over, detector
    // landmarks in crop coordinates with the eyes level and 0.35 × 235 apart.
    let attr_text = std::fs::read_to_string(src.join("list_attr_celeba.txt")).unwrap();
    let attr_names: Vec<&str> = attr_text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let attrs: BTreeMap<String, Vec<bool>> = attr_text
        .lines()
        .skip(2)
        .map(|l| {
            let mut f = l.split_whitespace();
            let image = f.next().unwrap().to_owned();
            (image, f.map(|v| v == "1").collect())
        })
        .collect();
    let samples = read_samples(&out);
    assert_eq!(samples.len(), 20);
    let mut sources = BTreeSet::new();
    for s in &samples {
        assert_eq!(s["_size"], serde_json::json!([235, 235]), "{s}");
        assert_eq!(s["_mode"], "RGB");
        assert_eq!(s["_cls"], s["identity"]);
        assert_eq!(s["split"], "train");
        let name = s["identity_name"].as_str().unwrap();
        assert_eq!(ids[s["identity"].as_u64().unwrap() as usize].1, name);
        let image = s["source"].as_str().unwrap().trim_start_matches("images/");
        sources.insert(image.to_owned());
        for (i, attr) in attr_names.iter().enumerate() {
            assert_eq!(s["attributes"][*attr], attrs[image][i], "{image} {attr}");
        }
        let score = s["detector_score"].as_f64().unwrap();
        assert!(score > 0.6, "{s}");
        let lm = s["landmarks"].as_array().unwrap();
        assert_eq!(lm.len(), 5);
        let (r, l) = (&lm[0], &lm[1]);
        let dx = l[0].as_f64().unwrap() - r[0].as_f64().unwrap();
        let dy = l[1].as_f64().unwrap() - r[1].as_f64().unwrap();
        assert!(
            (dx - 0.35 * 235.0).abs() < 0.5 && dy.abs() < 0.5,
            "eyes {r} {l}"
        );
    }
    assert_eq!(sources.len(), 20);
    // The write order mixes identities: the first 5 samples are not all one person.
    let first: BTreeSet<u64> = samples[..5]
        .iter()
        .map(|s| s["identity"].as_u64().unwrap())
        .collect();
    assert!(first.len() >= 2, "{first:?}");
}

#[test]
fn webdataset_reads_a_decompressed_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("wds");
    let src = shared_data().join("celeba-mini");
    ingest_json(&[
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--detector",
        yunet().to_str().unwrap(),
    ]);
    let shard = out.join("train-000000.tar.zst");
    let tar = tmp.path().join("train-000000.tar");
    let status = std::process::Command::new("zstd")
        .args(["-d", "-q", "-o"])
        .arg(&tar)
        .arg(&shard)
        .status()
        .expect("zstd CLI");
    assert!(status.success());
    const CODE: &str = r#"
import io, json, sys
import webdataset as wds
from PIL import Image
n = 0
keys = set()
for sample in wds.WebDataset(sys.argv[1], shardshuffle=False):
    assert set(sample) >= {"__key__", "jpg", "cls", "json"}, sorted(sample)
    meta = json.loads(sample["json"])
    assert meta["key"] == sample["__key__"], (meta["key"], sample["__key__"])
    assert int(sample["cls"]) == meta["identity"]
    img = Image.open(io.BytesIO(sample["jpg"]))
    assert img.size == (235, 235) and img.mode == "RGB", (img.size, img.mode)
    assert len(meta["attributes"]) == 40 and len(meta["landmarks"]) == 5
    keys.add(sample["__key__"])
    n += 1
# The decoding pipeline users write works too.
decoded = next(iter(wds.WebDataset(sys.argv[1], shardshuffle=False).decode("rgb").to_tuple("jpg", "cls", "json")))
print(json.dumps({"n": n, "keys": len(keys), "shape": list(decoded[0].shape), "cls": int(decoded[1])}))
"#;
    let out = run_python(CODE, &[tar.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["n"], 20, "{report}");
    assert_eq!(report["keys"], 20);
    assert_eq!(report["shape"], serde_json::json!([235, 235, 3]));
    assert!(report["cls"].as_u64().unwrap() < 5);
}
