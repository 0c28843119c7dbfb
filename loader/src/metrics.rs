//! Counters shared by the stages, and the snapshot the trainer logs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Atomic counters written by every stage.
#[derive(Debug)]
pub(crate) struct Counters {
    pub started: Instant,
    pub images: AtomicU64,
    pub batches: AtomicU64,
    pub bytes_read: AtomicU64,
    pub samples_skipped: AtomicU64,
    pub samples_lost: AtomicU64,
    pub samples_filled: AtomicU64,
    pub shards_done: AtomicU64,
    pub shards_opened: AtomicU64,
    pub shards_failed: AtomicU64,
    pub fetch_retries: AtomicU64,
    pub decode_ns: AtomicU64,
    pub wait_ns: AtomicU64,
    pub last_wait_ns: AtomicU64,
    /// Stages (tasks and threads) still running: 0 after a clean shutdown.
    pub live_stages: Arc<AtomicUsize>,
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            started: Instant::now(),
            images: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            samples_skipped: AtomicU64::new(0),
            samples_lost: AtomicU64::new(0),
            samples_filled: AtomicU64::new(0),
            shards_done: AtomicU64::new(0),
            shards_opened: AtomicU64::new(0),
            shards_failed: AtomicU64::new(0),
            fetch_retries: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            wait_ns: AtomicU64::new(0),
            last_wait_ns: AtomicU64::new(0),
            live_stages: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Counts a stage as live from construction to drop, however the stage ends.
pub(crate) struct StageGuard(Arc<AtomicUsize>);

impl StageGuard {
    pub fn new(counters: &Counters) -> Self {
        counters.live_stages.fetch_add(1, Ordering::SeqCst);
        StageGuard(Arc::clone(&counters.live_stages))
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A snapshot of the loader's throughput and health, for the trainer's logs. Rates are averages
/// since the loader started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoaderMetrics {
    /// Seconds since the loader started.
    pub elapsed_s: f64,
    /// Images delivered to the consumer.
    pub images: u64,
    /// Batches delivered to the consumer.
    pub batches: u64,
    /// Delivered images per second.
    pub images_per_sec: f64,
    /// Compressed shard bytes read from the store.
    pub bytes_read: u64,
    /// Compressed bytes per second.
    pub bytes_per_sec: f64,
    /// Finished batches waiting in the prefetch queue now.
    pub queue_depth: usize,
    /// Capacity of the prefetch queue.
    pub queue_capacity: usize,
    /// Total time the consumer spent waiting for batches.
    pub consumer_wait_s: f64,
    /// Wait for the most recent batch.
    pub last_wait_s: f64,
    /// Mean wait per batch.
    pub mean_wait_s: f64,
    /// Samples of this rank skipped as corrupt (bad image, JSON, label, missing member).
    pub samples_skipped: u64,
    /// Samples of this rank lost with a truncated or corrupt shard.
    pub samples_lost: u64,
    /// Batch slots filled with a repeat of another sample of the batch (because theirs was lost).
    pub samples_filled: u64,
    /// Shards read to the end (or as far as this rank needed).
    pub shards_done: u64,
    /// Shard reads started: this rank's share of the shards, about `num_shards / W` plus the
    /// boundary shards per epoch (see `docs/LOADER.md`).
    pub shards_opened: u64,
    /// Shards that ended early (truncated, corrupt) or had fewer samples than the index says.
    pub shards_failed: u64,
    /// Retried GETs.
    pub fetch_retries: u64,
    /// CPU seconds spent decoding and augmenting, summed over decode threads.
    pub decode_busy_s: f64,
}

impl LoaderMetrics {
    pub(crate) fn snapshot(c: &Counters, queue_depth: usize, queue_capacity: usize) -> Self {
        let elapsed = c.started.elapsed().as_secs_f64().max(1e-9);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
        let images = load(&c.images);
        let batches = load(&c.batches);
        let bytes = load(&c.bytes_read);
        let wait = load(&c.wait_ns);
        LoaderMetrics {
            elapsed_s: elapsed,
            images,
            batches,
            images_per_sec: images as f64 / elapsed,
            bytes_read: bytes,
            bytes_per_sec: bytes as f64 / elapsed,
            queue_depth,
            queue_capacity,
            consumer_wait_s: secs(wait),
            last_wait_s: secs(load(&c.last_wait_ns)),
            mean_wait_s: if batches > 0 {
                secs(wait) / batches as f64
            } else {
                0.0
            },
            samples_skipped: load(&c.samples_skipped),
            samples_lost: load(&c.samples_lost),
            samples_filled: load(&c.samples_filled),
            shards_done: load(&c.shards_done),
            shards_opened: load(&c.shards_opened),
            shards_failed: load(&c.shards_failed),
            fetch_retries: load(&c.fetch_retries),
            decode_busy_s: secs(load(&c.decode_ns)),
        }
    }
}
