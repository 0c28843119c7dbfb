//! Messages between the order stage, the decode threads and the batch stage.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::decode::DecodedSample;
use crate::error::LoaderError;
use crate::sample::RawSample;

/// One slot of one epoch, for a decode thread. `seq` numbers jobs in the order the batch stage
/// must consume them; the permit bounds how many are between the order and batch stages.
pub(crate) struct Job {
    pub seq: u64,
    pub epoch: u64,
    pub slot: u64,
    pub kind: JobKind,
    pub permit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum JobKind {
    Sample {
        shard: Arc<str>,
        sample: RawSample,
        aug_seed: u64,
    },
    /// The slot's sample was lost with a truncated or corrupt shard.
    Lost {
        shard: Arc<str>,
        key: Option<String>,
    },
    /// Stop after everything before this.
    Fatal(LoaderError),
}

/// A job's result, back in `seq` order at the batch stage.
pub(crate) struct Done {
    pub seq: u64,
    pub epoch: u64,
    pub slot: u64,
    pub outcome: Outcome,
    pub permit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum Outcome {
    Decoded(Box<DecodedSample>),
    Skipped,
    Fatal(LoaderError),
}
