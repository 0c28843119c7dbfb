//! Fetch stage: one shard, streamed from the store, zstd-decoded and tar-parsed on a blocking
//! thread, sent on as [`RawSample`]s.
//!
//! The GET is a stream of `Bytes` read through [`StoreRead`], a synchronous `Read` that pulls the
//! next chunk from the async stream; zstd and tar are synchronous libraries, and a blocking thread
//! per shard is simpler and faster than wrapping them in async adapters. Only a few chunks and the
//! zstd window are in memory, never the whole shard. A failed GET, or a stream that breaks, is
//! retried from the byte offset reached (a range request), with exponential backoff.
//!
//! A local store hands back the open file; it is read directly on this (already blocking) thread
//! instead of through `object_store`'s stream, which reads 8 KiB per `spawn_blocking` task: ~14,000
//! thread hand-offs per 100 MB, which cost more CPU than the zstd decode of those bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::error::LoaderError;
use crate::metrics::{Counters, StageGuard};
use d2ae_shard::{read_members, split_member_name, Assembler, MemberLimits, RawSample};

/// What a shard reader sends to the order stage.
pub(crate) enum ShardMsg {
    Sample(RawSample),
    /// The shard ended early (bad zstd frame, bad tar header, ...); samples sent so far stand.
    Failed(String),
    /// The shard could not be read at all, after retries: the loader stops.
    Fatal(LoaderError),
}

/// Where a shard is and how hard to try.
pub(crate) struct ShardSource {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub name: Arc<str>,
    pub attempts: u32,
    pub backoff: Duration,
    /// Samples at the shard's start that this rank does not need: parsed past, not sent.
    pub skip: u64,
    /// Stop once this many samples (counting the skipped ones) are through; `None`: read to the end.
    pub stop_after: Option<u64>,
    /// Largest member of each kind read into memory (from the index's image size).
    pub limits: MemberLimits,
}

/// Read one shard to the end (or until the receiver is gone), sending samples to `tx`.
pub(crate) fn read_shard(
    rt: Handle,
    source: ShardSource,
    tx: async_channel::Sender<ShardMsg>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    let _guard = StageGuard::new(&counters);
    let mut reader = StoreRead {
        rt,
        source: &source,
        stream: None,
        file: None,
        chunk: Bytes::new(),
        pos: 0,
        failures: 0,
        fatal: None,
        counters: &counters,
        cancel: &cancel,
    };
    let outcome = parse(&mut reader, &source, &tx, &cancel);
    let fatal = reader.fatal.take();
    let msg = match (outcome, fatal) {
        (_, Some(err)) => ShardMsg::Fatal(err),
        (Ok(()), None) => {
            counters.shards_done.fetch_add(1, Ordering::Relaxed);
            return;
        }
        (Err(e), None) => ShardMsg::Failed(e),
    };
    let _ = tx.send_blocking(msg);
}

