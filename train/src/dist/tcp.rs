//! The CPU backend: collectives over TCP between processes, as a star through rank 0.
//!
//! All-reduce: every rank sends its tensor to rank 0, which sums the contributions in rank order in
//! f64, divides once, rounds to f32 and sends the same bytes back to all. So the result is
//! deterministic (independent of arrival order) and bit-identical on every rank, and replicas never
//! drift. Broadcast from rank r: r sends to rank 0, which relays. Why a star and not a ring: the
//! CPU backend exists to run the data-parallel logic with a handful of local ranks (tests, CPU
//! training), where rank 0's bandwidth is not the bottleneck and the star's fixed summation order
//! is worth more than a ring's bandwidth; GPU runs use NCCL.

use std::collections::VecDeque;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::link::Links;
use super::rendezvous::{rendezvous, Rendezvous};
use super::wire::Kind as Frame;
use super::{check_f32, Collective, DistEnv, DistError, Timeouts};

/// A process group whose collectives run over TCP. Also the control plane of the NCCL backend.
pub struct TcpCollective {
    rank: usize,
    world_size: usize,
    /// `None` for a world of one.
    links: Option<Links>,
    /// Index of the next collective, identical on all ranks while they agree.
    seq: u64,
    timeouts: Timeouts,
    /// The first error; the group is unusable after it.
    failed: Option<String>,
}

impl TcpCollective {
    /// Rendezvous at `env`'s master and build the group.
    pub fn connect(env: &DistEnv, timeouts: Timeouts) -> Result<TcpCollective, DistError> {
        let rv = rendezvous(env, || Ok(Vec::new()), timeouts.rendezvous)?;
        Self::from_rendezvous(env.rank, env.world_size, rv, timeouts)
    }

    /// Build the group on connections a rendezvous already made.
    pub fn from_rendezvous(
        rank: usize,
        world_size: usize,
        rv: Rendezvous,
        timeouts: Timeouts,
    ) -> Result<TcpCollective, DistError> {
        let links = if world_size > 1 {
            Some(Links::new(rv.streams, timeouts)?)
        } else {
            None
        };
        Ok(TcpCollective {
            rank,
            world_size,
            links,
            seq: 0,
            timeouts,
            failed: None,
        })
    }

