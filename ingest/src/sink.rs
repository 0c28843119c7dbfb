//! The destination: a local directory or an object-store prefix, behind one synchronous facade.
//!
//! Shards are the only large objects, and the only ones that must never be seen half-written:
//! - on local disk a shard is written to `_partial/<name>.tmp`, fsynced, then renamed into place;
//! - in a bucket it is a multipart upload (8 MiB parts, a few in flight), which the store only
//!   makes visible under its name when the upload completes. An interrupted upload leaves invisible
//!   parts behind; buckets are usually configured to expire those (an "abort incomplete multipart
//!   uploads" lifecycle rule).
//!
//! Small objects (`index.json`, `rejects.jsonl`, resume receipts) are single `put`s, which are
//! atomic on every store (`object_store`'s local store writes a staging file and renames it).
//!
//! The pipeline runs on OS threads, so this facade owns a small tokio runtime and blocks on it,
//! rather than making every caller async for what are a handful of large, sequential writes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use d2ae_shard::index::IndexError;
use d2ae_shard::{
    open_dataset, DatasetIndex, DatasetLocation, ReadIndexError, StoreError, StoreOptions,
    INDEX_FILE,
};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::runtime::Runtime;

/// The folder (under the destination) for unfinished work: temporary shards and resume receipts.
pub const PARTIAL_DIR: &str = "_partial";
/// Multipart part size (S3 needs ≥ 5 MiB for all but the last part).
const PART_SIZE: usize = 8 << 20;
/// Parts uploading at once per shard.
const PARTS_IN_FLIGHT: usize = 4;

/// Problems reaching or writing the destination.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Open(Box<StoreError>),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot {op} {name} at {url}: {source}")]
    Store {
        op: &'static str,
        name: String,
        url: String,
        source: Box<object_store::Error>,
    },
    #[error("cannot {op} {path}: {source}")]
    Local {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// How to reach a bucket, beyond its URL (the same flags for `d2ae-ingest` and `verify`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// Endpoint of an S3-compatible server (e.g. http://127.0.0.1:9000); also AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Retries of a failed request to the bucket (dropped connection, 5xx, timeout), with
    /// exponential backoff from 100 ms up to 15 s and 3 minutes in all, before giving up
    /// [default: 10]. An ingest that gives up keeps its finished shards; its rerun resumes there.
    #[arg(long, value_name = "N")]
    pub max_retries: Option<usize>,
    /// Seconds a bucket connection may stay silent before the request fails and is retried;
    /// retries of one request stop after twice this [default: 30, or D2AE_STORE_IDLE_TIMEOUT].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<f64>,
}

/// A dataset destination.
pub struct Destination {
    location: DatasetLocation,
    runtime: Arc<Runtime>,
}

impl Destination {
    /// Open (creating a local directory if needed) the destination at `url`.
    pub fn open(url: &str, store: &StoreArgs) -> Result<Self, SinkError> {
        let options = StoreOptions {
            endpoint: store.endpoint.clone(),
            create_local: true,
            max_retries: store.max_retries,
            idle_timeout: store
                .idle_timeout
                .filter(|s| *s > 0.0)
                .map(std::time::Duration::from_secs_f64),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(SinkError::Runtime)?;
        Ok(Destination {
            location: open_dataset(url, &options).map_err(|e| SinkError::Open(Box::new(e)))?,
            runtime: Arc::new(runtime),
        })
    }

    /// The URL as the user gave it.
    pub fn url(&self) -> &str {
        &self.location.url
    }

    /// The object path of `name` (which may contain `/`) under the destination root.
    /// (`Path::child` would percent-encode the `/` into one segment.)
    fn path(&self, name: &str) -> object_store::path::Path {
        let root = self.location.prefix.as_ref();
        if root.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{root}/{name}"))
        }
    }

    /// Whether the destination is a local directory.
    pub fn is_local(&self) -> bool {
        self.location.local_dir.is_some()
    }

