// Shared by train/build.rs and eval/build.rs (through `include!`): link `libtorch_cuda` into every
// binary and test, and set an rpath to libtorch.
//
// Why: `tch` only references symbols of `libtorch_cpu`, so with the default `--as-needed` the linker
// drops `libtorch_cuda` and `tch::Cuda::is_available()` is false even on a GPU machine. Forcing it in
// with `--no-as-needed` costs nothing on a CPU-only machine: the CUDA driver is only opened lazily.
// The rpath lets the binaries run without `LD_LIBRARY_PATH`.

/// Emit the link arguments; returns libtorch's lib directory (`None` when torch-sys gave none).
fn link_libtorch() -> Option<std::path::PathBuf> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // Set by torch-sys (`links = "tch"`) for its direct dependents.
    let lib = std::path::PathBuf::from(std::env::var_os("DEP_TCH_LIBTORCH_LIB")?);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=D2AE_LIBTORCH_LIB={}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    Some(lib)
}
