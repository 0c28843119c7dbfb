//! The GPU backend: NCCL all-reduce and broadcast on tch's CUDA tensors, with the TCP star as the
//! control plane (unique id, barriers, and peer-death detection while NCCL kernels run).
//!
//! Loading: `cudarc`'s NCCL bindings look for `libnccl.so`, `libnccl.so.<CUDA major>` and a few
//! more names, but never `libnccl.so.2`, the only name the `nvidia-nccl` wheel that PyTorch installs
//! ships (and `LD_LIBRARY_PATH` cannot be changed for the running process). So we `dlopen` the
//! library ourselves, by full path, and call it through `cudarc::nccl::sys`'s types: `D2AE_NCCL_LIB`,
//! then the wheel beside the libtorch we were built against, then the names the loader knows
//! (`libnccl.so.2` is usually already loaded by `libtorch_cuda`). The CUDA driver comes from
//! `cudarc::driver`, whose names do include `libcuda.so.1`. Nothing here needs CUDA at build time,
//! and on a machine without it every entry point returns an error instead of panicking.
//!
//! Streams: tch never changes the current stream, so its kernels run on the legacy default stream;
//! NCCL is queued on that same stream (null), after the backward kernels and before the optimizer's.
//! The call then waits for the stream with a polling loop so that an NCCL error, a dead peer on the
//! control plane or the collective timeout aborts the communicator instead of hanging.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::CudaContext;
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};
use tch::{Device, Tensor};

use super::rendezvous::rendezvous;
use super::tcp::TcpCollective;
use super::{check_f32, Collective, DistEnv, DistError, Timeouts};

type Res = c_int;
type Stream = *mut c_void;

/// The NCCL entry points we use, resolved from one `dlopen`ed library.
pub struct NcclLib {
    pub path: PathBuf,
    get_version: unsafe extern "C" fn(*mut c_int) -> Res,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> Res,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> Res,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> Res,
    comm_abort: unsafe extern "C" fn(ncclComm_t) -> Res,
    comm_get_async_error: unsafe extern "C" fn(ncclComm_t, *mut Res) -> Res,
    get_error_string: unsafe extern "C" fn(Res) -> *const c_char,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        Stream,
    ) -> Res,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        Stream,
    ) -> Res,
    group_start: unsafe extern "C" fn() -> Res,
    group_end: unsafe extern "C" fn() -> Res,
}

// SAFETY: the struct holds plain function pointers into a library that is never unloaded.
unsafe impl Send for NcclLib {}
unsafe impl Sync for NcclLib {}

impl NcclLib {
    /// Where we look for NCCL, in order.
    pub fn candidates(override_path: Option<&Path>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(p) = override_path {
            out.push(p.to_owned());
        }
        // The wheel beside libtorch (<site-packages>/torch/lib): as mapped into this process (an
        // NCCL already loaded by libtorch_cuda comes first), else where build.rs saw it.
        let mapped = mapped_libraries();
        out.extend(
            mapped
                .iter()
                .filter(|p| p.ends_with("libnccl.so.2"))
                .cloned(),
        );
        let torch_dirs = mapped
            .iter()
            .filter(|p| p.ends_with("libtorch_cpu.so"))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .chain(option_env!("D2AE_LIBTORCH_LIB").map(PathBuf::from));
        for dir in torch_dirs {
            out.push(dir.join("../../nvidia/nccl/lib/libnccl.so.2"));
        }
        out.push("libnccl.so.2".into());
        out.push("libnccl.so".into());
        out
    }

