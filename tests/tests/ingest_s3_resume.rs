//! Kill an ingest to a real S3-compatible server (moto on 127.0.0.1) midway, rerun it, and get
//! exactly the dataset an uninterrupted run writes. While it runs, every shard object the bucket
//! lists under its final name must already be complete: the multipart upload is invisible until
//! it is completed.

mod ingest_util;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use d2ae_tests::S3Server;
use ingest_util::*;

#[test]
fn killed_ingest_to_s3_resumes_to_the_uninterrupted_result() {
    let server = S3Server::start();
    let bucket = server.bucket("resume");
    let prefix = "runs/synth";
    let url = format!("s3://{bucket}/{prefix}");

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    synth_celeba(&src, 50, 4);
    let args = |out: &str, workers: &str| -> Vec<String> {
        let mut a = small_shard_args(&src, out, workers);
        if out.starts_with("s3://") {
            a.extend(["--endpoint".to_owned(), server.endpoint.clone()]);
        }
        a
    };
    let run = |a: Vec<String>| ingest_json(&a);

    let reference = tmp.path().join("reference");
    let full = run(args(reference.to_str().unwrap(), "2"));
    assert_eq!(full["accepted"], 200, "{full}");
    let total_shards = full["shards"].as_u64().unwrap() as usize;
    assert!(total_shards >= 40, "{full}");

    // Start the ingest to the bucket on one worker and kill it once a few shards are complete,
    // checking all along that no shard is visible before it is whole.
    let mut child = ingest()
        .args(args(&url, "1"))
        .arg("--json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut checked = BTreeSet::new();
    let receipts = |keys: &[String]| {
        keys.iter()
            .filter(|k| k.starts_with("_partial/receipts/"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        check_visible_shards(&server.endpoint, &bucket, prefix, &reference, &mut checked);
        if receipts(&list(&server.endpoint, &bucket, prefix)) >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingest finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let keys = list(&server.endpoint, &bucket, prefix);
    assert!(
        !keys
            .iter()
            .any(|k| k == "index.json" || k == "rejects.jsonl"),
        "a killed run must not look complete: {keys:?}"
    );
    let visible = check_visible_shards(&server.endpoint, &bucket, prefix, &reference, &mut checked);
    let done = receipts(&keys);
    assert!(done >= 3 && visible >= done, "{keys:?}");
    assert!(done < total_shards, "killed too late: {keys:?}");
    // For the record: the shard being written when killed is an unfinished multipart upload.
    let uploads = xml_texts(
        &curl(&format!("{}/{bucket}?uploads", server.endpoint)),
        "Key",
    );
    eprintln!("killed after {done} receipts; {visible} shards visible; open uploads {uploads:?}");

    let resumed = run(args(&url, "2"));
    assert_eq!(resumed["resumed_shards"], done as u64, "{resumed}");
    assert!(resumed["processed"].as_u64().unwrap() < 200, "{resumed}");
    assert_eq!(resumed["accepted"], 200, "{resumed}");
    assert_eq!(resumed["shards"], total_shards as u64, "{resumed}");

    // The bucket now holds exactly the uninterrupted run's files, byte for byte.
    let keys = list(&server.endpoint, &bucket, prefix);
    let mut expected: Vec<String> = shard_files(&reference);
    expected.extend(["index.json".to_owned(), "rejects.jsonl".to_owned()]);
    expected.sort();
    assert_eq!(
        keys, expected,
        "no _partial state or stray objects are left"
    );
    // Fetched with boto3 (moto answers unsigned reads of the shards, which the polling above
    // relies on for speed, but not of every object), it is the uninterrupted run's dataset.
    let fetched = tmp.path().join("fetched");
    download(&server.endpoint, &bucket, prefix, &fetched);
    assert_same_dataset(&reference, &fetched);
    let (ok, report) = verify(&url, &["--endpoint", &server.endpoint]);
    assert!(ok, "{report}");
    assert_eq!(report["samples"], 200);
    assert_eq!(report["shards"], total_shards as u64);

    // Each of the 200 keys exactly once.
    let samples = read_samples(&fetched);
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for sample in &samples {
        *per_key.entry(sample["key"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(per_key.len(), 200);
    assert!(per_key.values().all(|&n| n == 1), "duplicates: {per_key:?}");
}
