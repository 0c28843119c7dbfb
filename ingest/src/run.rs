//! The ingest pipeline: list → plan → make samples on all cores → write shards in plan order.
//!
//! Workers claim plan positions from a shared counter and send finished samples to the writer
//! (this thread), which puts them back in plan order before writing. Output therefore does not
//! depend on `--workers` or on scheduling: the same inputs and settings give byte-identical shards
//! and index. A window bounds how far workers may run ahead of the writer, so the reordering
//! buffer (and memory) stays bounded even when one photo is slow.
//!
//! Segments, receipts and resuming are described in [`crate::journal`]; the destination's
//! atomicity in [`crate::sink`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use d2ae_shard::container::{CLASS_EXT, META_EXT};
use d2ae_shard::{
    index::IndexError, shard_name, DatasetIndex, ImageSpec, Reject, ShardEntry, ShardWriter,
    INDEX_FILE, REJECTS_FILE,
};
use sha2::{Digest, Sha256};

use crate::index::{all_rejects, build_index, rejects_jsonl};
use crate::journal::{self, JournalError, Receipt, RunStamp};
use crate::make::{make_sample, Outcome, SampleMaker};
use crate::plan::{self, Plan, PlanError, PlanOptions, EXCLUDED};
use crate::progress::{Progress, Summary};
use crate::sink::{Destination, ShardOutput, SinkError, StoreArgs};
use crate::source::{self, Layout, SourceDataset, SourceError};

/// Everything an ingest run needs besides the sample maker.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The raw dataset (folder or manifest file).
    pub source: PathBuf,
    pub layout: Layout,
    /// Destination directory or URL.
    pub out: String,
    /// How to reach a bucket destination.
    pub store: StoreArgs,
    pub plan: PlanOptions,
    /// Target compressed shard size in bytes.
    pub shard_size: u64,
    /// Fail on the first reject (other than an excluded identity).
    pub strict: bool,
    /// Worker threads making samples.
    pub workers: usize,
    /// Discard an unfinished run's state at the destination instead of resuming it.
    pub restart: bool,
    /// Draw a progress bar.
    pub progress: bool,
    /// No detector and not `--aligned`: every item must bring its own landmarks.
    pub needs_source_landmarks: bool,
    /// The output-affecting settings, recorded as `index.json`'s `config` (with the source, the
    /// resolved layout and a hash of the planned inputs added).
    pub settings: serde_json::Value,
    /// What the images look like.
    pub image: ImageSpec,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{url} already holds a different dataset (its index.json has other inputs or settings); write to another --out or delete it")]
    OtherDataset { url: String },
    #[error("{url} holds an unfinished ingest with other inputs or settings; rerun that with the same arguments, or pass --restart to discard it")]
    OtherPartial { url: String },
    #[error("the existing {INDEX_FILE} at {url} is unreadable: {source}")]
    BadIndex { url: String, source: IndexError },
    #[error("--strict: {source_path} was rejected ({reason}): {detail}")]
    Strict {
        source_path: String,
        reason: String,
        detail: String,
    },
    #[error("{missing} of {total} images have no landmarks (e.g. {example}); pass --detector PATH.onnx, or --aligned for pre-aligned crops")]
    NoLandmarks {
        missing: usize,
        total: usize,
        example: String,
    },
    #[error("cannot write shard {name} to {url}: {source}")]
    ShardWrite {
        name: String,
        url: String,
        source: std::io::Error,
    },
}

