//! `d2ae-ingest verify`: re-read a dataset and check it against its `index.json`.
//!
//! Per shard: present, size and SHA-256 as recorded, a valid zstd tar whose members come in
//! adjacent `<key>.<ext>`, `<key>.cls`, `<key>.json` runs, sample count as recorded, metadata that
//! parses and agrees with `.cls`, the split and the identity table, and an image that decodes to
//! the recorded size. Across the dataset: unique keys, split and identity counts, and
//! `rejects.jsonl` against the reject counts. Problems are collected, not fatal, so one run lists
//! them all; only an unreachable destination or a missing/unreadable index stops it.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use d2ae_shard::index::IndexError;
use d2ae_shard::{
    parse_class, read_members, split_member_name, Assembler, DatasetIndex, ImageKind, MemberLimits,
    RawSample, SampleMeta, ShardEntry, INDEX_FILE, REJECTS_FILE,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::image_io::{decode_rgb, DecodeLimits};
use crate::sink::{Destination, SinkError, StoreArgs};

/// One thing wrong with the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The shard concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The sample key concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.shard, &self.key) {
            (Some(s), Some(k)) => write!(f, "{s}: {k}: {}", self.message),
            (Some(s), None) => write!(f, "{s}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub url: String,
    /// No problems found.
    pub ok: bool,
    /// Samples found per split.
    pub splits: BTreeMap<String, u64>,
    pub shards: usize,
    /// Samples found (all decoded).
    pub samples: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    pub identities: usize,
    /// Lines of `rejects.jsonl`.
    pub rejects: u64,
    pub problems: Vec<Problem>,
    pub seconds: f64,
}

/// Errors that prevent verifying at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{url} has no {INDEX_FILE}: not a d2ae dataset, or its ingest has not finished")]
    NoIndex { url: String },
    #[error("{url}: {source}")]
    BadIndex { url: String, source: IndexError },
}

/// What one shard held.
#[derive(Default)]
struct ShardFindings {
    samples: u64,
    bytes: u64,
    keys: Vec<String>,
    identity_counts: BTreeMap<u32, u64>,
    problems: Vec<Problem>,
}

