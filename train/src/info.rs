//! `d2ae-train info`: what libtorch this binary runs on (version, CUDA, cuDNN, devices, NCCL)
//! and, for a model config, its parameter count and cost per image.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{nn, Device};

use crate::model::{Cost, D2ae, ModelConfig, ModelError, ParamGroup};

/// The libtorch directory this crate was built against (and, through the rpath, runs with).
pub const LIBTORCH_LIB: &str = env!("D2AE_LIBTORCH_LIB");

/// The runtime: libtorch, CUDA and NCCL as this process sees them.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    /// `torch.__version__` of the libtorch in use (from its `version.py`).
    pub torch_version: Option<String>,
    /// The libtorch library directory.
    pub libtorch_lib: PathBuf,
    /// `torch::cuda::is_available()`.
    pub cuda_available: bool,
    /// `torch::cuda::cudnn_is_available()`.
    pub cudnn_available: bool,
    /// cuDNN version number when available (e.g. 91002 for 9.10.2).
    pub cudnn_version: Option<i64>,
    /// Number of CUDA devices.
    pub cuda_device_count: i64,
    /// The NCCL library distributed training loads: `libnccl.so.2` of the `nvidia-nccl` wheel
    /// beside torch.
    pub nccl_library: PathBuf,
    /// NCCL's version as reported by the library itself (`ncclGetVersion`), when it loads.
    pub nccl_version: Option<String>,
    /// Why NCCL could not be loaded, when it could not.
    pub nccl_error: Option<String>,
    /// Intra-op threads libtorch uses on the CPU.
    pub cpu_threads: i32,
    /// Whether libtorch has oneDNN (MKL-DNN) CPU kernels.
    pub mkldnn: bool,
}

impl RuntimeInfo {
    /// Probe the runtime. Loads NCCL with `dlopen` to ask its version (no GPU needed).
    pub fn gather() -> Self {
        let lib = PathBuf::from(LIBTORCH_LIB);
        let cuda_available = tch::Cuda::is_available();
        let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
        let nccl_library = nccl_path(&lib);
        let (nccl_version, nccl_error) = match nccl_version(&nccl_library) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            torch_version: torch_version(&lib),
            libtorch_lib: lib,
            cuda_available,
            cudnn_available,
            cudnn_version: cudnn_available.then(tch::utils::version_cudnn),
            cuda_device_count: tch::Cuda::device_count(),
            nccl_library,
            nccl_version,
            nccl_error,
            cpu_threads: tch::get_num_threads(),
            mkldnn: tch::utils::has_mkldnn(),
        }
    }

    /// Human-readable lines.
    pub fn render(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let nccl = match (&self.nccl_version, &self.nccl_error) {
            (Some(v), _) => format!("{} (version {v})", self.nccl_library.display()),
            (None, Some(e)) => format!("{} (not loadable: {e})", self.nccl_library.display()),
            (None, None) => self.nccl_library.display().to_string(),
        };
        format!(
            "torch version     {}\n\
             libtorch          {}\n\
             CUDA available    {}\n\
             cuDNN available   {}{}\n\
             CUDA devices      {}\n\
             NCCL library      {nccl}\n\
             CPU threads       {} (oneDNN: {})\n",
            self.torch_version.as_deref().unwrap_or("unknown"),
            self.libtorch_lib.display(),
            yes(self.cuda_available),
            yes(self.cudnn_available),
            self.cudnn_version
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            self.cuda_device_count,
            self.cpu_threads,
            yes(self.mkldnn),
        )
    }
}

/// `__version__` from `torch/version.py` beside `torch/lib`.
fn torch_version(lib: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lib.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
}

/// `site-packages/nvidia/nccl/lib/libnccl.so.2` for a libtorch at `site-packages/torch/lib`.
pub fn nccl_path(libtorch_lib: &Path) -> PathBuf {
    libtorch_lib
        .parent()
        .and_then(Path::parent)
        .unwrap_or(libtorch_lib)
        .join("nvidia/nccl/lib/libnccl.so.2")
}

/// Load NCCL and ask its version ("2.27.3").
fn nccl_version(path: &Path) -> Result<String, String> {
    use std::ffi::{CStr, CString};
    if !path.exists() {
        return Err("file not found".into());
    }
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen/dlsym with valid NUL-terminated strings; the handle is never closed, so the
    // function pointer stays valid; `ncclGetVersion(int*)` has this exact C signature.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let err = libc::dlerror();
            return Err(if err.is_null() {
                "dlopen failed".into()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            });
        }
        let sym = libc::dlsym(handle, c"ncclGetVersion".as_ptr());
        if sym.is_null() {
            return Err("no ncclGetVersion symbol".into());
        }
        let get = std::mem::transmute::<
            *mut libc::c_void,
            extern "C" fn(*mut libc::c_int) -> libc::c_int,
        >(sym);
        let mut code: libc::c_int = 0;
        if get(&mut code) != 0 {
            return Err("ncclGetVersion failed".into());
        }
        // NCCL ≥ 2.9 encodes major·10000 + minor·100 + patch.
        Ok(format!(
            "{}.{}.{}",
            code / 10000,
            (code % 10000) / 100,
            code % 100
        ))
    }
}

