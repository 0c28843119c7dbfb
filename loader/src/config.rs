//! What the loader is asked to do: [`LoaderConfig`] and the enums it is built from.
//!
//! The config is plain data (serde), so the trainer can store it next to a checkpoint; everything
//! that defines *which* samples land in *which* batch (seed, split, batch size, ranks, shuffle,
//! remainder) is also recorded in [`crate::LoaderState`] to refuse a resume under a different plan.

use std::time::Duration;

use d2ae_shard::StoreOptions;
use serde::{Deserialize, Serialize};

use crate::error::LoaderError;

/// Memory layout of [`crate::Batch::images`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `N×3×H×W`, planes R, G, B: what convolution layers take.
    #[default]
    Nchw,
    /// `N×H×W×3`, interleaved RGB: what image files hold.
    Nhwc,
}

/// What a rank does with the samples that do not fill a whole batch.
///
/// Every rank must yield the same number of batches per epoch, or collective operations in
/// data-parallel training wait forever for the rank that ran out; `Drop` and `Pad` guarantee it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Remainder {
    /// Each rank takes `⌊⌊N/W⌋/B⌋` full batches; the last `N − W·B·batches` samples of the
    /// epoch's (shuffled) order are not used this epoch. Training default.
    #[default]
    Drop,
    /// Each rank takes `⌈⌈N/W⌉/B⌉` full batches; the missing slots repeat samples from the start of
    /// the epoch's order (like PyTorch's `DistributedSampler`), with their own augmentation.
    Pad,
    /// Every sample exactly once, the last batch of each rank possibly short. Ranks may differ by
    /// one batch, so this is for evaluation (normally with `world_size` 1), not for training.
    Keep,
}

/// Seeded per-sample augmentations, applied on the decode threads after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Augment {
    /// Mirror left-right with probability ½.
    pub hflip: bool,
    /// Translate by a uniform integer shift in `[-max_shift_px, max_shift_px]` on each axis (in
    /// output pixels); the uncovered border repeats the edge pixels.
    pub max_shift_px: u32,
}

impl Augment {
    /// No augmentation (evaluation).
    pub const NONE: Augment = Augment {
        hflip: false,
        max_shift_px: 0,
    };

    /// Whether any augmentation is on.
    pub fn is_active(&self) -> bool {
        self.hflip || self.max_shift_px > 0
    }
}

/// Everything the loader needs besides the dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Split to read (`train`, `val`, `test`, ...).
    pub split: String,
    /// Samples per batch on this rank.
    pub batch_size: usize,
    /// Output side in pixels; `None` keeps the stored size. Smaller sizes decode in the DCT domain
    /// at ½, ¼ or ⅛ scale where possible, then resize with `fast_image_resize`.
    pub image_size: Option<u32>,
    /// Layout of the image buffer.
    pub layout: Layout,
    /// Shuffle shards per epoch and samples through a shuffle buffer.
    pub shuffle: bool,
    /// Samples held by the shuffle buffer (0 or 1: shard shuffle only).
    pub shuffle_buffer: usize,
    /// Seed of every random choice (shard order, sample order, augmentation).
    pub seed: u64,
    /// CPU threads decoding images (not counting the async runtime's threads).
    pub decode_threads: usize,
    /// Shards fetched and decompressed at the same time, ahead of the one being consumed.
    pub readahead_shards: usize,
    /// Finished batches queued for the consumer.
    pub prefetch_batches: usize,
    /// This process's rank in data-parallel training.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// What to do with samples that do not fill a batch.
    pub remainder: Remainder,
    /// Per-sample augmentation.
    pub augment: Augment,
    /// Epochs to run; `None` runs until the consumer stops.
    pub epochs: Option<u64>,
    /// Attempts of a failing shard GET (missing object, failing bucket) before the loader gives up.
    pub fetch_attempts: u32,
    /// Wait before the first retry; doubled on every further one.
    #[serde(with = "millis")]
    pub fetch_backoff: Duration,
    /// How to reach the store (endpoint of an S3-compatible server, retries of the client).
    #[serde(skip)]
    pub store: StoreOptions,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            split: "train".into(),
            batch_size: 64,
            image_size: None,
            layout: Layout::Nchw,
            shuffle: true,
            shuffle_buffer: 2048,
            seed: 0,
            decode_threads: 2,
            readahead_shards: 2,
            prefetch_batches: 4,
            rank: 0,
            world_size: 1,
            remainder: Remainder::Drop,
            augment: Augment {
                hflip: true,
                max_shift_px: 4,
            },
            epochs: None,
            fetch_attempts: 5,
            fetch_backoff: Duration::from_millis(200),
            store: StoreOptions::default(),
        }
    }
}

impl LoaderConfig {
    /// Training: shuffled, augmented, endless, drops the remainder.
    pub fn train(split: &str, batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            split: split.into(),
            batch_size,
            seed,
            ..Default::default()
        }
    }

    /// Evaluation: one pass over every sample of the split in index order, no augmentation, the
    /// last partial batch kept.
    pub fn eval(split: &str, batch_size: usize) -> Self {
        LoaderConfig {
            split: split.into(),
            batch_size,
            shuffle: false,
            shuffle_buffer: 0,
            remainder: Remainder::Keep,
            augment: Augment::NONE,
            epochs: Some(1),
            ..Default::default()
        }
    }

    /// Check the values that would otherwise fail deep inside the pipeline.
    pub fn validate(&self) -> Result<(), LoaderError> {
        let bad = |reason: String| Err(LoaderError::Config(reason));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.world_size == 0 || self.rank >= self.world_size {
            return bad(format!(
                "rank {} is not in 0..world_size ({})",
                self.rank, self.world_size
            ));
        }
        if self.decode_threads == 0 {
            return bad("decode_threads must be at least 1".into());
        }
        if self.readahead_shards == 0 || self.prefetch_batches == 0 {
            return bad("readahead_shards and prefetch_batches must be at least 1".into());
        }
        if self.image_size == Some(0) {
            return bad("image_size must be positive".into());
        }
        if self.fetch_attempts == 0 {
            return bad("fetch_attempts must be at least 1".into());
        }
        Ok(())
    }
}
