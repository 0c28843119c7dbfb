// The trainer's libtorch linking (train/build_link.rs says why); the bf16 shim reaches this crate
// through the d2ae-train library.
include!("../train/build_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../train/build_link.rs");
    link_libtorch();
}
