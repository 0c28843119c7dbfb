//! GPU checks run by `scripts/gpu-check` (`--ignored`): they need a CUDA device and fail without
//! one. Each prints one JSON line for docs/BENCHMARKS.md.

use d2ae_train::dist::gpu_bench::{h2d_bandwidth, nccl_grad_check};

#[test]
#[ignore = "needs a CUDA GPU; run by scripts/gpu-check"]
fn gpu_nccl_world_of_one_averages_real_gradients_in_buckets() {
    let check = nccl_grad_check(0).unwrap();
    println!(
        "{}",
        serde_json::json!({"check": "nccl_grad_sync", "result": check})
    );
    assert!(check.nccl_version.starts_with("2."), "{check:?}");
    // ~21 MB of gradients in 25 MB buckets: one bucket; the mean over one rank is the identity.
    assert_eq!(check.parameters, 6);
    assert!(check.buckets >= 1);
    assert_eq!(
        check.bytes,
        (1024 * 4096 + 4096 + 4096 * 1024 + 1024 + 1024 * 10 + 10) * 4
    );
    assert_eq!(check.max_abs_change, 0.0, "{check:?}");
}

#[test]
#[ignore = "needs a CUDA GPU; run by scripts/gpu-check"]
fn gpu_pinned_vs_pageable_host_to_device_bandwidth() {
    let report = h2d_bandwidth(0, 256 << 20, 20).unwrap();
    println!(
        "{}",
        serde_json::json!({"check": "h2d_bandwidth", "result": report})
    );
    assert!(
        report.pinned_gb_s > 1.0 && report.pageable_gb_s > 0.1,
        "{report:?}"
    );
}
