//! The epoch plan: which sample goes to which rank, batch and slot. Pure functions of the index
//! and the config, so every rank computes the same plan without talking to the others.
//!
//! An epoch is one sequential stream: the split's shards in a seeded order, each shard's samples in
//! stored order, at stream positions `p = 0..N` fixed by the index's per-shard counts (a truncated
//! shard leaves holes rather than shifting later samples). The stream passes through a seeded
//! shuffle buffer, giving the epoch order `q = 0..N`. Rank `r` of `W` owns the positions
//! `q ≡ r (mod W)`; its `k`-th slot is the virtual position `v = r + k·W`, read at `q = v mod N`
//! (`v ≥ N` only with [`Remainder::Pad`]). Slot `k` is batch `k / B`. Because every choice is made
//! in this one sequential stage, the number of decode threads cannot change the result; why the
//! split is by sample rather than by shard: ranks then get equal shares even with a single shard.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{LoaderConfig, Remainder};

/// One rank's share of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankPlan {
    /// Samples in the split (`N`).
    pub num_samples: u64,
    /// `W`
    pub world_size: u64,
    /// `r`
    pub rank: u64,
    /// `B`
    pub batch_size: u64,
    /// How the remainder is handled.
    pub remainder: Remainder,
}

impl RankPlan {
    /// The plan of `config`'s rank over a split of `num_samples`.
    pub fn new(num_samples: u64, config: &LoaderConfig) -> Self {
        RankPlan {
            num_samples,
            world_size: config.world_size as u64,
            rank: config.rank as u64,
            batch_size: config.batch_size as u64,
            remainder: config.remainder,
        }
    }

    /// Batches this rank yields per epoch. Equal on every rank for `Drop` and `Pad`.
    pub fn batches(&self) -> u64 {
        let (n, w, b) = (self.num_samples, self.world_size, self.batch_size);
        match self.remainder {
            Remainder::Drop => (n / w) / b,
            Remainder::Pad => (n.div_ceil(w)).div_ceil(b),
            Remainder::Keep => self.slots().div_ceil(b),
        }
    }

    /// Slots (samples, counting padding) this rank fills per epoch.
    pub fn slots(&self) -> u64 {
        match self.remainder {
            Remainder::Drop | Remainder::Pad => self.batches() * self.batch_size,
            Remainder::Keep => {
                if self.num_samples > self.rank {
                    (self.num_samples - self.rank).div_ceil(self.world_size)
                } else {
                    0
                }
            }
        }
    }

    /// Samples in batch `batch` (only the last batch of `Keep` is short).
    pub fn batch_len(&self, batch: u64) -> u64 {
        let start = batch * self.batch_size;
        (self.slots() - start).min(self.batch_size)
    }

    /// The virtual position of slot `k` (the augmentation seed's position).
    pub fn virtual_position(&self, slot: u64) -> u64 {
        self.rank + slot * self.world_size
    }

    /// The slot that epoch position `q` fills on its first pass, if it belongs to this rank.
    pub fn first_pass_slot(&self, q: u64) -> Option<u64> {
        if q % self.world_size != self.rank {
            return None;
        }
        let k = (q - self.rank) / self.world_size;
        (k < self.slots()).then_some(k)
    }

    /// The padding slots (`v ≥ N`) as `(slot, epoch position read)`, in slot order.
    pub fn pad_slots(&self) -> Vec<(u64, u64)> {
        let n = self.num_samples;
        if n == 0 {
            return Vec::new();
        }
        let first = if n > self.rank {
            (n - self.rank).div_ceil(self.world_size)
        } else {
            0
        };
        (first..self.slots())
            .map(|k| (k, self.virtual_position(k) % n))
            .collect()
    }
}

/// Batches per epoch for `config` on a split of `num_samples`: the trainer's loop length. The same
/// on every rank unless `remainder` is [`Remainder::Keep`].
pub fn batches_for(num_samples: u64, config: &LoaderConfig) -> u64 {
    RankPlan::new(num_samples, config).batches()
}

/// splitmix64: spreads structured inputs (seed, epoch, position) into independent RNG seeds.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of one random stream of one epoch.
pub(crate) fn stream_seed(seed: u64, epoch: u64, stream: u64) -> u64 {
    mix(mix(mix(seed) ^ epoch) ^ stream)
}

const SHARD_STREAM: u64 = 1;
const BUFFER_STREAM: u64 = 2;
const AUGMENT_STREAM: u64 = 3;

/// The seed of the augmentation of virtual position `v`: independent of thread count and timing.
pub(crate) fn augment_seed(seed: u64, epoch: u64, v: u64) -> u64 {
    mix(stream_seed(seed, epoch, AUGMENT_STREAM) ^ v)
}

/// The order of the shards in `epoch`.
pub fn shard_order(num_shards: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..num_shards).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, epoch, SHARD_STREAM));
        order.shuffle(&mut rng);
    }
    order
}

