//! Rendezvous: rank 0 listens at `MASTER_ADDR:MASTER_PORT`, every other rank connects and says who
//! it is, and once all have arrived rank 0 sends each the same payload (the NCCL unique id; empty for
//! the TCP backend). The connections stay open afterwards as the group's links.
//!
//! Failures are reported by rank: rank 0 names the ranks that never arrived (and tells the ones
//! that did, so they fail with the same message); the others say they could not reach rank 0.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::wire::{self, Kind};
use super::{DistEnv, DistError};

/// Bumped when the frames change, so mixed binaries refuse each other instead of misreading.
const PROTOCOL: u32 = 1;

/// The outcome for one rank.
pub struct Rendezvous {
    /// `(peer rank, connection)`: every other rank for rank 0, only rank 0 for the others.
    pub streams: Vec<(usize, TcpStream)>,
    /// What rank 0 shared.
    pub payload: Vec<u8>,
}

/// Meet the other ranks of `env`. Rank 0 calls `make_payload` once and shares its result.
pub fn rendezvous(
    env: &DistEnv,
    make_payload: impl FnOnce() -> Result<Vec<u8>, DistError>,
    timeout: Duration,
) -> Result<Rendezvous, DistError> {
    if env.world_size == 1 {
        return Ok(Rendezvous {
            streams: Vec::new(),
            payload: make_payload()?,
        });
    }
    if env.rank == 0 {
        serve(env, make_payload()?, timeout)
    } else {
        join(env, timeout)
    }
}

