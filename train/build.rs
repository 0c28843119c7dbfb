//! Link libtorch (see `build_link.rs`, shared with the evaluator) and build the bf16 autocast shim.

include!("build_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_link.rs");
    if let Some(lib) = link_libtorch() {
        compile_autocast_shim(&lib);
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
