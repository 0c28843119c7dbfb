//! The `d2ae-loader` binary: stats, cat and bench on a small dataset.

use std::process::Command;

use d2ae_loader::testing::{
    image_spec, synthetic_dataset, synthetic_samples, test_meta, write_dataset, TestSample,
};

fn loader_bin(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_d2ae-loader"))
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn stats_cat_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 40, 15, 32).unwrap();
    let url = dir.path().to_str().unwrap();

    let stats: serde_json::Value =
        serde_json::from_slice(&loader_bin(&["stats", url, "--json"]).stdout).unwrap();
    assert_eq!(stats["samples"], 40);
    assert_eq!(stats["splits"]["train"]["shards"], 3);
    assert_eq!(stats["identities"], 10);
    let human = String::from_utf8(loader_bin(&["stats", url]).stdout).unwrap();
    assert!(
        human.contains("train") && human.contains("40 samples"),
        "{human}"
    );

    let cat = String::from_utf8(loader_bin(&["cat", url, "--limit", "3"]).stdout).unwrap();
    let lines: Vec<serde_json::Value> = cat
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["key"], "s000002");
    assert_eq!(lines[2]["identity"], 2);
    assert_eq!(lines[2]["attributes"]["Even"], 1);

    let bench = loader_bin(&[
        "bench",
        url,
        "--threads",
        "1",
        "--batch-size",
        "8",
        "--json",
    ]);
    let stdout = String::from_utf8(bench.stdout).unwrap();
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object: {stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["images"], 40);
    assert!(report["images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["memory_bound_bytes"].as_u64().unwrap() > 0);

    let err = Command::new(env!("CARGO_BIN_EXE_d2ae-loader"))
        .args(["cat", url, "--split", "nope"])
        .output()
        .unwrap();
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("\"nope\"") && msg.contains("train"), "{msg}");
}

#[test]
fn a_password_in_the_endpoint_is_not_echoed_in_errors() {
    // Nothing listens on port 1: the request fails at once, and its error names the endpoint.
    let out = Command::new(env!("CARGO_BIN_EXE_d2ae-loader"))
        .args([
            "stats",
            "s3://bucket/data",
            "--endpoint",
            "http://ann:s3cret@127.0.0.1:1",
            "--idle-timeout",
            "1",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("http://ann:***@127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// A shard of a few hundred KB whose `.jpg` members are 60 MiB of zeros each (under the format's
/// 64 MiB member cap): every such member is refused unread, by the limit the index's 32×32 image
/// size sets, and named; the real samples are still served; memory stays under a 1.5 GiB
/// address-space cap (the old reader queue and shuffle buffer held gigabytes).
#[test]
fn a_shard_of_giant_zero_members_is_refused_member_by_member_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut samples = synthetic_samples(4, 32, 10, "train", "jpg");
    let zeros = vec![0u8; 60 << 20];
    for i in 4..20 {
        let mut bomb = TestSample::new(&test_meta(i, 10, "train"), "jpg", Vec::new());
        bomb.members[0].1 = zeros.clone();
        samples.push(bomb);
    }
    // Interleave: a real sample after the bombs too.
    samples.swap(3, 19);
    write_dataset(
        dir.path(),
        &[("train", samples)],
        20,
        image_spec(32, "jpg"),
        10,
    )
    .unwrap();
    let shard = std::fs::metadata(dir.path().join("train-000000.tar.zst")).unwrap();
    assert!(shard.len() < 2 << 20, "{} bytes", shard.len());

    let bin = env!("CARGO_BIN_EXE_d2ae-loader");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1572864; exec '{bin}' cat '{}'",
            dir.path().display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys, ["s000000", "s000001", "s000002", "s000003"]);
    assert!(
        stderr.contains("62914560 bytes, over the") && stderr.contains("s000004"),
        "{stderr}"
    );
}
