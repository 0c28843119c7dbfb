//! [`Loader`]: the async pipeline, wired together.
//!
//! ```text
//! shard readers (blocking threads, ≤ readahead+1)   GET stream → zstd → tar → samples
//!   → order stage (one async task)                   this rank's range of the epoch stream,
//!                                                     shuffle buffer, slots, one job per batch
//!   → decode threads (decode_threads)                 JPEG/PNG → resize → augment → layout,
//!                                                     straight into the batch buffer; fill
//!   → batch stage (one thread)                        batches back in order
//!   → prefetch queue (prefetch_batches)               → next_batch()
//! ```
//! Every channel is bounded, so a slow consumer slows the readers instead of filling memory.
//! Shutdown has one path: dropping the loader cancels the token and closes every channel; each
//! stage ends when its next send or receive fails, and the decode and batch threads are joined.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::batch::{batch_worker, Batch, BatchSpec, BufferPool};
use crate::config::LoaderConfig;
use crate::dataset::Dataset;
use crate::decode::{decode_worker, DecodeSpec};
use crate::error::LoaderError;
use crate::metrics::{Counters, LoaderMetrics};
use crate::order::OrderStage;
use crate::plan::RankPlan;
use crate::stage::{Done, Job};
use crate::state::LoaderState;

/// Batches per epoch of `config` on `index`: the trainer's loop length. The same on every rank
/// (unless `remainder` is `Keep`).
pub fn batches_per_epoch(
    index: &d2ae_shard::DatasetIndex,
    config: &LoaderConfig,
) -> Result<u64, LoaderError> {
    let split = index
        .split(&config.split)
        .map_err(|source| LoaderError::Index {
            url: "index.json".into(),
            source,
        })?;
    Ok(RankPlan::new(split.num_samples, config).batches())
}

/// The streaming loader. Create it inside a tokio runtime (it spawns its async stages there);
/// synchronous code uses [`crate::BlockingLoader`].
pub struct Loader {
    batches: async_channel::Receiver<Result<Batch, LoaderError>>,
    jobs: async_channel::Receiver<Job>,
    done: async_channel::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    state: LoaderState,
    batches_per_epoch: u64,
    config: LoaderConfig,
    pool: Arc<BufferPool>,
}

impl Loader {
    /// Start from the beginning of epoch 0.
    pub fn new(dataset: &Dataset, config: LoaderConfig) -> Result<Loader, LoaderError> {
        let num_samples = split_samples(dataset, &config)?;
        let state = LoaderState::start(&config, num_samples);
        Loader::start(dataset, config, state)
    }

    /// Continue exactly where `state` was taken.
    pub fn resume(
        dataset: &Dataset,
        config: LoaderConfig,
        state: &LoaderState,
    ) -> Result<Loader, LoaderError> {
        let num_samples = split_samples(dataset, &config)?;
        state.check_compatible(&config, num_samples)?;
        Loader::start(dataset, config, state.clone())
    }