    /// Run one collective step; on error, tell every peer and poison the group.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DistError>,
    ) -> Result<T, DistError> {
        if let Some(reason) = &self.failed {
            return Err(DistError::Poisoned(reason.clone()));
        }
        let out = f(self);
        if let Err(e) = &out {
            let reason = format!("rank {}: {e}", self.rank);
            if let Some(links) = &self.links {
                links.abort_all(&reason);
            }
            self.failed = Some(e.to_string());
        }
        out
    }

    /// Without blocking: an error if a peer died, aborted or fell silent (used by NCCL while its
    /// kernels run).
    pub fn poll_failure(&mut self, op: &str) -> Result<(), DistError> {
        if let Some(reason) = &self.failed {
            return Err(DistError::Poisoned(reason.clone()));
        }
        let Some(links) = self.links.as_mut() else {
            return Ok(());
        };
        let out = links.poll_failure(op);
        if let Err(e) = &out {
            links.abort_all(&format!("rank {}: {e}", self.rank));
            self.failed = Some(e.to_string());
        }
        out
    }

    /// Close the links abruptly, as if this process had crashed. For failure tests.
    #[doc(hidden)]
    pub fn sever(&mut self) {
        if let Some(links) = self.links.as_mut() {
            links.sever();
        }
        self.failed = Some("severed".into());
    }

    /// Mark the group failed for a reason found outside it (an NCCL error) and tell the peers.
    pub fn fail(&mut self, reason: &str) {
        if let Some(links) = &self.links {
            links.abort_all(&format!("rank {}: {reason}", self.rank));
        }
        self.failed.get_or_insert_with(|| reason.to_string());
    }

    fn next(&mut self, name: &str) -> (u64, String, Instant) {
        self.seq += 1;
        (
            self.seq,
            format!("{name} #{}", self.seq),
            Instant::now() + self.timeouts.collective,
        )
    }

    /// Receive the frame of collective `seq` from `from` (any peer when `None`), checking its kind
    /// and length.
    fn expect(
        links: &mut Links,
        from: Option<usize>,
        kind: Frame,
        seq: u64,
        len: usize,
        op: &str,
        deadline: Instant,
    ) -> Result<(usize, Vec<u8>), DistError> {
        let (rank, header, payload) = links.recv(op, deadline)?;
        let mismatch = |reason: String| DistError::Mismatch {
            rank,
            op: op.into(),
            reason,
        };
        if from.is_some_and(|f| f != rank) {
            return Err(mismatch(format!(
                "sent {:?} #{} before rank {} was heard",
                header.kind,
                header.seq,
                from.unwrap_or_default()
            )));
        }
        if header.kind != kind || header.seq != seq {
            return Err(mismatch(format!(
                "it is in {:?} #{}, this rank expected {kind:?} #{seq} (ranks called different \
                 collectives)",
                header.kind, header.seq
            )));
        }
        if payload.len() != len {
            return Err(mismatch(format!(
                "it has {} bytes, this rank has {len} (tensor sizes differ)",
                payload.len()
            )));
        }
        Ok((rank, payload))
    }

    fn all_reduce_one(&mut self, index: usize, t: &mut Tensor) -> Result<(), DistError> {
        let (seq, op, deadline) = self.next("all_reduce");
        let n = t.numel();
        let op = format!("{op} (tensor {index}, {n} floats)");
        let torch = |what: &str| {
            let op = op.clone();
            let what = what.to_string();
            move |e: tch::TchError| DistError::torch(format!("{op}: {what}"), e)
        };
        let src = t
            .f_to_device(Device::Cpu)
            .and_then(|c| c.f_contiguous())
            .and_then(|c| c.f_reshape([-1]))
            .map_err(torch("flattening"))?;
        let chunks = Chunks::new(n);
        let (rank, world) = (self.rank, self.world_size);
        let links = self.links.as_mut().expect("world_size > 1 has links");
        // Results go straight into `src`, which is `t` itself when `t` is a contiguous CPU tensor.
        let store = |src: &Tensor, off: usize, len: usize, value: &Tensor| {
            if len == 0 {
                return Ok(());
            }
            tch::no_grad(|| {
                src.f_narrow(0, off as i64, len as i64)
                    .and_then(|mut dst| dst.f_copy_(value))
            })
        };
        if rank == 0 {
            // Per peer, the chunks received but not reduced yet; chunk k is reduced as soon as
            // every peer's chunk k is in, so sending results overlaps with receiving.
            let mut pending: Vec<VecDeque<Vec<u8>>> = vec![VecDeque::new(); world];
            for k in 0..chunks.count {
                while pending.iter().skip(1).any(VecDeque::is_empty) {
                    let (from, header, payload) = links.recv(&op, deadline)?;
                    let idx = k + pending[from].len();
                    let want = chunks.bytes(idx);
                    let mismatch = |reason: String| DistError::Mismatch {
                        rank: from,
                        op: op.clone(),
                        reason,
                    };
                    if header.kind != Frame::Reduce || header.seq != seq {
                        return Err(mismatch(format!(
                            "it is in {:?} #{}, this rank expected {:?} #{seq} (ranks called \
                             different collectives)",
                            header.kind,
                            header.seq,
                            Frame::Reduce
                        )));
                    }
                    if idx >= chunks.count || payload.len() != want {
                        return Err(mismatch(format!(
                            "it has {} bytes in chunk {idx}, this rank has {} (tensor sizes differ)",
                            payload.len(),
                            if idx < chunks.count { want } else { 0 }
                        )));
                    }
                    pending[from].push_back(payload);
                }
                let (off, len) = chunks.range(k);
                // f64 sum in rank order, one division, one rounding: deterministic and the same
                // on every rank.
                let mut acc = src
                    .f_narrow(0, off as i64, len as i64)
                    .and_then(|c| c.f_to_kind(Kind::Double))
                    .map_err(torch("reducing"))?;
                for queue in pending.iter_mut().skip(1) {
                    let part = queue.pop_front().expect("every peer has chunk k");
                    let part = Tensor::f_from_data_size(&part, &[len as i64], Kind::Float)
                        .map_err(torch("reducing"))?;
                    let _sum = acc.f_add_(&part).map_err(torch("reducing"))?;
                }
                let mean = acc
                    .f_div_scalar(world as f64)
                    .and_then(|m| m.f_to_kind(Kind::Float))
                    .map_err(torch("reducing"))?;
                let mut bytes = vec![0u8; len * 4];
                if len > 0 {
                    mean.f_copy_data_u8(&mut bytes, len)
                        .map_err(torch("reducing"))?;
                }
                for peer in 1..world {
                    links.send(peer, Frame::Result, seq, &bytes, &op)?;
                }
                store(&src, off, len, &mean).map_err(torch("storing the result"))?;
            }
        } else {
            for k in 0..chunks.count {
                let (off, len) = chunks.range(k);
                let part = src
                    .f_narrow(0, off as i64, len as i64)
                    .map_err(torch("sending"))?;
                let bytes = tensor_bytes(&part, &op)?;
                links.send(0, Frame::Reduce, seq, &bytes, &op)?;
            }
            for k in 0..chunks.count {
                let (off, len) = chunks.range(k);
                let (_, payload) =
                    Self::expect(links, Some(0), Frame::Result, seq, len * 4, &op, deadline)?;
                if len > 0 {
                    let value = Tensor::f_from_data_size(&payload, &[len as i64], Kind::Float)
                        .map_err(torch("storing the result"))?;
                    store(&src, off, len, &value).map_err(torch("storing the result"))?;
                }
            }
        }
        if !(t.device() == Device::Cpu && t.is_contiguous()) {
            let result = src.f_view_as(t).map_err(torch("storing the result"))?;
            tch::no_grad(|| t.f_copy_(&result)).map_err(torch("storing the result"))?;
        }
        Ok(())
    }

    fn broadcast_all(&mut self, tensors: &mut [Tensor], root: usize) -> Result<(), DistError> {
        let (seq, op, deadline) = self.next("broadcast");
        let op = format!("{op} (root {root}, {} tensors)", tensors.len());
        let mut bytes = Vec::new();
        let mut lens = Vec::with_capacity(tensors.len());
        for t in tensors.iter() {
            let b = tensor_bytes(t, &op)?;
            lens.push(b.len());
            bytes.extend_from_slice(&b);
        }
        let (rank, world) = (self.rank, self.world_size);
        let links = self.links.as_mut().expect("world_size > 1 has links");
        let data = if rank == root {
            if rank == 0 {
                for peer in 1..world {
                    links.send(peer, Frame::Broadcast, seq, &bytes, &op)?;
                }
            } else {
                links.send(0, Frame::Broadcast, seq, &bytes, &op)?;
            }
            return Ok(());
        } else if rank == 0 {
            let (_, data) = Self::expect(
                links,
                Some(root),
                Frame::Broadcast,
                seq,
                bytes.len(),
                &op,
                deadline,
            )?;
            for peer in (1..world).filter(|&p| p != root) {
                links.send(peer, Frame::Broadcast, seq, &data, &op)?;
            }
            data
        } else {
            Self::expect(
                links,
                Some(0),
                Frame::Broadcast,
                seq,
                bytes.len(),
                &op,
                deadline,
            )?
            .1
        };
        let mut offset = 0;
        for (t, len) in tensors.iter_mut().zip(lens) {
            write_bytes(t, &data[offset..offset + len], &op)?;
            offset += len;
        }
        Ok(())
    }

    fn barrier_all(&mut self) -> Result<(), DistError> {
        let (seq, op, deadline) = self.next("barrier");
        let world = self.world_size;
        let links = self.links.as_mut().expect("world_size > 1 has links");
        if self.rank == 0 {
            for _ in 1..world {
                Self::expect(links, None, Frame::Barrier, seq, 0, &op, deadline)?;
            }
            for peer in 1..world {
                links.send(peer, Frame::Barrier, seq, &[], &op)?;
            }
        } else {
            links.send(0, Frame::Barrier, seq, &[], &op)?;
            Self::expect(links, Some(0), Frame::Barrier, seq, 0, &op, deadline)?;
        }
        Ok(())
    }
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_mean(&mut self, tensors: &mut [Tensor]) -> Result<(), DistError> {
        check_f32("all_reduce_mean", tensors)?;
        if self.world_size == 1 {
            return Ok(());
        }
        self.guarded(|me| {
            for (i, t) in tensors.iter_mut().enumerate() {
                me.all_reduce_one(i, t)?;
            }
            Ok(())
        })
    }

    fn broadcast_(&mut self, tensors: &mut [Tensor], root: usize) -> Result<(), DistError> {
        if root >= self.world_size {
            return Err(DistError::Mismatch {
                rank: self.rank,
                op: "broadcast".into(),
                reason: format!(
                    "root {root} is not a rank of a world of {}",
                    self.world_size
                ),
            });
        }
        if self.world_size == 1 {
            return Ok(());
        }
        self.guarded(|me| me.broadcast_all(tensors, root))
    }

    fn barrier(&mut self) -> Result<(), DistError> {
        if self.world_size == 1 {
            return Ok(());
        }
        self.guarded(Self::barrier_all)
    }

    fn backend(&self) -> &'static str {
        "tcp"
    }
}

