//! Measuring the loader: the end-to-end rate, the raw decode ceiling of the same images, CPU time
//! and peak memory against the documented bound. Used by `d2ae-loader bench` and `cargo bench`.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::config::{Layout, LoaderConfig};
use crate::dataset::Dataset;
use crate::decode::{DecodeSpec, ImageDecoder};
use crate::error::LoaderError;
use crate::loader::Loader;
use crate::metrics::LoaderMetrics;
use crate::order::SHARD_QUEUE;
use d2ae_shard::{read_members, split_member_name, ImageKind, MAX_MEMBER_BYTES};

/// CPU time of this process (all threads), user + system.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: clock_gettime only writes into the struct we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Peak resident memory of this process so far (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

/// Resident memory now (`VmRSS`), in bytes.
pub fn current_rss() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The documented upper bound of the loader's memory, by part (bytes). See `docs/LOADER.md`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryBound {
    pub readers: u64,
    pub shuffle_buffer: u64,
    pub padding: u64,
    pub in_flight: u64,
    pub decode_scratch: u64,
    pub batches: u64,
    pub total: u64,
}

/// Bytes a zstd reader holds besides its queue: the window (level ≤ 19 writes ≤ 8 MiB windows;
/// ours use 2 MiB at level 3) plus buffers.
const READER_OVERHEAD: u64 = 8 << 20;

/// The bound for `config` with samples of at most `sample_bytes` stored bytes and stored images of
/// `stored_w × stored_h`.
pub fn memory_bound(
    config: &LoaderConfig,
    sample_bytes: u64,
    stored: (u32, u32),
    out: (u32, u32),
) -> MemoryBound {
    let s_raw = sample_bytes;
    let s_img = u64::from(out.0) * u64::from(out.1) * 3;
    let s_stored = u64::from(stored.0) * u64::from(stored.1) * 3;
    let b = config.batch_size as u64;
    let t = config.decode_threads as u64;
    let window = crate::loader::job_window(config.decode_threads) as u64;
    let readers =
        (config.readahead_shards as u64 + 1) * ((SHARD_QUEUE as u64 + 2) * s_raw + READER_OVERHEAD);
    let shuffle_buffer = if config.shuffle {
        config.shuffle_buffer as u64 * s_raw
    } else {
        0
    };
    let padding = (b + 1) * s_raw;
    // Batch jobs in the window, plus the one the order stage is gathering.
    let in_flight = (window + 1) * b * s_raw + window * b * s_img;
    let decode_scratch = t * (s_stored + s_img);
    // Queued, being packed, held by the consumer, and the recycled buffers in the pool.
    let batches = (config.prefetch_batches as u64 + 2 + crate::batch::BufferPool::CAPACITY as u64)
        * b
        * s_img;
    MemoryBound {
        readers,
        shuffle_buffer,
        padding,
        in_flight,
        decode_scratch,
        batches,
        total: readers + shuffle_buffer + padding + in_flight + decode_scratch + batches,
    }
}

/// One end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderRun {
    pub decode_threads: usize,
    pub images: u64,
    pub batches: u64,
    pub wall_s: f64,
    /// Images per wall-clock second, from creating the loader to the last batch.
    pub images_per_sec: f64,
    /// Process CPU seconds used during the run (all threads).
    pub cpu_s: f64,
    /// Images per CPU-second: the rate per fully used core.
    pub images_per_cpu_sec: f64,
    pub peak_rss_bytes: u64,
    pub rss_before_bytes: u64,
    pub metrics: LoaderMetrics,
}