/// Where rank 0 listens: loopback when the master address is local-only, every interface
/// otherwise (a node's hostname often resolves to an address that is not the one peers use).
fn listen_addr(env: &DistEnv) -> SocketAddr {
    let loopback = (env.master_addr.as_str(), env.master_port)
        .to_socket_addrs()
        .map(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    if loopback {
        SocketAddr::from(([127, 0, 0, 1], env.master_port))
    } else {
        SocketAddr::from(([0, 0, 0, 0], env.master_port))
    }
}

fn serve(env: &DistEnv, payload: Vec<u8>, timeout: Duration) -> Result<Rendezvous, DistError> {
    let addr = env.master();
    let bind = listen_addr(env);
    let listener = TcpListener::bind(bind).map_err(|e| {
        DistError::io(
            format!(
                "rank 0 cannot listen on {bind} (is MASTER_PORT {} in use?)",
                env.master_port
            ),
            e,
        )
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| DistError::io("listener", e))?;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut joined: Vec<Option<TcpStream>> = (0..env.world_size).map(|_| None).collect();
    let mut rejected = Vec::new();
    while joined.iter().skip(1).any(Option::is_none) {
        if Instant::now() >= deadline {
            let missing: Vec<usize> = (1..env.world_size)
                .filter(|&r| joined[r].is_none())
                .collect();
            let err = DistError::RendezvousTimeout {
                addr,
                joined: env.world_size - missing.len(),
                missing,
                world_size: env.world_size,
                waited: timeout,
                rejected: if rejected.is_empty() {
                    String::new()
                } else {
                    format!("; rejected: {}", rejected.join("; "))
                },
            };
            let reason = err.to_string();
            for stream in joined.iter_mut().flatten() {
                let _ = wire::write_frame(stream, Kind::Abort, 0, reason.as_bytes());
            }
            return Err(err);
        }
        let (mut stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(DistError::io(format!("accept on {bind}"), e)),
        };
        match hello(&mut stream, env.world_size) {
            Ok(rank) if joined[rank].is_some() => {
                let why = format!("rank {rank} from {peer} arrived twice");
                let _ = wire::write_frame(&mut stream, Kind::Abort, 0, why.as_bytes());
                rejected.push(why);
            }
            Ok(rank) => joined[rank] = Some(stream),
            Err(why) => {
                let why = format!("{peer}: {why}");
                let _ = wire::write_frame(&mut stream, Kind::Abort, 0, why.as_bytes());
                tracing::warn!("rendezvous at {addr}: rejected {why}");
                rejected.push(why);
            }
        }
    }
    let mut streams = Vec::with_capacity(env.world_size - 1);
    for (rank, stream) in joined.into_iter().enumerate().skip(1) {
        let mut stream = stream.expect("every rank joined");
        wire::write_frame(&mut stream, Kind::Welcome, 0, &payload).map_err(|e| {
            DistError::PeerLost {
                rank,
                op: "rendezvous".into(),
                reason: e.to_string(),
            }
        })?;
        streams.push((rank, stream));
    }
    tracing::debug!(
        "rendezvous at {addr}: {} ranks in {:?}",
        env.world_size,
        start.elapsed()
    );
    Ok(Rendezvous { streams, payload })
}

/// Read and check a `Hello`; the peer's rank, or why it is refused.
fn hello(stream: &mut TcpStream, world_size: usize) -> Result<usize, String> {
    stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| e.to_string())?;
    let header = wire::read_header(stream)
        .map_err(|e| format!("bad hello: {e}"))?
        .ok_or("closed before saying hello")?;
    if header.kind != Kind::Hello || header.len != 12 {
        return Err(format!("expected a hello, got {:?}", header.kind));
    }
    let mut b = [0u8; 12];
    stream.read_exact(&mut b).map_err(|e| e.to_string())?;
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as usize;
    let (rank, world, protocol) = (word(0), word(4), word(8));
    if protocol != PROTOCOL as usize {
        return Err(format!(
            "rank {rank} speaks protocol {protocol}, rank 0 speaks {PROTOCOL} (different builds?)"
        ));
    }
    if world != world_size {
        return Err(format!(
            "rank {rank} has WORLD_SIZE {world}, rank 0 has {world_size}"
        ));
    }
    if rank == 0 || rank >= world_size {
        return Err(format!("rank {rank} is not in 1..{world_size}"));
    }
    Ok(rank)
}

fn join(env: &DistEnv, timeout: Duration) -> Result<Rendezvous, DistError> {
    let addr = env.master();
    let start = Instant::now();
    let deadline = start + timeout;
    let mut stream = loop {
        let err = match connect_once(&addr, deadline) {
            Ok(s) => break s,
            Err(e) => e,
        };
        if Instant::now() + Duration::from_millis(200) >= deadline {
            return Err(DistError::RendezvousConnect {
                rank: env.rank,
                addr,
                waited: timeout,
                source: err,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut hello = Vec::with_capacity(12);
    for v in [env.rank as u32, env.world_size as u32, PROTOCOL] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    let handshake = |reason: String| DistError::Handshake {
        addr: addr.clone(),
        reason: format!("rank {}: {reason}", env.rank),
    };
    wire::write_frame(&mut stream, Kind::Hello, 0, &hello)
        .map_err(|e| handshake(format!("sending hello failed: {e}")))?;
    // Rank 0 answers once every rank has arrived, or aborts at its own deadline; allow it a margin.
    let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(10);
    stream
        .set_read_timeout(Some(wait))
        .map_err(|e| DistError::io("socket options", e))?;
    let header = match wire::read_header(&mut stream) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(handshake(
                "rank 0 closed the connection during rendezvous".into(),
            ))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(handshake(format!(
                "rank 0 accepted the connection but did not finish the rendezvous within {wait:?}"
            )))
        }
        Err(e) => return Err(handshake(format!("reading rank 0's answer: {e}"))),
    };
    let mut payload = vec![0u8; header.len as usize];
    stream
        .read_exact(&mut payload)
        .map_err(|e| handshake(format!("reading rank 0's payload: {e}")))?;
    match header.kind {
        Kind::Welcome => Ok(Rendezvous {
            streams: vec![(0, stream)],
            payload,
        }),
        Kind::Abort => Err(DistError::Aborted {
            by: 0,
            reason: String::from_utf8_lossy(&payload).into_owned(),
        }),
        other => Err(handshake(format!("unexpected {other:?} from rank 0"))),
    }
}

fn connect_once(addr: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing");
    for a in addr.to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(
            &a,
            left.clamp(Duration::from_millis(10), Duration::from_secs(5)),
        ) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::EnvSource;

    fn env(rank: usize, world_size: usize, port: u16) -> DistEnv {
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

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn three_ranks_share_the_payload() {
        let port = free_port();
        let joins: Vec<_> = (1..3)
            .map(|r| {
                std::thread::spawn(move || {
                    rendezvous(&env(r, 3, port), || unreachable!(), Duration::from_secs(20))
                })
            })
            .collect();
        let root = rendezvous(
            &env(0, 3, port),
            || Ok(b"unique-id".to_vec()),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(root.payload, b"unique-id");
        assert_eq!(
            root.streams.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [1, 2]
        );
        for j in joins {
            let rv = j.join().unwrap().unwrap();
            assert_eq!(rv.payload, b"unique-id");
            assert_eq!(rv.streams.len(), 1);
        }
    }

    #[test]
    fn timeout_names_the_missing_rank_on_every_rank() {
        let port = free_port();
        let one = std::thread::spawn(move || {
            rendezvous(&env(1, 3, port), || unreachable!(), Duration::from_secs(2))
        });
        let t = Instant::now();
        let err = rendezvous(&env(0, 3, port), || Ok(vec![]), Duration::from_secs(2))
            .err()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        let msg = err.to_string();
        assert!(
            msg.contains("rank(s) [2] never arrived (2 of 3 joined)"),
            "{msg}"
        );
        // Rank 1 arrived and learns the same reason from rank 0.
        let msg = one.join().unwrap().err().unwrap().to_string();
        assert!(
            msg.contains("aborted by rank 0") && msg.contains("[2] never arrived"),
            "{msg}"
        );
    }

    #[test]
    fn unreachable_rank_zero_is_a_clear_error() {
        let port = free_port();
        let err = rendezvous(
            &env(2, 3, port),
            || unreachable!(),
            Duration::from_millis(600),
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "rank 2: could not reach rank 0 at 127.0.0.1:{port}"
            )),
            "{msg}"
        );
    }

    #[test]
    fn world_size_mismatch_is_rejected() {
        let port = free_port();
        let bad = std::thread::spawn(move || {
            rendezvous(&env(1, 4, port), || unreachable!(), Duration::from_secs(5))
        });
        let err = rendezvous(&env(0, 2, port), || Ok(vec![]), Duration::from_secs(2))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("[1] never arrived"), "{msg}");
        assert!(msg.contains("rejected: 127.0.0.1:"), "{msg}");
        let msg = bad.join().unwrap().err().unwrap().to_string();
        assert!(
            msg.contains("rank 1 has WORLD_SIZE 4, rank 0 has 2"),
            "{msg}"
        );
    }
}