/// A seeded shuffle buffer in the webdataset manner: once full, each new item replaces a random
/// held one, which is emitted. With a capacity of 0 or 1 it passes items through in order.
pub struct ShuffleBuffer<T> {
    items: Vec<T>,
    capacity: usize,
    rng: ChaCha8Rng,
}

impl<T> ShuffleBuffer<T> {
    /// The buffer of `epoch`.
    pub fn new(capacity: usize, seed: u64, epoch: u64) -> Self {
        ShuffleBuffer {
            items: Vec::with_capacity(capacity.min(1 << 16)),
            capacity,
            rng: ChaCha8Rng::seed_from_u64(stream_seed(seed, epoch, BUFFER_STREAM)),
        }
    }

    /// Take `item`; maybe emit one.
    pub fn push(&mut self, item: T) -> Option<T> {
        if self.capacity <= 1 {
            return Some(item);
        }
        if self.items.len() < self.capacity {
            self.items.push(item);
            return None;
        }
        let i = self.rng.random_range(0..self.items.len());
        Some(std::mem::replace(&mut self.items[i], item))
    }

    /// After the last push: emit the held items in random order, one per call.
    pub fn drain_one(&mut self) -> Option<T> {
        if self.items.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.items.len());
        Some(self.items.swap_remove(i))
    }

    /// Items held now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: u64, w: u64, r: u64, b: u64, remainder: Remainder) -> RankPlan {
        RankPlan {
            num_samples: n,
            world_size: w,
            rank: r,
            batch_size: b,
            remainder,
        }
    }

    /// All slots of all ranks as epoch positions.
    fn positions(p: &RankPlan) -> Vec<u64> {
        let mut out: Vec<u64> = (0..p.num_samples)
            .filter_map(|q| p.first_pass_slot(q).map(|_| q))
            .collect();
        out.extend(p.pad_slots().into_iter().map(|(_, q)| q));
        out
    }

    #[test]
    fn drop_and_pad_give_every_rank_the_same_batch_count() {
        for n in [0u64, 1, 5, 17, 100, 101, 999] {
            for w in [1u64, 2, 3, 4, 7] {
                for b in [1u64, 4, 8] {
                    for remainder in [Remainder::Drop, Remainder::Pad] {
                        let counts: Vec<u64> = (0..w)
                            .map(|r| plan(n, w, r, b, remainder).batches())
                            .collect();
                        assert!(
                            counts.iter().all(|&c| c == counts[0]),
                            "{n} {w} {b} {counts:?}"
                        );
                        for r in 0..w {
                            let p = plan(n, w, r, b, remainder);
                            assert_eq!(positions(&p).len() as u64, p.slots(), "{n} {w} {r} {b}");
                        }
                    }
                }
            }
        }
        assert_eq!(plan(101, 4, 0, 8, Remainder::Drop).batches(), 3);
        assert_eq!(plan(101, 4, 3, 8, Remainder::Pad).batches(), 4);
    }

    #[test]
    fn keep_covers_every_position_exactly_once() {
        let (n, w) = (103u64, 4u64);
        let mut all: Vec<u64> = (0..w)
            .flat_map(|r| positions(&plan(n, w, r, 10, Remainder::Keep)))
            .collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        let p = plan(n, w, 3, 10, Remainder::Keep);
        assert_eq!(p.slots(), 25);
        assert_eq!(p.batches(), 3);
        assert_eq!(p.batch_len(2), 5);
    }

    #[test]
    fn pad_repeats_the_start_of_the_epoch() {
        let p = plan(10, 4, 3, 2, Remainder::Pad);
        // ⌈10/4⌉ = 3 → 2 batches of 2: v = 3, 7, 11, 15 → q = 3, 7, 1, 5.
        assert_eq!(p.batches(), 2);
        assert_eq!(p.pad_slots(), vec![(2, 1), (3, 5)]);
        // Fewer samples than ranks: every rank still gets a full batch.
        let tiny = plan(2, 4, 3, 2, Remainder::Pad);
        assert_eq!(tiny.batches(), 1);
        assert_eq!(tiny.pad_slots(), vec![(0, 1), (1, 1)]);
    }

    #[test]
    fn shuffle_buffer_is_a_seeded_permutation() {
        let run = |seed, epoch| {
            let mut buf = ShuffleBuffer::new(16, seed, epoch);
            let mut out: Vec<u32> = (0..100).filter_map(|i| buf.push(i)).collect();
            while let Some(x) = buf.drain_one() {
                out.push(x);
            }
            out
        };
        let a = run(7, 0);
        assert_eq!(a, run(7, 0));
        assert_ne!(a, run(7, 1));
        assert_ne!(a, run(8, 0));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let mut pass = ShuffleBuffer::new(1, 7, 0);
        assert_eq!(pass.push(5), Some(5));
    }

    #[test]
    fn shard_order_depends_on_seed_and_epoch_only_when_shuffling() {
        assert_eq!(shard_order(5, 1, 0, false), vec![0, 1, 2, 3, 4]);
        let a = shard_order(20, 1, 0, true);
        assert_eq!(a, shard_order(20, 1, 0, true));
        assert_ne!(a, shard_order(20, 1, 1, true));
    }
}