/// Ingest a dataset. See the module docs for the guarantees.
pub fn ingest(opts: &IngestOptions, maker: &dyn SampleMaker) -> Result<Summary, RunError> {
    let started = Instant::now();
    let layout = match opts.layout {
        Layout::Auto => source::detect_layout(&opts.source)?,
        other => other,
    };
    let dataset = source::load(&opts.source, layout)?;
    if opts.needs_source_landmarks {
        let without: Vec<&str> = dataset
            .items
            .iter()
            .filter(|i| i.landmarks.is_none())
            .map(|i| i.source.as_str())
            .collect();
        if let Some(example) = without.first() {
            return Err(RunError::NoLandmarks {
                missing: without.len(),
                total: dataset.items.len(),
                example: (*example).to_owned(),
            });
        }
    }
    let plan = plan::plan(&dataset, &opts.plan)?;
    let config = full_config(opts, &dataset, &plan);
    let fingerprint = sha256_of(config.to_string().as_bytes());
    let dest = Destination::open(&opts.out, &opts.store)?;

    if let Some(index) = dest.index()? {
        let index = index.map_err(|source| RunError::BadIndex {
            url: dest.url().to_owned(),
            source,
        })?;
        if index.config != config {
            return Err(RunError::OtherDataset {
                url: dest.url().to_owned(),
            });
        }
        dest.clear_partial()?;
        return Ok(summary_of_index(
            &index,
            &dataset,
            opts,
            started,
            0,
            0,
            true,
            dest.url(),
        ));
    }

    if opts.restart {
        dest.clear_partial()?;
    }
    let stamp = RunStamp {
        fingerprint,
        tool_version: crate::tool_version(),
    };
    match dest.get(&journal::stamp_name())? {
        Some(bytes) => {
            let old: Option<RunStamp> = serde_json::from_slice(&bytes).ok();
            if old.as_ref().map(|s| &s.fingerprint) != Some(&stamp.fingerprint) {
                return Err(RunError::OtherPartial {
                    url: dest.url().to_owned(),
                });
            }
        }
        None => dest.put(
            &journal::stamp_name(),
            serde_json::to_vec(&stamp).expect("stamp serialises"),
        )?,
    }

    let lens: Vec<(String, usize)> = plan
        .splits
        .iter()
        .map(|s| (s.name.clone(), s.items.len()))
        .collect();
    let chains = journal::load_chains(&dest, &lens)?;
    let resumed_shards: usize = chains
        .values()
        .flatten()
        .filter(|r| r.shard.is_some())
        .count();

    // The remaining work, in writing order: (split, position in the split's plan).
    let mut work: Vec<(usize, usize)> = Vec::new();
    for (si, split) in plan.splits.iter().enumerate() {
        let done = chains[&split.name].last().map_or(0, |r| r.end);
        work.extend((done..split.items.len()).map(|pos| (si, pos)));
    }
    let total: u64 = lens.iter().map(|(_, n)| *n as u64).sum();
    let progress = Progress::new(total, total - work.len() as u64, opts.progress);
    if resumed_shards > 0 {
        progress.println(format!(
            "resuming: {resumed_shards} shards already complete at {}",
            dest.url()
        ));
    }

    let mut writer = SegmentWriter {
        dest: &dest,
        plan: &plan,
        shard_size: opts.shard_size,
        strict: opts.strict,
        ext: maker.ext(),
        chains,
        current: None,
        accepted: 0,
        rejected: 0,
        progress: &progress,
    };
    let result = run_workers(opts.workers, &work, &mut writer, |split, pos| {
        let s = &plan.splits[split];
        make_sample(&dataset, &plan.identities, &s.name, &s.items[pos], maker)
    });
    progress.finish();
    result?;
    let chains = writer.chains;

    let rejects = all_rejects(&plan, &chains);
    dest.put(REJECTS_FILE, rejects_jsonl(&rejects))?;
    let index = build_index(
        config,
        opts.image.clone(),
        &dataset,
        &plan,
        &chains,
        &rejects,
    );
    dest.put(INDEX_FILE, index.to_json())?;
    dest.clear_partial()?;
    Ok(summary_of_index(
        &index,
        &dataset,
        opts,
        started,
        work.len() as u64,
        resumed_shards,
        false,
        dest.url(),
    ))
}

