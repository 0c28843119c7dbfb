//! Resume receipts: what a killed run had finished, so a rerun continues where it stopped.
//!
//! The plan fixes every split's item order, and a shard's contents depend only on the items it
//! covers, so progress is fully described by "segments": segment `n` of a split covers plan items
//! `[start, end)` and produced shard `n` (or no shard, when a split has no accepted image at all).
//! After a shard is in place under its final name, a small receipt
//! `_partial/receipts/<split>-NNNNNN.json` records the segment, the shard's size and checksum, the
//! rejects among its items and per-identity counts. A rerun keeps the unbroken chain of receipts
//! whose shards are still there with the recorded size, and starts at the end of the last one:
//! complete shards are never redone, and since shard boundaries are a deterministic function of
//! the items, the rerun writes exactly the shards an uninterrupted run would have.
//!
//! One receipt per shard (rather than one growing journal) keeps each write small on a bucket.
//! `_partial/run.json` stamps the fingerprint of the run's configuration and inputs; a rerun with
//! different arguments refuses to mix its output with the old one.

use std::collections::BTreeMap;

use d2ae_shard::{Reject, ShardEntry};
use serde::{Deserialize, Serialize};

use crate::sink::{Destination, SinkError, PARTIAL_DIR};

/// Folder of the receipts.
pub fn receipts_dir() -> String {
    format!("{PARTIAL_DIR}/receipts")
}

/// Name of the run stamp.
pub fn stamp_name() -> String {
    format!("{PARTIAL_DIR}/run.json")
}

/// The stamp of an unfinished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStamp {
    /// SHA-256 over the resolved configuration and the plan.
    pub fingerprint: String,
    pub tool_version: String,
}

/// One finished segment of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub split: String,
    /// Segment number = shard number within the split.
    pub segment: usize,
    /// First plan item of the split covered.
    pub start: usize,
    /// One past the last plan item covered.
    pub end: usize,
    /// The shard written (none only when the split has no accepted image).
    pub shard: Option<ShardEntry>,
    /// Rejected items among `[start, end)`, in plan order.
    pub rejects: Vec<Reject>,
    /// Accepted samples per class index.
    pub identity_counts: BTreeMap<u32, u64>,
}

impl Receipt {
    /// Object name of this receipt.
    pub fn name(&self) -> String {
        format!("{}/{}-{:06}.json", receipts_dir(), self.split, self.segment)
    }
}

/// Problems reading receipts.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "resume receipt {name} is not valid JSON ({source}); delete {dir}/ or rerun with --restart"
    )]
    Corrupt {
        name: String,
        dir: String,
        source: serde_json::Error,
    },
}

/// Write a receipt (after its shard is in place).
pub fn write_receipt(dest: &Destination, receipt: &Receipt) -> Result<(), SinkError> {
    let bytes = serde_json::to_vec(receipt).expect("receipt serialises");
    dest.put(&receipt.name(), bytes)
}

/// The valid receipt chain of each split: for each name in `splits` (with its plan length), the
/// receipts `0..k` that follow on from each other and whose shards exist with the recorded size.
pub fn load_chains(
    dest: &Destination,
    splits: &[(String, usize)],
) -> Result<BTreeMap<String, Vec<Receipt>>, JournalError> {
    let mut found: BTreeMap<(String, usize), Receipt> = BTreeMap::new();
    for name in dest.list(&receipts_dir())? {
        if !name.ends_with(".json") {
            continue;
        }
        let Some(bytes) = dest.get(&name)? else {
            continue;
        };
        let receipt: Receipt =
            serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
                name: name.clone(),
                dir: PARTIAL_DIR.into(),
                source,
            })?;
        found.insert((receipt.split.clone(), receipt.segment), receipt);
    }
    let mut chains = BTreeMap::new();
    for (split, len) in splits {
        let mut chain: Vec<Receipt> = Vec::new();
        while let Some(r) = found.remove(&(split.clone(), chain.len())) {
            let expected_start = chain.last().map_or(0, |p| p.end);
            if r.start != expected_start || r.end < r.start || r.end > *len {
                break;
            }
            if let Some(shard) = &r.shard {
                if dest.size(&shard.name)? != Some(shard.bytes) {
                    break;
                }
            }
            let done = r.end == *len;
            chain.push(r);
            if done {
                break;
            }
        }
        chains.insert(split.clone(), chain);
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(
        split: &str,
        segment: usize,
        start: usize,
        end: usize,
        shard: Option<(&str, u64)>,
    ) -> Receipt {
        Receipt {
            split: split.into(),
            segment,
            start,
            end,
            shard: shard.map(|(name, bytes)| ShardEntry {
                name: name.into(),
                num_samples: (end - start) as u64,
                bytes,
                sha256: "00".repeat(32),
            }),
            rejects: vec![],
            identity_counts: BTreeMap::from([(0, (end - start) as u64)]),
        }
    }

    #[test]
    fn keeps_the_unbroken_chain_of_present_shards() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        dest.put("train-000000.tar.zst", vec![0; 10]).unwrap();
        dest.put("train-000001.tar.zst", vec![0; 7]).unwrap();
        // Shard 2's file has the wrong size (a torn earlier attempt): the chain stops before it.
        dest.put("train-000002.tar.zst", vec![0; 3]).unwrap();
        for r in [
            receipt("train", 0, 0, 4, Some(("train-000000.tar.zst", 10))),
            receipt("train", 1, 4, 9, Some(("train-000001.tar.zst", 7))),
            receipt("train", 2, 9, 12, Some(("train-000002.tar.zst", 5))),
            receipt("val", 0, 0, 3, None),
            receipt("test", 1, 3, 5, None),
        ] {
            write_receipt(&dest, &r).unwrap();
        }
        let chains = load_chains(
            &dest,
            &[("train".into(), 20), ("val".into(), 3), ("test".into(), 5)],
        )
        .unwrap();
        assert_eq!(chains["train"].len(), 2);
        assert_eq!(chains["train"][1].end, 9);
        assert_eq!(chains["val"].len(), 1);
        // test has no segment 0, so nothing of it counts as done.
        assert!(chains["test"].is_empty());
    }

    #[test]
    fn corrupt_receipts_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        dest.put(
            &format!("{}/train-000000.json", receipts_dir()),
            b"{oops".to_vec(),
        )
        .unwrap();
        let err = load_chains(&dest, &[("train".into(), 1)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train-000000.json") && err.contains("--restart"),
            "{err}"
        );
    }
}
