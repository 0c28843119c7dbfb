//! Helpers shared by the `dist_*` tests: run a closure on every rank of a TCP group, one thread per
//! rank, on a fresh loopback port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::time::Duration;

use d2ae_train::dist::tcp::TcpCollective;
use d2ae_train::dist::{DistEnv, DistError, EnvSource, Timeouts};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn env(rank: usize, world_size: usize, port: u16) -> DistEnv {
    DistEnv {
        rank,
        world_size,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        source: EnvSource::Torchrun,
        nccl_lib: None,
    }
}

/// Short timeouts so failure tests finish quickly.
pub fn quick() -> Timeouts {
    Timeouts {
        rendezvous: Duration::from_secs(20),
        peer_silence: Duration::from_secs(5),
        collective: Duration::from_secs(20),
        heartbeat: Duration::from_millis(200),
    }
}

/// Connect `world` ranks (threads) and run `f(rank, comm)` on each; results in rank order.
pub fn on_ranks<R: Send + 'static>(
    world: usize,
    timeouts: Timeouts,
    f: impl Fn(usize, &mut TcpCollective) -> R + Send + Sync + Clone + 'static,
) -> Vec<R> {
    let port = free_port();
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || -> Result<R, DistError> {
                let mut comm = TcpCollective::connect(&env(rank, world, port), timeouts)?;
                Ok(f(rank, &mut comm))
            })
        })
        .collect();
    threads
        .into_iter()
        .enumerate()
        .map(|(rank, t)| {
            t.join()
                .unwrap_or_else(|_| panic!("rank {rank} panicked"))
                .unwrap_or_else(|e| panic!("rank {rank} failed to connect: {e}"))
        })
        .collect()
}
