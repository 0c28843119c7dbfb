//! Helpers shared by the `ingest_*` end-to-end tests (each includes this with `mod ingest_util;`).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use d2ae_tests::{cmd, run_ok, run_python, shared_data};
use serde_json::Value;

/// The YuNet model the tests detect with.
pub fn yunet() -> PathBuf {
    shared_data().join("models/yunet/yunet_s_640_640.onnx")
}

/// `d2ae-ingest` with logging quiet.
pub fn ingest() -> Command {
    let mut c = cmd("d2ae-ingest");
    c.env("RUST_LOG", "warn");
    c
}

/// Run an ingest with `--json` and return its summary.
pub fn ingest_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Value {
    let out = run_ok(ingest().args(args).arg("--json"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `d2ae-ingest verify --json` on `url`; returns (exit status ok, report).
pub fn verify(url: &str, extra: &[&str]) -> (bool, Value) {
    let out: Output = ingest()
        .args(["verify", url, "--json"])
        .args(extra)
        .output()
        .expect("run verify");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Read and parse a JSON file.
pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Lines of `rejects.jsonl` as JSON values.
pub fn read_rejects(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("rejects.jsonl"))
        .expect("rejects.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("reject line is JSON"))
        .collect()
}

/// Every sample of every shard listed in `dir/index.json`, as the JSON metadata plus the image
/// size and the `.cls` value, read by Python's tarfile over `zstd -dc`.
pub fn read_samples(dir: &Path) -> Vec<Value> {
    const CODE: &str = r#"
import io, json, subprocess, sys, tarfile
from PIL import Image
root = sys.argv[1]
index = json.load(open(root + "/index.json"))
out = []
for split, s in index["splits"].items():
    for shard in s["shards"]:
        raw = subprocess.run(["zstd", "-dc", root + "/" + shard["name"]], check=True, capture_output=True).stdout
        members = {}
        order = []
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                if key not in members:
                    members[key] = {}
                    order.append(key)
                members[key][ext] = tar.extractfile(m).read()
        for key in order:
            m = members[key]
            meta = json.loads(m["json"])
            img = Image.open(io.BytesIO(m[index["image"]["ext"]]))
            meta["_cls"] = int(m["cls"])
            meta["_size"] = list(img.size)
            meta["_mode"] = img.mode
            meta["_shard"] = shard["name"]
            out.append(meta)
print(json.dumps(out))
"#;
    let out = run_python(CODE, &[dir.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Names of the `.tar.zst` files in `dir`, sorted.
pub fn shard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    names.sort();
    names
}

/// Assert two dataset folders hold byte-identical shards, index and rejects.
pub fn assert_same_dataset(a: &Path, b: &Path) {
    let (sa, sb) = (shard_files(a), shard_files(b));
    assert_eq!(sa, sb, "shard lists differ");
    assert!(!sa.is_empty());
    for name in sa
        .iter()
        .map(String::as_str)
        .chain(["index.json", "rejects.jsonl"])
    {
        let (x, y) = (
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
        );
        assert!(
            x == y,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// A folder-layout dataset of symlinks `root/<identity>/<n>.jpg` to the CelebA mini photos
/// (identity = CelebA id), `copies` links per photo under distinct names.
pub fn celeba_folders(root: &Path, copies: usize) -> usize {
    let data = shared_data().join("celeba-mini");
    let ids = std::fs::read_to_string(data.join("identity_CelebA.txt")).unwrap();
    let mut n = 0;
    for line in ids.lines().filter(|l| !l.trim().is_empty()) {
        let (image, id) = line.split_once(' ').unwrap();
        let dir = root.join(format!("id{}", id.trim()));
        std::fs::create_dir_all(&dir).unwrap();
        for c in 0..copies {
            let stem = image.trim_end_matches(".jpg");
            std::os::unix::fs::symlink(
                data.join("images").join(image),
                dir.join(format!("{stem}_{c}.jpg")),
            )
            .unwrap();
            n += 1;
        }
    }
    n
}

/// A seeded synthetic CelebA root at `root`: `identities` × 4 photos with landmarks, no held-out
/// identities and no pairs (`d2ae-ingest synth`).
pub fn synth_celeba(root: &Path, identities: usize, seed: u64) {
    run_ok(
        ingest()
            .args(["synth", "--out", root.to_str().unwrap()])
            .args(["--identities", &identities.to_string()])
            .args(["--images-per-identity", "4", "--held-out-identities", "0"])
            .args(["--folds", "0", "--seed", &seed.to_string()]),
    );
}

/// Arguments of an ingest of `src` into `out` in 20 KB shards (dozens of them for the
/// 200-photo sets of [`synth_celeba`]), so a run can be interrupted between shards.
pub fn small_shard_args(src: &Path, out: &str, workers: &str) -> Vec<String> {
    [
        src.to_str().unwrap(),
        "--out",
        out,
        "--shard-size",
        "20KB",
        "--workers",
        workers,
    ]
    .map(str::to_owned)
    .to_vec()
}

// Reading a bucket on the S3 test server directly, past the tool under test.

/// GET `url` with curl (moto answers unsigned reads).
pub fn curl(url: &str) -> Vec<u8> {
    run_ok(Command::new("curl").args(["-fsS", url])).stdout
}

/// The texts of every `<tag>` element in an XML answer.
pub fn xml_texts(xml: &[u8], tag: &str) -> Vec<String> {
    let xml = String::from_utf8_lossy(xml);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(text, _)| text.to_owned()))
        .collect()
}

/// Keys under `prefix` in `bucket` (fewer than 1000 here, so one page), relative to the prefix.
pub fn list(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let xml = curl(&format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}/"));
    let mut keys: Vec<String> = xml_texts(&xml, "Key")
        .into_iter()
        .map(|k| {
            k.strip_prefix(&format!("{prefix}/"))
                .unwrap_or(&k)
                .to_owned()
        })
        .collect();
    keys.sort();
    keys
}

/// Check that every shard listed in the bucket equals the uninterrupted run's shard of that name
/// (fetching each name once); returns how many are listed.
pub fn check_visible_shards(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    reference: &Path,
    checked: &mut BTreeSet<String>,
) -> usize {
    let keys = list(endpoint, bucket, prefix);
    let shards: Vec<&String> = keys.iter().filter(|k| k.ends_with(".tar.zst")).collect();
    for name in &shards {
        assert!(!name.contains('/'), "shard outside the root: {name}");
        if checked.insert((*name).clone()) {
            let body = curl(&format!("{endpoint}/{bucket}/{prefix}/{name}"));
            let expected = std::fs::read(reference.join(name))
                .unwrap_or_else(|e| panic!("{name} is not a shard of the reference run: {e}"));
            assert!(
                body == expected,
                "{name} is visible with {} bytes, the complete shard has {}",
                body.len(),
                expected.len()
            );
        }
    }
    shards.len()
}

/// Download every object under a prefix (boto3): endpoint, bucket, prefix, local folder.
const DOWNLOAD: &str = r#"
import boto3, os, sys
endpoint, bucket, prefix, out = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]:
    path = os.path.join(out, o["Key"][len(prefix) + 1:])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s3.download_file(bucket, o["Key"], path)
"#;

/// Download every object under `prefix` of `bucket` into `out` with boto3 (moto answers unsigned
/// reads of shards, which the polling helpers rely on for speed, but not of every object).
pub fn download(endpoint: &str, bucket: &str, prefix: &str, out: &Path) {
    run_python(DOWNLOAD, &[endpoint, bucket, prefix, out.to_str().unwrap()]);
}
