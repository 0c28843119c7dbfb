//! [`BlockingLoader`]: the loader for synchronous code (the tch training loop, the evaluator).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use d2ae_shard::{DatasetIndex, StoreOptions};
use tokio::runtime::Runtime;

use crate::batch::Batch;
use crate::config::LoaderConfig;
use crate::dataset::Dataset;
use crate::error::LoaderError;
use crate::loader::Loader;
use crate::metrics::LoaderMetrics;
use crate::state::LoaderState;

/// A [`Loader`] with its own small tokio runtime, used as an iterator. Dropping it stops every
/// stage and shuts the runtime down.
pub struct BlockingLoader {
    loader: Option<Loader>,
    dataset: Dataset,
    runtime: Option<Runtime>,
}

impl BlockingLoader {
    /// Open `url` and start at the beginning (or at `resume`).
    ///
    /// The dataset is opened on the loader's own runtime: HTTP connections belong to the runtime
    /// that made them, so a store opened on another runtime would fail once that one is gone.
    pub fn open(
        url: &str,
        config: LoaderConfig,
        resume: Option<&LoaderState>,
    ) -> Result<BlockingLoader, LoaderError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("d2ae-loader-io")
            .enable_all()
            .build()
            .map_err(|e| LoaderError::Pipeline(format!("cannot start a tokio runtime: {e}")))?;
        let store: StoreOptions = config.store.clone();
        let dataset = runtime.block_on(Dataset::open(url, &store))?;
        let loader = runtime.block_on(async {
            match resume {
                Some(state) => Loader::resume(&dataset, config, state),
                None => Loader::new(&dataset, config),
            }
        })?;
        Ok(BlockingLoader {
            loader: Some(loader),
            dataset,
            runtime: Some(runtime),
        })
    }

    fn loader(&self) -> &Loader {
        self.loader.as_ref().expect("loader lives until drop")
    }

    /// The dataset's index.
    pub fn index(&self) -> &DatasetIndex {
        self.dataset.index()
    }

    /// See [`Loader::recycle`].
    pub fn recycle(&self, images: Vec<u8>) {
        self.loader().recycle(images);
    }

    /// Where the loader is: after the last batch returned.
    pub fn state(&self) -> LoaderState {
        self.loader().state()
    }

    /// Throughput, waits and fault counts so far.
    pub fn metrics(&self) -> LoaderMetrics {
        self.loader().metrics()
    }

    /// Batches per epoch on this rank.
    pub fn batches_per_epoch(&self) -> u64 {
        self.loader().batches_per_epoch()
    }

    /// See [`Loader::live_stages`].
    pub fn live_stages(&self) -> Arc<AtomicUsize> {
        self.loader().live_stages()
    }
}

impl Iterator for BlockingLoader {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (loader, runtime) = (self.loader.as_mut()?, self.runtime.as_ref()?);
        runtime.block_on(loader.next_batch())
    }
}

impl Drop for BlockingLoader {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            {
                let _enter = runtime.enter();
                self.loader.take();
            }
            // Shard readers notice the closed channels within one chunk; do not wait forever on a
            // stuck network read.
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
