//! The TCP backend across real processes: this test binary re-executes itself as the ranks (the
//! `worker_*` tests, ignored in normal runs), through the `--nproc-per-node` launcher or directly.

mod dist_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use d2ae_train::dist::launch::{run_local, Spec};
use d2ae_train::dist::tcp::TcpCollective;
use d2ae_train::dist::{Collective, DistEnv, DistError};
use dist_support::{free_port, quick};
use tch::Tensor;

fn worker_args(name: &str) -> Vec<std::ffi::OsString> {
    [
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

fn ramp(rank: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (i % 1000) as f32 * 0.5 + rank as f32 * 0.25)
        .collect()
}

#[test]
#[ignore = "a rank process for collectives_across_3_processes_through_the_launcher"]
fn worker_collectives() {
    let env = DistEnv::from_env().unwrap();
    let mut comm = TcpCollective::connect(&env, quick()).unwrap();
    let (rank, world) = (comm.rank(), comm.world_size());
    assert_eq!(world, 3);
    for n in [3usize, 100_000] {
        let mut t = [Tensor::from_slice(&ramp(rank, n))];
        comm.all_reduce_mean(&mut t).unwrap();
        // (0.25·0 + 0.25·1 + 0.25·2) / 3 = 0.25 exactly, on top of the common ramp.
        let want: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5 + 0.25).collect();
        assert_eq!(
            Vec::<f32>::try_from(&t[0]).unwrap(),
            want,
            "rank {rank} n {n}"
        );
    }
    let root = world - 1;
    let mut b = [Tensor::from_slice(&[rank as i64; 1000])];
    comm.broadcast_(&mut b, root).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(&b[0]).unwrap(),
        vec![root as i64; 1000]
    );
    comm.barrier().unwrap();
    println!("rank {rank} of {world}: all collectives correct");
}

#[test]
fn collectives_across_3_processes_through_the_launcher() {
    let exe = std::env::current_exe().unwrap();
    run_local(&Spec::new(exe, worker_args("worker_collectives"), 3)).unwrap();
}

/// Rank 1 kills itself (SIGKILL: no cleanup, no goodbye) inside the second step; the others record
/// how long the failing all-reduce took and what it said.
#[test]
#[ignore = "a rank process for the rank-death tests"]
fn worker_dies_mid_step() {
    let env = DistEnv::from_env().unwrap();
    let out = PathBuf::from(std::env::var("D2AE_TEST_OUT").unwrap());
    let mut comm = TcpCollective::connect(&env, quick()).unwrap();
    let mut t = [Tensor::from_slice(&ramp(env.rank, 10_000))];
    comm.all_reduce_mean(&mut t).unwrap();
    if env.rank == 1 {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    let start = Instant::now();
    let err: DistError = comm.all_reduce_mean(&mut t).unwrap_err();
    let line = format!("{}\t{err}", start.elapsed().as_millis());
    std::fs::write(out.join(format!("rank{}.txt", env.rank)), line).unwrap();
}

#[test]
fn a_killed_process_makes_the_others_fail_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let port = free_port();
    let mut children: Vec<_> = (0..3)
        .map(|rank| {
            Command::new(&exe)
                .args(worker_args("worker_dies_mid_step"))
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "3")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("D2AE_TEST_OUT", dir.path())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut statuses = [None; 3];
    while statuses.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "ranks still running after 60 s: a hang"
        );
        for (s, c) in statuses.iter_mut().zip(children.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(statuses[1].unwrap().signal(), Some(libc::SIGKILL));
    for rank in [0, 2] {
        assert!(
            statuses[rank].unwrap().success(),
            "rank {rank}: {:?}",
            statuses[rank]
        );
        let text = std::fs::read_to_string(dir.path().join(format!("rank{rank}.txt"))).unwrap();
        let (ms, msg) = text.split_once('\t').unwrap();
        let ms: u64 = ms.parse().unwrap();
        println!("rank {rank} failed after {ms} ms: {msg}");
        assert!(ms < 30_000, "rank {rank} needed {ms} ms to notice");
        if rank == 0 {
            assert!(msg.starts_with("rank 1 lost during all_reduce #2"), "{msg}");
        } else {
            assert!(
                msg.starts_with("job aborted by rank 0: rank 0: rank 1 lost during all_reduce #2"),
                "{msg}"
            );
        }
    }
}

#[test]
fn the_launcher_names_the_dead_rank_and_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut spec = Spec::new(exe, worker_args("worker_dies_mid_step"), 3);
    spec.env
        .push(("D2AE_TEST_OUT".into(), dir.path().display().to_string()));
    let start = Instant::now();
    let err = run_local(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rank 1 exited with signal 9; stopped the other ranks"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}
