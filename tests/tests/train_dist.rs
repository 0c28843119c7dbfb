//! Data-parallel training through the real launcher on the CPU backend:
//! `d2ae-train fit --nproc-per-node 2 --device cpu` runs two ranks over TCP collectives.

use d2ae_tests::{cmd, run_ok, shared_data};
use serde_json::Value;

#[test]
fn two_cpu_ranks_train_and_write_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run_ok(
        cmd("d2ae-ingest")
            .arg(shared_data().join("celeba-mini"))
            .arg("--out")
            .arg(&data)
            .args(["--layout", "celeba", "--detector"])
            .arg(shared_data().join("models/yunet/yunet_s_640_640.onnx")),
    );
    let run = dir.path().join("run");
    let out = run_ok(
        cmd("d2ae-train")
            .args([
                "fit",
                "--data",
                data.to_str().unwrap(),
                "--out",
                run.to_str().unwrap(),
            ])
            .args(["--preset", "small", "--batch-size", "8", "--steps", "6"])
            .args([
                "--checkpoint-every",
                "3",
                "--threads",
                "1",
                "--decode-threads",
                "1",
            ])
            .args([
                "--device",
                "cpu",
                "--nproc-per-node",
                "2",
                "--no-progress",
                "--json",
            ]),
    );
    // Only rank 0 reports, logs and checkpoints.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summaries: Vec<Value> = stdout
        .lines()
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(summaries.len(), 1, "{stdout}");
    assert_eq!(summaries[0]["steps"], 6);
    // Each step covers the global batch of both ranks.
    assert_eq!(summaries[0]["images"], 48);
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    let config: Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["world_size"], 2);
    assert!(run.join("checkpoints/step-00000006.safetensors").exists());
}
