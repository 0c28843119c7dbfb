//! Raw datasets scraped from anywhere: a folder layout with a FIFO named like a photo, a symlink
//! loop, a second link to another identity's folder, a link to a non-image file outside the
//! dataset, and a GIF. Ingest must finish (no hang: the test has a
//! deadline), list each real photo once under its own identity, and give every bad input a
//! reasoned line in `rejects.jsonl` without quoting its bytes.

mod ingest_util;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use d2ae_tests::shared_data;
use ingest_util::*;
use serde_json::Value;

/// Run `cmd`, killing it and failing the test if it takes longer than `limit`.
fn run_with_deadline(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?} (a hang):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn copy_photo(name: &str, to: &Path) {
    let src = shared_data()
        .join("celeba-aligned-5k/img_align_celeba")
        .join(name);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(src, to).unwrap();
}

#[test]
fn a_scraped_folder_ingests_without_hanging_mislabelling_or_leaking() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("raw");
    copy_photo("000093.jpg", &root.join("dave/d1.jpg"));
    copy_photo("000114.jpg", &root.join("dave/d2.jpg"));
    copy_photo("000131.jpg", &root.join("erin/e1.jpg"));
    let fifo = root.join("erin/x.jpg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink("..", root.join("erin/loop")).unwrap();
    std::os::unix::fs::symlink("../dave", root.join("erin/dave-again")).unwrap();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "root:$6$TOPSECRETHASH:19000:0:99999:7:::\n").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("erin/shadow.jpg")).unwrap();
    std::fs::write(
        root.join("erin/anim.gif"),
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,",
    )
    .unwrap();

    let out = tmp.path().join("out");
    let output = run_with_deadline(
        ingest().args([
            root.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--aligned",
            "--size",
            "64",
            "--val-fraction",
            "0",
            "--json",
        ]),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();

    // Each real photo once, under its own folder's identity.
    let samples = read_samples(&out);
    let mut got: Vec<(String, String)> = samples
        .iter()
        .map(|s| {
            (
                s["identity_name"].as_str().unwrap().to_owned(),
                s["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("dave".to_string(), "dave/d1.jpg".to_string()),
            ("dave".into(), "dave/d2.jpg".into()),
            ("erin".into(), "erin/e1.jpg".into()),
        ],
        "{summary}"
    );

    // Every bad input has a reason, and no reject quotes a byte of what it read.
    let rejects = read_rejects(&out);
    let reason = |source: &str| {
        rejects
            .iter()
            .find(|r| r["source"] == source)
            .unwrap_or_else(|| panic!("no reject for {source}: {rejects:#?}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(reason("erin/x.jpg"), "not_a_file");
    assert_eq!(reason("erin/anim.gif"), "unsupported_format");
    assert_eq!(reason("erin/shadow.jpg"), "unsupported_format");
    let text = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    for leak in ["TOPSECRET", "root:", "72, 6f", "726f6f74"] {
        assert!(!text.contains(leak), "{leak} in rejects.jsonl:\n{text}");
    }
    assert_eq!(rejects.len(), 3, "{rejects:#?}");
    let (ok, report) = verify(out.to_str().unwrap(), &[]);
    assert!(ok, "{report}");
}

/// A file-size limit smaller than a shard (`ulimit -f`): ingest stops with the write error and the
/// shard's name, is not killed by SIGXFSZ, and leaves no temporary shard in the destination.
#[test]
fn a_file_size_limit_is_a_clear_error_with_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("raw");
    for (i, name) in ["000093.jpg", "000114.jpg", "000131.jpg", "000149.jpg"]
        .iter()
        .enumerate()
    {
        copy_photo(name, &root.join(format!("p{}/{name}", i % 2)));
    }
    let out = tmp.path().join("out");
    let bin = d2ae_tests::bin("d2ae-ingest");
    // 64 blocks of 512 bytes (dash's unit): less than one 235x235 JPEG.
    let output = run_with_deadline(
        std::process::Command::new("sh").arg("-c").arg(format!(
            "ulimit -f 64; exec '{}' '{}' --out '{}' --aligned --val-fraction 0",
            bin.display(),
            root.display(),
            out.display()
        )),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code().is_some(),
        "killed by a signal: {stderr}"
    );
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("train-000000.tar.zst") && stderr.contains("File too large"),
        "{stderr}"
    );
    // Nothing looks finished (no shard or index in the destination root), and what the run kept
    // under _partial/ is its resume state, with no half-written shard among it.
    let root_files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !root_files
            .iter()
            .any(|n| n.ends_with(".tar.zst") || n == "index.json"),
        "{root_files:?}"
    );
    let partial: Vec<String> = walk(&out.join("_partial"));
    assert!(
        !partial
            .iter()
            .any(|n| n.ends_with(".tar.zst") || n.contains(".tmp") || n.contains('#')),
        "half-written files left: {partial:?}"
    );
}

/// File names under `dir`, recursively.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}
