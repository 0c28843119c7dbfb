//! The live TCP connections of one rank (to every peer for rank 0, to rank 0 otherwise), with the
//! threads that make a dead peer visible.
//!
//! One reader thread per connection reads frames as they come and forwards them to a single event
//! channel, so the collective can wait on all peers at once and react to whichever fails first. A
//! heartbeat thread writes an empty frame on every link each interval; the readers note when each
//! peer was last heard from. Why threads rather than blocking reads with timeouts: a rank that waits
//! in an all-reduce while another legitimately computes for minutes must tell "slow" from "dead",
//! which needs a liveness signal independent of the collective's own messages.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wire::{self, Header, Kind};
use super::{DistError, Timeouts};

/// What a reader thread reports.
pub(crate) enum Event {
    Frame {
        from: usize,
        header: Header,
        payload: Vec<u8>,
    },
    /// The link ended: `clean` after a `Bye`, otherwise EOF or an I/O error.
    Closed {
        from: usize,
        clean: bool,
        reason: String,
    },
}

struct Peer {
    rank: usize,
    writer: Arc<Mutex<TcpStream>>,
    /// Milliseconds since `Links::start` when this peer was last heard from.
    last_seen: Arc<AtomicU64>,
    open: bool,
}

pub(crate) struct Links {
    peers: Vec<Peer>,
    events: Receiver<Event>,
    timeouts: Timeouts,
    start: Instant,
    stop_heartbeat: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Links {
    /// Take over the rendezvous connections `(peer rank, stream)` and start the reader and
    /// heartbeat threads.
    pub fn new(streams: Vec<(usize, TcpStream)>, timeouts: Timeouts) -> Result<Links, DistError> {
        let start = Instant::now();
        let (tx, events) = mpsc::channel();
        let mut peers = Vec::with_capacity(streams.len());
        let mut threads = Vec::new();
        for (rank, stream) in streams {
            let ctx = |what: &str| format!("link to rank {rank}: {what}");
            stream
                .set_read_timeout(None)
                .and_then(|_| stream.set_write_timeout(Some(timeouts.peer_silence)))
                .and_then(|_| stream.set_nodelay(true))
                .map_err(|e| DistError::io(ctx("socket options"), e))?;
            let reader = stream
                .try_clone()
                .map_err(|e| DistError::io(ctx("clone socket"), e))?;
            let last_seen = Arc::new(AtomicU64::new(0));
            let seen = last_seen.clone();
            let tx = tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("d2ae-dist-read-{rank}"))
                    .spawn(move || read_loop(rank, reader, tx, seen, start))
                    .map_err(|e| DistError::io(ctx("spawn reader thread"), e))?,
            );
            peers.push(Peer {
                rank,
                writer: Arc::new(Mutex::new(stream)),
                last_seen,
                open: true,
            });
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let writers: Vec<_> = peers.iter().map(|p| p.writer.clone()).collect();
        let interval = timeouts.heartbeat;
        threads.push(
            std::thread::Builder::new()
                .name("d2ae-dist-heartbeat".into())
                .spawn(move || heartbeat_loop(writers, stop_rx, interval))
                .map_err(|e| DistError::io("spawn heartbeat thread", e))?,
        );
        Ok(Links {
            peers,
            events,
            timeouts,
            start,
            stop_heartbeat: Some(stop_tx),
            threads,
        })
    }

    /// Send one frame to `to`; a failure names the peer and the operation.
    pub fn send(
        &self,
        to: usize,
        kind: Kind,
        seq: u64,
        payload: &[u8],
        op: &str,
    ) -> Result<(), DistError> {
        let peer = self.peer(to)?;
        let mut stream = peer.writer.lock().unwrap_or_else(|p| p.into_inner());
        wire::write_frame(&mut *stream, kind, seq, payload).map_err(|e| DistError::PeerLost {
            rank: to,
            op: op.into(),
            reason: format!("sending {} bytes failed: {e}", payload.len()),
        })
    }

    fn peer(&self, rank: usize) -> Result<&Peer, DistError> {
        self.peers
            .iter()
            .find(|p| p.rank == rank)
            .ok_or_else(|| DistError::PeerLost {
                rank,
                op: "send".into(),
                reason: "no link to this rank".into(),
            })
    }