    /// Load NCCL from the first candidate that opens and has every symbol. Cached: the first
    /// successful load is reused by every later call.
    pub fn load(override_path: Option<&Path>) -> Result<&'static NcclLib, DistError> {
        static LIB: OnceLock<NcclLib> = OnceLock::new();
        if let Some(lib) = LIB.get() {
            return Ok(lib);
        }
        let mut tried = Vec::new();
        for path in Self::candidates(override_path) {
            match Self::open(&path) {
                Ok(lib) => return Ok(LIB.get_or_init(|| lib)),
                Err(why) => tried.push(format!("{}: {why}", path.display())),
            }
        }
        Err(DistError::NcclUnavailable(format!(
            "cannot load NCCL (set D2AE_NCCL_LIB to libnccl.so.2); tried {}",
            tried.join("; ")
        )))
    }

    fn open(path: &Path) -> Result<NcclLib, String> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: dlopen/dlsym with valid C strings; the handle is never closed, so the symbols
        // stay valid for the life of the process.
        unsafe {
            let handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return Err(dl_error());
            }
            macro_rules! sym {
                ($name:literal) => {
                    symbol(handle, concat!($name, "\0"))?
                };
            }
            Ok(NcclLib {
                path: path.to_owned(),
                get_version: sym!("ncclGetVersion"),
                get_unique_id: sym!("ncclGetUniqueId"),
                comm_init_rank: sym!("ncclCommInitRank"),
                comm_destroy: sym!("ncclCommDestroy"),
                comm_abort: sym!("ncclCommAbort"),
                comm_get_async_error: sym!("ncclCommGetAsyncError"),
                get_error_string: sym!("ncclGetErrorString"),
                all_reduce: sym!("ncclAllReduce"),
                broadcast: sym!("ncclBroadcast"),
                group_start: sym!("ncclGroupStart"),
                group_end: sym!("ncclGroupEnd"),
            })
        }
    }

    /// NCCL's version as `major.minor.patch` (e.g. 22907 → 2.29.7).
    pub fn version(&self) -> Result<(u32, u32, u32), DistError> {
        let mut v: c_int = 0;
        // SAFETY: writes one int.
        self.check("ncclGetVersion", unsafe { (self.get_version)(&mut v) })?;
        let v = v as u32;
        Ok((v / 10000, (v / 100) % 100, v % 100))
    }

    /// A fresh unique id (rank 0 only), as the bytes the rendezvous shares.
    pub fn unique_id(&self) -> Result<Vec<u8>, DistError> {
        let mut id = ncclUniqueId { internal: [0; 128] };
        // SAFETY: writes the 128-byte id.
        self.check("ncclGetUniqueId", unsafe { (self.get_unique_id)(&mut id) })?;
        Ok(id.internal.iter().map(|&c| c as u8).collect())
    }

    fn check(&self, call: &'static str, code: Res) -> Result<(), DistError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for any code.
        let message = unsafe {
            let p = (self.get_error_string)(code);
            if p.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(DistError::Nccl {
            call,
            code: code as u32,
            message,
        })
    }
}

/// Resolve `name` (NUL-terminated) in `handle` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the C signature of that symbol.
unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &'static str) -> Result<F, String> {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    let p = libc::dlsym(handle, name.as_ptr() as *const c_char);
    if p.is_null() {
        return Err(format!("missing symbol {}", name.trim_end_matches('\0')));
    }
    // SAFETY: a non-null symbol address reinterpreted as the caller's function pointer type.
    Ok(std::mem::transmute_copy::<*mut c_void, F>(&p))
}

