//! Batches: the [`Batch`] the trainer gets, how a decode thread opens one and finishes it, and the
//! batch stage that puts finished batches back in order and queues them for the consumer.
//!
//! Decode threads each decode whole batches and finish out of order; the batch stage holds results
//! in a reorder map (bounded by the job window) until the next expected sequence number arrives. A
//! slot whose sample was unreadable is filled with a copy of another sample of the same batch
//! under `Drop`/`Pad`, so every rank still yields full batches and the same number of them; under
//! `Keep` the batch just gets shorter.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::config::{Layout, Remainder};
use crate::error::LoaderError;
use crate::metrics::{Counters, StageGuard};
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

/// Image buffers the consumer handed back ([`crate::Loader::recycle`]), reused for new batches:
/// a fresh 10 MB buffer costs a memset or page faults on every batch, a reused one nothing.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
}

impl BufferPool {
    /// Buffers held at most (they count in the memory bound).
    pub const CAPACITY: usize = 2;

    pub fn new() -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
            capacity: Self::CAPACITY,
        }
    }

    /// A buffer of `len` bytes (contents unspecified: every byte is overwritten or cut).
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().expect("pool lock").pop();
        match reused {
            Some(mut v) => {
                v.truncate(len);
                v.resize(len, 0);
                v
            }
            None => vec![0; len],
        }
    }

    /// Keep `buffer` for a later batch, unless the pool is full.
    pub fn give(&self, buffer: Vec<u8>) {
        let mut free = self.free.lock().expect("pool lock");
        if free.len() < self.capacity && buffer.capacity() > 0 {
            free.push(buffer);
        }
    }
}

/// Fixed facts of the batches this loader makes.
#[derive(Debug, Clone)]
pub(crate) struct BatchSpec {
    pub pool: Arc<BufferPool>,
    pub remainder: Remainder,
    pub height: u32,
    pub width: u32,
    pub layout: Layout,
    pub num_attributes: usize,
    pub num_factors: usize,
}

impl BatchSpec {
    /// A batch of `n` blank slots for a decode thread to write into.
    pub fn open(&self, epoch: u64, batch: u64, n: usize) -> Batch {
        let image_len = self.height as usize * self.width as usize * 3;
        Batch {
            images: self.pool.take(n * image_len),
            n,
            height: self.height,
            width: self.width,
            layout: self.layout,
            identities: vec![0; n],
            attributes: vec![0; n * self.num_attributes],
            num_attributes: self.num_attributes,
            factors: vec![f32::NAN; n * self.num_factors],
            num_factors: self.num_factors,
            keys: vec![String::new(); n],
            sources: vec![String::new(); n],
            epoch,
            batch_in_epoch: batch,
            filled: 0,
        }
    }

    /// Deal with the slots that are not `good` (their sample was lost or unreadable): under
    /// `Drop`/`Pad` each repeats the nearest readable slot before it (or the first one after);
    /// under `Keep` they are removed.
    pub fn finish(&self, mut b: Batch, good: &[bool]) -> Outcome {
        let Some(first_good) = good.iter().position(|&g| g) else {
            return match self.remainder {
                Remainder::Keep => Outcome::Empty,
                Remainder::Drop | Remainder::Pad => Outcome::Fatal(LoaderError::EmptyBatch {
                    epoch: b.epoch,
                    batch: b.batch_in_epoch,
                }),
            };
        };
        match self.remainder {
            Remainder::Keep => {
                let mut kept = 0;
                for i in (0..b.n).filter(|&i| good[i]) {
                    if i != kept {
                        b.move_slot(i, kept);
                    }
                    kept += 1;
                }
                b.truncate(kept);
            }
            Remainder::Drop | Remainder::Pad => {
                let mut last = first_good;
                for (i, &g) in good.iter().enumerate() {
                    if g {
                        last = i;
                    } else {
                        b.copy_slot(last, i);
                        b.filled += 1;
                    }
                }
            }
        }
        Outcome::Batch(b)
    }
}

impl Batch {
    /// Slot `to` becomes a copy of slot `from`.
    fn copy_slot(&mut self, from: usize, to: usize) {
        let len = self.image_len();
        self.images
            .copy_within(from * len..(from + 1) * len, to * len);
        let a = self.num_attributes;
        self.attributes
            .copy_within(from * a..(from + 1) * a, to * a);
        let f = self.num_factors;
        self.factors.copy_within(from * f..(from + 1) * f, to * f);
        self.identities[to] = self.identities[from];
        self.keys[to] = self.keys[from].clone();
        self.sources[to] = self.sources[from].clone();
    }

