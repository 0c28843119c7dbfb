//! Helpers shared by the `ingest_*` end-to-end tests (each includes this with `mod ingest_util;`).
#![allow(dead_code)]

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
pub fn ingest_json(args: &[&str]) -> Value {
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