/// Shared libraries mapped into this process (`/proc/self/maps`; empty where that is unreadable).
fn mapped_libraries() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .map(PathBuf::from)
        .collect();
    out.dedup();
    out
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    unsafe {
        let p = libc::dlerror();
        if p.is_null() {
            "dlopen failed".into()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Whether the CUDA driver library can be opened (false, not a panic, without CUDA).
pub fn cuda_driver_present() -> bool {
    // SAFETY: only tries to dlopen candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Why NCCL cannot run on `device` here, if it cannot: no CUDA in tch, no driver, no such device.
pub fn check_cuda(device: usize) -> Result<(), DistError> {
    if !tch::Cuda::is_available() {
        return Err(DistError::NcclUnavailable(format!(
            "NCCL needs a CUDA device, but libtorch sees none (asked for cuda:{device}); use \
             --device cpu for the TCP backend"
        )));
    }
    let count = tch::Cuda::device_count();
    if device as i64 >= count {
        return Err(DistError::NcclUnavailable(format!(
            "cuda:{device} requested (LOCAL_RANK) but only {count} CUDA device(s) are visible"
        )));
    }
    if !cuda_driver_present() {
        return Err(DistError::NcclUnavailable(
            "libtorch sees CUDA but the driver library libcuda.so.1 cannot be opened".into(),
        ));
    }
    Ok(())
}

/// A process group whose collectives run on NCCL.
pub struct NcclCollective {
    lib: &'static NcclLib,
    comm: ncclComm_t,
    ctx: Arc<CudaContext>,
    device: usize,
    control: TcpCollective,
    timeouts: Timeouts,
    failed: bool,
}

// SAFETY: the communicator is used only through `&mut self`, one call at a time; NCCL allows a
// communicator to move between threads as long as calls are not concurrent.
unsafe impl Send for NcclCollective {}

impl NcclCollective {
    /// Rendezvous (rank 0 shares the NCCL unique id) and create the communicator on `cuda:device`.
    pub fn connect(
        env: &DistEnv,
        device: usize,
        timeouts: Timeouts,
    ) -> Result<NcclCollective, DistError> {
        check_cuda(device)?;
        let lib = NcclLib::load(env.nccl_lib.as_deref())?;
        let ctx = CudaContext::new(device)
            .map_err(|e| DistError::Cuda(format!("binding cuda:{device}: {e}")))?;
        let rv = rendezvous(env, || lib.unique_id(), timeouts.rendezvous)?;
        if rv.payload.len() != 128 {
            return Err(DistError::Handshake {
                addr: env.master(),
                reason: format!(
                    "rank 0 sent a {}-byte NCCL id, expected 128",
                    rv.payload.len()
                ),
            });
        }
        let mut id = ncclUniqueId { internal: [0; 128] };
        for (d, s) in id.internal.iter_mut().zip(&rv.payload) {
            *d = *s as c_char;
        }
        let control = TcpCollective::from_rendezvous(env.rank, env.world_size, rv, timeouts)?;
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` receives the new communicator; the device is current on this thread.
        lib.check("ncclCommInitRank", unsafe {
            (lib.comm_init_rank)(&mut comm, env.world_size as c_int, id, env.rank as c_int)
        })?;
        Ok(NcclCollective {
            lib,
            comm,
            ctx,
            device,
            control,
            timeouts,
            failed: false,
        })
    }

    fn check_tensor(&self, op: &str, index: usize, t: &Tensor) -> Result<(), DistError> {
        if t.device() != Device::Cuda(self.device) {
            return Err(DistError::Tensor {
                op: op.into(),
                index,
                reason: format!(
                    "on {:?}, but this rank's NCCL runs on cuda:{}",
                    t.device(),
                    self.device
                ),
            });
        }
        Ok(())
    }

    /// Queue `enqueue` for every tensor in one NCCL group, then wait for the stream.
    fn run(
        &mut self,
        op: &str,
        tensors: &mut [Tensor],
        enqueue: impl Fn(&NcclLib, *mut c_void, usize, &Tensor) -> Res,
    ) -> Result<(), DistError> {
        if self.failed {
            return Err(DistError::Poisoned(format!(
                "{op}: NCCL communicator was aborted"
            )));
        }
        self.control.poll_failure(op)?;
        for (i, t) in tensors.iter().enumerate() {
            self.check_tensor(op, i, t)?;
        }
        // Non-contiguous tensors go through a contiguous copy that is written back afterwards.
        let work: Vec<Tensor> = tensors
            .iter()
            .map(|t| {
                if t.is_contiguous() {
                    t.shallow_clone()
                } else {
                    t.contiguous()
                }
            })
            .collect();
        self.ctx
            .bind_to_thread()
            .map_err(|e| DistError::Cuda(format!("{op}: binding cuda:{}: {e}", self.device)))?;
        let lib = self.lib;
        // SAFETY: group calls bracket the enqueues below.
        self.nccl(op, "ncclGroupStart", unsafe { (lib.group_start)() })?;
        for t in &work {
            let code = enqueue(lib, t.data_ptr(), t.numel(), t);
            if code != 0 {
                // SAFETY: close the group before reporting.
                unsafe { (lib.group_end)() };
                return self.nccl(op, "enqueue", code);
            }
        }
        // SAFETY: ends the group opened above.
        self.nccl(op, "ncclGroupEnd", unsafe { (lib.group_end)() })?;
        self.wait(op)?;
        for (t, w) in tensors.iter_mut().zip(&work) {
            if !t.is_contiguous() {
                tch::no_grad(|| t.f_copy_(w)).map_err(|e| DistError::torch(op.to_string(), e))?;
            }
        }
        Ok(())
    }

    fn nccl(&mut self, op: &str, call: &'static str, code: Res) -> Result<(), DistError> {
        if let Err(e) = self.lib.check(call, code) {
            self.abort(&format!("{op}: {e}"));
            return Err(e);
        }
        Ok(())
    }

    /// Wait for the default stream, watching NCCL's async error, the control plane and the clock.
    fn wait(&mut self, op: &str) -> Result<(), DistError> {
        use cudarc::driver::sys::{cuStreamQuery, CUresult};
        let start = Instant::now();
        let mut nap = Duration::from_micros(20);
        loop {
            // SAFETY: queries the legacy default stream of the bound context.
            match unsafe { cuStreamQuery(std::ptr::null_mut()) } {
                CUresult::CUDA_SUCCESS => return Ok(()),
                CUresult::CUDA_ERROR_NOT_READY => {}
                other => {
                    let e = DistError::Cuda(format!("{op}: waiting for the stream: {other:?}"));
                    self.abort(&e.to_string());
                    return Err(e);
                }
            }
            let mut async_err: Res = 0;
            // SAFETY: reads the communicator's error state.
            let code = unsafe { (self.lib.comm_get_async_error)(self.comm, &mut async_err) };
            self.nccl(op, "ncclCommGetAsyncError", code)?;
            self.nccl(op, "async NCCL error", async_err)?;
            if let Err(e) = self.control.poll_failure(op) {
                self.abort(&e.to_string());
                return Err(e);
            }
            if start.elapsed() > self.timeouts.collective {
                let e = DistError::Timeout {
                    op: op.into(),
                    waited: self.timeouts.collective,
                };
                self.abort(&e.to_string());
                return Err(e);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Abort the communicator (frees its kernels from waiting on a lost peer) and tell the peers.
    fn abort(&mut self, reason: &str) {
        if !self.failed {
            self.failed = true;
            // SAFETY: abort is the documented way out of a hung or failed communicator.
            unsafe { (self.lib.comm_abort)(self.comm) };
            self.control.fail(reason);
        }
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        if !self.failed {
            // SAFETY: the communicator is idle (every call waited for its stream).
            unsafe { (self.lib.comm_destroy)(self.comm) };
        }
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.control.rank()
    }

    fn world_size(&self) -> usize {
        self.control.world_size()
    }

    fn all_reduce_mean(&mut self, tensors: &mut [Tensor]) -> Result<(), DistError> {
        check_f32("all_reduce_mean", tensors)?;
        let comm = self.comm;
        self.run("all_reduce_mean", tensors, |lib, ptr, numel, _| {
            // SAFETY: in-place on a contiguous f32 CUDA buffer of `numel` elements.
            unsafe {
                (lib.all_reduce)(
                    ptr,
                    ptr,
                    numel,
                    ncclDataType_t::ncclFloat32,
                    ncclRedOp_t::ncclAvg,
                    comm,
                    std::ptr::null_mut(),
                )
            }
        })
    }

    fn broadcast_(&mut self, tensors: &mut [Tensor], root: usize) -> Result<(), DistError> {
        let comm = self.comm;
        self.run("broadcast", tensors, |lib, ptr, numel, t| {
            let bytes = numel * t.kind().elt_size_in_bytes();
            // SAFETY: in-place on a contiguous CUDA buffer of `bytes` bytes.
            unsafe {
                (lib.broadcast)(
                    ptr,
                    ptr,
                    bytes,
                    ncclDataType_t::ncclUint8,
                    root as c_int,
                    comm,
                    std::ptr::null_mut(),
                )
            }
        })
    }

    fn barrier(&mut self) -> Result<(), DistError> {
        self.control.barrier()
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_library_loads_from_the_venv_without_a_gpu() {
        let lib = NcclLib::load(None).unwrap();
        let (major, minor, _) = lib.version().unwrap();
        assert_eq!(major, 2, "{}", lib.path.display());
        assert!(minor >= 18, "NCCL 2.{minor} at {}", lib.path.display());
    }

    #[test]
    fn a_bad_override_is_reported_with_its_path() {
        let err = NcclLib::open(Path::new("/nonexistent/libnccl.so.2"))
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/libnccl.so.2"), "{err}");
    }

    #[test]
    fn nccl_without_cuda_is_a_clean_error() {
        if tch::Cuda::is_available() {
            return; // a GPU machine: scripts/gpu-check covers this path
        }
        let err = NcclCollective::connect(&DistEnv::single(), 0, Timeouts::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("NCCL needs a CUDA device"),
            "{err}"
        );
    }
}