    fn start(
        dataset: &Dataset,
        config: LoaderConfig,
        state: LoaderState,
    ) -> Result<Loader, LoaderError> {
        config.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            LoaderError::Config(
                "Loader must be created inside a tokio runtime (or use BlockingLoader)".into(),
            )
        })?;
        let index = dataset.index();
        let split = index
            .split(&config.split)
            .map_err(|source| LoaderError::Index {
                url: dataset.url().to_owned(),
                source,
            })?;
        // The plan counts `num_samples`, the fetch plan the shards' counts: they must agree.
        let listed: u64 = split.shards.iter().map(|s| s.num_samples).sum();
        if listed != split.num_samples {
            return Err(LoaderError::IndexCounts {
                url: dataset.url().to_owned(),
                split: config.split.clone(),
                declared: split.num_samples,
                listed,
            });
        }
        let plan = RankPlan::new(split.num_samples, &config);
        let batches_per_epoch = plan.batches();
        let (width, height) = match config.image_size {
            Some(s) => (s, s),
            None => (index.image.width, index.image.height),
        };
        let counters = Arc::new(Counters::new());
        let cancel = CancellationToken::new();
        let threads_n = config.decode_threads;
        // Batch jobs between the order and batch stages: one per decode thread, as many again
        // queued or finished out of order.
        let window = Arc::new(Semaphore::new(job_window(threads_n)));
        let (job_tx, job_rx) = async_channel::bounded::<Job>(threads_n);
        let (done_tx, done_rx) = async_channel::bounded::<Done>(2 * threads_n);
        let (batch_tx, batch_rx) = async_channel::bounded(config.prefetch_batches);

        let decode_spec = DecodeSpec {
            width,
            height,
            layout: config.layout,
            augment: config.augment,
            attributes: index.attributes.clone().into(),
            factors: index.factors.clone().into(),
        };
        let pool = Arc::new(BufferPool::new());
        let batch_spec = BatchSpec {
            pool: Arc::clone(&pool),
            remainder: config.remainder,
            height,
            width,
            layout: config.layout,
            num_attributes: index.attributes.len(),
            num_factors: index.factors.len(),
        };
        let mut threads = Vec::with_capacity(threads_n + 1);
        for i in 0..threads_n {
            let (spec, batches, jobs, done, counters) = (
                decode_spec.clone(),
                batch_spec.clone(),
                job_rx.clone(),
                done_tx.clone(),
                Arc::clone(&counters),
            );
            threads.push(spawn_thread(format!("d2ae-decode-{i}"), move || {
                decode_worker(spec, batches, jobs, done, counters)
            })?);
        }
        drop(done_tx);
        {
            let (done, counters) = (done_rx.clone(), Arc::clone(&counters));
            threads.push(spawn_thread("d2ae-batch".into(), move || {
                batch_worker(done, batch_tx, counters)
            })?);
        }
        let (first_epoch, skip_slots) = if state.batches_done_in_epoch >= batches_per_epoch {
            (state.epoch + 1, 0)
        } else {
            (
                state.epoch,
                state.batches_done_in_epoch * config.batch_size as u64,
            )
        };
        let order = OrderStage {
            location: dataset.location().clone(),
            shards: split.shards.clone(),
            limits: d2ae_shard::MemberLimits::for_image(
                dataset.index().image.width,
                dataset.index().image.height,
            ),
            plan,
            config: config.clone(),
            first_epoch,
            skip_slots,
            jobs: job_tx,
            window,
            counters: Arc::clone(&counters),
            cancel: cancel.clone(),
        };
        rt.spawn(order.run());
        Ok(Loader {
            batches: batch_rx,
            jobs: job_rx,
            done: done_rx,
            threads,
            cancel,
            counters,
            state,
            batches_per_epoch,
            config,
            pool,
        })
    }

    /// The next batch; `None` after the last epoch (or after an error was returned).
    pub async fn next_batch(&mut self) -> Option<Result<Batch, LoaderError>> {
        let start = Instant::now();
        let next = self.batches.recv().await.ok();
        let wait = start.elapsed().as_nanos() as u64;
        self.counters.wait_ns.fetch_add(wait, Ordering::Relaxed);
        self.counters.last_wait_ns.store(wait, Ordering::Relaxed);
        match &next {
            Some(Ok(batch)) => {
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .images
                    .fetch_add(batch.n as u64, Ordering::Relaxed);
                self.state =
                    self.state
                        .advance(batch.epoch, batch.batch_in_epoch, self.batches_per_epoch);
            }
            Some(Err(_)) => {
                self.batches.close();
            }
            None => {}
        }
        next
    }

    /// Hand a batch's image buffer back once its pixels are copied elsewhere (a tensor, pinned
    /// memory): a later batch is decoded into it instead of a fresh allocation. Optional.
    pub fn recycle(&self, images: Vec<u8>) {
        self.pool.give(images);
    }

    /// Where the loader is: after the last batch returned. Store it with a checkpoint.
    pub fn state(&self) -> LoaderState {
        self.state.clone()
    }

    /// Throughput, waits and fault counts so far.
    pub fn metrics(&self) -> LoaderMetrics {
        LoaderMetrics::snapshot(
            &self.counters,
            self.batches.len(),
            self.config.prefetch_batches,
        )
    }

    /// Batches per epoch on this rank.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// The configuration this loader runs.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Pipeline stages (tasks and threads) still running; it reaches 0 shortly after the loader
    /// is dropped. For tests and diagnostics.
    pub fn live_stages(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.counters.live_stages)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.batches.close();
        self.jobs.close();
        self.done.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Batch jobs in flight between the order and the batch stage with `decode_threads` threads.
pub(crate) fn job_window(decode_threads: usize) -> usize {
    2 * decode_threads
}

fn split_samples(dataset: &Dataset, config: &LoaderConfig) -> Result<u64, LoaderError> {
    dataset
        .index()
        .split(&config.split)
        .map(|s| s.num_samples)
        .map_err(|source| LoaderError::Index {
            url: dataset.url().to_owned(),
            source,
        })
}

fn spawn_thread(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, LoaderError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| LoaderError::Pipeline(format!("cannot start thread {name}: {e}")))
}
