//! bf16 autocast on CUDA.
//!
//! `tch::autocast` turns libtorch's autocast on with its default CUDA dtype, fp16, which needs loss
//! scaling to train safely. bf16 keeps fp32's exponent range, so we switch the dtype once through
//! a three-line C++ shim (`csrc/autocast.cpp`, built by `build.rs`) and then use `tch::autocast`.
//! Weights, optimizer state and the SGD step stay fp32.

use std::sync::Once;

extern "C" {
    fn d2ae_set_cuda_autocast_bf16();
}

/// Run `f` under bf16 autocast when `enabled` (CUDA ops only; CPU ops are unaffected).
pub fn bf16_autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    if !enabled {
        return f();
    }
    static SET_DTYPE: Once = Once::new();
    // SAFETY: the shim only sets a process-wide libtorch setting; it takes no pointers.
    SET_DTYPE.call_once(|| unsafe { d2ae_set_cuda_autocast_bf16() });
    tch::autocast(true, f)
}

/// Whether the `bf16` setting (`auto`, `on`, `off`) enables autocast on `device`.
pub fn bf16_enabled(setting: &str, device: tch::Device) -> bool {
    match setting {
        "on" => true,
        "off" => false,
        _ => device.is_cuda(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn cpu_results_are_unchanged_and_the_shim_links() {
        let a = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        let plain = a.matmul(&a);
        let under = bf16_autocast(true, || a.matmul(&a));
        assert_eq!(under.kind(), Kind::Float);
        assert!(plain.allclose(&under, 1e-6, 1e-6, false));
        assert!(!bf16_enabled("auto", Device::Cpu));
        assert!(bf16_enabled("auto", Device::Cuda(0)));
        assert!(!bf16_enabled("off", Device::Cuda(0)));
    }
}
