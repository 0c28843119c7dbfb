//! Order stage: the single sequential task that decides which sample fills which slot.
//!
//! It starts shard readers for this rank's fetch plan only (at most `readahead_shards` ahead of
//! the one it consumes), walks the rank's range of the epoch stream, runs the rank's shuffle
//! buffer, fills slots (and padding), gathers them into batches and sends each batch as one
//! [`Job`]. All randomness that defines order lives here;
//! decode threads only see a per-sample augmentation seed, so their number and timing cannot
//! change any batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use d2ae_shard::{DatasetLocation, ShardEntry};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::LoaderConfig;
use crate::error::LoaderError;
use crate::fetch::{read_shard, ShardMsg, ShardSource};
use crate::metrics::{Counters, StageGuard};
use crate::plan::{augment_seed, RankPlan, ShardRead, ShuffleBuffer};
use crate::stage::{Job, JobKind, Slot};
use d2ae_shard::RawSample;

/// Samples a shard reader may queue ahead of the order stage.
pub(crate) const SHARD_QUEUE: usize = 32;

/// One position of the epoch stream.
#[derive(Clone)]
struct Item {
    shard: Arc<str>,
    /// `None`: lost with a truncated shard.
    sample: Option<RawSample>,
}

/// Everything the order stage needs; consumed by [`OrderStage::run`].
pub(crate) struct OrderStage {
    pub location: DatasetLocation,
    pub shards: Vec<ShardEntry>,
    /// Member size limits from the index's image size.
    pub limits: d2ae_shard::MemberLimits,
    pub plan: RankPlan,
    pub config: LoaderConfig,
    pub first_epoch: u64,
    /// Slots of `first_epoch` already consumed before a resume.
    pub skip_slots: u64,
    pub jobs: async_channel::Sender<Job>,
    pub window: Arc<Semaphore>,
    pub counters: Arc<Counters>,
    pub cancel: CancellationToken,
}

/// Gathers slots into batch jobs and sends them, numbered.
struct Sink<'a> {
    jobs: &'a async_channel::Sender<Job>,
    window: &'a Arc<Semaphore>,
    cancel: &'a CancellationToken,
    plan: RankPlan,
    seq: u64,
    /// The batch being gathered: (epoch, batch, its slots so far).
    open: Option<(u64, u64, Vec<Slot>)>,
}

/// The consumer is gone or the loader is shutting down.
struct Stopped;

impl Sink<'_> {
    /// Slot `slot` of `epoch`; slots arrive in order, so a batch is complete at its last slot.
    async fn push(&mut self, epoch: u64, slot: u64, item: Slot) -> Result<(), Stopped> {
        let batch = slot / self.plan.batch_size;
        let len = self.plan.batch_len(batch);
        let open = self
            .open
            .get_or_insert_with(|| (epoch, batch, Vec::with_capacity(len as usize)));
        debug_assert_eq!(
            (open.0, open.1, open.2.len() as u64),
            (epoch, batch, slot % self.plan.batch_size)
        );
        open.2.push(item);
        if open.2.len() as u64 == len {
            let (epoch, batch, slots) = self.open.take().expect("open batch");
            self.send(JobKind::Batch {
                epoch,
                batch,
                slots,
            })
            .await?;
        }
        Ok(())
    }

    async fn send(&mut self, kind: JobKind) -> Result<(), Stopped> {
        let permit = tokio::select! {
            p = Arc::clone(self.window).acquire_owned() => p.map_err(|_| Stopped)?,
            _ = self.cancel.cancelled() => return Err(Stopped),
        };
        let job = Job {
            seq: self.seq,
            kind,
            permit: Some(permit),
        };
        self.seq += 1;
        tokio::select! {
            r = self.jobs.send(job) => r.map_err(|_| Stopped),
            _ = self.cancel.cancelled() => Err(Stopped),
        }
    }
}

impl OrderStage {
    pub async fn run(self) {
        let _guard = StageGuard::new(&self.counters);
        let mut sink = Sink {
            jobs: &self.jobs,
            window: &self.window,
            cancel: &self.cancel,
            plan: self.plan,
            seq: 0,
            open: None,
        };
        let mut epoch = self.first_epoch;
        let mut skip = self.skip_slots;
        while self.config.epochs.is_none_or(|n| epoch < n) {
            match self.epoch(epoch, skip, &mut sink).await {
                Ok(None) => {}
                Ok(Some(fatal)) => {
                    let _ = sink.send(JobKind::Fatal(fatal)).await;
                    return;
                }
                Err(Stopped) => return,
            }
            epoch += 1;
            skip = 0;
        }
    }

