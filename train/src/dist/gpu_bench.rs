//! Measurements for `scripts/gpu-check`: host-to-device bandwidth from pinned and pageable memory,
//! and one world-size-1 NCCL all-reduce of a real model's gradients through [`GradSync`].
//! Every function returns an error (never panics) on a machine without CUDA.

use std::time::Instant;

use serde::Serialize;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::{nccl, DistEnv, DistError, GradSync, Timeouts, DEFAULT_BUCKET_BYTES};

/// Host-to-device copy rates for the same buffer from pageable and from pinned memory.
#[derive(Debug, Clone, Serialize)]
pub struct H2dReport {
    pub bytes: usize,
    pub iters: usize,
    pub pageable_gb_s: f64,
    pub pinned_gb_s: f64,
}

/// Copy `bytes` to `cuda:device` `iters` times from each kind of host memory.
pub fn h2d_bandwidth(device: usize, bytes: usize, iters: usize) -> Result<H2dReport, DistError> {
    nccl::check_cuda(device)?;
    let dev = Device::Cuda(device);
    let n = (bytes / 4) as i64;
    let pageable = Tensor::f_ones([n], (Kind::Float, Device::Cpu))
        .map_err(|e| DistError::torch("allocating the host buffer", e))?;
    let pinned = pageable
        .f_pin_memory(dev)
        .map_err(|e| DistError::torch("pinning the host buffer", e))?;
    let rate = |src: &Tensor| -> Result<f64, DistError> {
        let warm = src
            .f_to_device(dev)
            .map_err(|e| DistError::torch("h2d copy", e))?;
        drop(warm);
        tch::Cuda::synchronize(device as i64);
        let t = Instant::now();
        for _ in 0..iters {
            let on_gpu = src
                .f_to_device(dev)
                .map_err(|e| DistError::torch("h2d copy", e))?;
            drop(on_gpu);
        }
        tch::Cuda::synchronize(device as i64);
        Ok((bytes * iters) as f64 / t.elapsed().as_secs_f64() / 1e9)
    };
    Ok(H2dReport {
        bytes,
        iters,
        pageable_gb_s: rate(&pageable)?,
        pinned_gb_s: rate(&pinned)?,
    })
}

/// The outcome of [`nccl_grad_check`].
#[derive(Debug, Clone, Serialize)]
pub struct NcclCheck {
    pub nccl_library: String,
    pub nccl_version: String,
    pub parameters: usize,
    pub buckets: usize,
    pub bytes: usize,
    /// Largest |after − before| over all gradient elements; the mean over one rank is the identity.
    pub max_abs_change: f64,
    pub sync_ms: f64,
}

/// Build a ~30 MB MLP on `cuda:device`, backpropagate a batch, then average its gradients through
/// a world-size-1 NCCL communicator in [`DEFAULT_BUCKET_BYTES`] buckets and compare.
pub fn nccl_grad_check(device: usize) -> Result<NcclCheck, DistError> {
    nccl::check_cuda(device)?;
    let env = DistEnv::single();
    let lib = nccl::NcclLib::load(env.nccl_lib.as_deref())?;
    let (major, minor, patch) = lib.version()?;
    let mut comm = super::init(&env, Device::Cuda(device), Timeouts::default())?;
    let dev = Device::Cuda(device);
    let vs = nn::VarStore::new(dev);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "l1", 1024, 4096, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "l2", 4096, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "l3", 1024, 10, Default::default()));
    let mut opt = nn::Sgd::default()
        .build(&vs, 0.0)
        .map_err(|e| DistError::torch("optimizer", e))?;
    let xs = Tensor::randn([64, 1024], (Kind::Float, dev));
    let loss = net.forward(&xs).square().mean(Kind::Float);
    opt.zero_grad();
    loss.f_backward()
        .map_err(|e| DistError::torch("backward", e))?;
    let sync = GradSync::new(&vs, DEFAULT_BUCKET_BYTES)?.with_single_rank_collectives();
    let mut names: Vec<String> = sync.names().map(str::to_string).collect();
    names.sort();
    let vars = vs.variables();
    let before: Vec<Tensor> = names.iter().map(|n| vars[n].grad().copy()).collect();
    let t = Instant::now();
    let stats = sync.sync(comm.as_mut())?;
    tch::Cuda::synchronize(device as i64);
    let sync_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut max_abs_change = 0f64;
    for (n, b) in names.iter().zip(&before) {
        let d = (vars[n].grad() - b).abs().max().double_value(&[]);
        max_abs_change = max_abs_change.max(d);
    }
    Ok(NcclCheck {
        nccl_library: lib.path.display().to_string(),
        nccl_version: format!("{major}.{minor}.{patch}"),
        parameters: names.len(),
        buckets: stats.buckets,
        bytes: stats.bytes,
        max_abs_change,
        sync_ms,
    })
}
