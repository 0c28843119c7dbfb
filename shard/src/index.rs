//! `index.json`: what a dataset holds, how it was made, and how to check it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name of the index at the dataset root. Written last: its presence marks a complete dataset.
pub const INDEX_FILE: &str = "index.json";
/// Name of the reject list at the dataset root.
pub const REJECTS_FILE: &str = "rejects.jsonl";
/// Value of [`DatasetIndex::format`].
pub const FORMAT_NAME: &str = "d2ae-shards";
/// Bumped on any change a reader of an older version would misread.
pub const FORMAT_VERSION: u32 = 1;

/// The root `index.json` of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetIndex {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format_version: u32,
    /// `d2ae-ingest <version>` that wrote the dataset.
    pub tool_version: String,
    /// The full ingest configuration, as the tool resolved it (free-form JSON object).
    pub config: serde_json::Value,
    /// What every image in the shards looks like.
    pub image: ImageSpec,
    /// Splits by name (`train`, `val`, `test`, ...), each with its shards in order.
    pub splits: BTreeMap<String, SplitIndex>,
    /// The identity table; a sample's `.cls` is an index into it.
    pub identities: Vec<IdentityEntry>,
    /// Binary attribute names, in the order the loader reports attribute labels.
    pub attributes: Vec<String>,
    /// Names of continuous per-sample factors (e.g. a synthetic background colour), in loader order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<String>,
    /// Rejected inputs counted by reason (details in `rejects.jsonl`).
    pub rejects: BTreeMap<String, u64>,
}

/// The shape and encoding of the stored images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Width in pixels (images are square by default, but readers must use both fields).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Member extension of the image: `jpg` or `png`.
    pub ext: String,
    /// Interpupillary distance as a fraction of the width (0.35 in the paper); `None` for `--aligned`.
    pub ipd_ratio: Option<f32>,
    /// Whether the inputs were already aligned (centre crop + resize only).
    pub aligned: bool,
}

/// One split's shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SplitIndex {
    /// Total samples over all shards of the split.
    pub num_samples: u64,
    /// Shards in order.
    pub shards: Vec<ShardEntry>,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name relative to the dataset root, e.g. `train-000000.tar.zst`.
    pub name: String,
    /// Samples in this shard.
    pub num_samples: u64,
    /// Compressed size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the compressed file.
    pub sha256: String,
}

/// One identity of the training set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    /// The class index written in `.cls`.
    pub index: u32,
    /// The identity's name in the source dataset (folder name, CelebA id, manifest value).
    pub name: String,
    /// Accepted images of this identity, over all splits.
    pub num_images: u64,
}

impl DatasetIndex {
    /// Parse and check the format name and version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(IndexError::TooLarge {
                bytes: bytes.len() as u64,
            });
        }
        let index: DatasetIndex = serde_json::from_slice(bytes).map_err(IndexError::Parse)?;
        if index.format != FORMAT_NAME {
            return Err(IndexError::NotAD2aeDataset(index.format));
        }
        if index.format_version > FORMAT_VERSION {
            return Err(IndexError::TooNew {
                found: index.format_version,
                supported: FORMAT_VERSION,
            });
        }
        index.check_counts()?;
        Ok(index)
    }

    /// Sample counts that add up: each split's total is the sum of its shards', and no sum
    /// overflows (a hostile index could make readers' arithmetic wrap or panic).
    fn check_counts(&self) -> Result<(), IndexError> {
        let mut total = 0u64;
        for (name, split) in &self.splits {
            let listed = split
                .shards
                .iter()
                .try_fold(0u64, |acc, s| acc.checked_add(s.num_samples))
                .ok_or_else(|| IndexError::BadCounts {
                    split: name.clone(),
                    detail: "its shards' sample counts overflow".into(),
                })?;
            if listed != split.num_samples {
                return Err(IndexError::BadCounts {
                    split: name.clone(),
                    detail: format!(
                        "it claims {} samples, its shards list {listed}",
                        split.num_samples
                    ),
                });
            }
            total = total
                .checked_add(listed)
                .ok_or_else(|| IndexError::BadCounts {
                    split: name.clone(),
                    detail: "the dataset's sample count overflows".into(),
                })?;
        }
        Ok(())
    }

    /// Pretty JSON, as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("index serialises");
        out.push(b'\n');
        out
    }

    /// The split named `name`, or an error listing the splits there are.
    pub fn split(&self, name: &str) -> Result<&SplitIndex, IndexError> {
        self.splits
            .get(name)
            .ok_or_else(|| IndexError::NoSuchSplit {
                split: name.to_owned(),
                available: self.splits.keys().cloned().collect(),
            })
    }

    /// Total samples over all splits.
    pub fn num_samples(&self) -> u64 {
        self.splits.values().map(|s| s.num_samples).sum()
    }
}

