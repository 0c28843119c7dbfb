//! `--nproc-per-node N`: run N local ranks of this binary, torchrun-style.
//!
//! The launcher re-executes the current binary with the same arguments and the variables torchrun
//! sets (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1`,
//! `MASTER_PORT` = a free port), prefixes each child's output lines with `[rank k]` (except rank 0's
//! stdout, which passes through unchanged for `--json`), and supervises:
//! when any rank exits non-zero the others are stopped (SIGTERM, then SIGKILL after a grace period)
//! and the launcher fails naming that rank. The children see `D2AE_LAUNCHED=1`, which makes
//! `--nproc-per-node` a no-op for them. For several nodes use torchrun or SLURM, which set the same
//! variables on every node (see docs/DISTRIBUTED.md).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::DistError;

/// Set in every child so it does not launch again.
pub const LAUNCHED_VAR: &str = "D2AE_LAUNCHED";

/// What the caller of [`maybe_launch`] should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// Train in this process: it is a launched rank, runs under an outer launcher, or no
    /// `--nproc-per-node` was asked for.
    RunHere,
    /// This process was the launcher and all ranks finished successfully: exit 0.
    Done,
}

/// If `nproc_per_node` is `Some(n)` and this process is not itself a launched rank, run `n` copies
/// of this binary with the same arguments and wait for them; otherwise return `RunHere`.
pub fn maybe_launch(nproc_per_node: Option<usize>) -> Result<LaunchOutcome, DistError> {
    let Some(n) = nproc_per_node else {
        return Ok(LaunchOutcome::RunHere);
    };
    if std::env::var_os(LAUNCHED_VAR).is_some() {
        return Ok(LaunchOutcome::RunHere);
    }
    if std::env::var_os("RANK").is_some() || std::env::var_os("SLURM_PROCID").is_some() {
        tracing::warn!(
            "--nproc-per-node {n} ignored: RANK or SLURM_PROCID is set, an outer launcher already \
             started this rank"
        );
        return Ok(LaunchOutcome::RunHere);
    }
    let exe = std::env::current_exe().map_err(|e| DistError::io("locating this binary", e))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    run_local(&Spec::new(exe, args, n))?;
    Ok(LaunchOutcome::Done)
}

/// One local launch: `nproc` copies of `program args…`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub nproc: usize,
    /// Extra variables for every child.
    pub env: Vec<(String, String)>,
    /// After the first failure, how long the others get to exit on their own before SIGKILL.
    pub grace: Duration,
}

impl Spec {
    pub fn new(program: PathBuf, args: Vec<OsString>, nproc: usize) -> Spec {
        Spec {
            program,
            args,
            nproc,
            env: Vec::new(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Start the ranks, forward their output and wait. `Ok` only if every rank exits 0.
pub fn run_local(spec: &Spec) -> Result<(), DistError> {
    if spec.nproc == 0 {
        return Err(DistError::Env {
            var: "--nproc-per-node",
            value: "0".into(),
            reason: "needs at least one process".into(),
        });
    }
    let port = free_port()?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(spec.nproc);
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    for rank in 0..spec.nproc {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env(LAUNCHED_VAR, "1")
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", spec.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", spec.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                stop_all(&mut children, Duration::ZERO);
                return Err(DistError::Spawn {
                    rank,
                    program: spec.program.display().to_string(),
                    source,
                });
            }
        };
        let prefix = format!("[rank {rank}] ");
        if let Some(out) = child.stdout.take() {
            // Rank 0's stdout passes through as is, so `--json` output stays machine-readable.
            let out_prefix = if rank == 0 {
                String::new()
            } else {
                prefix.clone()
            };
            pumps.push(pump(out, out_prefix, false));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, prefix, true));
        }
        children.push(Some(child));
    }
    let outcome = supervise(&mut children, spec.grace);
    if outcome.is_ok() {
        // After a failure a stopped rank's own children may still hold its pipes; don't wait.
        for p in pumps {
            let _ = p.join();
        }
    }
    outcome
}

/// Ask the kernel to SIGTERM the child if the launcher itself dies (even by SIGKILL), so no rank
/// outlives its job.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child being started.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
}

/// Wait for all children; on the first failure stop the rest and report it.
fn supervise(children: &mut [Option<Child>], grace: Duration) -> Result<(), DistError> {
    loop {
        let mut running = 0;
        for rank in 0..children.len() {
            let Some(child) = children[rank].as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(Some(status)) if status.success() => children[rank] = None,
                Ok(Some(status)) => {
                    children[rank] = None;
                    stop_all(children, grace);
                    return Err(DistError::RankFailed {
                        rank,
                        status: describe(status),
                    });
                }
                Ok(None) => running += 1,
                Err(e) => {
                    stop_all(children, Duration::ZERO);
                    return Err(DistError::io(format!("waiting for rank {rank}"), e));
                }
            }
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM the survivors, give them `grace` to exit (they usually fail on their own once a peer
/// is gone), then SIGKILL.
fn stop_all(children: &mut [Option<Child>], grace: Duration) {
    for child in children.iter().flatten() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .flatten()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// Copy a child's output line by line with a rank prefix.
fn pump(stream: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let mut buf = Vec::with_capacity(prefix.len() + line.len());
                    buf.extend_from_slice(prefix.as_bytes());
                    buf.extend_from_slice(&line);
                    // One write per line keeps lines of different ranks from interleaving.
                    let _ = if to_stderr {
                        std::io::stderr().lock().write_all(&buf)
                    } else {
                        std::io::stdout().lock().write_all(&buf)
                    };
                }
            }
        }
    })
}

fn free_port() -> Result<u16, DistError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DistError::io("finding a free port for MASTER_PORT", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, nproc: usize) -> Spec {
        let mut spec = Spec::new("/bin/sh".into(), vec!["-c".into(), script.into()], nproc);
        spec.grace = Duration::from_secs(2);
        spec
    }

    #[test]
    fn all_ranks_succeed() {
        run_local(&sh(
            "test \"$WORLD_SIZE\" = 3 && test \"$RANK\" = \"$LOCAL_RANK\"",
            3,
        ))
        .unwrap();
    }

    #[test]
    fn a_failing_rank_stops_the_others() {
        let t = Instant::now();
        // Rank 1 fails at once; ranks 0 and 2 would sleep for a minute.
        let err = run_local(&sh(
            "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60",
            3,
        ))
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(
            err.to_string(),
            "rank 1 exited with exit code 3; stopped the other ranks"
        );
    }
}
