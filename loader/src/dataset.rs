//! [`Dataset`]: an opened dataset URL and its parsed `index.json`.

use std::sync::Arc;

use d2ae_shard::index::IndexError;
use d2ae_shard::{
    open_dataset, DatasetIndex, DatasetLocation, StoreOptions, INDEX_FILE, MAX_INDEX_BYTES,
};
use object_store::ObjectStoreExt;

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
        let index_path = location.child(INDEX_FILE);
        let read_err = |source| LoaderError::ReadIndex {
            url: url.to_owned(),
            source,
        };
        let found = location.store.get(&index_path).await.map_err(read_err)?;
        // Refuse a giant index before reading a byte of it.
        if found.meta.size > MAX_INDEX_BYTES {
            return Err(LoaderError::Index {
                url: url.to_owned(),
                source: IndexError::TooLarge {
                    bytes: found.meta.size,
                },
            });
        }
        let bytes = found.bytes().await.map_err(read_err)?;
        let index = DatasetIndex::from_json(&bytes).map_err(|source| LoaderError::Index {
            url: url.to_owned(),
            source,
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