    /// Like [`Batch::copy_slot`], leaving `from`'s strings empty (it is about to be dropped).
    fn move_slot(&mut self, from: usize, to: usize) {
        self.copy_slot(from, to);
        self.keys[to] = std::mem::take(&mut self.keys[from]);
        self.sources[to] = std::mem::take(&mut self.sources[from]);
    }

    /// Keep the first `n` slots.
    fn truncate(&mut self, n: usize) {
        self.images.truncate(n * self.image_len());
        self.identities.truncate(n);
        self.attributes.truncate(n * self.num_attributes);
        self.factors.truncate(n * self.num_factors);
        self.keys.truncate(n);
        self.sources.truncate(n);
        self.n = n;
    }
}

/// The batch stage's thread body: finished batches back in `seq` order, onto the prefetch queue.
pub(crate) fn batch_worker(
    done: async_channel::Receiver<Done>,
    out: async_channel::Sender<Result<Batch, LoaderError>>,
    counters: Arc<Counters>,
) {
    let _guard = StageGuard::new(&counters);
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next_seq = 0u64;
    while let Ok(msg) = done.recv_blocking() {
        pending.insert(msg.seq, msg);
        while let Some(Done {
            outcome, permit, ..
        }) = pending.remove(&next_seq)
        {
            next_seq += 1;
            drop(permit);
            let result = match outcome {
                Outcome::Batch(b) => {
                    counters
                        .samples_filled
                        .fetch_add(b.filled as u64, Ordering::Relaxed);
                    Ok(b)
                }
                Outcome::Empty => continue,
                Outcome::Fatal(err) => Err(err),
            };
            let stop = result.is_err();
            if out.send_blocking(result).is_err() || stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(remainder: Remainder) -> BatchSpec {
        BatchSpec {
            pool: Arc::new(BufferPool::new()),
            remainder,
            height: 1,
            width: 1,
            layout: Layout::Nhwc,
            num_attributes: 1,
            num_factors: 1,
        }
    }

    /// A batch whose slot i has pixels [i; 3], identity i, key "i".
    fn numbered(spec: &BatchSpec, n: usize) -> Batch {
        let mut b = spec.open(0, 0, n);
        for i in 0..n {
            b.images[i * 3..i * 3 + 3].fill(i as u8);
            b.identities[i] = i as i64;
            b.attributes[i] = i as i8;
            b.factors[i] = i as f32;
            b.keys[i] = i.to_string();
        }
        b
    }

    fn batch(outcome: Outcome) -> Batch {
        match outcome {
            Outcome::Batch(b) => b,
            _ => panic!("expected a batch"),
        }
    }

    #[test]
    fn drop_and_pad_fill_lost_slots_from_the_nearest_readable_one_before() {
        let s = spec(Remainder::Drop);
        let b = batch(s.finish(numbered(&s, 5), &[false, true, false, false, true]));
        assert_eq!(b.identities, vec![1, 1, 1, 1, 4]);
        assert_eq!(b.images, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4]);
        assert_eq!(b.keys, vec!["1", "1", "1", "1", "4"]);
        assert_eq!((b.n, b.filled), (5, 3));
        assert!(matches!(
            s.finish(numbered(&s, 2), &[false, false]),
            Outcome::Fatal(LoaderError::EmptyBatch { .. })
        ));
    }

    #[test]
    fn keep_removes_lost_slots() {
        let s = spec(Remainder::Keep);
        let b = batch(s.finish(numbered(&s, 5), &[false, true, false, true, true]));
        assert_eq!(b.identities, vec![1, 3, 4]);
        assert_eq!(b.images, vec![1, 1, 1, 3, 3, 3, 4, 4, 4]);
        assert_eq!(b.attributes, vec![1, 3, 4]);
        assert_eq!(b.factors, vec![1.0, 3.0, 4.0]);
        assert_eq!(b.keys, vec!["1", "3", "4"]);
        assert_eq!((b.n, b.filled), (3, 0));
        assert!(matches!(
            s.finish(numbered(&s, 2), &[false, false]),
            Outcome::Empty
        ));
    }

    #[test]
    fn recycled_buffers_are_reused_at_the_requested_length() {
        let s = spec(Remainder::Drop);
        let first = s.open(0, 0, 4).images;
        let ptr = first.as_ptr();
        s.pool.give(first);
        let again = s.open(0, 1, 3);
        assert_eq!((again.images.as_ptr(), again.images.len()), (ptr, 9));
        for _ in 0..3 {
            s.pool.give(vec![1; 12]);
        }
        assert_eq!(s.pool.free.lock().unwrap().len(), BufferPool::CAPACITY);
        assert_eq!(s.open(0, 2, 5).images.len(), 15);
    }
}
