//! Gradient averaging in flat buckets, and the start-of-training parameter broadcast.
//!
//! One collective per parameter would pay the per-message latency hundreds of times per step;
//! one collective over the whole model would need a second full copy of all gradients at once on
//! backends that cannot stream. Buckets of ~25 MB (PyTorch DDP's default) sit between. Parameters
//! are ordered by name, which is identical on every rank whatever the `VarStore`'s hash order.
//!
//! libtorch's autograd hooks are not exposed by `tch`, so the all-reduce runs after `backward()`
//! returns rather than overlapping with it; on NCCL all buckets are queued at once in one group.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use super::{Collective, DistError};

/// PyTorch DDP's default bucket size.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Averages the gradients of a fixed, name-ordered list of parameters across ranks.
pub struct GradSync {
    params: Vec<(String, Tensor)>,
    /// Index ranges into `params`, one per bucket.
    buckets: Vec<std::ops::Range<usize>>,
    /// Communicate even in a world of one (the GPU check exercises NCCL this way).
    alone: bool,
}

/// What one [`GradSync::sync`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub buckets: usize,
    pub bytes: usize,
    /// Parameters that had no gradient on this rank and contributed zeros.
    pub missing_grads: usize,
}

impl GradSync {
    /// Every trainable variable of `vs`, ordered by name.
    pub fn new(vs: &VarStore, bucket_bytes: usize) -> Result<GradSync, DistError> {
        let params = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        Self::from_named(params, bucket_bytes)
    }

    /// Explicit `(name, parameter)` pairs; they are sorted by name. Parameters must be f32 and
    /// require grad.
    pub fn from_named(
        mut params: Vec<(String, Tensor)>,
        bucket_bytes: usize,
    ) -> Result<GradSync, DistError> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        for (index, (name, p)) in params.iter().enumerate() {
            if p.kind() != Kind::Float {
                return Err(DistError::Tensor {
                    op: "GradSync".into(),
                    index,
                    reason: format!(
                        "parameter {name} is {:?}; gradients are averaged in f32",
                        p.kind()
                    ),
                });
            }
        }
        let buckets = plan_buckets(
            params.iter().map(|(_, p)| p.numel() * 4),
            bucket_bytes.max(1),
        );
        Ok(GradSync {
            params,
            buckets,
            alone: false,
        })
    }

    /// Run the collectives even when the world has one rank (normally skipped: the mean of one
    /// is itself).
    pub fn with_single_rank_collectives(mut self) -> GradSync {
        self.alone = true;
        self
    }

    /// Number of buckets per step.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Parameter names, in the order they are packed.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// Replace every parameter's gradient by its mean over all ranks. Call after `backward()` and
    /// before the optimizer step, on every rank. A parameter without a gradient on this rank (unused
    /// in this step's forward) contributes zeros and gets a gradient, so all ranks step the same set.
    pub fn sync(&self, comm: &mut dyn Collective) -> Result<SyncStats, DistError> {
        let missing = self.materialize_missing_grads()?;
        let mut stats = SyncStats {
            buckets: self.buckets.len(),
            bytes: 0,
            missing_grads: missing,
        };
        if comm.world_size() == 1 && !self.alone {
            return Ok(stats);
        }
        let op = "GradSync";
        let mut flats = Vec::with_capacity(self.buckets.len());
        for range in &self.buckets {
            let grads = self.params[range.clone()]
                .iter()
                .map(|(name, p)| {
                    p.grad().f_reshape([-1]).map_err(|e| {
                        DistError::torch(format!("{op}: flattening the grad of {name}"), e)
                    })
                })
                .collect::<Result<Vec<Tensor>, _>>()?;
            let flat = Tensor::f_cat(&grads, 0)
                .map_err(|e| DistError::torch(format!("{op}: packing a bucket"), e))?;
            stats.bytes += flat.numel() * 4;
            flats.push(flat);
        }
        comm.all_reduce_mean(&mut flats)?;
        for (range, flat) in self.buckets.iter().zip(&flats) {
            let mut offset = 0i64;
            for (name, p) in &self.params[range.clone()] {
                let mut g = p.grad();
                let n = g.numel() as i64;
                let part = flat
                    .f_narrow(0, offset, n)
                    .and_then(|s| s.f_view_as(&g))
                    .map_err(|e| DistError::torch(format!("{op}: unpacking {name}"), e))?;
                tch::no_grad(|| g.f_copy_(&part)).map_err(|e| {
                    DistError::torch(format!("{op}: writing the grad of {name}"), e)
                })?;
                offset += n;
            }
        }
        Ok(stats)
    }

    /// Give every parameter without a gradient a zero one, through one cheap backward pass.
    fn materialize_missing_grads(&self) -> Result<usize, DistError> {
        let missing: Vec<&Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p)
            .filter(|p| !p.grad().defined())
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let zero = missing
            .iter()
            .map(|p| p.sum(Kind::Float) * 0.0)
            .reduce(|a, b| a + b)
            .expect("not empty");
        zero.f_backward()
            .map_err(|e| DistError::torch("GradSync: creating zero gradients", e))?;
        Ok(missing.len())
    }
}

/// Split consecutive sizes into ranges of at least `bucket_bytes` (the last may be smaller). A
/// parameter larger than a bucket gets a bucket of its own.
pub(crate) fn plan_buckets(
    sizes: impl Iterator<Item = usize>,
    bucket_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut fill, mut end) = (0, 0, 0);
    for (i, size) in sizes.enumerate() {
        end = i + 1;
        fill += size;
        if fill >= bucket_bytes {
            out.push(start..end);
            start = end;
            fill = 0;
        }
    }
    if start < end {
        out.push(start..end);
    }
    out
}

/// Make every rank's variables (parameters and buffers such as batch-norm statistics) equal to
/// rank 0's. Call once after building the model (and after loading a checkpoint on rank 0 only, if
/// that is how a run resumes).
pub fn broadcast_parameters(vs: &VarStore, comm: &mut dyn Collective) -> Result<(), DistError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
    comm.broadcast_(&mut tensors, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_to_the_threshold() {
        let plan = plan_buckets([10, 10, 10, 50, 5, 5].into_iter(), 20);
        assert_eq!(plan, vec![0..2, 2..4, 4..6]);
        assert_eq!(plan_buckets([100].into_iter(), 20), vec![0..1]);
        assert_eq!(
            plan_buckets(std::iter::empty(), 20),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(plan_buckets([1, 1, 1].into_iter(), 1000), vec![0..3]);
    }
}
