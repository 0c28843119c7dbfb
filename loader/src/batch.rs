//! Batch stage: decoded samples back in slot order, packed into contiguous [`Batch`]es and queued
//! for the consumer.
//!
//! Decode threads finish out of order; results are held in a reorder map (bounded by the job
//! window) until the next expected sequence number arrives. A slot whose sample was unreadable is
//! filled with a copy of another sample of the same batch under `Drop`/`Pad`, so every rank still
//! yields full batches and the same number of them; under `Keep` the batch just gets shorter.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{Layout, Remainder};
use crate::decode::DecodedSample;
use crate::error::LoaderError;
use crate::metrics::{Counters, StageGuard};
use crate::plan::RankPlan;
use crate::stage::{Done, Outcome};

/// A batch of images with their labels, as the trainer consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n×3×height×width` ([`Layout::Nchw`]) or `n×height×width×3` ([`Layout::Nhwc`]) bytes, RGB,
    /// not normalised (that happens on the device).
    pub images: Vec<u8>,
    /// Samples in the batch (the batch size, except the last batch under `Remainder::Keep`).
    pub n: usize,
    pub height: u32,
    pub width: u32,
    pub layout: Layout,
    /// Identity class per sample (an index into `index.json`'s identities).
    pub identities: Vec<i64>,
    /// `n × num_attributes`, row-major: +1 present, −1 absent, 0 unknown; columns in the order of
    /// `index.json`'s `attributes`.
    pub attributes: Vec<i8>,
    pub num_attributes: usize,
    /// `n × num_factors`, row-major, NaN when unknown; columns in the order of `index.json`'s
    /// `factors`.
    pub factors: Vec<f32>,
    pub num_factors: usize,
    /// Sample keys.
    pub keys: Vec<String>,
    /// Source image paths (from the sample metadata).
    pub sources: Vec<String>,
    /// Epoch of this batch (from 0).
    pub epoch: u64,
    /// Index of this batch within its epoch (from 0).
    pub batch_in_epoch: u64,
    /// Slots that repeat another sample of this batch because their own was unreadable.
    pub filled: usize,
}

impl Batch {
    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.height as usize * self.width as usize * 3
    }

    /// The pixels of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// The attribute row of sample `i`.
    pub fn attributes_of(&self, i: usize) -> &[i8] {
        &self.attributes[i * self.num_attributes..(i + 1) * self.num_attributes]
    }
}

/// Fixed facts of the batches this loader makes.
pub(crate) struct BatchSpec {
    pub plan: RankPlan,
    pub height: u32,
    pub width: u32,
    pub layout: Layout,
    pub num_attributes: usize,
    pub num_factors: usize,
}

/// (epoch, batch, its slots so far; `None` for an unreadable sample).
type OpenBatch = (u64, u64, Vec<Option<Box<DecodedSample>>>);

/// The batch stage's thread body.
pub(crate) fn batch_worker(
    spec: BatchSpec,
    done: async_channel::Receiver<Done>,
    out: async_channel::Sender<Result<Batch, LoaderError>>,
    counters: Arc<Counters>,
) {
    let _guard = StageGuard::new(&counters);
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut open: Option<OpenBatch> = None;
    while let Ok(msg) = done.recv_blocking() {
        pending.insert(msg.seq, msg);
        while let Some(msg) = pending.remove(&next_seq) {
            next_seq += 1;
            let Done {
                epoch,
                slot,
                outcome,
                permit,
                ..
            } = msg;
            drop(permit);
            let sample = match outcome {
                Outcome::Fatal(err) => {
                    let _ = out.send_blocking(Err(err));
                    return;
                }
                Outcome::Decoded(s) => Some(s),
                Outcome::Skipped => None,
            };
            let b = spec.plan.batch_size;
            let (batch, pos) = (slot / b, slot % b);
            let entry = open.get_or_insert_with(|| (epoch, batch, Vec::with_capacity(b as usize)));
            if (entry.0, entry.1) != (epoch, batch) || entry.2.len() as u64 != pos {
                let err = LoaderError::Pipeline(format!(
                    "slot {slot} of epoch {epoch} arrived out of order (open batch {} of epoch {})",
                    entry.1, entry.0
                ));
                let _ = out.send_blocking(Err(err));
                return;
            }
            entry.2.push(sample);
            if entry.2.len() as u64 == spec.plan.batch_len(batch) {
                let (epoch, batch, samples) = open.take().expect("open batch");
                let result = match assemble(&spec, epoch, batch, samples) {
                    Some(result) => result,
                    None => continue,
                };
                if let Ok(b) = &result {
                    counters
                        .samples_filled
                        .fetch_add(b.filled as u64, Ordering::Relaxed);
                }
                let stop = result.is_err();
                if out.send_blocking(result).is_err() || stop {
                    return;
                }
            }
        }
    }
}

/// Pack one batch; `None` when a `Keep` batch has nothing readable (nothing to send).
fn assemble(
    spec: &BatchSpec,
    epoch: u64,
    batch: u64,
    samples: Vec<Option<Box<DecodedSample>>>,
) -> Option<Result<Batch, LoaderError>> {
    let good: Vec<usize> = (0..samples.len())
        .filter(|&i| samples[i].is_some())
        .collect();
    let (order, filled): (Vec<usize>, usize) = match spec.plan.remainder {
        Remainder::Keep => {
            if good.is_empty() {
                return None;
            }
            (good, 0)
        }
        Remainder::Drop | Remainder::Pad => {
            let Some(&first_good) = good.first() else {
                return Some(Err(LoaderError::EmptyBatch { epoch, batch }));
            };
            // A lost slot repeats the nearest readable sample before it (or the first one after).
            let mut last = first_good;
            let order = (0..samples.len())
                .map(|i| {
                    if samples[i].is_some() {
                        last = i;
                    }
                    if samples[i].is_some() {
                        i
                    } else {
                        last
                    }
                })
                .collect();
            (order, samples.len() - good.len())
        }
    };
    let n = order.len();
    let image_len = spec.height as usize * spec.width as usize * 3;
    let mut b = Batch {
        images: Vec::with_capacity(n * image_len),
        n,
        height: spec.height,
        width: spec.width,
        layout: spec.layout,
        identities: Vec::with_capacity(n),
        attributes: Vec::with_capacity(n * spec.num_attributes),
        num_attributes: spec.num_attributes,
        factors: Vec::with_capacity(n * spec.num_factors),
        num_factors: spec.num_factors,
        keys: Vec::with_capacity(n),
        sources: Vec::with_capacity(n),
        epoch,
        batch_in_epoch: batch,
        filled,
    };
    for i in order {
        let s = samples[i].as_ref().expect("index of a readable sample");
        b.images.extend_from_slice(&s.pixels);
        b.identities.push(s.identity);
        b.attributes.extend_from_slice(&s.attributes);
        b.factors.extend_from_slice(&s.factors);
        b.keys.push(s.key.clone());
        b.sources.push(s.source.clone());
    }
    Some(Ok(b))
}