/// The settings plus what identifies the inputs.
fn full_config(opts: &IngestOptions, dataset: &SourceDataset, plan: &Plan) -> serde_json::Value {
    let mut config = opts.settings.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.insert("source".into(), opts.source.display().to_string().into());
        obj.insert(
            "layout".into(),
            serde_json::to_value(dataset.layout).expect("layout serialises"),
        );
        obj.insert("inputs_sha256".into(), plan_hash(dataset, plan).into());
    }
    config
}

/// A hash of everything in the plan that shapes the output: keys, classes, order, and the
/// per-item metadata. A rerun against changed inputs then refuses to resume (photo bytes are not
/// hashed: reading every file up front would double the I/O).
fn plan_hash(dataset: &SourceDataset, plan: &Plan) -> String {
    let mut h = Sha256::new();
    for name in &plan.identities {
        h.update(name.as_bytes());
        h.update([0]);
    }
    for r in &plan.excluded {
        h.update(r.source.as_bytes());
        h.update([0]);
    }
    for split in &plan.splits {
        h.update(split.name.as_bytes());
        h.update([1]);
        for p in &split.items {
            let item = &dataset.items[p.item];
            h.update(p.key.as_bytes());
            h.update(p.identity.to_le_bytes());
            for pt in item.landmarks.iter().flatten() {
                h.update(pt[0].to_le_bytes());
                h.update(pt[1].to_le_bytes());
            }
            for a in &item.attributes {
                h.update([a.map_or(2, u8::from)]);
            }
            for f in &item.factors {
                h.update(f.map_or(f32::NAN, |v| v).to_le_bytes());
            }
            h.update([0]);
        }
    }
    hex::encode(h.finalize())
}

fn sha256_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[allow(clippy::too_many_arguments)]
fn summary_of_index(
    index: &DatasetIndex,
    dataset: &SourceDataset,
    opts: &IngestOptions,
    started: Instant,
    processed: u64,
    resumed_shards: usize,
    already_complete: bool,
    url: &str,
) -> Summary {
    let seconds = started.elapsed().as_secs_f64();
    Summary {
        out: url.to_owned(),
        layout: serde_json::to_value(dataset.layout)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        splits: index
            .splits
            .iter()
            .map(|(k, v)| (k.clone(), v.num_samples))
            .collect(),
        accepted: index.num_samples(),
        rejected: index.rejects.values().sum(),
        rejects: index.rejects.clone(),
        identities: index.identities.len(),
        shards: index.splits.values().map(|s| s.shards.len()).sum(),
        bytes: index
            .splits
            .values()
            .flat_map(|s| &s.shards)
            .map(|s| s.bytes)
            .sum(),
        resumed_shards,
        processed,
        seconds,
        images_per_second: if seconds > 0.0 {
            processed as f64 / seconds
        } else {
            0.0
        },
        workers: opts.workers,
        already_complete,
    }
}

/// Run `make` for every `(split, pos)` of `work` on `workers` threads and feed the outcomes to
/// `writer` in `work` order. Stops early (and returns the error) when the writer fails.
fn run_workers<F>(
    workers: usize,
    work: &[(usize, usize)],
    writer: &mut SegmentWriter<'_>,
    make: F,
) -> Result<(), RunError>
where
    F: Fn(usize, usize) -> Outcome + Sync,
{
    let workers = workers.max(1);
    let window = (16 * workers).max(64);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // How many outcomes the writer has consumed; workers wait while they are `window` ahead.
    let written = (Mutex::new(0usize), Condvar::new());
    let (tx, rx) = sync_channel::<(usize, Outcome)>(window);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop, written, make) = (&next, &stop, &written, &make);
            scope.spawn(move || loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= work.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                {
                    let mut done = written.0.lock().expect("writer progress lock");
                    while seq >= *done + window && !stop.load(Ordering::Relaxed) {
                        done = written.1.wait(done).expect("writer progress lock");
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (split, pos) = work[seq];
                if tx.send((seq, make(split, pos))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let result = write_in_order(rx, work, writer, &written);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
            written.1.notify_all();
        }
        result
    })
}