/// Verify the dataset at `url` with `workers` threads.
pub fn verify(
    url: &str,
    store: &StoreArgs,
    workers: usize,
    progress: bool,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let dest = Destination::open(url, store)?;
    let index = dest.index()?.ok_or_else(|| VerifyError::NoIndex {
        url: url.to_owned(),
    })?;
    let index = index.map_err(|source| VerifyError::BadIndex {
        url: url.to_owned(),
        source,
    })?;

    let shards: Vec<(&str, &ShardEntry)> = index
        .splits
        .iter()
        .flat_map(|(name, split)| split.shards.iter().map(move |s| (name.as_str(), s)))
        .collect();
    let bar = ProgressBar::with_draw_target(
        Some(shards.len() as u64),
        if progress {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("verifying {wide_bar} {pos}/{len} shards, ETA {eta}")
            .expect("valid template"),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, ShardFindings)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1).min(shards.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((split, entry)) = shards.get(i) else {
                    break;
                };
                let findings = check_shard(&dest, &index, split, entry);
                results.lock().expect("results lock").push((i, findings));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);

    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut per_split: BTreeMap<String, u64> = BTreeMap::new();
    let mut identity_counts = vec![0u64; index.identities.len()];
    let (mut samples, mut total_bytes) = (0u64, 0u64);
    for (i, findings) in results {
        let (split, entry) = shards[i];
        samples += findings.samples;
        total_bytes += findings.bytes;
        *per_split.entry(split.to_owned()).or_default() += findings.samples;
        for (class, n) in findings.identity_counts {
            if let Some(c) = identity_counts.get_mut(class as usize) {
                *c += n;
            }
        }
        for key in findings.keys {
            if !seen.insert(key.clone()) {
                problems.push(Problem {
                    shard: Some(entry.name.clone()),
                    key: Some(key),
                    message: "key appears more than once in the dataset".into(),
                });
            }
        }
        problems.extend(findings.problems);
    }
    for (name, split) in &index.splits {
        let found = per_split.get(name).copied().unwrap_or(0);
        let listed: u64 = split.shards.iter().map(|s| s.num_samples).sum();
        if split.num_samples != listed || found != listed {
            problems.push(Problem {
                shard: None,
                key: None,
                message: format!(
                    "split {name}: index says {} samples, its shards list {listed}, found {found}",
                    split.num_samples
                ),
            });
        }
    }
    for (entry, found) in index.identities.iter().zip(&identity_counts) {
        if entry.num_images != *found {
            problems.push(Problem {
                shard: None,
                key: None,
                message: format!(
                    "identity {} ({}): index says {} images, found {found}",
                    entry.index, entry.name, entry.num_images
                ),
            });
        }
    }
    let rejects = check_rejects(&dest, &index, &mut problems)?;
    Ok(VerifyReport {
        url: url.to_owned(),
        ok: problems.is_empty(),
        splits: per_split,
        shards: shards.len(),
        samples,
        bytes: total_bytes,
        identities: index.identities.len(),
        rejects,
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn check_rejects(
    dest: &Destination,
    index: &DatasetIndex,
    problems: &mut Vec<Problem>,
) -> Result<u64, VerifyError> {
    let expected: u64 = index.rejects.values().sum();
    let Some(bytes) = dest.get(REJECTS_FILE)? else {
        problems.push(Problem {
            shard: None,
            key: None,
            message: format!("{REJECTS_FILE} is missing"),
        });
        return Ok(0);
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0u64;
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        lines += 1;
        match serde_json::from_slice::<d2ae_shard::Reject>(line) {
            Ok(r) => *counts.entry(r.reason).or_default() += 1,
            Err(e) => problems.push(Problem {
                shard: None,
                key: None,
                message: format!("{REJECTS_FILE}:{}: {e}", n + 1),
            }),
        }
    }
    if counts != index.rejects {
        problems.push(Problem {
            shard: None,
            key: None,
            message: format!(
                "{REJECTS_FILE} has {lines} lines ({counts:?}); index.json counts {expected} ({:?})",
                index.rejects
            ),
        });
    }
    Ok(lines)
}

fn check_shard(
    dest: &Destination,
    index: &DatasetIndex,
    split: &str,
    entry: &ShardEntry,
) -> ShardFindings {
    let mut f = ShardFindings::default();
    let problem = |f: &mut ShardFindings, key: Option<&str>, message: String| {
        f.problems.push(Problem {
            shard: Some(entry.name.clone()),
            key: key.map(str::to_owned),
            message,
        })
    };
    let bytes = match dest.get(&entry.name) {
        Ok(Some(b)) => b,
        Ok(None) => {
            problem(&mut f, None, "missing".into());
            return f;
        }
        Err(e) => {
            problem(&mut f, None, e.to_string());
            return f;
        }
    };
    f.bytes = bytes.len() as u64;
    if f.bytes != entry.bytes {
        let message = format!("{} bytes, index says {}", f.bytes, entry.bytes);
        problem(&mut f, None, message);
    }
    let sha = d2ae_shard::sha256_hex(&bytes);
    if sha != entry.sha256 {
        problem(
            &mut f,
            None,
            format!("SHA-256 {sha} does not match the index ({})", entry.sha256),
        );
    }
    // The same member-name rule and sample assembly as the loader, so the two cannot disagree.
    let mut assembler = Assembler::default();
    let mut done_keys: HashSet<String> = HashSet::new();
    let limits = MemberLimits::for_image(index.image.width, index.image.height);
    let read = read_members(&bytes[..], |mut member| {
        let name = member.name();
        if !member.is_file() {
            problem(
                &mut f,
                None,
                format!("member {name:?} is not a regular file"),
            );
            return ControlFlow::Continue(());
        }
        let Some((key, ext)) = split_member_name(name) else {
            problem(
                &mut f,
                None,
                format!("member {name:?} is not named <key>.<ext> with a safe key"),
            );
            return ControlFlow::Continue(());
        };
        let data = match member.read_body(limits.for_ext(ext)) {
            Ok(data) => data,
            Err(e) => {
                problem(&mut f, Some(key), e.to_string());
                return ControlFlow::Continue(());
            }
        };
        let starts_sample = assembler.current_key() != Some(key);
        if starts_sample && !done_keys.insert(key.to_owned()) {
            problem(&mut f, Some(key), "members are not adjacent".into());
        }
        if let Some(finished) = assembler.push(key, ext, data.into()) {
            check_sample(&mut f, index, split, entry, finished);
        }
        ControlFlow::Continue(())
    });
    if let Some(last) = assembler.finish() {
        check_sample(&mut f, index, split, entry, last);
    }
    if let Err(e) = read {
        problem(&mut f, None, format!("shard ends early: {e}"));
    }
    if f.samples != entry.num_samples {
        let message = format!("{} samples, index says {}", f.samples, entry.num_samples);
        problem(&mut f, None, message);
    }
    f
}

fn check_sample(
    f: &mut ShardFindings,
    index: &DatasetIndex,
    split: &str,
    entry: &ShardEntry,
    m: RawSample,
) {
    let mut problems = Vec::new();
    let ext = &index.image.ext;
    problems.extend(m.irregular.iter().cloned());
    let (Some((kind, image)), Some(cls), Some(json)) = (&m.image, &m.cls, &m.json) else {
        f.problems.push(Problem {
            shard: Some(entry.name.clone()),
            key: Some(m.key.clone()),
            message: format!("incomplete sample: needs .{ext}, .cls and .json"),
        });
        return;
    };
    if ImageKind::from_ext(ext) != Some(*kind) {
        problems.push(format!("image member is {kind:?}, index says .{ext}"));
    }
    let class = parse_class(cls);
    match serde_json::from_slice::<SampleMeta>(json) {
        Err(e) => problems.push(format!("metadata does not parse: {e}")),
        Ok(meta) => {
            if meta.key != m.key {
                problems.push(format!(
                    "metadata key {:?} differs from the member name",
                    meta.key
                ));
            }
            if Some(meta.identity) != class {
                problems.push(format!(
                    "metadata identity {} differs from .cls {:?}",
                    meta.identity,
                    String::from_utf8_lossy(cls)
                ));
            }
            if meta.split != split {
                problems.push(format!(
                    "metadata split {:?} but the shard is in {split:?}",
                    meta.split
                ));
            }
            match index.identities.get(meta.identity as usize) {
                Some(id) if id.name == meta.identity_name => {}
                Some(id) => problems.push(format!(
                    "identity {} is {:?} in the index but {:?} here",
                    meta.identity, id.name, meta.identity_name
                )),
                None => problems.push(format!(
                    "identity {} is not in the identity table",
                    meta.identity
                )),
            }
        }
    }
    match decode_rgb(image, &DecodeLimits::default()) {
        Ok(img) if (img.width(), img.height()) == (index.image.width, index.image.height) => {}
        Ok(img) => problems.push(format!(
            "image is {}x{}, index says {}x{}",
            img.width(),
            img.height(),
            index.image.width,
            index.image.height
        )),
        Err(e) => problems.push(format!("image does not decode: {e}")),
    }
    if let Some(class) = class {
        *f.identity_counts.entry(class).or_default() += 1;
    }
    f.samples += 1;
    f.keys.push(m.key.clone());
    f.problems
        .extend(problems.into_iter().map(|message| Problem {
            shard: Some(entry.name.clone()),
            key: Some(m.key.clone()),
            message,
        }));
}
