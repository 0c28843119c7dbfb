//! A TCP proxy on 127.0.0.1 that the tests can cut, to give a real client a dropped connection to
//! a real server (moto) without touching the server other tests share.
//!
//! Each accepted connection is forwarded to the upstream address by two copying threads. The test
//! can drop every open connection at once (the client sees a reset mid-request, as when a network
//! path breaks) and can make the proxy refuse service (new connections are closed at once, as when
//! a bucket's host is unreachable) until it is restored.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy's threads share with the test.
#[derive(Default)]
struct State {
    /// Close new connections at once instead of forwarding them.
    refusing: AtomicBool,
    /// Bytes forwarded from clients to the server so far.
    upstream_bytes: AtomicU64,
    /// Requests whose first line contains all of these are forwarded, then their connection is
    /// cut before the answer; the count of such requests still to treat so.
    lose_answer_to: Mutex<(Vec<String>, usize)>,
    /// Answers lost so far.
    answers_lost: AtomicU64,
    /// Every open connection's two sockets, so they can be cut.
    open: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
}

/// A cuttable proxy to `upstream`; stops accepting when dropped.
pub struct FlakyProxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
    addr: SocketAddr,
    state: Arc<State>,
}

impl FlakyProxy {
    /// Listen on a free port of 127.0.0.1 and forward to `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> FlakyProxy {
        let target: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream} is not HOST:PORT: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || accept_loop(listener, target, shared));
        FlakyProxy {
            endpoint: format!("http://{addr}"),
            addr,
            state,
        }
    }

    /// Bytes forwarded from clients to the server so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.state.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Reset every open connection (requests in flight fail); new ones are still forwarded.
    pub fn drop_connections(&self) {
        for s in self.state.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Drop every open connection and close every new one until [`FlakyProxy::restore`].
    pub fn refuse(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Forward the next `times` requests whose request line contains every one of `needles`
    /// (`POST` and `uploadId=`: completing a multipart upload), let the server act on them, and
    /// cut their connection before the answer reaches the client, which cannot tell whether the
    /// request took effect.
    pub fn lose_answers_to(&self, needles: &[&str], times: usize) {
        let needles = needles.iter().map(|n| n.to_string()).collect();
        *self.state.lose_answer_to.lock().unwrap() = (needles, times);
    }

    /// Answers lost so far by [`FlakyProxy::lose_answers_to`].
    pub fn answers_lost(&self) -> u64 {
        self.state.answers_lost.load(Ordering::SeqCst)
    }

    /// Forward new connections again.
    pub fn restore(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.drop_connections();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}

impl State {
    /// Whether `chunk` starts a request whose answer is to be lost (counting it if so).
    fn take_lost_answer(&self, chunk: &[u8]) -> bool {
        let mut armed = self.lose_answer_to.lock().unwrap();
        let (needles, times) = &mut *armed;
        if *times == 0 {
            return false;
        }
        let line = chunk.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let hit = needles.iter().all(|n| line.contains(n.as_str()));
        if hit {
            *times -= 1;
        }
        hit
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    for client in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if state.refusing.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut open = state.open.lock().unwrap();
            open.retain(|s| s.peer_addr().is_ok());
            open.extend([c2, s2]);
        }
        let (c_read, s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let muted = Arc::new(AtomicBool::new(false));
        let (shared, muted_up) = (Arc::clone(&state), Arc::clone(&muted));
        thread::spawn(move || forward_requests(c_read, s_write, &shared, &muted_up));
        thread::spawn(move || forward_answers(server, client, &muted));
    }
}

/// Client to server: count the bytes; when a request whose answer is to be lost starts, mute the
/// answers and cut the connection once the server has had time to act on the request.
fn forward_requests(
    mut client: TcpStream,
    mut server: TcpStream,
    state: &Arc<State>,
    muted: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n @ 1..) = client.read(&mut buf) {
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
        state.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst);
        if state.take_lost_answer(&buf[..n]) {
            muted.store(true, Ordering::SeqCst);
            let (c, s, state) = (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Arc::clone(state),
            );
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(300));
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
                state.answers_lost.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// Server to client, dropping everything once `muted`.
fn forward_answers(mut server: TcpStream, mut client: TcpStream, muted: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n @ 1..) = server.read(&mut buf) {
        if !muted.load(Ordering::SeqCst) && client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