/// Run `config` (normally with `epochs` set) to the end, touching each batch like a consumer.
pub async fn run_loader(
    dataset: &Dataset,
    config: LoaderConfig,
    max_batches: Option<u64>,
    mut on_batch: impl FnMut(&crate::Batch),
) -> Result<LoaderRun, LoaderError> {
    let rss_before = current_rss();
    let threads = config.decode_threads;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut loader = Loader::new(dataset, config)?;
    let (mut images, mut batches, mut checksum) = (0u64, 0u64, 0u64);
    while let Some(batch) = loader.next_batch().await {
        let batch = batch?;
        on_batch(&batch);
        images += batch.n as u64;
        batches += 1;
        checksum = checksum.wrapping_add(u64::from(batch.images[batch.images.len() / 2]));
        // Like the trainer's device feeder, once the pixels are copied.
        loader.recycle(batch.images);
        if max_batches.is_some_and(|m| batches >= m) {
            break;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let metrics = loader.metrics();
    drop(loader);
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    std::hint::black_box(checksum);
    Ok(LoaderRun {
        decode_threads: threads,
        images,
        batches,
        wall_s: wall,
        images_per_sec: images as f64 / wall,
        cpu_s: cpu,
        images_per_cpu_sec: images as f64 / cpu.max(1e-9),
        peak_rss_bytes: peak_rss(),
        rss_before_bytes: rss_before,
        metrics,
    })
}

/// The raw decode ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct RawDecode {
    pub images: u64,
    pub wall_s: f64,
    /// Images per second on one thread: decode (+ resize, + layout) of in-memory bytes.
    pub images_per_sec: f64,
    /// CPU seconds of the decoding thread.
    pub cpu_s: f64,
    /// Images per CPU-second of that thread: the ceiling per fully used core.
    pub images_per_cpu_sec: f64,
    /// Largest stored sample (image + labels) seen, in bytes.
    pub max_sample_bytes: u64,
}

/// Read every image of `split` into memory, then decode them all on this thread with the loader's
/// own decoder and settings, `passes` times.
pub async fn raw_decode(
    dataset: &Dataset,
    config: &LoaderConfig,
    passes: usize,
) -> Result<RawDecode, LoaderError> {
    let index = dataset.index();
    let split = index
        .split(&config.split)
        .map_err(|source| LoaderError::Index {
            url: dataset.url().into(),
            source,
        })?;
    let mut images: Vec<(ImageKind, Vec<u8>)> = Vec::new();
    let mut sample_sizes: std::collections::HashMap<String, u64> = Default::default();
    for shard in &split.shards {
        let path = dataset.location().child(&shard.name);
        let fetch_err = |source| LoaderError::Fetch {
            shard: shard.name.clone(),
            path: path.to_string(),
            attempts: 1,
            source,
        };
        let mut stream = dataset
            .location()
            .store
            .get(&path)
            .await
            .map_err(fetch_err)?
            .into_stream();
        let mut compressed = Vec::new();
        while let Some(chunk) = stream.next().await {
            compressed.extend_from_slice(&chunk.map_err(fetch_err)?);
        }
        let mut failure = None;
        read_members(&compressed[..], |mut member| {
            let Some((key, ext)) = split_member_name(member.name()) else {
                return ControlFlow::Continue(());
            };
            let key = key.to_owned();
            let kind = ImageKind::from_ext(ext);
            match member.read_body(MAX_MEMBER_BYTES) {
                Ok(data) => {
                    *sample_sizes.entry(key).or_default() += data.len() as u64;
                    if let Some(kind) = kind {
                        images.push((kind, data));
                    }
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    ControlFlow::Break(())
                }
            }
        })
        .map_err(|e| LoaderError::Pipeline(format!("{}: {e}", shard.name)))?;
        if let Some(e) = failure {
            return Err(LoaderError::Pipeline(format!("{}: {e}", shard.name)));
        }
    }
    let (w, h) = match config.image_size {
        Some(s) => (s, s),
        None => (index.image.width, index.image.height),
    };
    let mut decoder = ImageDecoder::new(DecodeSpec {
        width: w,
        height: h,
        layout: config.layout,
        augment: config.augment,
        attributes: index.attributes.clone().into(),
        factors: index.factors.clone().into(),
    })
    .map_err(LoaderError::Pipeline)?;
    let start = Instant::now();
    let cpu0 = thread_cpu_time();
    let mut n = 0u64;
    let mut checksum = 0u64;
    let mut px = vec![0u8; w as usize * h as usize * 3];
    for _ in 0..passes {
        for (i, (kind, bytes)) in images.iter().enumerate() {
            if decoder.pixels_into(*kind, bytes, i as u64, &mut px).is_ok() {
                checksum = checksum.wrapping_add(u64::from(px[px.len() / 2]));
                n += 1;
            }
        }
    }
    std::hint::black_box(checksum);
    let wall = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu_time() - cpu0).as_secs_f64();
    Ok(RawDecode {
        images: n,
        wall_s: wall,
        images_per_sec: n as f64 / wall,
        cpu_s: cpu,
        images_per_cpu_sec: n as f64 / cpu.max(1e-9),
        max_sample_bytes: sample_sizes.values().copied().max().unwrap_or(0),
    })
}

/// Layout name for reports.
pub fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Nchw => "nchw",
        Layout::Nhwc => "nhwc",
    }
}
