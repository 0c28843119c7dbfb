//! `d2ae-ingest verify` over a shard of a few hundred KB holding a 600 MiB member of zeros: it
//! streams the shard, refuses the member unread by the limit the index's image size sets, names
//! it, and checks the other sample, all under a 1 GiB address-space cap (it used to decompress the
//! whole shard into memory).

use std::collections::BTreeMap;
use std::process::Command;

use d2ae_shard::{
    encode_class, member_name, DatasetIndex, IdentityEntry, ImageSpec, SampleMeta, ShardEntry,
    ShardWriter, SplitIndex, FORMAT_NAME, FORMAT_VERSION, INDEX_FILE, REJECTS_FILE,
};

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

#[test]
fn verify_streams_a_zip_bomb_shard_within_a_small_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let image = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&image)
        .unwrap();
    let mut w = ShardWriter::new(Vec::new()).unwrap();
    w.append_sample(
        "good",
        &[
            ("jpg", &jpeg),
            ("cls", &encode_class(0)),
            ("json", &meta("good")),
        ],
    )
    .unwrap();
    let zeros = vec![0u8; 600 << 20];
    w.append_member(&member_name("bomb", "jpg"), &zeros)
        .unwrap();
    w.append_member(&member_name("bomb", "cls"), &encode_class(0))
        .unwrap();
    w.append_member(&member_name("bomb", "json"), &meta("bomb"))
        .unwrap();
    drop(zeros);
    let (bytes, written) = w.finish().unwrap();
    assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
    std::fs::write(dir.path().join("train-000000.tar.zst"), &bytes).unwrap();
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
                num_samples: 2,
                shards: vec![ShardEntry {
                    name: "train-000000.tar.zst".into(),
                    num_samples: 2,
                    bytes: written.bytes,
                    sha256: written.sha256,
                }],
            },
        )]),
        identities: vec![IdentityEntry {
            index: 0,
            name: "ann".into(),
            num_images: 2,
        }],
        attributes: vec![],
        factors: vec![],
        rejects: BTreeMap::new(),
    };
    std::fs::write(dir.path().join(INDEX_FILE), index.to_json()).unwrap();
    std::fs::write(dir.path().join(REJECTS_FILE), b"").unwrap();

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
