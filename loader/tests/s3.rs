//! Reading from a real S3-compatible server (moto, via the d2ae-tests harness).

use d2ae_loader::testing::{synthetic_dataset, upload_dir};
use d2ae_loader::{BlockingLoader, Dataset, LoaderConfig, LoaderError};
use d2ae_shard::{open_dataset, StoreOptions};
use d2ae_tests::S3Server;

#[test]
fn streams_a_split_from_a_bucket_like_from_disk() {
    let server = S3Server::start();
    let bucket = server.bucket("loader");
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 50, 12, 32).unwrap();
    let store = StoreOptions {
        endpoint: Some(server.endpoint.clone()),
        max_retries: Some(2),
        ..Default::default()
    };
    let url = format!("s3://{bucket}/datasets/synth");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let location = open_dataset(&url, &store).unwrap();
    let uploaded = rt.block_on(upload_dir(dir.path(), &location)).unwrap();
    assert_eq!(uploaded, 6, "5 shards and index.json");
    let index = rt
        .block_on(Dataset::open(&url, &store))
        .unwrap()
        .index()
        .clone();
    assert_eq!(index.split("train").unwrap().num_samples, 50);
    drop(rt);

    let config = LoaderConfig {
        store: store.clone(),
        ..LoaderConfig::eval("train", 8)
    };
    let mut from_s3 = BlockingLoader::open(&url, config.clone(), None).unwrap();
    let s3: Vec<_> = from_s3.by_ref().map(|b| b.unwrap()).collect();
    let metrics = from_s3.metrics();
    let local: Vec<_> = BlockingLoader::open(dir.path().to_str().unwrap(), config.clone(), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(s3.iter().map(|b| b.n).sum::<usize>(), 50);
    assert_eq!(s3, local, "same batches from the bucket and from disk");
    let compressed: u64 = index
        .split("train")
        .unwrap()
        .shards
        .iter()
        .map(|s| s.bytes)
        .sum();
    assert_eq!(
        metrics.bytes_read, compressed,
        "every shard streamed exactly once"
    );
    assert_eq!(metrics.shards_done, 5);

    // A missing shard in the bucket: retried, then a clear error naming it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use object_store::ObjectStoreExt;
        location
            .store
            .delete(&location.child("train-000003.tar.zst"))
            .await
            .unwrap();
    });
    drop(rt);
    let config = LoaderConfig {
        fetch_attempts: 2,
        fetch_backoff: std::time::Duration::from_millis(10),
        ..config
    };
    let err = BlockingLoader::open(&url, config, None)
        .unwrap()
        .find_map(Result::err)
        .expect("the missing shard is reported");
    assert!(matches!(err, LoaderError::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("train-000003.tar.zst"), "{err}");
}

/// A server that accepts connections and then says nothing (frozen, as under SIGSTOP): the
/// request fails after the idle timeout and its retries stop after twice that, so the user hears
/// of it in seconds, not after minutes of silence.
#[test]
fn a_silent_server_is_reported_within_the_idle_timeout() {
    // Real credentials are never needed: the server never gets to check them.
    let _server = S3Server::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn); // keep the socket open, never answer
        }
    });
    let store = StoreOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        max_retries: Some(2),
        idle_timeout: Some(std::time::Duration::from_secs(1)),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let Err(err) = rt.block_on(Dataset::open("s3://frozen/datasets/x", &store)) else {
        panic!("a frozen server cannot serve an index");
    };
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(20),
        "took {waited:?} to give up"
    );
    let msg = err.to_string();
    assert!(msg.contains("s3://frozen/datasets/x"), "{msg}");
}