/// Decompress and split into samples. `Err` is a corrupt or truncated shard.
fn parse(
    reader: &mut StoreRead<'_>,
    source: &ShardSource,
    tx: &async_channel::Sender<ShardMsg>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut assembler = Assembler::default();
    // Samples started so far (counted by key, as the assembler groups them) and the current key.
    let mut started = 0u64;
    let mut key_now = String::new();
    // Why the shard stopped early, when the visitor found the reason.
    let mut failure = None;
    let read = read_members(reader, |mut member| {
        if cancel.is_cancelled() {
            return ControlFlow::Break(());
        }
        if !member.is_file() {
            return ControlFlow::Continue(());
        }
        let name = member.name();
        let Some((key, ext)) = split_member_name(name) else {
            tracing::warn!(shard = %source.name, member = ?name, "ignoring a member not named <key>.<ext> with a safe key");
            return ControlFlow::Continue(());
        };
        if started == 0 || key != key_now {
            if source.stop_after == Some(started) {
                // Every sample this rank needs from the shard is through (the last one completed
                // when this next key began).
                return ControlFlow::Break(());
            }
            started += 1;
            key_now.clear();
            key_now.push_str(key);
        }
        if started <= source.skip {
            // Not this rank's sample: the tar reader skips the body without copying it.
            return ControlFlow::Continue(());
        }
        let limit = source.limits.for_ext(ext);
        if member.size() > limit {
            // Not read at all: the tar reader skips the body. The sample is reported, not served.
            if let Some(done) = assembler.push_refused(key, ext, member.size(), limit) {
                if tx.send_blocking(ShardMsg::Sample(done)).is_err() {
                    return ControlFlow::Break(());
                }
            }
            return ControlFlow::Continue(());
        }
        let data = match member.read_body(limit) {
            Ok(data) => data,
            Err(e) => {
                failure = Some(e.to_string());
                return ControlFlow::Break(());
            }
        };
        if let Some(done) = assembler.push(key, ext, Bytes::from(data)) {
            if tx.send_blocking(ShardMsg::Sample(done)).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string());
    if cancel.is_cancelled() {
        return Ok(());
    }
    let failure = failure.or(read.err());
    // The sample being gathered when the shard ended: on a clean end it is the last one; after
    // an error it is kept only if all its members were read (a truncation just past a complete
    // sample loses nothing).
    if let Some(last) = assembler.finish() {
        if failure.is_none() || last.is_complete() {
            let _ = tx.send_blocking(ShardMsg::Sample(last));
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A streaming GET as a synchronous reader, resuming at the current offset after failures.
struct StoreRead<'a> {
    rt: Handle,
    source: &'a ShardSource,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    /// The rest of the object when the store is a local file system.
    file: Option<io::Take<File>>,
    chunk: Bytes,
    pos: u64,
    failures: u32,
    fatal: Option<LoaderError>,
    counters: &'a Counters,
    cancel: &'a CancellationToken,
}

impl StoreRead<'_> {
    /// Record a failure; after `attempts` of them the shard is given up with `source` as cause.
    fn fail(&mut self, source: object_store::Error) -> io::Error {
        self.failures += 1;
        if self.failures >= self.source.attempts {
            let msg = source.to_string();
            self.fatal = Some(LoaderError::Fetch {
                shard: self.source.name.to_string(),
                path: self.source.path.to_string(),
                attempts: self.failures,
                source,
            });
            return io::Error::other(msg);
        }
        let delay = self.source.backoff * 2u32.saturating_pow(self.failures - 1);
        tracing::warn!(
            shard = %self.source.name, offset = self.pos, attempt = self.failures,
            "reading shard failed, retrying in {delay:?}: {}",
            d2ae_shard::redact_credentials(&source.to_string())
        );
        self.counters.fetch_retries.fetch_add(1, Ordering::Relaxed);
        let cancel = self.cancel.clone();
        self.rt.block_on(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => {}
            }
        });
        io::Error::new(io::ErrorKind::Interrupted, "retrying")
    }

    fn open(&mut self) -> io::Result<()> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(io::Error::other("loader shut down"));
            }
            let options = GetOptions {
                range: (self.pos > 0).then_some(GetRange::Offset(self.pos)),
                ..Default::default()
            };
            let store = Arc::clone(&self.source.store);
            let path = self.source.path.clone();
            match self
                .rt
                .block_on(async move { store.get_opts(&path, options).await })
            {
                Ok(result) => {
                    let range = result.range.clone();
                    match result.payload {
                        GetResultPayload::File(mut file, _) => {
                            match file.seek(SeekFrom::Start(range.start)) {
                                Ok(_) => {
                                    self.file = Some(file.take(range.end - range.start));
                                    return Ok(());
                                }
                                Err(e) => {
                                    let err = self.fail(local_error(e));
                                    if err.kind() != io::ErrorKind::Interrupted {
                                        return Err(err);
                                    }
                                }
                            }
                        }
                        GetResultPayload::Stream(stream) => {
                            self.stream = Some(stream);
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    let err = self.fail(e);
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
    }
}

impl Read for StoreRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                return Ok(n);
            }
            if self.stream.is_none() && self.file.is_none() {
                self.open()?;
            }
            if let Some(file) = self.file.as_mut() {
                match file.read(buf) {
                    Ok(n) => {
                        self.pos += n as u64;
                        self.counters
                            .bytes_read
                            .fetch_add(n as u64, Ordering::Relaxed);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.file = None;
                        let err = self.fail(local_error(e));
                        if err.kind() != io::ErrorKind::Interrupted {
                            return Err(err);
                        }
                        continue;
                    }
                }
            }
            let stream = self.stream.as_mut().expect("opened above");
            match self.rt.block_on(stream.next()) {
                Some(Ok(bytes)) => {
                    self.pos += bytes.len() as u64;
                    self.counters
                        .bytes_read
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    self.chunk = bytes;
                }
                Some(Err(e)) => {
                    self.stream = None;
                    let err = self.fail(e);
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
                None => return Ok(0),
            }
        }
    }
}

/// A local read error in `object_store`'s terms, for the retry path shared with remote stores.
fn local_error(source: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    }
}
