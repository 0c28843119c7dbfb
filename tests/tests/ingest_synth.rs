//! `d2ae-ingest synth` output through `d2ae-ingest`: the CelebA layout with landmark and factor
//! files (factors reach `index.json` and every sample), and the `--aligned` path.

mod ingest_util;

use ingest_util::*;

#[test]
fn synthetic_celeba_root_with_factors_and_aligned_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = tmp.path().join("synth");
    d2ae_tests::run_ok(
        ingest()
            .args(["synth", "--out", synth.to_str().unwrap()])
            .args([
                "--identities",
                "30",
                "--images-per-identity",
                "3",
                "--folds",
                "2",
                "--pairs-per-fold",
                "2",
                "--seed",
                "1",
            ]),
    );
    assert!(synth.join("list_factors_d2ae.txt").exists());

    // With the generator's landmarks (no detector needed).
    let out = tmp.path().join("shards");
    let summary = ingest_json(&[synth.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(summary["layout"], "celeba");
    assert_eq!(summary["accepted"], 90, "{summary}");
    assert_eq!(summary["identities"], 30);
    let index = read_json(&out.join("index.json"));
    let factors: Vec<&str> = index["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        factors.len() >= 3 && factors.contains(&"pose_yaw"),
        "{factors:?}"
    );
    let samples = read_samples(&out);
    assert_eq!(samples.len(), 90);
    for s in &samples {
        assert_eq!(
            s["factors"].as_object().unwrap().len(),
            factors.len(),
            "{s}"
        );
        assert!(s.get("detector_score").is_none());
        assert_eq!(s["landmarks"].as_array().unwrap().len(), 5);
    }
    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");

    // --aligned: centre crop + resize only, no IPD ratio recorded.
    let aligned = tmp.path().join("aligned");
    let summary = ingest_json(&[
        synth.to_str().unwrap(),
        "--out",
        aligned.to_str().unwrap(),
        "--aligned",
        "--size",
        "112",
    ]);
    assert_eq!(summary["accepted"], 90, "{summary}");
    let index = read_json(&aligned.join("index.json"));
    assert_eq!(index["image"]["aligned"], true);
    assert_eq!(index["image"]["ipd_ratio"], serde_json::Value::Null);
    assert_eq!(index["image"]["width"], 112);
    let samples = read_samples(&aligned);
    assert!(samples
        .iter()
        .all(|s| s["_size"] == serde_json::json!([112, 112])));
}