/// An all-reduce travels in chunks of this many bytes, so rank 0 reduces and returns chunk k
/// while chunk k+1 is still arriving.
const CHUNK_BYTES: usize = 1 << 20;

/// How a tensor of `n` f32 values splits into chunks (always at least one, possibly empty).
struct Chunks {
    n: usize,
    per: usize,
    count: usize,
}

impl Chunks {
    fn new(n: usize) -> Chunks {
        let per = CHUNK_BYTES / 4;
        Chunks {
            n,
            per,
            count: n.div_ceil(per).max(1),
        }
    }

    /// `(first element, element count)` of chunk `k`.
    fn range(&self, k: usize) -> (usize, usize) {
        let off = (k * self.per).min(self.n);
        (off, self.per.min(self.n - off))
    }

    fn bytes(&self, k: usize) -> usize {
        self.range(k).1 * 4
    }
}

/// A tensor's elements as bytes in native (little-endian on every supported host) order, from any
/// device and layout.
pub(crate) fn tensor_bytes(t: &Tensor, op: &str) -> Result<Vec<u8>, DistError> {
    let kind = t
        .f_kind()
        .map_err(|e| DistError::torch(format!("{op}: tensor kind"), e))?;
    let numel = t.numel();
    let mut out = vec![0u8; numel * kind.elt_size_in_bytes()];
    if numel > 0 {
        t.f_copy_data_u8(&mut out, numel)
            .map_err(|e| DistError::torch(format!("{op}: reading tensor data"), e))?;
    }
    Ok(out)
}

/// Overwrite `t` in place (whatever its device) with `bytes` of its own kind and shape.
pub(crate) fn write_bytes(t: &mut Tensor, bytes: &[u8], op: &str) -> Result<(), DistError> {
    if t.numel() == 0 {
        return Ok(());
    }
    let kind: Kind = t
        .f_kind()
        .map_err(|e| DistError::torch(format!("{op}: tensor kind"), e))?;
    let src = Tensor::f_from_data_size(bytes, &t.size(), kind)
        .map_err(|e| DistError::torch(format!("{op}: building the result tensor"), e))?;
    let src = if t.device() == Device::Cpu {
        src
    } else {
        src.to_device(t.device())
    };
    // In place on what may be a leaf that requires grad: this is a data update, not autograd.
    tch::no_grad(|| t.f_copy_(&src))
        .map_err(|e| DistError::torch(format!("{op}: writing the result"), e))
}