/// Parameter counts and cost of one model config.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// The config's name.
    pub name: String,
    /// Input side in pixels.
    pub image_size: i64,
    /// Rows of W_T / W_P the counts assume.
    pub num_identities: i64,
    /// Trainable parameters per group.
    pub params: Vec<(ParamGroup, i64)>,
    /// All trainable parameters.
    pub total_params: i64,
    /// Non-trainable buffers (batch-norm statistics, running σ), in elements.
    pub buffer_elements: i64,
    /// MACs per image by part.
    pub macs: Cost,
    /// The encoder E alone, GMAC per image.
    pub encoder_gmac: f64,
    /// A training forward (both decodes), GMAC per image.
    pub train_forward_gmac: f64,
}

impl ModelSummary {
    /// Build the model on the CPU (its variables are initialised, not run) and count.
    pub fn of(cfg: &ModelConfig, num_identities: i64) -> Result<Self, ModelError> {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = D2ae::new(&vs.root(), cfg, num_identities)?;
        let params: Vec<(ParamGroup, i64)> = model
            .param_groups(&vs)
            .into_iter()
            .map(|(g, ts)| (g, ts.iter().map(|(_, t)| t.numel() as i64).sum()))
            .collect();
        let total_params = params.iter().map(|(_, n)| n).sum();
        let all: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        let macs = model.cost();
        Ok(Self {
            name: cfg.name.clone(),
            image_size: cfg.image_size,
            num_identities,
            params,
            total_params,
            buffer_elements: all - total_params,
            encoder_gmac: macs.encoder as f64 / 1e9,
            train_forward_gmac: macs.train_forward as f64 / 1e9,
            macs,
        })
    }

    /// Human-readable table.
    pub fn render(&self) -> String {
        let mut s = format!(
            "model `{}` at {}×{} px, {} identities\n",
            self.name, self.image_size, self.image_size, self.num_identities
        );
        for (g, n) in &self.params {
            s += &format!("  params {:<14} {:>12}\n", g.segment(), group_fmt(*n));
        }
        s += &format!(
            "  params {:<14} {:>12}  (+ {} buffer elements)\n",
            "total",
            group_fmt(self.total_params),
            group_fmt(self.buffer_elements)
        );
        let g = |m: u64| m as f64 / 1e9;
        let c = &self.macs;
        s += &format!(
            "  GMAC/image  encoder {:.3}  branches {:.3}  classifiers {:.3}  decoder {:.3} per decode\n",
            g(c.encoder), g(c.branches), g(c.classifiers), g(c.decoder)
        );
        s += &format!(
            "  GMAC/image  encode (E + branches) {:.3}  training forward {:.3}\n",
            g(c.encode),
            g(c.train_forward)
        );
        s
    }
}

/// 12345678 → "12,345,678".
fn group_fmt(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_encoder_costs_about_3_7_gmac_and_ends_in_6x6() {
        let s = ModelSummary::of(&ModelConfig::paper(), 1000).unwrap();
        assert!(
            (3.4..4.0).contains(&s.encoder_gmac),
            "encoder {} GMAC",
            s.encoder_gmac
        );
        let enc = s.params[0];
        assert_eq!(enc.0, ParamGroup::Encoder);
        // Inception-ResNet-v1 without its classifier has about 21.8M parameters (with BN).
        assert!((20_000_000..24_000_000).contains(&enc.1), "{enc:?}");
        // W_T: 256·1000 + 1000.
        let w_t = s.params.iter().find(|(g, _)| *g == ParamGroup::ClassifierT);
        assert_eq!(w_t.unwrap().1, 257_000);
        assert!(s.render().contains("encoder"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(group_fmt(0), "0");
        assert_eq!(group_fmt(999), "999");
        assert_eq!(group_fmt(1000), "1,000");
        assert_eq!(group_fmt(23_456_789), "23,456,789");
    }

    #[test]
    fn runtime_reports_the_torch_next_to_libtorch() {
        let info = RuntimeInfo::gather();
        assert!(
            info.torch_version
                .as_deref()
                .unwrap_or("")
                .starts_with("2."),
            "{info:?}"
        );
        assert!(info.nccl_library.ends_with("nvidia/nccl/lib/libnccl.so.2"));
        assert!(info.cpu_threads >= 1);
    }
}
