//! Benchmark (ignored; run by hand, results in docs/BENCHMARKS.md): all-reduce-mean time of the
//! TCP backend between 2 real processes, against PyTorch's gloo backend (`torch.distributed`) doing
//! the same all-reduce + divide on the same machine in the same run.
//!
//! `cargo test -p d2ae-train --test dist_bench -- --ignored --nocapture bench_tcp_vs_gloo`

mod dist_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use d2ae_train::dist::launch::{run_local, Spec};
use d2ae_train::dist::tcp::TcpCollective;
use d2ae_train::dist::{Collective, DistEnv, Timeouts};
use tch::{Device, Kind, Tensor};

const SIZES: [i64; 3] = [256 * 1024, 1 << 20, 25 * 1024 * 1024 / 4];
const ITERS: usize = 10;

#[test]
#[ignore = "a rank process of bench_tcp_vs_gloo"]
fn worker_bench() {
    let env = DistEnv::from_env().unwrap();
    let out = PathBuf::from(std::env::var("D2AE_TEST_OUT").unwrap());
    let mut comm = TcpCollective::connect(&env, Timeouts::default()).unwrap();
    let mut rows = Vec::new();
    for n in SIZES {
        let mut t = [Tensor::ones([n], (Kind::Float, Device::Cpu))];
        for _ in 0..2 {
            comm.all_reduce_mean(&mut t).unwrap();
        }
        comm.barrier().unwrap();
        let start = Instant::now();
        for _ in 0..ITERS {
            comm.all_reduce_mean(&mut t).unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / ITERS as f64;
        rows.push(serde_json::json!({"floats": n, "ms": ms}));
    }
    if env.rank == 0 {
        std::fs::write(out.join("tcp.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    }
}

const GLOO: &str = r#"
import json, sys, time, torch, torch.distributed as dist, torch.multiprocessing as mp

def run(rank, world, port, sizes, iters, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    rows = []
    for n in sizes:
        t = torch.ones(n)
        for _ in range(2):
            dist.all_reduce(t); t.div_(world)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t); t.div_(world)
        rows.append({"floats": n, "ms": (time.perf_counter() - start) * 1e3 / iters})
    if rank == 0:
        open(out, "w").write(json.dumps(rows))
    dist.destroy_process_group()

if __name__ == "__main__":
    port, out = int(sys.argv[1]), sys.argv[2]
    sizes, iters = json.loads(sys.argv[3]), int(sys.argv[4])
    mp.spawn(run, args=(2, port, sizes, iters, out), nprocs=2)
"#;

#[test]
#[ignore = "benchmark; see docs/BENCHMARKS.md"]
fn bench_tcp_vs_gloo() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let args = ["--exact", "worker_bench", "--ignored", "--nocapture"]
        .iter()
        .map(Into::into)
        .collect();
    let mut spec = Spec::new(exe, args, 2);
    spec.env
        .push(("D2AE_TEST_OUT".into(), dir.path().display().to_string()));
    run_local(&spec).unwrap();

    let venv = std::env::var("D2AE_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/d2ae/venv", std::env::var("HOME").unwrap()));
    let script = dir.path().join("gloo.py");
    std::fs::write(&script, GLOO).unwrap();
    let gloo_out = dir.path().join("gloo.json");
    let status = Command::new(format!("{venv}/bin/python"))
        .arg(&script)
        .arg(dist_support::free_port().to_string())
        .arg(&gloo_out)
        .arg(serde_json::to_string(&SIZES).unwrap())
        .arg(ITERS.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "gloo reference failed: {status}");

    let tcp: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tcp.json")).unwrap())
            .unwrap();
    let gloo: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&gloo_out).unwrap()).unwrap();
    println!("| floats | MB | d2ae tcp ms | gloo ms | tcp/gloo |");
    println!("|---:|---:|---:|---:|---:|");
    for (t, g) in tcp.iter().zip(&gloo) {
        let n = t["floats"].as_i64().unwrap();
        let (tm, gm) = (t["ms"].as_f64().unwrap(), g["ms"].as_f64().unwrap());
        println!(
            "| {n} | {:.1} | {tm:.2} | {gm:.2} | {:.2} |",
            n as f64 * 4.0 / 1e6,
            tm / gm
        );
    }
}
