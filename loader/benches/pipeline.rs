//! Side-by-side loader benchmark on one set of shards, in one run:
//! (a) raw decode of the same JPEGs by the same decoder in a tight loop (the ceiling),
//! (b) the loader end to end with 1 and with 2 decode threads,
//! (c) Python webdataset + PIL + torch DataLoader (1 and 2 workers) on the same shards, decompressed.
//!
//! `cargo bench -p d2ae-loader --bench pipeline` (env: `D2AE_BENCH_SAMPLES`, default 3000;
//! `D2AE_BENCH_EPOCHS`, default 2). The shards are 235×235 q95 4:2:0 JPEG crops of the photos in
//! `shared/data`, cached under the target directory. Each measurement runs in its own process so
//! that peak memory is its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use d2ae_loader::testing::{
    decompress_shards, find_photos, image_spec, photo_crops, test_meta, write_dataset, TestSample,
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn make_dataset(dir: &Path, n: usize) {
    if dir.join("index.json").exists() {
        return;
    }
    let data = std::env::var_os("D2AE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("../shared/data"));
    let photos = find_photos(&data.join("photos"));
    assert!(!photos.is_empty(), "no photos under {}", data.display());
    eprintln!(
        "making {n} crops of {} photos into {}",
        photos.len(),
        dir.display()
    );
    let crops = photo_crops(&photos, n, 235, 42);
    let samples: Vec<TestSample> = crops
        .into_iter()
        .enumerate()
        .map(|(i, jpeg)| TestSample::new(&test_meta(i, 100, "train"), "jpg", jpeg))
        .collect();
    write_dataset(dir, &[("train", samples)], 500, image_spec(235, "jpg"), 100).unwrap();
}

fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn main() {
    let n = env_or("D2AE_BENCH_SAMPLES", 3000);
    let epochs = env_or("D2AE_BENCH_EPOCHS", 2);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    let dir = target.join(format!("d2ae-loader-bench/crops-{n}"));
    make_dataset(&dir, n);
    let tars = decompress_shards(&dir, &dir.join("tar")).unwrap();
    let bin = env!("CARGO_BIN_EXE_d2ae-loader");
    let url = dir.to_str().unwrap();
    let epochs_s = epochs.to_string();
    let bench = |threads: &str, compare: bool| {
        let mut cmd = Command::new(bin);
        cmd.args([
            "bench",
            url,
            "--threads",
            threads,
            "--batch-size",
            "64",
            "--epochs",
            &epochs_s,
            "--json",
        ]);
        if compare {
            cmd.arg("--compare");
        }
        json_of(&mut cmd)
    };
    // Separate processes, so each peak RSS is its run's own (the raw decode holds every image).
    let compare = bench("1", true);
    let one = bench("1", false);
    let two = bench("2", false);
    let python = std::env::var_os("D2AE_VENV")
        .map(|v| PathBuf::from(v).join("bin/python"))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let script = project_root().join("scripts/bench/loader_reference.py");
    let py = |workers: &str| {
        json_of(
            Command::new(&python)
                .arg(&script)
                .args([
                    "--workers",
                    workers,
                    "--batch-size",
                    "64",
                    "--epochs",
                    &epochs_s,
                ])
                .args(&tars),
        )
    };
    let py1 = py("1");
    let py2 = py("2");

    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let raw = &compare["raw_decode"];
    let mb = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0) / 1e6;
    println!("\n{n} samples × {epochs} epochs, 235×235 JPEG q95, batch 64, NCHW, flip + shift\n");
    println!("| pipeline | images/s | CPU s | images per CPU-second | peak RSS MB | bound MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| (a) raw decode, same decoder, 1 thread | {:.0} | {:.2} | {:.0} | – | – |",
        f(raw, "images_per_sec"),
        f(raw, "cpu_s"),
        f(raw, "images_per_cpu_sec")
    );
    for (name, r) in [
        ("(b) loader, 1 decode thread", &one),
        ("(b) loader, 2 decode threads", &two),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.1} | {:.1} |",
            f(r, "images_per_sec"),
            f(&r["loader"], "cpu_s"),
            f(r, "images_per_cpu_sec"),
            mb(r, "peak_rss_bytes"),
            mb(r, "memory_bound_bytes")
        );
    }
    for (name, r) in [
        ("(c) Python webdataset+PIL+DataLoader, 1 worker", &py1),
        ("(c) Python, 2 workers", &py2),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.1} (main) | – |",
            f(r, "images_per_sec"),
            f(r, "cpu_s"),
            f(r, "images_per_cpu_sec"),
            mb(r, "peak_rss_bytes_main")
        );
    }
    let per_thread = f(&one, "images_per_sec") / f(raw, "images_per_sec");
    let vs_python = f(&one, "images_per_cpu_sec") / f(&py1, "images_per_cpu_sec");
    // Per CPU-second too: on a loaded machine the wall-clock ratio mostly measures the scheduler.
    let per_cpu = f(&one, "images_per_cpu_sec") / f(raw, "images_per_cpu_sec");
    println!(
        "\nloader (1 thread) / raw decode: {:.0}% by wall clock, {:.0}% per CPU-second",
        100.0 * per_thread,
        100.0 * per_cpu
    );
    println!("loader / Python per CPU-second (1 thread vs 1 worker): {vs_python:.2}×");
    println!(
        "machine: {} CPUs online; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
