//! A destination that fails mid-run: the file-size limit (`ulimit -f`, with SIGXFSZ ignored so the
//! write returns EFBIG) stands in for a full disk. The run must stop with a message naming the
//! shard, leave only complete shards and temporary files, and a rerun without the limit must finish
//! the dataset an uninterrupted run writes.

mod ingest_util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ingest_util::*;

/// Bytes per `ulimit -f` block.
const BLOCK: u64 = 512;

/// The first shard `k ≥ 1` that would not fit under a per-file limit that all shards before it fit
/// under, and that limit in blocks.
fn limit_failing_at(sizes: &[u64]) -> Option<(usize, u64)> {
    let blocks = |b: u64| b.div_ceil(BLOCK);
    (1..sizes.len()).find_map(|k| {
        let limit = sizes[..k].iter().map(|&b| blocks(b)).max()?;
        (blocks(sizes[k]) > limit).then_some((k, limit))
    })
}

#[test]
fn a_write_failure_stops_cleanly_and_a_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    synth_celeba(&src, 20, 3);
    let args = |out: &Path| -> Vec<String> {
        [
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--shard-size",
            "30KB",
            "--workers",
            "2",
        ]
        .map(str::to_owned)
        .to_vec()
    };

    let reference = tmp.path().join("reference");
    let full = ingest_json(
        &args(&reference)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(full["accepted"], 80, "{full}");
    let index = read_json(&reference.join("index.json"));
    let shards: Vec<(String, u64)> = index["splits"]["train"]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let sizes: Vec<u64> = shards.iter().map(|s| s.1).collect();
    let (fails_at, limit) = limit_failing_at(&sizes)
        .unwrap_or_else(|| panic!("no shard outgrows the ones before it: {sizes:?}"));
    assert!(fails_at + 1 < shards.len(), "{fails_at} is the last shard");
    // The small objects must fit, so that the shard is what fails.
    assert!(
        std::fs::metadata(reference.join("index.json"))
            .unwrap()
            .len()
            <= limit * BLOCK
    );

    let out = tmp.path().join("out");
    let res = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"ulimit -f {limit}; trap "" XFSZ; exec "$0" "$@""#
        ))
        .arg(d2ae_tests::bin("d2ae-ingest"))
        .args(args(&out))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "the limited run succeeded: {stderr}");
    let failed = &shards[fails_at].0;
    assert!(
        stderr.contains(&format!("cannot write shard {failed}"))
            && stderr.contains(out.to_str().unwrap())
            && stderr.contains("File too large"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("File too large").count(),
        1,
        "the cause is said once: {stderr}"
    );

    // Only the shards before the failure are in place, whole; nothing else has a final name.
    assert_eq!(
        shard_files(&out),
        shards[..fails_at]
            .iter()
            .map(|s| s.0.clone())
            .collect::<Vec<_>>()
    );
    for (name, _) in &shards[..fails_at] {
        assert!(
            std::fs::read(out.join(name)).unwrap() == std::fs::read(reference.join(name)).unwrap(),
            "{name} differs from the uninterrupted run's"
        );
    }
    let mut top: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".tar.zst"))
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["_partial"],
        "no index.json, rejects.jsonl or staging file"
    );
    for entry in std::fs::read_dir(out.join("_partial")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ["receipts", "run.json"].contains(&name.as_str()) || name.ends_with(".tmp"),
            "unexpected {name} in _partial/"
        );
    }

    // The rerun without the limit resumes after the complete shards and finishes the dataset.
    let resumed = ingest_json(&args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(resumed["resumed_shards"], fails_at as u64, "{resumed}");
    assert_same_dataset(&reference, &out);
    assert!(!out.join("_partial").exists());
    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");
    assert_eq!(report["samples"], 80);
    let samples = read_samples(&out);
    let keys: BTreeSet<&str> = samples.iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(
        (keys.len(), samples.len()),
        (80, 80),
        "a sample lost or duplicated"
    );
}
