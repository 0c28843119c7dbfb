//! Messages between the order stage, the decode threads and the batch stage.
//!
//! The unit of work is a whole batch: a decode thread decodes every slot of one batch straight
//! into that batch's image buffer, so there is one channel hop (and at most one thread wake-up)
//! per batch instead of per sample, and no second copy of each image into the batch.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::batch::Batch;
use crate::error::LoaderError;
use d2ae_shard::RawSample;

/// One batch of one epoch, for a decode thread. `seq` numbers jobs in the order the batch stage
/// must deliver them; the permit bounds how many are between the order and batch stages.
pub(crate) struct Job {
    pub seq: u64,
    pub kind: JobKind,
    pub permit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum JobKind {
    /// Batch `batch` of `epoch`, its slots in order.
    Batch {
        epoch: u64,
        batch: u64,
        slots: Vec<Slot>,
    },
    /// Stop after everything before this.
    Fatal(LoaderError),
}

/// What fills one slot.
pub(crate) enum Slot {
    Sample {
        shard: Arc<str>,
        sample: RawSample,
        aug_seed: u64,
    },
    /// The slot's sample was lost with a truncated or corrupt shard.
    Lost { shard: Arc<str> },
}

/// A job's result, back in `seq` order at the batch stage.
pub(crate) struct Done {
    pub seq: u64,
    pub outcome: Outcome,
    pub permit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum Outcome {
    Batch(Batch),
    /// A `Keep` batch with nothing readable: nothing to deliver.
    Empty,
    Fatal(LoaderError),
}