    /// Send one epoch's slots from `skip` on; `Some(err)` when a shard cannot be read at all.
    async fn epoch(
        &self,
        epoch: u64,
        skip: u64,
        sink: &mut Sink<'_>,
    ) -> Result<Option<LoaderError>, Stopped> {
        let slots = self.plan.slots();
        if skip >= slots {
            return Ok(None);
        }
        let seed = self.config.seed;
        let pads: Vec<(u64, u64)> = self
            .plan
            .pad_slots()
            .into_iter()
            .filter(|&(k, _)| k >= skip)
            .collect();
        // Local positions read again by padding slots, kept when they pass (at most one batch).
        let mut kept: HashMap<u64, Option<Item>> = pads.iter().map(|&(_, j)| (j, None)).collect();
        // Slots below this are filled on the range's first pass, the rest by padding.
        let first_pass_end = slots.min(self.plan.range_len());
        let mut next_slot = skip;
        let mut buffer = ShuffleBuffer::new(
            if self.config.shuffle {
                self.config.shuffle_buffer
            } else {
                0
            },
            seed,
            epoch,
        );
        // Position in this rank's local (shuffled) order.
        let mut j = 0u64;
        let counts: Vec<u64> = self.shards.iter().map(|s| s.num_samples).collect();
        let reads = self
            .plan
            .fetch_plan(&counts, seed, epoch, self.config.shuffle);
        let mut readers = Readers::new(self, reads);

        // Emit one position of the local order: keep it for padding, send it if it fills a slot.
        macro_rules! emit {
            ($item:expr) => {{
                let item: Item = $item;
                if let Some(slot) = kept.get_mut(&j) {
                    *slot = Some(item.clone());
                }
                if j < first_pass_end && j >= skip {
                    debug_assert_eq!(j, next_slot);
                    sink.push(epoch, j, self.slot(item, epoch, j)).await?;
                    next_slot = j + 1;
                }
                j += 1;
            }};
        }

        'shards: while let Some((read, rx)) = readers.next() {
            // Once every slot of the first pass is sent and no padding needs a later position,
            // the rest of the range is not needed (`Drop` leaves its tail for later epochs).
            if next_slot >= first_pass_end && kept.values().all(Option::is_some) {
                break 'shards;
            }
            let entry = &self.shards[read.shard];
            let name: Arc<str> = Arc::from(entry.name.as_str());
            let mut got = 0u64;
            let mut failure = None;
            loop {
                let msg = tokio::select! {
                    m = rx.recv() => m,
                    _ = self.cancel.cancelled() => return Err(Stopped),
                };
                match msg {
                    Ok(ShardMsg::Sample(sample)) => {
                        if got == read.take {
                            tracing::warn!(shard = %name, key = %sample.key,
                                "shard has more samples than index.json says; ignoring the extra ones");
                            continue;
                        }
                        got += 1;
                        let item = Item {
                            shard: Arc::clone(&name),
                            sample: Some(sample),
                        };
                        if let Some(out) = buffer.push(item) {
                            emit!(out);
                        }
                    }
                    Ok(ShardMsg::Failed(reason)) => {
                        failure = Some(reason);
                        break;
                    }
                    Ok(ShardMsg::Fatal(err)) => return Ok(Some(err)),
                    Err(_) => break,
                }
            }
            if got < read.take || failure.is_some() {
                self.counters
                    .shards_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    shard = %name,
                    "shard ended after {} of {} samples: {}; going on without the rest",
                    read.skip + got,
                    entry.num_samples,
                    failure.as_deref().unwrap_or("no more members")
                );
            }
            for _ in got..read.take {
                let item = Item {
                    shard: Arc::clone(&name),
                    sample: None,
                };
                if let Some(out) = buffer.push(item) {
                    emit!(out);
                }
            }
        }
        drop(readers);
        while let Some(out) = buffer.drain_one() {
            if next_slot >= first_pass_end && kept.values().all(Option::is_some) {
                break;
            }
            emit!(out);
        }
        for (k, j) in pads {
            let item = kept.get(&j).cloned().flatten().unwrap_or_else(|| Item {
                shard: Arc::from("?"),
                sample: None,
            });
            sink.push(epoch, k, self.slot(item, epoch, k)).await?;
        }
        Ok(None)
    }

    fn slot(&self, item: Item, epoch: u64, slot: u64) -> Slot {
        match item.sample {
            Some(sample) => Slot::Sample {
                shard: item.shard,
                sample,
                aug_seed: augment_seed(self.config.seed, epoch, self.plan.slot_id(slot)),
            },
            None => Slot::Lost { shard: item.shard },
        }
    }
}

/// Shard readers running ahead of the order stage, in the order of this rank's fetch plan.
struct Readers<'a> {
    stage: &'a OrderStage,
    pending: VecDeque<ShardRead>,
    active: VecDeque<(ShardRead, async_channel::Receiver<ShardMsg>)>,
}

impl<'a> Readers<'a> {
    fn new(stage: &'a OrderStage, reads: Vec<ShardRead>) -> Self {
        Readers {
            stage,
            pending: reads.into(),
            active: VecDeque::new(),
        }
    }

    /// The next read's sample channel, starting readers to keep `readahead_shards` ahead.
    fn next(&mut self) -> Option<(ShardRead, async_channel::Receiver<ShardMsg>)> {
        self.fill(1);
        let next = self.active.pop_front();
        self.fill(0);
        next
    }

    fn fill(&mut self, extra: usize) {
        let limit = self.stage.config.readahead_shards + extra;
        while self.active.len() < limit {
            let Some(read) = self.pending.pop_front() else {
                return;
            };
            let entry = &self.stage.shards[read.shard];
            let (tx, rx) = async_channel::bounded(SHARD_QUEUE);
            let source = ShardSource {
                store: Arc::clone(&self.stage.location.store),
                path: self.stage.location.child(&entry.name),
                name: Arc::from(entry.name.as_str()),
                attempts: self.stage.config.fetch_attempts,
                backoff: self.stage.config.fetch_backoff,
                skip: read.skip,
                // A read that runs to the shard's end goes on to its real end, so extra samples
                // beyond the index's count are noticed (and ignored).
                stop_after: (read.skip + read.take < entry.num_samples)
                    .then_some(read.skip + read.take),
                limits: self.stage.limits,
            };
            self.stage
                .counters
                .shards_opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let counters = Arc::clone(&self.stage.counters);
            let cancel = self.stage.cancel.clone();
            let rt = Handle::current();
            tokio::task::spawn_blocking(move || read_shard(rt, source, tx, counters, cancel));
            self.active.push_back((read, rx));
        }
    }
}
