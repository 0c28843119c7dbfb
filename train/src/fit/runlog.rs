//! `metrics.jsonl`: one JSON object per line, appended as training goes.
//!
//! Object stores cannot append, so the log is always written to a local file (the run directory
//! itself when it is local, a staging directory otherwise) and uploaded whole by the trainer at
//! each checkpoint and at the end. On resume the lines after the checkpoint's step are dropped, so
//! a killed-and-resumed run has exactly one line per step, like an uninterrupted one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// An append-only JSONL log on local disk.
pub struct JsonlLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlLog {
    /// Open `path` for appending, first dropping every line whose `step` is greater than
    /// `keep_through_step` (all of them when it is `None`... i.e. a fresh run truncates the file).
    pub fn open(path: &Path, keep_through_step: Option<u64>) -> std::io::Result<JsonlLog> {
        let kept: Vec<String> = match (keep_through_step, File::open(path)) {
            (Some(last), Ok(f)) => BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= last)
                })
                .collect(),
            _ => Vec::new(),
        };
        // Rewrite through a temporary file so a crash here cannot lose the kept lines.
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut w = BufWriter::new(File::create(&tmp)?);
            for line in &kept {
                writeln!(w, "{line}")?;
            }
            w.flush()?;
        }
        std::fs::rename(&tmp, path)?;
        let out = BufWriter::new(OpenOptions::new().append(true).open(path)?);
        Ok(JsonlLog {
            path: path.to_owned(),
            out,
        })
    }

    /// Append one record and flush it, so a killed run keeps every line it logged.
    pub fn write(&mut self, record: &serde_json::Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_keeps_lines_up_to_the_checkpoint_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        {
            let mut log = JsonlLog::open(&path, None).unwrap();
            for step in 1..=6 {
                log.write(&json!({"step": step, "loss": 1.0 / step as f64}))
                    .unwrap();
            }
        }
        {
            let mut log = JsonlLog::open(&path, Some(4)).unwrap();
            log.write(&json!({"step": 5, "loss": 0.0})).unwrap();
        }
        let steps: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5]);
        // A fresh run starts from an empty file.
        drop(JsonlLog::open(&path, None).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
