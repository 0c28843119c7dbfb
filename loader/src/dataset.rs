//! [`Dataset`]: an opened dataset URL and its parsed `index.json`.

use std::sync::Arc;

use d2ae_shard::{open_dataset, DatasetIndex, DatasetLocation, ReadIndexError, StoreOptions};

use crate::error::LoaderError;

/// A dataset on local disk or in a bucket, with its index. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dataset {
    location: DatasetLocation,
    index: Arc<DatasetIndex>,
}

impl Dataset {
    /// Open `url` (a path, `file://`, `s3://`, `gs://`, `az://`) and read its `index.json`.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Dataset, LoaderError> {
        let location = open_dataset(url, options)?;
        let index = location.read_index().await.map_err(|e| match e {
            ReadIndexError::Store(source) => LoaderError::ReadIndex {
                url: url.to_owned(),
                source,
            },
            ReadIndexError::Index(source) => LoaderError::Index {
                url: url.to_owned(),
                source,
            },
        })?;
        Ok(Dataset {
            location,
            index: Arc::new(index),
        })
    }

    /// The parsed `index.json`.
    pub fn index(&self) -> &DatasetIndex {
        &self.index
    }

    /// Where the dataset is.
    pub fn location(&self) -> &DatasetLocation {
        &self.location
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.location.url
    }
}
