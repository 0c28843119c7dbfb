//! Harness for d2ae's end-to-end tests (`tests/tests/*.rs`): they run the real binaries on the
//! photos in `../shared/data/`, a local S3 server and the real Python packages.
//!
//! - [`bin`] finds a built binary (`d2ae-ingest`, `d2ae-loader`, `d2ae-train`, `d2ae-eval`);
//!   `scripts/test` builds them before the tests run.
//! - [`shared_data`] is the shared test material; a test fails (never skips) when it is missing.
//! - [`S3Server`] is a real S3-compatible server (moto) on 127.0.0.1, with a fresh bucket per test.
//! - [`python`] is the venv's interpreter, which has torch, numpy, webdataset, safetensors, PIL,
//!   OpenCV and scikit-learn (`scripts/requirements.txt`).
//! - [`FlakyProxy`] sits between a client and that server and can drop its connections.

mod proxy;

pub use proxy::FlakyProxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The project root (the workspace directory).
///
/// Taken from the `CARGO_MANIFEST_DIR` that `cargo test` sets for the running test, not the one
/// compiled in: checkouts at other paths share one target directory (`~/.cache/d2ae/target`),
/// and a harness compiled in another checkout would otherwise point the tests at that one.
pub fn project_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    let start =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| compiled.to_owned(), PathBuf::from);
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file() && d.join("scripts").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| compiled.parent().expect("tests/ has a parent").to_owned())
}

/// `../shared/data/` beside the project (panics with a clear message when it is missing).
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("D2AE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("../shared/data"));
    assert!(
        dir.join("README.md").exists(),
        "shared test data not found at {} (set D2AE_SHARED_DATA)",
        dir.display()
    );
    dir
}

/// The number at `path` (object keys) in a JSON document such as a summary.json; panics naming
/// the path when there is none.
pub fn json_number(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?}: {cur}"))
}

/// Path of a workspace binary built in the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} not built; run `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// A `Command` for a workspace binary.
pub fn cmd(name: &str) -> Command {
    Command::new(bin(name))
}

/// Run a command, panic with its output unless it succeeds, and return the output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a command that must fail (panic with its output if it succeeds); return its stderr.
pub fn run_fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but must fail\n--- stdout\n{}\n--- stderr\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// The venv's Python interpreter (`$D2AE_VENV` or `~/.cache/d2ae/venv`).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("D2AE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/d2ae/venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/bootstrap",
        py.display()
    );
    py
}

/// Run a Python snippet with the venv's interpreter; panics with its output on failure.
pub fn run_python(code: &str, args: &[&str]) -> Output {
    run_ok(Command::new(python()).arg("-c").arg(code).args(args))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A real S3-compatible server on 127.0.0.1: the one `scripts/test` started (`D2AE_S3_ENDPOINT`),
/// or a moto server of this test's own, stopped on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Option<Child>,
}

static BUCKETS: AtomicU32 = AtomicU32::new(0);

impl S3Server {
    /// Use the suite's server or start one; panics (never skips) if none can be had.
    pub fn start() -> S3Server {
        // object_store reads these; moto accepts any credentials.
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ] {
            if std::env::var_os(k).is_none() {
                // Tests set the same values everywhere, so a race between threads is harmless.
                std::env::set_var(k, v);
            }
        }
        if let Ok(endpoint) = std::env::var("D2AE_S3_ENDPOINT") {
            return S3Server {
                endpoint,
                child: None,
            };
        }
        let moto = python().parent().expect("venv bin").join("moto_server");
        let port = free_port();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", moto.display()));
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Create a fresh, uniquely named bucket and return its name.
    pub fn bucket(&self, stem: &str) -> String {
        let name = format!(
            "{stem}-{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(Command::new("curl").args([
            "-fsS",
            "-X",
            "PUT",
            &format!("{}/{name}", self.endpoint),
        ]));
        name
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
