//! The dataset's closing documents: `rejects.jsonl` and `index.json` (written last, so its
//! presence marks a complete dataset), assembled from the plan and the segment receipts.

use std::collections::BTreeMap;

use d2ae_shard::{
    DatasetIndex, IdentityEntry, ImageSpec, Reject, SplitIndex, FORMAT_NAME, FORMAT_VERSION,
};

use crate::journal::Receipt;
use crate::plan::Plan;
use crate::source::SourceDataset;

/// Everything rejected, in a stable order: excluded identities (listing order), then each split's
/// rejects in plan order.
pub fn all_rejects(plan: &Plan, chains: &BTreeMap<String, Vec<Receipt>>) -> Vec<Reject> {
    let mut out = plan.excluded.clone();
    for split in &plan.splits {
        for receipt in chains.get(&split.name).into_iter().flatten() {
            out.extend(receipt.rejects.iter().cloned());
        }
    }
    out
}

/// `rejects.jsonl`: one JSON object per line.
pub fn rejects_jsonl(rejects: &[Reject]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rejects {
        serde_json::to_writer(&mut out, r).expect("reject serialises");
        out.push(b'\n');
    }
    out
}

/// Build `index.json` for a finished run. Splits without accepted samples are left out.
pub fn build_index(
    config: serde_json::Value,
    image: ImageSpec,
    dataset: &SourceDataset,
    plan: &Plan,
    chains: &BTreeMap<String, Vec<Receipt>>,
    rejects: &[Reject],
) -> DatasetIndex {
    let mut splits = BTreeMap::new();
    let mut counts = vec![0u64; plan.identities.len()];
    for split in &plan.splits {
        let mut index = SplitIndex::default();
        for receipt in chains.get(&split.name).into_iter().flatten() {
            if let Some(shard) = &receipt.shard {
                index.num_samples += shard.num_samples;
                index.shards.push(shard.clone());
            }
            for (&class, &n) in &receipt.identity_counts {
                counts[class as usize] += n;
            }
        }
        if index.num_samples > 0 {
            splits.insert(split.name.clone(), index);
        }
    }
    let mut reject_counts = BTreeMap::new();
    for r in rejects {
        *reject_counts.entry(r.reason.clone()).or_insert(0u64) += 1;
    }
    DatasetIndex {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        tool_version: crate::tool_version(),
        config,
        image,
        splits,
        identities: plan
            .identities
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(i, (name, n))| IdentityEntry {
                index: i as u32,
                name: name.clone(),
                num_images: n,
            })
            .collect(),
        attributes: dataset.attributes.clone(),
        factors: dataset.factors.clone(),
        rejects: reject_counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Planned, PlannedSplit};
    use crate::source::Layout;
    use d2ae_shard::ShardEntry;

    #[test]
    fn sums_receipts_into_the_index() {
        let plan = Plan {
            identities: vec!["a".into(), "b".into()],
            splits: vec![PlannedSplit {
                name: "train".into(),
                items: (0..5)
                    .map(|i| Planned {
                        item: i,
                        key: format!("k{i}"),
                        identity: (i % 2) as u32,
                    })
                    .collect(),
            }],
            excluded: vec![Reject {
                source: "c/1.jpg".into(),
                reason: "excluded_identity".into(),
                detail: String::new(),
            }],
        };
        let shard = |n: usize, samples: u64| ShardEntry {
            name: d2ae_shard::shard_name("train", n),
            num_samples: samples,
            bytes: 100,
            sha256: "ab".repeat(32),
        };
        let bad = Reject {
            source: "a/3.jpg".into(),
            reason: "no_face".into(),
            detail: "best score 0.2".into(),
        };
        let chains = BTreeMap::from([(
            "train".to_string(),
            vec![
                Receipt {
                    split: "train".into(),
                    segment: 0,
                    start: 0,
                    end: 2,
                    shard: Some(shard(0, 2)),
                    rejects: vec![],
                    identity_counts: BTreeMap::from([(0, 1), (1, 1)]),
                },
                Receipt {
                    split: "train".into(),
                    segment: 1,
                    start: 2,
                    end: 5,
                    shard: Some(shard(1, 2)),
                    rejects: vec![bad.clone()],
                    identity_counts: BTreeMap::from([(0, 2)]),
                },
            ],
        )]);
        let ds = SourceDataset {
            layout: Layout::Folders,
            root: "/".into(),
            items: vec![],
            attributes: vec!["Smiling".into()],
            factors: vec![],
        };
        let rejects = all_rejects(&plan, &chains);
        assert_eq!(rejects.len(), 2);
        assert_eq!(rejects[1], bad);
        let image = ImageSpec {
            width: 235,
            height: 235,
            ext: "jpg".into(),
            ipd_ratio: Some(0.35),
            aligned: false,
        };
        let index = build_index(serde_json::json!({}), image, &ds, &plan, &chains, &rejects);
        assert_eq!(index.num_samples(), 4);
        assert_eq!(index.splits["train"].shards.len(), 2);
        assert_eq!(index.identities[0].num_images, 3);
        assert_eq!(index.identities[1].num_images, 1);
        assert_eq!(
            index.rejects,
            BTreeMap::from([("excluded_identity".into(), 1), ("no_face".into(), 1)])
        );
        assert_eq!(index.attributes, ["Smiling"]);
        let text = String::from_utf8(rejects_jsonl(&rejects)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().contains("\"no_face\""));
    }
}