fn write_in_order(
    rx: Receiver<(usize, Outcome)>,
    work: &[(usize, usize)],
    writer: &mut SegmentWriter<'_>,
    written: &(Mutex<usize>, Condvar),
) -> Result<(), RunError> {
    let mut pending: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut next = 0usize;
    let result = (|| {
        for (seq, outcome) in rx.iter() {
            pending.insert(seq, outcome);
            while let Some(outcome) = pending.remove(&next) {
                let (split, pos) = work[next];
                writer.handle(split, pos, outcome)?;
                next += 1;
                *written.0.lock().expect("writer progress lock") = next;
                written.1.notify_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        writer.abort();
    }
    result
}

/// The open segment of a split.
struct Segment {
    split: usize,
    number: usize,
    start: usize,
    shard: Option<(ShardWriter<ShardOutput>, String)>,
    rejects: Vec<Reject>,
    counts: BTreeMap<u32, u64>,
}

/// Turns ordered outcomes into shards and receipts.
struct SegmentWriter<'a> {
    dest: &'a Destination,
    plan: &'a Plan,
    shard_size: u64,
    strict: bool,
    ext: &'static str,
    chains: BTreeMap<String, Vec<Receipt>>,
    current: Option<Segment>,
    accepted: u64,
    rejected: u64,
    progress: &'a Progress,
}

impl SegmentWriter<'_> {
    fn split_name(&self, split: usize) -> &str {
        &self.plan.splits[split].name
    }

    fn open(&mut self, split: usize, start: usize) {
        let number = self.chains[self.split_name(split)].len();
        self.current = Some(Segment {
            split,
            number,
            start,
            shard: None,
            rejects: Vec::new(),
            counts: BTreeMap::new(),
        });
    }

    fn write_err(&self, name: &str) -> impl FnOnce(std::io::Error) -> RunError {
        let (name, url) = (name.to_owned(), self.dest.url().to_owned());
        move |source| RunError::ShardWrite { name, url, source }
    }

    fn handle(&mut self, split: usize, pos: usize, outcome: Outcome) -> Result<(), RunError> {
        if self.current.as_ref().is_none_or(|s| s.split != split) {
            self.open(split, pos);
        }
        match outcome {
            Outcome::Sample(sample) => {
                let full = self
                    .current
                    .as_ref()
                    .and_then(|s| s.shard.as_ref())
                    .is_some_and(|(w, _)| w.compressed_bytes() >= self.shard_size);
                if full {
                    self.close(pos)?;
                    self.open(split, pos);
                }
                let seg = self.current.as_mut().expect("opened above");
                if seg.shard.is_none() {
                    let name = shard_name(&self.plan.splits[split].name, seg.number);
                    let out = self.dest.create_shard(&name)?;
                    let w = ShardWriter::new(out).map_err(self.write_err(&name))?;
                    self.current.as_mut().expect("opened above").shard = Some((w, name));
                }
                let seg = self.current.as_mut().expect("opened above");
                let (w, name) = seg.shard.as_mut().expect("created above");
                let cls = sample.cls();
                let members: [(&str, &[u8]); 3] = [
                    (self.ext, &sample.image),
                    (CLASS_EXT, &cls),
                    (META_EXT, &sample.json),
                ];
                if let Err(e) = w.append_sample(&sample.key, &members) {
                    let name = name.clone();
                    return Err(self.write_err(&name)(e));
                }
                *seg.counts.entry(sample.identity).or_insert(0) += 1;
                self.accepted += 1;
            }
            Outcome::Reject(reject) => {
                if self.strict && reject.reason != EXCLUDED {
                    return Err(RunError::Strict {
                        source_path: reject.source,
                        reason: reject.reason,
                        detail: reject.detail,
                    });
                }
                self.current
                    .as_mut()
                    .expect("opened above")
                    .rejects
                    .push(reject);
                self.rejected += 1;
            }
        }
        let shards: usize = self
            .chains
            .values()
            .flatten()
            .filter(|r| r.shard.is_some())
            .count();
        self.progress.tick(self.accepted, self.rejected, shards);
        if pos + 1 == self.plan.splits[split].items.len() {
            self.close(pos + 1)?;
        }
        Ok(())
    }

    /// Finish the open segment at plan position `end`: complete its shard, then its receipt.
    fn close(&mut self, end: usize) -> Result<(), RunError> {
        let Some(seg) = self.current.take() else {
            return Ok(());
        };
        let split = self.plan.splits[seg.split].name.clone();
        let shard = match seg.shard {
            None => None,
            Some((w, name)) => {
                let (out, written) = w.finish().map_err(self.write_err(&name))?;
                out.finish()?;
                Some(ShardEntry {
                    name,
                    num_samples: written.num_samples,
                    bytes: written.bytes,
                    sha256: written.sha256,
                })
            }
        };
        let receipt = Receipt {
            split: split.clone(),
            segment: seg.number,
            start: seg.start,
            end,
            shard,
            rejects: seg.rejects,
            identity_counts: seg.counts,
        };
        journal::write_receipt(self.dest, &receipt)?;
        self.chains.entry(split).or_default().push(receipt);
        Ok(())
    }

    /// Drop the open segment; its shard never appears under its final name.
    fn abort(&mut self) {
        if let Some(seg) = self.current.take() {
            if let Some((w, _)) = seg.shard {
                // Dropping the writer drops the ShardOutput, which removes or aborts it.
                drop(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::encode_png;
    use crate::make::{MadeImage, MakeReject};
    use std::path::Path;

    /// Makes a 16×16 PNG whose colour comes from the bytes; rejects files starting with `bad`
    /// and, when `fail_on` matches, fails the whole run (via `--strict`) like an interruption.
    struct Tiny {
        fail_on: Option<Vec<u8>>,
    }

    impl SampleMaker for Tiny {
        fn ext(&self) -> &'static str {
            "png"
        }
        fn make(
            &self,
            bytes: &[u8],
            _: Option<&[[f32; 2]]>,
            _: Option<[f32; 4]>,
        ) -> Result<MadeImage, MakeReject> {
            if bytes.starts_with(b"bad") || self.fail_on.as_deref() == Some(bytes) {
                return Err(MakeReject {
                    reason: "decode_error".into(),
                    detail: "stand-in reject".into(),
                });
            }
            let h = sha2::Sha256::digest(bytes);
            // Noise, so that PNGs do not compress to nothing and shards roll over.
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                let i = ((x * 16 + y) as usize * 7) % 32;
                image::Rgb([h[i], h[(i + 1) % 32] ^ x as u8, h[(i + 2) % 32] ^ y as u8])
            });
            Ok(MadeImage {
                bytes: encode_png(&img).unwrap(),
                landmarks: vec![[4.0, 6.0], [12.0, 6.0]],
                detector_score: None,
            })
        }
    }

    fn dataset(root: &Path) {
        for id in 0..6 {
            for j in 0..8 {
                let p = root.join(format!("person{id}/{j}.jpg"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let content = if id == 2 && j == 3 {
                    "bad".to_string()
                } else {
                    format!("img-{id}-{j}")
                };
                std::fs::write(p, content).unwrap();
            }
        }
    }

    fn options(src: &Path, out: &Path, workers: usize, strict: bool) -> IngestOptions {
        IngestOptions {
            source: src.to_owned(),
            layout: Layout::Auto,
            out: out.display().to_string(),
            store: StoreArgs::default(),
            plan: PlanOptions {
                val_fraction: 0.2,
                seed: 5,
                exclude: ["person5".to_string()].into(),
            },
            shard_size: 3000,
            strict,
            workers,
            restart: false,
            progress: false,
            needs_source_landmarks: false,
            settings: serde_json::json!({"test": true}),
            image: ImageSpec {
                width: 16,
                height: 16,
                ext: "png".into(),
                ipd_ratio: Some(0.5),
                aligned: false,
            },
        }
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn output_is_identical_for_any_worker_count_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        dataset(&src);
        let maker = Tiny { fail_on: None };
        let a = ingest(&options(&src, &tmp.path().join("a"), 1, false), &maker).unwrap();
        let b = ingest(&options(&src, &tmp.path().join("b"), 4, false), &maker).unwrap();
        assert_eq!(a.accepted, 39, "48 files, 8 excluded, 1 bad: {a:?}");
        assert_eq!(a.rejects.get("excluded_identity"), Some(&8));
        assert_eq!(a.rejects.get("decode_error"), Some(&1));
        assert_eq!(a.identities, 5);
        assert_eq!(
            (b.accepted, b.shards, b.bytes),
            (a.accepted, a.shards, a.bytes)
        );
        assert!(a.shards >= 4, "{a:?}");
        let (fa, fb) = (files(&tmp.path().join("a")), files(&tmp.path().join("b")));
        assert_eq!(
            fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
            fb.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert!(fa == fb, "outputs differ between 1 and 4 workers");
        assert!(!tmp.path().join("a/_partial").exists());

        let report = crate::verify::verify(
            tmp.path().join("a").to_str().unwrap(),
            &Default::default(),
            2,
            false,
        )
        .unwrap();
        assert!(report.ok, "{:?}", report.problems);
        assert_eq!(report.samples, 39);
        assert_eq!(report.rejects, 9);

        // A flipped byte in a shard is caught.
        let shard = tmp.path().join("a/train-000000.tar.zst");
        let mut bytes = std::fs::read(&shard).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&shard, bytes).unwrap();
        let report = crate::verify::verify(
            tmp.path().join("a").to_str().unwrap(),
            &Default::default(),
            2,
            false,
        )
        .unwrap();
        assert!(!report.ok);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.message.contains("SHA-256")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn an_interrupted_run_resumes_to_the_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        dataset(&src);
        let reference = tmp.path().join("reference");
        ingest(
            &options(&src, &reference, 2, false),
            &Tiny { fail_on: None },
        )
        .unwrap();

        let out = tmp.path().join("out");
        // A strict failure on the last planned item stops the run near its end, like a crash.
        let opts = options(&src, &out, 2, true);
        let ds = source::load(&src, Layout::Auto).unwrap();
        let p = plan::plan(&ds, &opts.plan).unwrap();
        let last = p.splits.last().unwrap().items.last().unwrap();
        let fail_on = Some(std::fs::read(&ds.items[last.item].path).unwrap());
        let err = ingest(&opts, &Tiny { fail_on }).unwrap_err();
        assert!(err.to_string().contains("--strict"), "{err}");
        let receipts = std::fs::read_dir(out.join("_partial/receipts"))
            .unwrap()
            .count();
        assert!(receipts >= 2, "{receipts} receipts before the failure");
        assert!(!out.join("index.json").exists());
        // No temporary shard is left behind, and none is visible half-written.
        let tmp_files = std::fs::read_dir(out.join("_partial"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tmp")
            });
        assert_eq!(tmp_files.count(), 0);

        let resumed = ingest(&options(&src, &out, 3, false), &Tiny { fail_on: None }).unwrap();
        assert_eq!(resumed.resumed_shards, receipts);
        assert!(resumed.processed < 40, "{resumed:?}");
        assert!(files(&reference) == files(&out), "resumed output differs");

        // Different settings against a finished dataset are refused.
        let mut other = options(&src, &out, 1, false);
        other.plan.seed = 6;
        assert!(matches!(
            ingest(&other, &Tiny { fail_on: None }),
            Err(RunError::OtherDataset { .. })
        ));
    }
}
