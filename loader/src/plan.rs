//! The epoch plan: which sample goes to which rank, batch and slot, and which shards a rank reads.
//! Pure functions of the index and the config, so every rank computes the same plan without
//! talking to the others.
//!
//! An epoch is one sequential stream: the split's shards in a seeded order, each shard's samples in
//! stored order, at stream positions `p = 0..N` fixed by the index's per-shard counts (a truncated
//! shard leaves holes rather than shifting later samples). The stream is cut into `W` contiguous
//! ranges, one per rank ([`RankPlan::range`]); rank `r` reads only the shards overlapping its range
//! ([`fetch_plan`]), boundary shards only up to the range's end, and passes its range through its
//! own seeded shuffle buffer, giving the rank's local order `j = 0..len`. Slot `k < len` is `j = k`;
//! with [`Remainder::Pad`] the slots beyond `len` repeat the start of that local order. Slot `k` is
//! batch `k / B`.
//!
//! Why ranges rather than every `W`-th sample: a rank then fetches and decompresses about `1/W` of
//! the shards (plus at most two shared boundary shards), not all of them. Ranges are of samples,
//! not of shards, so the shares stay equal with fewer shards than ranks, even with one shard.
//! Because every choice is made in one sequential stage per rank, the number of decode threads
//! cannot change the result.

use std::ops::Range;

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
            Remainder::Keep => self.range_len(),
        }
    }

    /// Samples in batch `batch` (only the last batch of `Keep` is short).
    pub fn batch_len(&self, batch: u64) -> u64 {
        let start = batch * self.batch_size;
        (self.slots() - start).min(self.batch_size)
    }

    /// This rank's range of the epoch stream, in virtual positions: `v` is read at stream position
    /// `v mod N`. `Drop`: `⌊N/W⌋` each, the stream's last `N mod W` positions unused. `Pad`:
    /// `⌈N/W⌉` each, the last range running on from the start of the stream. `Keep`: the stream
    /// cut into `W` ranges whose lengths differ by at most one, the longer ones first.
    pub fn range(&self) -> Range<u64> {
        let (n, w, r) = (self.num_samples, self.world_size, self.rank);
        match self.remainder {
            Remainder::Drop => r * (n / w)..(r + 1) * (n / w),
            Remainder::Pad => r * n.div_ceil(w)..(r + 1) * n.div_ceil(w),
            Remainder::Keep => {
                let start = |r: u64| r * (n / w) + r.min(n % w);
                start(r)..start(r + 1)
            }
        }
    }

    /// Samples in this rank's range (`len`).
    pub fn range_len(&self) -> u64 {
        let range = self.range();
        range.end - range.start
    }

    /// The local-order index that slot `k` reads: `k` itself, or for padding slots (`k ≥ len`)
    /// the start of the local order again. `None` when the range is empty.
    pub fn local_index(&self, slot: u64) -> Option<u64> {
        let len = self.range_len();
        (len > 0).then(|| if slot < len { slot } else { (slot - len) % len })
    }

    /// The padding slots (`k ≥ len`) as `(slot, local index read)`, in slot order.
    pub fn pad_slots(&self) -> Vec<(u64, u64)> {
        let len = self.range_len();
        (len.min(self.slots())..self.slots())
            .filter_map(|k| self.local_index(k).map(|j| (k, j)))
            .collect()
    }

    /// A number for slot `k` unique over all ranks (`r + k·W`), which seeds its augmentation. With
    /// one rank it is `k`, as before the rank-range split, so single-rank runs keep their batches.
    pub fn slot_id(&self, slot: u64) -> u64 {
        self.rank + slot * self.world_size
    }

    /// The shards this rank reads in `epoch`, given every shard's sample count in index order.
    pub fn fetch_plan(
        &self,
        counts: &[u64],
        seed: u64,
        epoch: u64,
        shuffle: bool,
    ) -> Vec<ShardRead> {
        let order = shard_order(counts.len(), seed, epoch, shuffle);
        fetch_plan(counts, &order, self.range())
    }
}

