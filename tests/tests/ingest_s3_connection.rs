//! An ingest to a real S3-compatible server (moto on 127.0.0.1) whose connection breaks midway,
//! through a proxy the test cuts:
//! - connections dropped a few times while shards upload: the client retries, and the bucket ends
//!   up with exactly the dataset an undisturbed run writes;
//! - the answer to completing an upload lost after the server completed it: the client retries,
//!   the shard is in place once, and the run goes on;
//! - the bucket unreachable for good: the run stops with a message naming the destination, no
//!   shard is visible unless whole, and a rerun once it is reachable again resumes to the same
//!   dataset.

mod ingest_util;

use std::collections::BTreeSet;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use d2ae_tests::{FlakyProxy, S3Server};
use ingest_util::*;
use serde_json::Value;

/// The dataset's prefix in the bucket.
const PREFIX: &str = "d";

/// 50 identities × 4 photos of the generator, ingested locally as the reference; a fresh bucket
/// on the S3 server, reached through a proxy.
struct Setup {
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    reference: std::path::PathBuf,
    shards: usize,
    server: S3Server,
    proxy: FlakyProxy,
    bucket: String,
    /// `s3://<bucket>/<PREFIX>`
    url: String,
}

impl Setup {
    fn new(bucket_stem: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        synth_celeba(&src, 50, 4);
        let reference = tmp.path().join("reference");
        let full = ingest_json(&small_shard_args(&src, reference.to_str().unwrap(), "1"));
        assert_eq!(full["accepted"], 200, "{full}");
        let shards = full["shards"].as_u64().unwrap() as usize;
        assert!(shards >= 40, "{full}");
        let server = S3Server::start();
        let proxy = FlakyProxy::start(&server.endpoint);
        let bucket = server.bucket(bucket_stem);
        let url = format!("s3://{bucket}/{PREFIX}");
        Setup {
            _tmp: tmp,
            src,
            reference,
            shards,
            server,
            proxy,
            bucket,
            url,
        }
    }

    /// Start an ingest to the bucket through the proxy, with `extra` flags.
    fn spawn(&self, extra: &[&str]) -> Child {
        ingest()
            .args(small_shard_args(&self.src, &self.url, "1"))
            .args(["--endpoint", &self.proxy.endpoint, "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The bucket now holds exactly the reference run's files, byte for byte.
    fn assert_bucket_is_the_reference(&self) {
        let mut expected = shard_files(&self.reference);
        expected.extend(["index.json".to_owned(), "rejects.jsonl".to_owned()]);
        expected.sort();
        assert_eq!(self.keys(), expected);
        let fetched = self._tmp.path().join("fetched");
        download(&self.server.endpoint, &self.bucket, PREFIX, &fetched);
        assert_same_dataset(&self.reference, &fetched);
    }

    /// The keys under the prefix, read from the server directly.
    fn keys(&self) -> Vec<String> {
        list(&self.server.endpoint, &self.bucket, PREFIX)
    }
}

/// Wait for `child` to exit, at most `limit`.
fn wait(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the ingest did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dropped_connections_are_retried_and_the_bucket_gets_the_whole_dataset() {
    let setup = Setup::new("flaky");
    let proxy = &setup.proxy;

    let mut child = setup.spawn(&[]);
    // Cut every connection each time another 40 kB has gone up, five times, while the run goes on.
    let (mut cuts, mut next) = (0, 40_000);
    let deadline = Instant::now() + Duration::from_secs(120);
    while cuts < 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended after only {cuts} cuts"
        );
        if proxy.upstream_bytes() >= next {
            proxy.drop_connections();
            cuts += 1;
            next = proxy.upstream_bytes() + 40_000;
        }
        assert!(Instant::now() < deadline, "no progress within 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = wait(child, Duration::from_secs(180));
    let done = summary(&out);
    assert_eq!(done["accepted"], 200, "{done}");
    assert_eq!(done["shards"], setup.shards as u64, "{done}");
    setup.assert_bucket_is_the_reference();
}

#[test]
fn a_lost_answer_to_completing_an_upload_still_lands_the_shard() {
    let setup = Setup::new("lost");
    let proxy = &setup.proxy;

    proxy.lose_answers_to(&["POST ", "uploadId="], 2);
    let out = wait(setup.spawn(&[]), Duration::from_secs(180));
    let done = summary(&out);
    assert_eq!(proxy.answers_lost(), 2);
    // moto answers the retried completion with success; a store that answers "no such upload"
    // takes the sink's other path (a HEAD finds the whole shard in place, and a warning says so).
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(done["accepted"], 200, "{done}");
    setup.assert_bucket_is_the_reference();
}

#[test]
fn an_unreachable_bucket_stops_the_run_cleanly_and_a_rerun_resumes() {
    let setup = Setup::new("gone");
    let proxy = &setup.proxy;
    let receipts = || {
        setup
            .keys()
            .iter()
            .filter(|k| k.starts_with("_partial/receipts/"))
            .count()
    };

    let mut child = setup.spawn(&["--max-retries", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while receipts() < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingest finished before the bucket could be cut off"
        );
        assert!(Instant::now() < deadline, "no progress within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.refuse();
    let started = Instant::now();
    let out = wait(child, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run cannot succeed: {err}");
    assert!(
        err.contains(&setup.url) && err.contains("cannot"),
        "the error names the destination: {err}"
    );
    eprintln!(
        "stopped {:.1} s after the cut: {}",
        started.elapsed().as_secs_f64(),
        err.trim()
    );

    // Nothing half-written is visible and the run does not look complete.
    let keys = setup.keys();
    assert!(
        !keys
            .iter()
            .any(|k| k == "index.json" || k == "rejects.jsonl"),
        "{keys:?}"
    );
    let mut checked = BTreeSet::new();
    let visible = check_visible_shards(
        &setup.server.endpoint,
        &setup.bucket,
        PREFIX,
        &setup.reference,
        &mut checked,
    );
    let done = receipts();
    assert!(done >= 3 && visible >= done, "{keys:?}");
    assert!(done < setup.shards, "cut off too late: {keys:?}");

    proxy.restore();
    let resumed = summary(&wait(setup.spawn(&[]), Duration::from_secs(180)));
    assert_eq!(resumed["resumed_shards"], done as u64, "{resumed}");
    assert_eq!(resumed["accepted"], 200, "{resumed}");
    assert_eq!(resumed["shards"], setup.shards as u64, "{resumed}");
    setup.assert_bucket_is_the_reference();
}
