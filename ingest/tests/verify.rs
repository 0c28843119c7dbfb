//! `d2ae-ingest verify` on shards built member by member: the loader's member-name rule, each
//! kind of misplaced member reported, a truncated shard, and a zip-bomb shard checked within a
//! small address space.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use d2ae_ingest::sink::StoreArgs;
use d2ae_ingest::verify::verify;
use d2ae_shard::{
    encode_class, member_name, DatasetIndex, IdentityEntry, ImageSpec, SampleMeta, ShardEntry,
    ShardWriter, SplitIndex, FORMAT_NAME, FORMAT_VERSION, INDEX_FILE, REJECTS_FILE,
};

/// The `.json` member of sample `key` (identity 0, split `train`).
fn meta(key: &str) -> Vec<u8> {
    serde_json::to_vec(&SampleMeta {
        key: key.into(),
        identity: 0,
        identity_name: "ann".into(),
        source: format!("{key}.jpg"),
        split: "train".into(),
        landmarks: vec![],
        detector_score: None,
        attributes: BTreeMap::new(),
        factors: BTreeMap::new(),
    })
    .unwrap()
}

/// The three members of a well-formed sample of `key`: an 8×8 JPEG, `.cls`, `.json`.
fn sample(key: &str) -> Vec<(String, Vec<u8>)> {
    let image = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 60]));
    vec![
        (
            member_name(key, "jpg"),
            d2ae_ingest::image_io::encode_jpeg(&image, 90).unwrap(),
        ),
        (member_name(key, "cls"), encode_class(0)),
        (member_name(key, "json"), meta(key)),
    ]
}

/// A one-shard dataset of `members` (in that order, 8×8 JPEGs) whose index claims `claimed`
/// samples.
fn dataset(dir: &Path, members: &[(String, Vec<u8>)], claimed: u64) {
    let mut w = ShardWriter::new(Vec::new()).unwrap();
    for (name, data) in members {
        w.append_member(name, data).unwrap();
    }
    let (bytes, written) = w.finish().unwrap();
    std::fs::write(dir.join("train-000000.tar.zst"), &bytes).unwrap();
    let index = DatasetIndex {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        tool_version: "test".into(),
        config: serde_json::json!({}),
        image: ImageSpec {
            width: 8,
            height: 8,
            ext: "jpg".into(),
            ipd_ratio: None,
            aligned: true,
        },
        splits: BTreeMap::from([(
            "train".to_owned(),
            SplitIndex {
                num_samples: claimed,
                shards: vec![ShardEntry {
                    name: "train-000000.tar.zst".into(),
                    num_samples: claimed,
                    bytes: written.bytes,
                    sha256: written.sha256,
                }],
            },
        )]),
        identities: vec![IdentityEntry {
            index: 0,
            name: "ann".into(),
            num_images: claimed,
        }],
        attributes: vec![],
        factors: vec![],
        rejects: BTreeMap::new(),
    };
    std::fs::write(dir.join(INDEX_FILE), index.to_json()).unwrap();
    std::fs::write(dir.join(REJECTS_FILE), b"").unwrap();
}

/// The problems `verify` finds in `dir`, as text.
fn problems(dir: &Path) -> Vec<String> {
    let report = verify(dir.to_str().unwrap(), &StoreArgs::default(), 1, false).unwrap();
    report.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn keys_with_dotted_directories_follow_the_loaders_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = sample("v1.2/ann_0001");
    members.extend(sample("plain"));
    dataset(dir.path(), &members, 2);
    assert_eq!(problems(dir.path()), Vec::<String>::new());
}

#[test]
fn misplaced_unknown_repeated_and_unnamed_members_are_each_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = sample("a");
    let b = sample("b");
    let mut members = vec![a[0].clone(), a[1].clone()];
    members.extend(b.iter().cloned());
    members.push(a[2].clone()); // a's .json after b: not adjacent
    members.push(("README".into(), b"no extension".to_vec()));
    let mut c = sample("c");
    c.push(("c.txt".into(), b"?".to_vec()));
    c.push(c[1].clone());
    members.extend(c);
    dataset(dir.path(), &members, 3);
    let found = problems(dir.path());
    let has = |needle: &str| found.iter().any(|p| p.contains(needle));
    assert!(has("a: members are not adjacent"), "{found:#?}");
    assert!(has("a: incomplete sample"), "{found:#?}");
    assert!(
        has("member \"README\" is not named <key>.<ext>"),
        "{found:#?}"
    );
    assert!(has("c: unexpected member extension \"txt\""), "{found:#?}");
    assert!(has("c: member .cls appears twice"), "{found:#?}");
}

#[test]
fn a_truncated_shard_is_reported_as_ending_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = sample("a");
    members.extend(sample("b"));
    dataset(dir.path(), &members, 2);
    let path = dir.path().join("train-000000.tar.zst");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let found = problems(dir.path());
    assert!(
        found.iter().any(|p| p.contains("shard ends early")),
        "{found:#?}"
    );
    assert!(found.iter().any(|p| p.contains("SHA-256")), "{found:#?}");
}

/// A shard of a few hundred KB holding a 600 MiB member of zeros: verify streams it, refuses the
/// member unread by the limit the index's image size sets, names it, and checks the other
/// sample, all under a 1 GiB address-space cap (it used to decompress the whole shard into
/// memory).
#[test]
fn verify_streams_a_zip_bomb_shard_within_a_small_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = sample("good");
    members.push((member_name("bomb", "jpg"), vec![0u8; 600 << 20]));
    members.push((member_name("bomb", "cls"), encode_class(0)));
    members.push((member_name("bomb", "json"), meta("bomb")));
    dataset(dir.path(), &members, 2);
    drop(members);
    let shard = std::fs::metadata(dir.path().join("train-000000.tar.zst")).unwrap();
    assert!(shard.len() < 2 << 20, "{} bytes", shard.len());

    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec '{}' verify '{}' --json --workers 1",
            env!("CARGO_BIN_EXE_d2ae-ingest"),
            dir.path().display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "problems found, not a crash: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("bomb") && p.contains("629145600 bytes, over the")),
        "{problems:#?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("\"good\"")),
        "the good sample checks out: {problems:#?}"
    );
}
