//! Kill an ingest midway (SIGKILL), rerun it, and get exactly the dataset an uninterrupted run
//! writes: no sample lost or duplicated, and the shards finished before the kill left untouched.

mod ingest_util;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use ingest_util::*;

#[test]
fn killed_ingest_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let n = celeba_folders(&src, 3);
    assert_eq!(n, 60);
    let args = |out: &std::path::Path, workers: &str| -> Vec<String> {
        [
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--detector",
            yunet().to_str().unwrap(),
            "--shard-size",
            "40KB",
            "--val-fraction",
            "0.1",
            "--workers",
            workers,
        ]
        .map(str::to_owned)
        .to_vec()
    };

    let reference = tmp.path().join("reference");
    let full = ingest_json(
        &args(&reference, "2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        full["accepted"].as_u64().unwrap() + full["rejected"].as_u64().unwrap(),
        60
    );

    // Start the same ingest elsewhere and kill it once a few shards are complete.
    let out = tmp.path().join("killed");
    let mut child = ingest()
        .args(args(&out, "1"))
        .arg("--json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let receipts = out.join("_partial/receipts");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = std::fs::read_dir(&receipts).map(|d| d.count()).unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingest finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("index.json").exists(),
        "a killed run must not look complete"
    );
    // The shards the receipts vouch for are complete and must survive untouched.
    let mut before: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for entry in std::fs::read_dir(&receipts).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let receipt = read_json(&path);
            let name = receipt["shard"]["name"].as_str().unwrap().to_owned();
            let m = std::fs::metadata(out.join(&name)).unwrap();
            before.insert(name, (m.ino(), m.mtime_nsec()));
        }
    }
    assert!(before.len() >= 3, "{before:?}");
    assert!(
        before.len() < full["shards"].as_u64().unwrap() as usize,
        "killed too late: {before:?}"
    );

    let resumed = ingest_json(
        &args(&out, "2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        resumed["resumed_shards"].as_u64().unwrap() as usize,
        before.len(),
        "{resumed}"
    );
    assert!(resumed["processed"].as_u64().unwrap() < 60, "{resumed}");
    assert_eq!(resumed["accepted"], full["accepted"]);
    for (name, id) in &before {
        let m = std::fs::metadata(out.join(name)).unwrap();
        assert_eq!((m.ino(), m.mtime_nsec()), *id, "{name} was rewritten");
    }

    assert_same_dataset(&reference, &out);
    assert!(!out.join("_partial").exists());
    let samples = read_samples(&out);
    let keys: BTreeSet<&str> = samples.iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), samples.len(), "duplicate samples");
    assert_eq!(samples.len() as u64, full["accepted"].as_u64().unwrap());
    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");

    // Rerunning a finished ingest does nothing.
    let again = ingest_json(
        &args(&out, "2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(again["already_complete"], true);
    assert_same_dataset(&reference, &out);

    // Other settings against the same destination are refused rather than mixed in.
    let res = ingest()
        .args(args(&out, "2"))
        .args(["--seed", "9"])
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("already holds a different dataset"));
}
