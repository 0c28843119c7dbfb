//! The plan: which listed image goes to which split, under which key and class index, in which
//! order. A pure function of the listing and the options, so reruns (and resumes) agree exactly.
//!
//! - Split: the dataset's own (CelebA partition, manifest `split`) when the item has one; else
//!   `val` when `u64(sha256(seed_le ‖ source)[..8]) / 2⁶⁴ < val_fraction`, else `train`. Hashing
//!   each path (rather than drawing from one random stream) keeps an image's split fixed when
//!   other images are added or removed.
//! - Identities: the names left after `--exclude-identities`, sorted bytewise, get class indices
//!   0..N (so CelebA id `10` sorts before `2`). The table covers every listed identity, including
//!   ones whose photos all end up rejected (their count is then 0); it has to be fixed before the
//!   photos are processed, because `.cls` is written into the shards as they go.
//! - Order: within a split, items sorted by source path, then shuffled with ChaCha8 seeded by
//!   `seed ^ u64(sha256(split)[..8])`. Raw datasets are grouped by identity, and the loader's
//!   shuffle buffer is bounded, so each shard must already mix identities.
//! - Split order: `train`, `val`, `test`, then any others by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use d2ae_shard::{sample_key, Reject};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::source::SourceDataset;

/// Reason recorded for images of excluded identities.
pub const EXCLUDED: &str = "excluded_identity";

/// Options that shape the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Fraction of images sent to `val` when the dataset has no split of its own.
    pub val_fraction: f64,
    /// Seed of the split hash and the shuffles.
    pub seed: u64,
    /// Identity names to drop.
    pub exclude: BTreeSet<String>,
}

/// One planned sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Index into [`SourceDataset::items`].
    pub item: usize,
    /// Its sample key.
    pub key: String,
    /// Its class index.
    pub identity: u32,
}

/// One split's samples in writing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSplit {
    pub name: String,
    pub items: Vec<Planned>,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Identity names; the position is the class index.
    pub identities: Vec<String>,
    /// Non-empty splits in writing order.
    pub splits: Vec<PlannedSplit>,
    /// Images dropped by `--exclude-identities`, in listing order.
    pub excluded: Vec<Reject>,
}

