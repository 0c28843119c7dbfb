//! Link `libtorch_cuda` into every binary and test of this crate, and record where libtorch lives.
//!
//! Why: `tch` only references symbols of `libtorch_cpu`, so with the default `--as-needed` the linker
//! drops `libtorch_cuda` and `tch::Cuda::is_available()` is false even on a GPU machine. Forcing it in
//! with `--no-as-needed` costs nothing on a CPU-only machine: the CUDA driver is only opened lazily.
//! The rpath lets the binaries run without `LD_LIBRARY_PATH`. `eval/build.rs` includes this file.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // Set by torch-sys (`links = "tch"`) for its direct dependents.
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=D2AE_LIBTORCH_LIB={}", lib.display());
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("d2ae-train") {
        compile_autocast_shim(&lib);
    }
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Compile `csrc/autocast.cpp` (bf16 autocast on CUDA) against the same libtorch headers and C++
/// ABI as torch-sys.
fn compile_autocast_shim(lib: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    let include = lib.parent().map(|torch| torch.join("include"));
    let Some(include) = include.filter(|i| i.exists()) else {
        return;
    };
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file("csrc/autocast.cpp")
        .compile("d2ae_autocast");
}
