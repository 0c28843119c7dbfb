//! The TCP backend with 2 and 3 ranks as threads of this process: exact means, root values,
//! several sizes and buckets, and errors (not hangs) when a rank dies, stalls or disagrees.

mod dist_support;

use std::time::{Duration, Instant};

use d2ae_train::dist::tcp::TcpCollective;
use d2ae_train::dist::{Collective, DistError, GradSync};
use dist_support::{env, free_port, on_ranks, quick};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Rank `rank`'s contribution: distinct per rank and element, not exactly representable sums.
fn values(rank: usize, n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + salt * 13) as f32 * 0.001 + rank as f32 * 1.1).sin() * (rank + 1) as f32)
        .collect()
}

/// The mean the star computes: f64 sum in rank order, one rounding.
fn expected_mean(world: usize, n: usize, salt: usize) -> Vec<f32> {
    let mut acc = vec![0f64; n];
    for r in 0..world {
        for (a, v) in acc.iter_mut().zip(values(r, n, salt)) {
            *a += v as f64;
        }
    }
    acc.iter().map(|s| (s / world as f64) as f32).collect()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn all_reduce_mean_is_exact_for_2_and_3_ranks() {
    let sizes = [1usize, 7, 1000, 300_000];
    for world in [2, 3] {
        let got = on_ranks(world, quick(), move |rank, comm| {
            assert_eq!((comm.rank(), comm.world_size()), (rank, world));
            // Several tensors in one call (one of them 2-D), then a second call.
            let mut ts: Vec<Tensor> = sizes
                .iter()
                .enumerate()
                .map(|(salt, &n)| Tensor::from_slice(&values(rank, n, salt)))
                .collect();
            ts[2] = ts[2].view([10, 100]);
            comm.all_reduce_mean(&mut ts).unwrap();
            let mut again = [Tensor::from_slice(&values(rank, 5, 9))];
            comm.all_reduce_mean(&mut again).unwrap();
            assert_eq!(ts[2].size(), [10, 100]);
            let mut out: Vec<Vec<f32>> = ts.iter().map(to_vec).collect();
            out.push(to_vec(&again[0]));
            out
        });
        for (rank, tensors) in got.iter().enumerate() {
            for (salt, &n) in sizes.iter().enumerate() {
                assert_eq!(
                    tensors[salt],
                    expected_mean(world, n, salt),
                    "world {world} rank {rank} size {n}"
                );
            }
            assert_eq!(tensors[4], expected_mean(world, 5, 9));
            // Bit-identical on every rank.
            assert_eq!(tensors, &got[0]);
        }
    }
}

#[test]
fn broadcast_gives_the_roots_values_for_every_root_and_dtype() {
    for world in [2, 3] {
        for root in 0..world {
            let got = on_ranks(world, quick(), move |rank, comm| {
                let mut ts = vec![
                    Tensor::from_slice(&values(rank, 1000, 1)).view([20, 50]),
                    Tensor::from_slice(&[rank as i64 * 1_000_000_007, -5, 7]),
                    Tensor::from_slice(&[rank as u8; 13]),
                    Tensor::from_slice(&values(rank, 200_000, 2)),
                ];
                comm.broadcast_(&mut ts, root).unwrap();
                comm.barrier().unwrap();
                (
                    to_vec(&ts[0]),
                    Vec::<i64>::try_from(&ts[1]).unwrap(),
                    Vec::<u8>::try_from(&ts[2]).unwrap(),
                    to_vec(&ts[3]),
                )
            });
            for (rank, (a, b, c, d)) in got.into_iter().enumerate() {
                let what = format!("world {world} root {root} rank {rank}");
                assert_eq!(a, values(root, 1000, 1), "{what}");
                assert_eq!(b, [root as i64 * 1_000_000_007, -5, 7], "{what}");
                assert_eq!(c, [root as u8; 13], "{what}");
                assert_eq!(d, values(root, 200_000, 2), "{what}");
            }
        }
    }
}

#[test]
fn grad_sync_averages_over_several_buckets() {
    let got = on_ranks(3, quick(), |rank, comm| {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        // 4 KB buckets: a (2 KB) + b (4 KB) fill one, c (40 KB) its own, d the last.
        let shapes: [(&str, &[i64]); 4] = [
            ("a", &[512]),
            ("b", &[32, 32]),
            ("c", &[100, 100]),
            ("d", &[3]),
        ];
        let params: Vec<Tensor> = shapes
            .iter()
            .map(|(n, s)| root.var(n, s, tch::nn::Init::Const(0.5)))
            .collect();
        // loss = Σ_p Σ_i p_i · w_i(rank): the gradient of p is w(rank).
        let weights: Vec<Tensor> = params
            .iter()
            .enumerate()
            .map(|(salt, p)| Tensor::from_slice(&values(rank, p.numel(), salt)).view_as(p))
            .collect();
        let loss = params
            .iter()
            .zip(&weights)
            .map(|(p, w)| (p * w).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
        let sync = GradSync::new(&vs, 4096).unwrap();
        let stats = sync.sync(comm).unwrap();
        let grads: Vec<Vec<f32>> = params.iter().map(|p| to_vec(&p.grad())).collect();
        (
            stats,
            sync.names().map(str::to_string).collect::<Vec<_>>(),
            grads,
        )
    });
    for (rank, (stats, names, grads)) in got.into_iter().enumerate() {
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(stats.buckets, 3, "rank {rank}");
        assert_eq!(stats.bytes, (512 + 1024 + 10_000 + 3) * 4);
        assert_eq!(stats.missing_grads, 0);
        for (salt, (g, n)) in grads.iter().zip([512, 1024, 10_000, 3]).enumerate() {
            assert_eq!(g, &expected_mean(3, n, salt), "rank {rank} param {salt}");
        }
    }
}

#[test]
fn a_rank_that_drops_its_sockets_mid_run_fails_the_others_quickly() {
    let got = on_ranks(3, quick(), |rank, comm| {
        let mut t = [Tensor::from_slice(&[rank as f32])];
        comm.all_reduce_mean(&mut t).unwrap();
        if rank == 2 {
            // Simulate a crash: sockets closed without the goodbye frame.
            comm.sever();
            return Ok(Duration::ZERO);
        }
        let start = Instant::now();
        let err = comm.all_reduce_mean(&mut t).unwrap_err();
        // Later calls fail at once with the same cause.
        let again = comm.barrier().unwrap_err();
        assert!(matches!(again, DistError::Poisoned(_)), "{again}");
        Err((start.elapsed(), err.to_string()))
    });
    let (waited0, msg0) = got[0].clone().unwrap_err();
    let (waited1, msg1) = got[1].clone().unwrap_err();
    assert!(
        msg0.starts_with("rank 2 lost during all_reduce #2"),
        "rank 0: {msg0}"
    );
    assert!(
        msg1.starts_with("job aborted by rank 0: rank 0: rank 2 lost during all_reduce #2"),
        "rank 1: {msg1}"
    );
    assert!(waited0 < Duration::from_secs(5) && waited1 < Duration::from_secs(5));
}

#[test]
fn a_rank_that_leaves_early_is_reported_by_name() {
    let got = on_ranks(2, quick(), |rank, comm| {
        if rank == 1 {
            return None; // drops the group: a clean goodbye, but rank 0 still needs it
        }
        std::thread::sleep(Duration::from_millis(300));
        Some(comm.barrier().unwrap_err().to_string())
    });
    let msg = got[0].clone().unwrap();
    assert!(
        msg.starts_with("rank 1 lost during barrier #1: it left the group"),
        "{msg}"
    );
}

#[test]
fn a_rank_that_never_enters_the_collective_times_out() {
    let mut timeouts = quick();
    timeouts.collective = Duration::from_secs(2);
    let got = on_ranks(2, timeouts, |rank, comm| {
        if rank == 1 {
            // Alive (heartbeats flow) but stuck: only the collective timeout can tell.
            std::thread::sleep(Duration::from_secs(4));
            return None;
        }
        let start = Instant::now();
        let err = comm
            .all_reduce_mean(&mut [Tensor::from_slice(&[1f32])])
            .unwrap_err();
        Some((start.elapsed(), err.to_string()))
    });
    let (waited, msg) = got[0].clone().unwrap();
    assert_eq!(
        msg,
        "all_reduce #1 (tensor 0, 1 floats) did not finish within 2s"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn different_collectives_or_sizes_are_errors_on_both_sides() {
    let got = on_ranks(2, quick(), |rank, comm| {
        let r = if rank == 0 {
            comm.all_reduce_mean(&mut [Tensor::from_slice(&[1f32, 2.0])])
        } else {
            comm.barrier()
        };
        r.unwrap_err().to_string()
    });
    assert!(
        got[0].contains("ranks called different collectives"),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains("aborted by rank 0") || got[1].contains("different collectives"),
        "{}",
        got[1]
    );

    let got = on_ranks(2, quick(), |rank, comm| {
        let n = if rank == 0 { 4 } else { 5 };
        comm.all_reduce_mean(&mut [Tensor::zeros([n], (Kind::Float, Device::Cpu))])
            .unwrap_err()
            .to_string()
    });
    assert!(
        got[0].contains("it has 20 bytes in chunk 0, this rank has 16 (tensor sizes differ)"),
        "{}",
        got[0]
    );
    assert!(got[1].contains("aborted by rank 0"), "{}", got[1]);
}

#[test]
fn all_reduce_rejects_non_f32_tensors() {
    let got = on_ranks(1, quick(), |_, comm| {
        comm.all_reduce_mean(&mut [Tensor::from_slice(&[1i64])])
            .unwrap_err()
            .to_string()
    });
    assert_eq!(
        got[0],
        "all_reduce_mean: tensor 0: all_reduce_mean needs f32 tensors, got Int64"
    );
}

#[test]
fn rendezvous_timeout_names_the_missing_rank() {
    let port = free_port();
    let mut timeouts = quick();
    timeouts.rendezvous = Duration::from_secs(1);
    let start = Instant::now();
    let err = TcpCollective::connect(&env(0, 2, port), timeouts)
        .err()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(
        err.to_string(),
        format!(
            "rendezvous at 127.0.0.1:{port} timed out after 1s: rank(s) [1] never arrived (1 of 2 joined)"
        )
    );
}
