//! The d2ae loader: shards on disk or in a bucket → batches of images and labels, fast enough that
//! the trainer never waits.
//!
//! The pipeline, one module per stage ([`loader`] shows the wiring):
//! 1. [`dataset`]: open a URL through `object_store`, read `index.json`.
//! 2. [`plan`]: which sample fills which slot of which batch on which rank, per epoch (seeded
//!    shard shuffle, shuffle buffer, rank split by position, remainder handling).
//! 3. `fetch`: streaming GETs → zstd → tar on blocking threads, with bounded readahead and retries.
//! 4. `order`: the one sequential stage that applies the plan to the stream of samples.
//! 5. [`decode`]: JPEG (DCT-scaled) / PNG decode, resize, augmentation, layout, on CPU threads.
//! 6. [`batch`]: reorder, pack contiguous batches, fill unreadable slots, prefetch queue.
//!
//! [`Loader`] is the async interface, [`BlockingLoader`] the synchronous one the training loop
//! uses; [`LoaderState`] resumes exactly at a batch boundary; [`LoaderMetrics`] feeds the
//! trainer's logs. With the `tch` feature, `tensor` turns batches into tensors and feeds a device
//! with pinned, double-buffered copies. `docs/LOADER.md` has the guarantees and the memory bound.

pub mod batch;
pub mod bench;
pub mod blocking;
pub mod config;
pub mod dataset;
pub mod decode;
pub mod error;
mod fetch;
pub mod loader;
pub mod metrics;
mod order;
pub mod plan;
mod stage;
pub mod state;
#[cfg(feature = "tch")]
pub mod tensor;
pub mod testing;

pub use batch::Batch;
pub use blocking::BlockingLoader;
pub use config::{Augment, Layout, LoaderConfig, Remainder};
pub use dataset::Dataset;
pub use error::{LoaderError, SampleFault};
pub use loader::{batches_per_epoch, Loader};
pub use metrics::LoaderMetrics;
pub use state::LoaderState;