/// A run of consecutive samples of one shard that a rank reads: samples `skip..skip + take` in
/// stored order. The reader still decompresses the `skip` samples before them (a zstd stream
/// cannot seek) but stops after the last one it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRead {
    /// Index of the shard in the split's list.
    pub shard: usize,
    pub skip: u64,
    pub take: u64,
}

/// The runs of shard samples behind the virtual positions `range` of a stream made of the shards
/// in `order` (indices into `counts`, each shard's sample count). Positions past the end wrap to
/// the start, so a shard can appear twice (a wrapped `Pad` range over few shards).
pub fn fetch_plan(counts: &[u64], order: &[usize], range: Range<u64>) -> Vec<ShardRead> {
    let total: u64 = order.iter().map(|&i| counts[i]).sum();
    let mut reads = Vec::new();
    if total == 0 {
        return reads;
    }
    let (mut v, end) = (range.start, range.end);
    while v < end {
        // One pass over the stream covers positions [v mod N, min(N, that + rest)).
        let from = v % total;
        let to = total.min(from + (end - v));
        let mut p = 0u64;
        for &shard in order {
            let (lo, hi) = (p, p + counts[shard]);
            p = hi;
            let (a, b) = (from.max(lo), to.min(hi));
            if a < b {
                reads.push(ShardRead {
                    shard,
                    skip: a - lo,
                    take: b - a,
                });
            }
        }
        v += to - from;
    }
    reads
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

/// The seed of the augmentation of slot id `v` ([`RankPlan::slot_id`]): independent of thread
/// count and timing, and different for a padding slot than for the slot whose sample it repeats.
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

    /// The stream positions of a rank's range.
    fn positions(p: &RankPlan) -> Vec<u64> {
        p.range().map(|v| v % p.num_samples.max(1)).collect()
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
                            let first_pass = p.slots().min(p.range_len());
                            assert_eq!(
                                first_pass + p.pad_slots().len() as u64,
                                p.slots(),
                                "{n} {w} {r} {b}"
                            );
                            assert!(p.pad_slots().len() as u64 <= b.saturating_sub(1));
                        }
                    }
                }
            }
        }
        assert_eq!(plan(101, 4, 0, 8, Remainder::Drop).batches(), 3);
        assert_eq!(plan(101, 4, 3, 8, Remainder::Pad).batches(), 4);
    }

    #[test]
    fn ranges_are_contiguous_disjoint_and_cover_the_stream() {
        for n in [1u64, 5, 17, 101, 103] {
            for w in [1u64, 2, 3, 4, 7] {
                // Drop: equal, disjoint, in order; only the stream's last n mod w are unused.
                let drop: Vec<u64> = (0..w)
                    .flat_map(|r| positions(&plan(n, w, r, 4, Remainder::Drop)))
                    .collect();
                assert_eq!(drop, (0..n - n % w).collect::<Vec<_>>(), "{n} {w}");
                // Keep: every position exactly once, lengths differing by at most one.
                let keep: Vec<u64> = (0..w)
                    .flat_map(|r| positions(&plan(n, w, r, 4, Remainder::Keep)))
                    .collect();
                assert_eq!(keep, (0..n).collect::<Vec<_>>(), "{n} {w}");
                // Pad: equal lengths ⌈n/w⌉, every position at least once.
                let mut pad: Vec<u64> = Vec::new();
                for r in 0..w {
                    let p = plan(n, w, r, 4, Remainder::Pad);
                    assert_eq!(p.range_len(), n.div_ceil(w));
                    pad.extend(positions(&p));
                }
                pad.sort();
                pad.dedup();
                assert_eq!(pad, (0..n).collect::<Vec<_>>(), "{n} {w}");
            }
        }
        let p = plan(103, 4, 3, 10, Remainder::Keep);
        assert_eq!(p.range(), 78..103);
        assert_eq!(p.slots(), 25);
        assert_eq!(p.batches(), 3);
        assert_eq!(p.batch_len(2), 5);
    }

    #[test]
    fn pad_repeats_the_start_of_the_ranks_own_range() {
        let p = plan(10, 4, 3, 2, Remainder::Pad);
        // ⌈10/4⌉ = 3 → 2 batches of 2; range v = 9..12 reads p = 9, 0, 1; slot 3 repeats local 0.
        assert_eq!((p.batches(), p.range()), (2, 9..12));
        assert_eq!(p.pad_slots(), vec![(3, 0)]);
        // Fewer samples than ranks: every rank still gets a full batch.
        let tiny = plan(2, 4, 3, 2, Remainder::Pad);
        assert_eq!((tiny.batches(), tiny.range()), (1, 3..4));
        assert_eq!(tiny.pad_slots(), vec![(1, 0)]);
        // Padding longer than the range goes round it again.
        let one = plan(1, 1, 0, 4, Remainder::Pad);
        assert_eq!(one.pad_slots(), vec![(1, 0), (2, 0), (3, 0)]);
    }

    fn read(shard: usize, skip: u64, take: u64) -> ShardRead {
        ShardRead { shard, skip, take }
    }

    #[test]
    fn fetch_plan_reads_only_the_shards_under_the_range() {
        let counts = [10u64, 10, 10, 10];
        let order = [2usize, 0, 3, 1];
        assert_eq!(fetch_plan(&counts, &order, 10..20), vec![read(0, 0, 10)]);
        assert_eq!(
            fetch_plan(&counts, &order, 15..32),
            vec![read(0, 5, 5), read(3, 0, 10), read(1, 0, 2)]
        );
        assert_eq!(fetch_plan(&counts, &order, 3..3), vec![]);
        // A Pad range running past the end wraps to the stream's start.
        assert_eq!(
            fetch_plan(&counts, &order, 38..43),
            vec![read(1, 8, 2), read(2, 0, 3)]
        );
        // One shard: every rank reads a part of it; a wrapped range reads it twice.
        assert_eq!(
            fetch_plan(&[10], &[0], 9..12),
            vec![read(0, 9, 1), read(0, 0, 2)]
        );
        // Empty shards are never opened.
        assert_eq!(
            fetch_plan(&[0, 5, 0, 5], &[0, 1, 2, 3], 3..7),
            vec![read(1, 3, 2), read(3, 0, 2)]
        );
    }

    #[test]
    fn every_sample_is_fetched_by_exactly_one_keep_rank() {
        let counts = [7u64, 13, 1, 9, 20, 3, 11];
        let n: u64 = counts.iter().sum();
        for w in [1u64, 2, 3, 5, 8, 70] {
            let mut seen = vec![0u32; n as usize];
            let offsets: Vec<u64> = counts
                .iter()
                .scan(0, |acc, &c| {
                    *acc += c;
                    Some(*acc - c)
                })
                .collect();
            for r in 0..w {
                let p = plan(n, w, r, 4, Remainder::Keep);
                let reads = p.fetch_plan(&counts, 5, 1, true);
                assert_eq!(reads.iter().map(|r| r.take).sum::<u64>(), p.range_len());
                for rd in reads {
                    for i in rd.skip..rd.skip + rd.take {
                        seen[(offsets[rd.shard] + i) as usize] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "w = {w}");
        }
    }

    #[test]
    fn a_rank_of_four_over_eight_shards_opens_two_or_three_per_epoch() {
        let counts = [25u64; 8];
        for epoch in 0..5 {
            for remainder in [Remainder::Drop, Remainder::Pad, Remainder::Keep] {
                for r in 0..4 {
                    let p = plan(200, 4, r, 8, remainder);
                    let opened = p.fetch_plan(&counts, 3, epoch, true).len();
                    assert!(
                        (2..=3).contains(&opened),
                        "{epoch} {remainder:?} {r}: {opened}"
                    );
                }
            }
        }
        // 201 samples: ranges no longer fall on shard boundaries, so ranks share shards.
        let counts = [26u64, 25, 25, 25, 25, 25, 25, 25];
        let mut three = 0;
        for epoch in 0..5 {
            for r in 0..4 {
                let p = plan(201, 4, r, 8, Remainder::Drop);
                let opened = p.fetch_plan(&counts, 3, epoch, true).len();
                assert!((2..=3).contains(&opened), "{epoch} {r}: {opened}");
                three += usize::from(opened == 3);
            }
        }
        assert!(three > 0);
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
