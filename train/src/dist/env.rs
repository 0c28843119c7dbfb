//! Where this process sits in the job, read once from the variables launchers set.
//!
//! Precedence: torchrun's `RANK`/`WORLD_SIZE` (also set by our own `--nproc-per-node`), then SLURM's
//! `SLURM_PROCID`/`SLURM_NTASKS` (one task per GPU under `srun`), else a single process. Under SLURM
//! the master is `MASTER_ADDR` when set, otherwise the first host of `SLURM_JOB_NODELIST`, and the
//! port is `MASTER_PORT` when set, otherwise derived from `SLURM_JOB_ID` so every task of one job
//! picks the same port without configuration while two jobs sharing a node rarely collide.

use std::path::PathBuf;

use super::DistError;

/// torchrun's default port, used when a single process needs no master anyway.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Which launcher the variables came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSource {
    /// `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (torchrun, `--nproc-per-node`).
    Torchrun,
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_JOB_NODELIST`, `SLURM_JOB_ID`.
    Slurm,
    /// None set: one process, rank 0 of 1.
    Single,
}

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// Index of this process on its node: the CUDA device it drives.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub source: EnvSource,
    /// `D2AE_NCCL_LIB`: full path of `libnccl.so.2`, overriding the search in [`super::nccl`].
    pub nccl_lib: Option<PathBuf>,
}

impl DistEnv {
    /// A single process: rank 0 of 1 on the loopback interface.
    pub fn single() -> DistEnv {
        DistEnv {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_MASTER_PORT,
            source: EnvSource::Single,
            nccl_lib: None,
        }
    }

    /// Read the process environment.
    pub fn from_env() -> Result<DistEnv, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Parse from any variable lookup (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<DistEnv, DistError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let nccl_lib = get("D2AE_NCCL_LIB").map(PathBuf::from);
        let env = if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
            Self::torchrun(&get)?
        } else if get("SLURM_PROCID").is_some() {
            Self::slurm(&get)?
        } else {
            Self::single()
        };
        let env = DistEnv { nccl_lib, ..env };
        env.validate()?;
        Ok(env)
    }

    fn torchrun(get: &impl Fn(&str) -> Option<String>) -> Result<DistEnv, DistError> {
        let when = "RANK or WORLD_SIZE is set (torchrun-style launch)";
        let rank = required(get, "RANK", when)?;
        let world_size = required(get, "WORLD_SIZE", when)?;
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v)?,
            None if world_size == 1 => 0,
            None => return Err(missing("LOCAL_RANK", when)),
        };
        let (master_addr, master_port) = if world_size == 1 {
            (
                get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                optional_port(get)?.unwrap_or(DEFAULT_MASTER_PORT),
            )
        } else {
            let when = "WORLD_SIZE > 1";
            (
                get("MASTER_ADDR").ok_or_else(|| missing("MASTER_ADDR", when))?,
                optional_port(get)?.ok_or_else(|| missing("MASTER_PORT", when))?,
            )
        };
        Ok(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            source: EnvSource::Torchrun,
            nccl_lib: None,
        })
    }

    fn slurm(get: &impl Fn(&str) -> Option<String>) -> Result<DistEnv, DistError> {
        let when = "SLURM_PROCID is set (srun launch)";
        let rank = required(get, "SLURM_PROCID", when)?;
        let world_size = required(get, "SLURM_NTASKS", when)?;
        let local_rank = required(get, "SLURM_LOCALID", when)?;
        let master_addr = match get("MASTER_ADDR") {
            Some(addr) => addr,
            None => {
                let (var, list) = get("SLURM_JOB_NODELIST")
                    .map(|l| ("SLURM_JOB_NODELIST", l))
                    .or_else(|| get("SLURM_NODELIST").map(|l| ("SLURM_NODELIST", l)))
                    .ok_or_else(|| missing("SLURM_JOB_NODELIST", "MASTER_ADDR is not set"))?;
                first_host(&list).map_err(|reason| DistError::Env {
                    var,
                    value: list.clone(),
                    reason,
                })?
            }
        };
        let master_port = match optional_port(get)? {
            Some(port) => port,
            None => {
                let job: u64 = required(get, "SLURM_JOB_ID", "MASTER_PORT is not set")?;
                slurm_port(job)
            }
        };
        Ok(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            source: EnvSource::Slurm,
            nccl_lib: None,
        })
    }

    fn validate(&self) -> Result<(), DistError> {
        if self.world_size == 0 {
            return Err(DistError::Env {
                var: self.world_var(),
                value: "0".into(),
                reason: "the world size must be at least 1".into(),
            });
        }
        if self.rank >= self.world_size {
            return Err(DistError::Env {
                var: self.rank_var(),
                value: self.rank.to_string(),
                reason: format!("rank must be below the world size {}", self.world_size),
            });
        }
        Ok(())
    }

    fn rank_var(&self) -> &'static str {
        match self.source {
            EnvSource::Slurm => "SLURM_PROCID",
            _ => "RANK",
        }
    }

    fn world_var(&self) -> &'static str {
        match self.source {
            EnvSource::Slurm => "SLURM_NTASKS",
            _ => "WORLD_SIZE",
        }
    }

    /// `host:port` of rank 0's rendezvous listener.
    pub fn master(&self) -> String {
        if self.master_addr.contains(':') && !self.master_addr.starts_with('[') {
            format!("[{}]:{}", self.master_addr, self.master_port)
        } else {
            format!("{}:{}", self.master_addr, self.master_port)
        }
    }
}

/// The port every task of SLURM job `job` uses when `MASTER_PORT` is not set: in 20000..40000,
/// below the usual ephemeral range.
pub fn slurm_port(job: u64) -> u16 {
    20000 + (job % 20000) as u16
}

/// The first host of a SLURM node list: `node[01-04,07],gpu9` → `node01`, `rack[1-2]-n[3-4]` →
/// `rack1-n3`. Only the first host is expanded; that is all the rendezvous needs.
pub fn first_host(list: &str) -> Result<String, String> {
    let list = list.trim();
    // The first top-level item: commas inside brackets separate ranges, not hosts.
    let mut depth = 0usize;
    let mut end = list.len();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or("unbalanced ']'")?,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let item = &list[..end];
    let mut host = String::new();
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        host.push_str(&rest[..open]);
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or("unbalanced '['")?;
        let ranges = &rest[open + 1..close];
        let first = ranges.split(',').next().unwrap_or("");
        let low = first.split('-').next().unwrap_or("").trim();
        if low.is_empty() || !low.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("bad range [{ranges}]"));
        }
        host.push_str(low);
        rest = &rest[close + 1..];
    }
    host.push_str(rest);
    if host.is_empty() || host.contains(']') {
        return Err("no host name".into());
    }
    Ok(host)
}

fn missing(var: &'static str, when: &str) -> DistError {
    DistError::MissingEnv {
        var,
        when: when.into(),
    }
}

fn parse<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T, DistError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| DistError::Env {
        var,
        value: value.into(),
        reason: e.to_string(),
    })
}

fn required<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    when: &str,
) -> Result<T, DistError>
where
    T::Err: std::fmt::Display,
{
    let value = get(var).ok_or_else(|| missing(var, when))?;
    parse(var, &value)
}

fn optional_port(get: &impl Fn(&str) -> Option<String>) -> Result<Option<u16>, DistError> {
    get("MASTER_PORT")
        .map(|v| parse::<u16>("MASTER_PORT", &v))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<DistEnv, DistError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "16"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.7"),
            ("MASTER_PORT", "29400"),
            ("SLURM_PROCID", "3"),
        ])
        .unwrap();
        assert_eq!(
            e,
            DistEnv {
                rank: 5,
                world_size: 16,
                local_rank: 1,
                master_addr: "10.0.0.7".into(),
                master_port: 29400,
                source: EnvSource::Torchrun,
                nccl_lib: None,
            }
        );
        assert_eq!(e.master(), "10.0.0.7:29400");
    }

    #[test]
    fn slurm_variables_with_nodelist_and_job_port() {
        let e = env(&[
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-10],login1"),
            ("SLURM_JOB_ID", "123456"),
            ("D2AE_NCCL_LIB", "/opt/nccl/libnccl.so.2"),
        ])
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.source),
            (9, 16, 1, EnvSource::Slurm)
        );
        assert_eq!(e.master_addr, "gpu07");
        assert_eq!(e.master_port, 20000 + (123456 % 20000) as u16);
        assert_eq!(e.master_port, 23456);
        assert_eq!(e.nccl_lib, Some(PathBuf::from("/opt/nccl/libnccl.so.2")));
        // MASTER_ADDR / MASTER_PORT win over the node list and the job id.
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("MASTER_ADDR", "head"),
            ("MASTER_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!((e.master_addr.as_str(), e.master_port), ("head", 4000));
    }

    #[test]
    fn single_process_without_variables() {
        assert_eq!(env(&[]).unwrap(), DistEnv::single());
        // A world of one needs no master.
        let e = env(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (0, 1, 0));
    }

    #[test]
    fn errors_name_the_variable() {
        let err = env(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")]).unwrap_err();
        assert!(err.to_string().contains("MASTER_ADDR"), "{err}");
        let err = env(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable RANK=\"x\""),
            "{err}"
        );
        let err = env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("below the world size 2"), "{err}");
        let err = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("MASTER_PORT=\"70000\""), "{err}");
        let err = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_JOB_NODELIST", "n[01-"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SLURM_JOB_NODELIST"), "{err}");
    }

    #[test]
    fn first_host_of_node_lists() {
        assert_eq!(first_host("node01").unwrap(), "node01");
        assert_eq!(first_host("node[01-04]").unwrap(), "node01");
        assert_eq!(first_host("node[3,5-7],other").unwrap(), "node3");
        assert_eq!(first_host("a1,b[1-2]").unwrap(), "a1");
        assert_eq!(first_host("rack[1-2]-n[03-04]").unwrap(), "rack1-n03");
        assert_eq!(first_host("n[1-2]-ib").unwrap(), "n1-ib");
        assert!(first_host("n[1-2").is_err());
        assert!(first_host("n[x]").is_err());
        assert!(first_host("").is_err());
    }
}
