//! Ingest to a real S3-compatible server (moto on 127.0.0.1), list the bucket, verify from it.

mod ingest_util;

use d2ae_tests::{run_python, shared_data, S3Server};
use ingest_util::*;

#[test]
fn ingest_to_s3_then_list_and_verify() {
    let server = S3Server::start();
    let bucket = server.bucket("ingest");
    let url = format!("s3://{bucket}/datasets/celeba");
    let src = shared_data().join("celeba-mini");
    let summary = ingest_json(&[
        src.to_str().unwrap(),
        "--out",
        &url,
        "--endpoint",
        &server.endpoint,
        "--detector",
        yunet().to_str().unwrap(),
        "--shard-size",
        "200KB",
    ]);
    assert_eq!(summary["accepted"], 20, "{summary}");
    let shards = summary["shards"].as_u64().unwrap();
    assert!(shards >= 2);

    // List the bucket and fetch the first shard with boto3 (moto refuses unsigned requests).
    const LIST: &str = r#"
import boto3, hashlib, json, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=sys.argv[2], Prefix="datasets/celeba/")["Contents"]]
body = s3.get_object(Bucket=sys.argv[2], Key="datasets/celeba/train-000000.tar.zst")["Body"].read()
print(json.dumps({"keys": keys, "sha256": hashlib.sha256(body).hexdigest()}))
"#;
    let listed = run_python(LIST, &[&server.endpoint, &bucket]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let keys: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&"datasets/celeba/index.json"), "{keys:?}");
    assert!(keys.contains(&"datasets/celeba/rejects.jsonl"), "{keys:?}");
    for n in 0..shards {
        let name = format!("datasets/celeba/train-{n:06}.tar.zst");
        assert!(keys.contains(&name.as_str()), "{name} not in {keys:?}");
    }
    assert_eq!(
        keys.len() as u64,
        shards + 2,
        "nothing else (no _partial state) is left: {keys:?}"
    );

    let (ok, report) = verify(&url, &["--endpoint", &server.endpoint]);
    assert!(ok, "{report}");
    assert_eq!(report["samples"], 20);
    assert_eq!(report["shards"], shards);

    // The same dataset read back through the bucket equals a local ingest of it.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    ingest_json(&[
        src.to_str().unwrap(),
        "--out",
        local.to_str().unwrap(),
        "--detector",
        yunet().to_str().unwrap(),
        "--shard-size",
        "200KB",
    ]);
    let local_index = read_json(&local.join("index.json"));
    assert_eq!(
        listed["sha256"], local_index["splits"]["train"]["shards"][0]["sha256"],
        "the bucket's shard equals the local one"
    );
}

#[test]
fn a_missing_bucket_stops_the_run_with_a_clear_message() {
    let server = S3Server::start();
    let src = shared_data().join("celeba-mini");
    let res = ingest()
        .arg(&src)
        .args([
            "--out",
            "s3://no-such-bucket-d2ae/x",
            "--endpoint",
            &server.endpoint,
        ])
        .args(["--detector", yunet().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("s3://no-such-bucket-d2ae/x") && err.contains("cannot"),
        "{err}"
    );
}
