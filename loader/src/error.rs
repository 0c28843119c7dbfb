//! Errors that reach the consumer. Per-sample problems are not errors: they are skipped, counted
//! in [`crate::LoaderMetrics`] and logged (see [`SampleFault`]).

use std::fmt;

/// A failure that stops the loader (or, for [`LoaderError::Config`], stops it from starting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    #[error("invalid loader configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] d2ae_shard::StoreError),
    #[error("cannot read {url}/index.json: {source}")]
    ReadIndex {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{url}/index.json: {source}")]
    Index {
        url: String,
        #[source]
        source: d2ae_shard::index::IndexError,
    },
    #[error(
        "{url}/index.json: split {split} says {declared} samples but its shards hold {listed}"
    )]
    IndexCounts {
        url: String,
        split: String,
        declared: u64,
        listed: u64,
    },
    #[error("shard {shard} ({path}) failed after {attempts} attempts: {source}")]
    Fetch {
        shard: String,
        path: String,
        attempts: u32,
        #[source]
        source: object_store::Error,
    },
    #[error("every sample of batch {batch} of epoch {epoch} was unreadable; see the skipped samples logged above")]
    EmptyBatch { epoch: u64, batch: u64 },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("the loader pipeline stopped unexpectedly ({0})")]
    Pipeline(String),
}

/// Why one sample was skipped; logged with its shard and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleFault {
    /// A member the format requires (`image`, `.cls`, `.json`) is absent.
    MissingMember(&'static str),
    /// The image bytes do not decode.
    BadImage(String),
    /// The `.json` member does not parse as `SampleMeta`.
    BadJson(String),
    /// The `.cls` member is not an integer or disagrees with the JSON.
    BadClass(String),
    /// The shard ended (truncated or corrupt) before this sample.
    LostWithShard,
    /// A member was larger than the dataset's images allow; it was never read.
    Oversized(String),
}

impl fmt::Display for SampleFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleFault::MissingMember(m) => write!(f, "missing member {m}"),
            SampleFault::BadImage(e) => write!(f, "bad image: {e}"),
            SampleFault::BadJson(e) => write!(f, "bad metadata JSON: {e}"),
            SampleFault::BadClass(e) => write!(f, "bad class label: {e}"),
            SampleFault::LostWithShard => write!(f, "lost with its truncated or corrupt shard"),
            SampleFault::Oversized(e) => write!(f, "refused: {e}"),
        }
    }
}
