//! [`LoaderState`]: where a loader is, small enough to store in every checkpoint.

use serde::{Deserialize, Serialize};

use crate::config::{LoaderConfig, Remainder};
use crate::error::LoaderError;

/// The position of a loader at a batch boundary, plus the settings that define the order of
/// samples. A loader resumed from it (same dataset, same order-defining settings) yields exactly
/// the batches the original would have yielded next. Thread counts, readahead, prefetch depth and
/// augmentation strength may change between runs; they do not change which sample goes where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Batches of that epoch already delivered.
    pub batches_done_in_epoch: u64,
    pub seed: u64,
    pub split: String,
    /// Samples in the split when the state was taken (a changed dataset cannot resume).
    pub num_samples: u64,
    pub batch_size: usize,
    pub rank: usize,
    pub world_size: usize,
    pub shuffle: bool,
    pub shuffle_buffer: usize,
    pub remainder: Remainder,
}

impl LoaderState {
    /// The state before the first batch.
    pub fn start(config: &LoaderConfig, num_samples: u64) -> Self {
        LoaderState {
            epoch: 0,
            batches_done_in_epoch: 0,
            seed: config.seed,
            split: config.split.clone(),
            num_samples,
            batch_size: config.batch_size,
            rank: config.rank,
            world_size: config.world_size,
            shuffle: config.shuffle,
            shuffle_buffer: config.shuffle_buffer,
            remainder: config.remainder,
        }
    }

    /// The state after one more batch, in an epoch of `batches_per_epoch` (rolls over to the next
    /// epoch at its end).
    pub(crate) fn advance(&self, epoch: u64, batch_in_epoch: u64, batches_per_epoch: u64) -> Self {
        let mut next = self.clone();
        if batch_in_epoch + 1 >= batches_per_epoch {
            next.epoch = epoch + 1;
            next.batches_done_in_epoch = 0;
        } else {
            next.epoch = epoch;
            next.batches_done_in_epoch = batch_in_epoch + 1;
        }
        next
    }

    /// Refuse to resume under settings that would give a different order.
    pub fn check_compatible(
        &self,
        config: &LoaderConfig,
        num_samples: u64,
    ) -> Result<(), LoaderError> {
        let expected = LoaderState {
            epoch: self.epoch,
            batches_done_in_epoch: self.batches_done_in_epoch,
            ..LoaderState::start(config, num_samples)
        };
        if *self == expected {
            return Ok(());
        }
        let mut diffs = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => {$(
                if self.$f != expected.$f {
                    diffs.push(format!("{} was {:?}, now {:?}", stringify!($f), self.$f, expected.$f));
                }
            )*};
        }
        cmp!(
            seed,
            split,
            num_samples,
            batch_size,
            rank,
            world_size,
            shuffle,
            shuffle_buffer,
            remainder
        );
        Err(LoaderError::Resume(diffs.join("; ")))
    }
}