    /// The next data frame from any peer, within `deadline`. Heartbeats are consumed by the
    /// readers; an `Abort` from a peer, a closed link, a silent peer or the deadline are errors.
    pub fn recv(
        &mut self,
        op: &str,
        deadline: Instant,
    ) -> Result<(usize, Header, Vec<u8>), DistError> {
        let tick = Duration::from_millis(100);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(DistError::Timeout {
                    op: op.into(),
                    waited: self.timeouts.collective,
                });
            }
            match self.events.recv_timeout(tick.min(deadline - now)) {
                Ok(event) => {
                    if let Some(frame) = self.on_event(event, op)? {
                        return Ok(frame);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.check_silence(op)?,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(DistError::PeerLost {
                        rank: self.peers.first().map_or(0, |p| p.rank),
                        op: op.into(),
                        reason: "all links closed".into(),
                    })
                }
            }
        }
    }

    /// Without blocking: an error if any peer failed, aborted or fell silent, for backends (NCCL)
    /// whose data does not flow through these links. Any data frame here is a protocol mismatch.
    pub fn poll_failure(&mut self, op: &str) -> Result<(), DistError> {
        while let Ok(event) = self.events.try_recv() {
            if let Some((from, header, _)) = self.on_event(event, op)? {
                return Err(DistError::Mismatch {
                    rank: from,
                    op: op.into(),
                    reason: format!(
                        "sent a {:?} frame for collective #{} on the control link",
                        header.kind, header.seq
                    ),
                });
            }
        }
        self.check_silence(op)
    }

    fn on_event(
        &mut self,
        event: Event,
        op: &str,
    ) -> Result<Option<(usize, Header, Vec<u8>)>, DistError> {
        match event {
            Event::Frame {
                from,
                header,
                payload,
            } if header.kind == Kind::Abort => Err(DistError::Aborted {
                by: from,
                reason: String::from_utf8_lossy(&payload).into_owned(),
            }),
            Event::Frame {
                from,
                header,
                payload,
            } => Ok(Some((from, header, payload))),
            Event::Closed {
                from,
                clean,
                reason,
            } => {
                if let Some(p) = self.peers.iter_mut().find(|p| p.rank == from) {
                    p.open = false;
                }
                Err(DistError::PeerLost {
                    rank: from,
                    op: op.into(),
                    reason: if clean {
                        "it left the group (clean shutdown) while others still need it".into()
                    } else {
                        reason
                    },
                })
            }
        }
    }

    fn check_silence(&self, op: &str) -> Result<(), DistError> {
        let now = self.start.elapsed();
        for p in self.peers.iter().filter(|p| p.open) {
            let seen = Duration::from_millis(p.last_seen.load(Ordering::Relaxed));
            let silent = now.saturating_sub(seen);
            if silent > self.timeouts.peer_silence {
                return Err(DistError::PeerSilent {
                    rank: p.rank,
                    op: op.into(),
                    silent,
                });
            }
        }
        Ok(())
    }

    /// Close every connection without a goodbye, as a crashed process would (for tests).
    pub fn sever(&mut self) {
        for p in &mut self.peers {
            let stream = p.writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = stream.shutdown(Shutdown::Both);
            p.open = false;
        }
    }

    /// Best effort: tell every peer why this rank gives up, so they fail with the same reason.
    pub fn abort_all(&self, reason: &str) {
        for p in self.peers.iter().filter(|p| p.open) {
            if let Ok(mut stream) = p.writer.try_lock() {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = wire::write_frame(&mut *stream, Kind::Abort, 0, reason.as_bytes());
            }
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.stop_heartbeat.take();
        for p in &self.peers {
            let mut stream = p.writer.lock().unwrap_or_else(|e| e.into_inner());
            if p.open {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = wire::write_frame(&mut *stream, Kind::Bye, 0, &[]);
            }
            let _ = stream.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn read_loop(
    from: usize,
    mut stream: TcpStream,
    tx: Sender<Event>,
    last_seen: Arc<AtomicU64>,
    start: Instant,
) {
    let seen = || last_seen.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let closed = |clean: bool, reason: String| Event::Closed {
        from,
        clean,
        reason,
    };
    loop {
        let header = match wire::read_header(&mut stream) {
            Ok(Some(h)) => h,
            Ok(None) => {
                let _ = tx.send(closed(
                    false,
                    "connection closed (EOF): the process exited".into(),
                ));
                return;
            }
            Err(e) => {
                let _ = tx.send(closed(false, describe(&e)));
                return;
            }
        };
        seen();
        match header.kind {
            Kind::Heartbeat => continue,
            Kind::Bye => {
                let _ = tx.send(closed(true, "bye".into()));
                return;
            }
            _ => {}
        }
        // Read in chunks so a large bucket on a slow network still counts as a sign of life.
        let mut payload = vec![0u8; header.len as usize];
        let mut got = 0;
        while got < payload.len() {
            let end = (got + (1 << 20)).min(payload.len());
            match stream.read(&mut payload[got..end]) {
                Ok(0) => {
                    let _ = tx.send(closed(
                        false,
                        format!("connection closed after {got} of {} bytes", payload.len()),
                    ));
                    return;
                }
                Ok(n) => {
                    got += n;
                    seen();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(closed(false, describe(&e)));
                    return;
                }
            }
        }
        if tx
            .send(Event::Frame {
                from,
                header,
                payload,
            })
            .is_err()
        {
            return;
        }
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            format!("connection reset ({e}): the process died")
        }
        io::ErrorKind::UnexpectedEof => "connection closed mid-frame: the process died".into(),
        _ => e.to_string(),
    }
}

fn heartbeat_loop(writers: Vec<Arc<Mutex<TcpStream>>>, stop: Receiver<()>, interval: Duration) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        for w in &writers {
            // A busy writer is sending data, which is itself a sign of life.
            if let Ok(mut stream) = w.try_lock() {
                let _ = wire::write_frame(&mut *stream, Kind::Heartbeat, 0, &[]);
            }
        }
    }
}