/// Largest `index.json` read: an index of a million shards is about 200 MB, far beyond any
/// dataset d2ae writes (a 100-million-image dataset in 256 MiB shards has ~20,000).
pub const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Problems reading an `index.json`.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index.json is not valid: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("index.json is {bytes} bytes, over the {MAX_INDEX_BYTES}-byte limit: not an index d2ae wrote")]
    TooLarge { bytes: u64 },
    #[error("index.json: split {split:?}: {detail}")]
    BadCounts { split: String, detail: String },
    #[error("index.json has format {0:?}, expected {FORMAT_NAME:?}")]
    NotAD2aeDataset(String),
    #[error("index.json has format version {found}; this build reads up to {supported}")]
    TooNew { found: u32, supported: u32 },
    #[error("no split {split:?} in this dataset (it has: {})", available.join(", "))]
    NoSuchSplit {
        split: String,
        available: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_index() -> DatasetIndex {
        let mut splits = BTreeMap::new();
        splits.insert(
            "train".to_owned(),
            SplitIndex {
                num_samples: 3,
                shards: vec![ShardEntry {
                    name: "train-000000.tar.zst".into(),
                    num_samples: 3,
                    bytes: 1234,
                    sha256: "ab".repeat(32),
                }],
            },
        );
        DatasetIndex {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            tool_version: "d2ae-ingest 0.1.0".into(),
            config: serde_json::json!({"size": 235}),
            image: ImageSpec {
                width: 235,
                height: 235,
                ext: "jpg".into(),
                ipd_ratio: Some(0.35),
                aligned: false,
            },
            splits,
            identities: vec![IdentityEntry {
                index: 0,
                name: "a".into(),
                num_images: 3,
            }],
            attributes: vec!["Smiling".into()],
            factors: vec![],
            rejects: BTreeMap::from([("no_face".to_owned(), 2)]),
        }
    }

    #[test]
    fn counts_that_disagree_or_overflow_are_refused() {
        let mut index = sample_index();
        index.splits.get_mut("train").unwrap().num_samples = 4;
        let err = DatasetIndex::from_json(&index.to_json()).unwrap_err();
        assert!(
            err.to_string()
                .contains("claims 4 samples, its shards list 3"),
            "{err}"
        );

        let mut index = sample_index();
        let split = index.splits.get_mut("train").unwrap();
        let mut second = split.shards[0].clone();
        second.num_samples = u64::MAX;
        split.shards.push(second);
        split.num_samples = 2;
        let err = DatasetIndex::from_json(&index.to_json()).unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");

        let mut index = sample_index();
        for (name, n) in [("a", u64::MAX - 1), ("b", 5)] {
            let mut split = index.splits["train"].clone();
            split.shards[0].num_samples = n;
            split.num_samples = n;
            index.splits.insert(name.into(), split);
        }
        let err = DatasetIndex::from_json(&index.to_json()).unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
    }

    #[test]
    fn an_oversized_index_is_refused_before_parsing() {
        let huge = vec![b' '; MAX_INDEX_BYTES as usize + 1];
        assert!(matches!(
            DatasetIndex::from_json(&huge),
            Err(IndexError::TooLarge { .. })
        ));
    }

    #[test]
    fn round_trips_through_json() {
        let index = sample_index();
        let back = DatasetIndex::from_json(&index.to_json()).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.num_samples(), 3);
    }

    #[test]
    fn rejects_other_formats_and_newer_versions() {
        let mut index = sample_index();
        index.format = "something".into();
        assert!(matches!(
            DatasetIndex::from_json(&index.to_json()),
            Err(IndexError::NotAD2aeDataset(_))
        ));
        let mut index = sample_index();
        index.format_version = FORMAT_VERSION + 1;
        assert!(matches!(
            DatasetIndex::from_json(&index.to_json()),
            Err(IndexError::TooNew { .. })
        ));
    }

    #[test]
    fn missing_split_lists_the_available_ones() {
        let err = sample_index().split("test").unwrap_err().to_string();
        assert!(err.contains("\"test\"") && err.contains("train"), "{err}");
    }
}