/// Problems that make a listing impossible to plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{first} and {second} give the same sample key {key}: every source path must be unique"
    )]
    DuplicateKey {
        key: String,
        first: String,
        second: String,
    },
    #[error("split name {split:?} (of {source_path}) must be letters, digits, '-' or '_'")]
    BadSplitName { split: String, source_path: String },
    #[error("--val-fraction must be in [0, 1], got {0}")]
    BadFraction(f64),
    #[error("cannot read the exclusion list {path}: {source}")]
    ExcludeList {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Read an `--exclude-identities` file: one identity name per line; blank lines and `#` comments
/// are skipped.
pub fn read_exclude_list(path: &Path) -> Result<BTreeSet<String>, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::ExcludeList {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The seeded split of an image without a split of its own.
pub fn hashed_split(source: &str, seed: u64, val_fraction: f64) -> &'static str {
    let u =
        hash_u64(&[&seed.to_le_bytes(), source.as_bytes()]) as f64 / 18_446_744_073_709_551_616.0;
    if u < val_fraction {
        "val"
    } else {
        "train"
    }
}

fn split_rank(name: &str) -> (usize, &str) {
    let rank = ["train", "val", "test"]
        .iter()
        .position(|s| *s == name)
        .unwrap_or(3);
    (rank, name)
}

fn valid_split_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Plan `dataset` under `options`.
pub fn plan(dataset: &SourceDataset, options: &PlanOptions) -> Result<Plan, PlanError> {
    if !(0.0..=1.0).contains(&options.val_fraction) {
        return Err(PlanError::BadFraction(options.val_fraction));
    }
    let mut excluded = Vec::new();
    let mut kept: Vec<usize> = Vec::with_capacity(dataset.items.len());
    for (i, item) in dataset.items.iter().enumerate() {
        if options.exclude.contains(&item.identity) {
            excluded.push(Reject {
                source: item.source.clone(),
                reason: EXCLUDED.into(),
                detail: format!("identity {:?} is in --exclude-identities", item.identity),
            });
        } else {
            kept.push(i);
        }
    }
    let identities: Vec<String> = kept
        .iter()
        .map(|&i| dataset.items[i].identity.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let class_of: BTreeMap<&str, u32> = identities
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i as u32))
        .collect();

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_split: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
    for &i in &kept {
        let item = &dataset.items[i];
        let key = sample_key(&item.source);
        if let Some(&first) = seen.get(&key) {
            return Err(PlanError::DuplicateKey {
                key,
                first: dataset.items[first].source.clone(),
                second: item.source.clone(),
            });
        }
        seen.insert(key.clone(), i);
        let split = match &item.split {
            Some(s) if !valid_split_name(s) => {
                return Err(PlanError::BadSplitName {
                    split: s.clone(),
                    source_path: item.source.clone(),
                })
            }
            Some(s) => s.clone(),
            None => hashed_split(&item.source, options.seed, options.val_fraction).to_owned(),
        };
        by_split.entry(split).or_default().push(Planned {
            item: i,
            key,
            identity: class_of[item.identity.as_str()],
        });
    }

    let mut splits: Vec<PlannedSplit> = by_split
        .into_iter()
        .map(|(name, mut items)| {
            items.sort_by(|a, b| {
                dataset.items[a.item]
                    .source
                    .cmp(&dataset.items[b.item].source)
            });
            let stream = hash_u64(&[name.as_bytes()]);
            items.shuffle(&mut ChaCha8Rng::seed_from_u64(options.seed ^ stream));
            PlannedSplit { name, items }
        })
        .collect();
    splits.sort_by(|a, b| split_rank(&a.name).cmp(&split_rank(&b.name)));
    Ok(Plan {
        identities,
        splits,
        excluded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Layout, SourceItem};

    fn dataset(n_ids: usize, per_id: usize) -> SourceDataset {
        let mut items = Vec::new();
        for id in 0..n_ids {
            for j in 0..per_id {
                items.push(SourceItem {
                    source: format!("id{id}/{j}.jpg"),
                    path: format!("/x/id{id}/{j}.jpg").into(),
                    identity: format!("id{id}"),
                    landmarks: None,
                    face_box: None,
                    attributes: vec![],
                    factors: vec![],
                    split: None,
                });
            }
        }
        SourceDataset {
            layout: Layout::Folders,
            root: "/x".into(),
            items,
            attributes: vec![],
            factors: vec![],
        }
    }

    fn opts(val_fraction: f64, seed: u64) -> PlanOptions {
        PlanOptions {
            val_fraction,
            seed,
            exclude: BTreeSet::new(),
        }
    }

    #[test]
    fn seeded_split_is_close_to_the_fraction_and_stable() {
        let ds = dataset(20, 50);
        let p = plan(&ds, &opts(0.1, 7)).unwrap();
        assert_eq!(
            p.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["train", "val"]
        );
        let val = p.splits[1].items.len();
        assert!((70..=130).contains(&val), "{val} of 1000 in val");
        assert_eq!(p.splits[0].items.len() + val, 1000);
        // The same inputs listed in another order give the same plan.
        let mut shuffled = ds.clone();
        shuffled.items.reverse();
        let q = plan(&shuffled, &opts(0.1, 7)).unwrap();
        let keys = |p: &Plan| -> Vec<Vec<String>> {
            p.splits
                .iter()
                .map(|s| s.items.iter().map(|i| i.key.clone()).collect())
                .collect()
        };
        assert_eq!(keys(&p), keys(&q));
        // Another seed gives another split.
        assert_ne!(keys(&p), keys(&plan(&ds, &opts(0.1, 8)).unwrap()));
    }

    #[test]
    fn identities_are_sorted_names_and_shards_mix_them() {
        let ds = dataset(12, 10);
        let p = plan(&ds, &opts(0.0, 1)).unwrap();
        assert_eq!(p.identities[0], "id0");
        assert_eq!(p.identities[1], "id1");
        assert_eq!(p.identities[2], "id10");
        let train = &p.splits[0].items;
        assert_eq!(train.len(), 120);
        // The first 12 written samples are not all one identity (the input is clustered).
        let first: BTreeSet<u32> = train[..12].iter().map(|i| i.identity).collect();
        assert!(first.len() >= 5, "{first:?}");
        for planned in train {
            let item = &ds.items[planned.item];
            assert_eq!(p.identities[planned.identity as usize], item.identity);
        }
    }

    #[test]
    fn own_splits_exclusions_and_errors() {
        let mut ds = dataset(3, 2);
        ds.items[0].split = Some("test".into());
        ds.items[1].split = Some("extra".into());
        let mut o = opts(0.0, 0);
        o.exclude.insert("id2".into());
        let p = plan(&ds, &o).unwrap();
        let names: Vec<_> = p
            .splits
            .iter()
            .map(|s| (s.name.as_str(), s.items.len()))
            .collect();
        assert_eq!(names, [("train", 2), ("test", 1), ("extra", 1)]);
        assert_eq!(p.identities, ["id0", "id1"]);
        assert_eq!(p.excluded.len(), 2);
        assert_eq!(p.excluded[0].reason, EXCLUDED);

        ds.items[1].split = Some("a/b".into());
        assert!(matches!(plan(&ds, &o), Err(PlanError::BadSplitName { .. })));
        let mut dup = dataset(1, 2);
        dup.items[1].source = dup.items[0].source.clone();
        assert!(matches!(
            plan(&dup, &opts(0.0, 0)),
            Err(PlanError::DuplicateKey { .. })
        ));
        assert!(matches!(
            plan(&dup, &opts(1.5, 0)),
            Err(PlanError::BadFraction(_))
        ));
    }

    #[test]
    fn exclusion_list_skips_comments() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lfw.txt");
        std::fs::write(&f, "# overlaps\nAnthony_Hopkins\n\n  Bob  \n").unwrap();
        let set = read_exclude_list(&f).unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            ["Anthony_Hopkins", "Bob"]
        );
    }
}