    fn store_err(
        &self,
        op: &'static str,
        name: &str,
    ) -> impl FnOnce(object_store::Error) -> SinkError + '_ {
        let name = name.to_owned();
        move |source| SinkError::Store {
            op,
            name,
            url: self.location.url.clone(),
            source: Box::new(source),
        }
    }

    /// Store `bytes` as `name` (atomic: readers see the old object or the whole new one).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let path = self.path(name);
        self.runtime
            .block_on(self.location.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(self.store_err("write", name))
    }

    /// The object `name`, or `None` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<Bytes>, SinkError> {
        let path = self.path(name);
        let result = self.runtime.block_on(async {
            match self.location.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        result.map_err(self.store_err("read", name))
    }

    /// The dataset's `index.json`: `None` when there is none, else the parsed index or why it is
    /// not one ([`DatasetLocation::read_index`]: one request, the size checked before reading).
    pub fn index(&self) -> Result<Option<Result<DatasetIndex, IndexError>>, SinkError> {
        match self.runtime.block_on(self.location.read_index()) {
            Ok(index) => Ok(Some(Ok(index))),
            Err(ReadIndexError::Index(e)) => Ok(Some(Err(e))),
            Err(ReadIndexError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(ReadIndexError::Store(e)) => Err(self.store_err("read", INDEX_FILE)(e)),
        }
    }

    /// The size of `name`, or `None` when it does not exist.
    pub fn size(&self, name: &str) -> Result<Option<u64>, SinkError> {
        let path = self.path(name);
        match self.runtime.block_on(self.location.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("check", name)(e)),
        }
    }

    /// Names (relative to the destination root) of the objects under `dir`.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, SinkError> {
        let prefix = self.path(dir);
        let root = self.location.prefix.as_ref().to_owned();
        let metas: Vec<_> = self
            .runtime
            .block_on(self.location.store.list(Some(&prefix)).try_collect())
            .map_err(self.store_err("list", dir))?;
        let mut names: Vec<String> = metas
            .into_iter()
            .map(|m| {
                let full = m.location.as_ref();
                full.strip_prefix(&root)
                    .unwrap_or(full)
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Delete `name` if it exists.
    pub fn delete(&self, name: &str) -> Result<(), SinkError> {
        let path = self.path(name);
        match self.runtime.block_on(self.location.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("delete", name)(e)),
        }
    }

    /// Remove everything under [`PARTIAL_DIR`] (the local folder itself included).
    pub fn clear_partial(&self) -> Result<(), SinkError> {
        for name in self.list(PARTIAL_DIR)? {
            self.delete(&name)?;
        }
        if let Some(dir) = &self.location.local_dir {
            let partial = dir.join(PARTIAL_DIR);
            if partial.exists() {
                std::fs::remove_dir_all(&partial).map_err(|source| SinkError::Local {
                    op: "remove",
                    path: partial,
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Start writing shard `name`; nothing appears under that name until [`ShardOutput::finish`].
    pub fn create_shard(&self, name: &str) -> Result<ShardOutput, SinkError> {
        if let Some(dir) = &self.location.local_dir {
            let partial = dir.join(PARTIAL_DIR);
            let local = |op, path: &PathBuf| {
                let path = path.clone();
                move |source| SinkError::Local { op, path, source }
            };
            std::fs::create_dir_all(&partial).map_err(local("create", &partial))?;
            let tmp = partial.join(format!("{name}.tmp"));
            let file = File::create(&tmp).map_err(local("create", &tmp))?;
            return Ok(ShardOutput::Local {
                file: Some(BufWriter::with_capacity(1 << 20, file)),
                tmp,
                dest: dir.join(name),
            });
        }
        let path = self.path(name);
        let upload = self
            .runtime
            .block_on(self.location.store.put_multipart(&path))
            .map_err(self.store_err("start the upload of", name))?;
        Ok(ShardOutput::Remote {
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            runtime: Arc::clone(&self.runtime),
            store: Arc::clone(&self.location.store),
            path,
            written: 0,
            name: name.to_owned(),
            url: self.location.url.clone(),
        })
    }
}

/// A shard being written: a plain [`Write`] for the shard writer, then `finish` or `abort`.
pub enum ShardOutput {
    Local {
        file: Option<BufWriter<File>>,
        tmp: PathBuf,
        dest: PathBuf,
    },
    Remote {
        upload: Option<WriteMultipart>,
        runtime: Arc<Runtime>,
        store: Arc<dyn ObjectStore>,
        path: object_store::path::Path,
        /// Bytes handed to the upload, to recognise the shard if completing it seems to fail.
        written: u64,
        name: String,
        url: String,
    },
}

impl Write for ShardOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ShardOutput::Local { file, .. } => {
                file.as_mut().expect("open until finished").write(buf)
            }
            ShardOutput::Remote {
                upload,
                runtime,
                written,
                ..
            } => {
                let upload = upload.as_mut().expect("open until finished");
                // Inside block_on so the part uploads `write` spawns have a runtime; waiting for
                // capacity first keeps at most PARTS_IN_FLIGHT parts in memory.
                runtime
                    .block_on(async {
                        upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                        upload.write(buf);
                        Ok::<_, object_store::Error>(())
                    })
                    .map_err(io::Error::other)?;
                *written += buf.len() as u64;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ShardOutput::Local { file, .. } => file.as_mut().expect("open until finished").flush(),
            ShardOutput::Remote { .. } => Ok(()),
        }
    }
}

impl ShardOutput {
    /// Make the shard visible under its final name.
    pub fn finish(mut self) -> Result<(), SinkError> {
        match &mut self {
            ShardOutput::Local { file, tmp, dest } => {
                let local = |op, path: &PathBuf| {
                    let path = path.clone();
                    move |source| SinkError::Local { op, path, source }
                };
                let file = file.take().expect("finished once");
                let result = file
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .map_err(local("write", tmp))
                    .and_then(|file| file.sync_all().map_err(local("sync", tmp)))
                    .and_then(|()| {
                        std::fs::rename(&*tmp, &*dest).map_err(local("rename into place", dest))
                    });
                if result.is_err() {
                    // Best effort, like `abort`: the error being returned is the one that matters.
                    let _ = std::fs::remove_file(&*tmp);
                }
                result
            }
            ShardOutput::Remote {
                upload,
                runtime,
                store,
                path,
                written,
                name,
                url,
            } => {
                let upload = upload.take().expect("finished once");
                let Err(source) = runtime.block_on(upload.finish()) else {
                    return Ok(());
                };
                // A connection lost after the store completed the upload but before its answer
                // arrived makes the retried request fail (the upload id is gone). The shard is
                // then in place: same name, every byte of it.
                let landed = runtime.block_on(store.head(path));
                if landed.is_ok_and(|meta| meta.size == *written) {
                    tracing::warn!(
                        "{name}: completing the upload reported \"{source}\", but the shard is \
                         in place with all its {written} bytes"
                    );
                    return Ok(());
                }
                Err(SinkError::Store {
                    op: "complete the upload of",
                    name: name.clone(),
                    url: url.clone(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Give up on this shard, removing what was written (best effort: the run is failing anyway).
    pub fn abort(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        match self {
            ShardOutput::Local { file, tmp, .. } => {
                if file.take().is_some() {
                    let _ = std::fs::remove_file(&*tmp);
                }
            }
            ShardOutput::Remote {
                upload, runtime, ..
            } => {
                if let Some(upload) = upload.take() {
                    let _ = runtime.block_on(upload.abort());
                }
            }
        }
    }
}

impl Drop for ShardOutput {
    fn drop(&mut self) {
        self.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_shards_appear_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::open(dir.path().to_str().unwrap(), &StoreArgs::default()).unwrap();
        let mut out = dest.create_shard("train-000000.tar.zst").unwrap();
        out.write_all(b"hello").unwrap();
        assert!(!dir.path().join("train-000000.tar.zst").exists());
        assert!(dir
            .path()
            .join("_partial/train-000000.tar.zst.tmp")
            .exists());
        out.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("train-000000.tar.zst")).unwrap(),
            b"hello"
        );
        assert_eq!(dest.size("train-000000.tar.zst").unwrap(), Some(5));

        let mut out = dest.create_shard("train-000001.tar.zst").unwrap();
        out.write_all(b"half").unwrap();
        out.abort();
        assert!(!dir.path().join("train-000001.tar.zst").exists());
        assert!(!dir
            .path()
            .join("_partial/train-000001.tar.zst.tmp")
            .exists());
    }

    #[test]
    fn a_failed_local_finish_leaves_neither_the_shard_nor_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::open(dir.path().to_str().unwrap(), &StoreArgs::default()).unwrap();
        // A directory in the way makes the final rename fail.
        std::fs::create_dir(dir.path().join("train-000000.tar.zst")).unwrap();
        let mut out = dest.create_shard("train-000000.tar.zst").unwrap();
        out.write_all(b"hello").unwrap();
        let err = out.finish().unwrap_err().to_string();
        assert!(
            err.contains("rename into place") && err.contains("train-000000.tar.zst"),
            "{err}"
        );
        assert!(dir.path().join("train-000000.tar.zst").is_dir());
        assert!(!dir
            .path()
            .join("_partial/train-000000.tar.zst.tmp")
            .exists());
    }

    #[test]
    fn small_objects_list_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::open(
            dir.path().join("new").to_str().unwrap(),
            &StoreArgs::default(),
        )
        .unwrap();
        dest.put("_partial/receipts/a.json", b"{}".to_vec())
            .unwrap();
        dest.put("_partial/receipts/b.json", b"[]".to_vec())
            .unwrap();
        dest.put("index.json", b"x".to_vec()).unwrap();
        assert_eq!(
            dest.list("_partial/receipts").unwrap(),
            ["_partial/receipts/a.json", "_partial/receipts/b.json"]
        );
        assert_eq!(dest.get("index.json").unwrap().unwrap().as_ref(), b"x");
        assert_eq!(dest.get("missing.json").unwrap(), None);
        assert_eq!(dest.size("missing.json").unwrap(), None);
        dest.clear_partial().unwrap();
        assert!(dest.list("_partial").unwrap().is_empty());
        assert!(!dir.path().join("new/_partial").exists());
        dest.delete("nothing-here").unwrap();
    }
}
