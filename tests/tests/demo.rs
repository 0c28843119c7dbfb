//! `scripts/demo` end to end at its default scale: synth → ingest → train `small` → eval → summary.json.
//! Checks the paper's central claim on held-out identities with margins a broken gradient routing
//! (f_P trained for identity, or f_T starved of it) would fail, and that a rerun reuses everything.

use std::path::{Path, PathBuf};
use std::process::Command;

use d2ae_tests::{bin, project_root, run_ok};
use serde_json::Value;

/// The demo's own defaults (60 identities × 24 images, 20 held out, 300 steps of 32 at lr 0.03,
/// the adversary's weight 1),
/// spelled out so the thresholds below stay tied to the run they were calibrated on.
const SCALE: &[&str] = &[
    "--identities",
    "60",
    "--images-per-identity",
    "24",
    "--held-out",
    "20",
    "--steps",
    "300",
    "--batch-size",
    "32",
    "--lr",
    "0.03",
    "--lambda-adv",
    "1.0",
    "--seed",
    "0",
    // One libtorch thread: the run is then bit-identical to the calibration run below. With the
    // demo's 2 threads the float reductions differ, the 300-step trajectory drifts, and one such
    // run flipped the verification order (f_T 0.809 vs f_P 0.828): at this scale the gap is not
    // robust to that (README, docs/BENCHMARKS.md "Demo").
    "--threads",
    "1",
];

fn demo(out: &Path) -> String {
    let bin_dir = bin("d2ae-train").parent().unwrap().to_owned();
    let output = run_ok(
        Command::new(project_root().join("scripts/demo"))
            .arg("--out")
            .arg(out)
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(SCALE),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn number(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("summary.json has no number at {path:?}: {cur}"))
}

fn metrics_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn demo_separates_identity_from_the_rest_and_reruns_for_free() {
    let dir: PathBuf = tempfile::Builder::new()
        .prefix("d2ae-demo")
        .tempdir()
        .unwrap()
        .keep();
    let stdout = demo(&dir);
    let run = dir.join("run-none-seed0");
    let summary_path = run.join("eval/summary.json");
    assert!(
        stdout.contains("| f_T (D2AE-T)"),
        "no summary table:\n{stdout}"
    );
    assert!(run.join("eval/report.md").exists());
    let s: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();

    assert_eq!(s["step"].as_u64(), Some(300));
    assert_eq!(s["pairs"].as_u64(), Some(1000), "10 folds × 100 pairs");
    assert_eq!(
        s["test_rows"].as_u64(),
        Some(20 * 24),
        "the held-out identities' images"
    );
    let independent: Vec<&str> = s["identity_independent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        independent,
        [
            "Eyeglasses",
            "Mouth_Slightly_Open",
            "Smiling",
            "Wearing_Hat"
        ]
    );

    // Calibrated on the run of these settings with `--threads 1` (seed 0, 2026-11-29; the test
    // runs with the demo's 2 threads, which may move the last digits): f_T 0.922 vs f_P 0.850
    // verification; identity-independent attributes f_P 0.668 vs f_T 0.590; hat f_P 0.717 vs
    // f_T 0.521; open mouth f_P 0.646 vs f_T 0.600; background R² f_P 0.26 vs f_T 0.08; the fresh
    // identity probe reads 0.89 (f_T) and 0.93 (f_P) of the validation images (docs/BENCHMARKS.md
    // "Demo": the adversary is fooled, a new probe is not, so no threshold is put on f_P's probe).
    // Identity lives in f_T: verification on held-out identities above f_P's.
    let ver_t = number(&s, &["features", "t", "verification", "accuracy"]);
    let ver_p = number(&s, &["features", "p", "verification", "accuracy"]);
    assert!(ver_t > 0.8, "f_T verification {ver_t}");
    assert!(ver_t > ver_p + 0.04, "f_T {ver_t} vs f_P {ver_p}");
    let probe_t = number(&s, &["features", "t", "identity_probe_accuracy"]);
    assert!(probe_t > 0.5, "identity probe on f_T {probe_t}");
    assert!(
        s["adversary"]["accuracy"].as_f64().is_some(),
        "no adversary accuracy in {s}"
    );
    // The rest lives in f_P: identity-independent attributes (the hat and the open mouth among
    // them) and the background colour.
    let ind_t = number(&s, &["features", "t", "mean_identity_independent_accuracy"]);
    let ind_p = number(&s, &["features", "p", "mean_identity_independent_accuracy"]);
    assert!(
        ind_p > ind_t + 0.04,
        "identity-independent attributes: f_P {ind_p} vs f_T {ind_t}"
    );
    let hat_t = number(&s, &["features", "t", "attributes", "Wearing_Hat"]);
    let hat_p = number(&s, &["features", "p", "attributes", "Wearing_Hat"]);
    assert!(hat_p > hat_t + 0.1, "hat: f_P {hat_p} vs f_T {hat_t}");
    let mouth_t = number(&s, &["features", "t", "attributes", "Mouth_Slightly_Open"]);
    let mouth_p = number(&s, &["features", "p", "attributes", "Mouth_Slightly_Open"]);
    assert!(
        mouth_p > mouth_t,
        "open mouth: f_P {mouth_p} vs f_T {mouth_t}"
    );
    let bg_t = number(&s, &["background_r2", "t"]);
    let bg_p = number(&s, &["background_r2", "p"]);
    assert!(
        bg_p > bg_t + 0.03,
        "background R²: f_P {bg_p} vs f_T {bg_t}"
    );

    // A rerun trains nothing and re-extracts nothing.
    let lines = metrics_lines(&run);
    let features = run.join("eval/features.safetensors");
    let mtime = std::fs::metadata(&features).unwrap().modified().unwrap();
    demo(&dir);
    assert_eq!(metrics_lines(&run), lines, "the rerun trained again");
    assert_eq!(
        std::fs::metadata(&features).unwrap().modified().unwrap(),
        mtime,
        "the rerun re-extracted features"
    );
    let again: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(
        again["features"], s["features"],
        "same checkpoint, same numbers"
    );
}
