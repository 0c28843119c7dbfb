//! The progress bar (images/s, ETA) and the end-of-run summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// A bar over the images of a run (hidden when disabled or when stderr is not a terminal).
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `total` images of which `done` were finished by an earlier (interrupted) run.
    pub fn new(total: u64, done: u64, enabled: bool) -> Progress {
        let target = if enabled {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images, {per_sec}, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(done);
        // Rate and ETA should reflect this run's work, not the resumed part.
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress { bar }
    }

    /// One more image handled.
    pub fn tick(&self, accepted: u64, rejected: u64, shards: usize) {
        self.bar.inc(1);
        if self.bar.position().is_multiple_of(16) {
            self.bar.set_message(format!(
                "({accepted} ok, {rejected} rejected, {shards} shards)"
            ));
        }
    }

    /// Print a line above the bar.
    pub fn println(&self, line: impl AsRef<str>) {
        self.bar.println(line);
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// What a run did, printed at the end (or as JSON with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The destination.
    pub out: String,
    /// The layout that was read.
    pub layout: String,
    /// Accepted samples in the dataset, per split.
    pub splits: BTreeMap<String, u64>,
    /// Accepted samples in total.
    pub accepted: u64,
    /// Rejected inputs in total.
    pub rejected: u64,
    /// Rejected inputs by reason.
    pub rejects: BTreeMap<String, u64>,
    /// Identities in the table.
    pub identities: usize,
    /// Shards in the dataset.
    pub shards: usize,
    /// Compressed bytes of all shards.
    pub bytes: u64,
    /// Shards an earlier interrupted run had finished and this one kept.
    pub resumed_shards: usize,
    /// Images this run processed (excludes the resumed part).
    pub processed: u64,
    /// Wall time of this run.
    pub seconds: f64,
    /// `processed / seconds`.
    pub images_per_second: f64,
    /// Worker threads used.
    pub workers: usize,
    /// The destination already held this exact dataset; nothing was done.
    pub already_complete: bool,
}

impl Summary {
    /// Human-readable summary lines.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if self.already_complete {
            let _ = writeln!(
                s,
                "{} already holds this dataset (same inputs and settings); nothing to do",
                self.out
            );
        }
        let splits: Vec<String> = self
            .splits
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "ingested {} samples ({}) of {} identities into {} shards, {} at {}",
            self.accepted,
            splits.join(", "),
            self.identities,
            self.shards,
            human_bytes(self.bytes),
            self.out
        );
        if self.rejected > 0 {
            let reasons: Vec<String> = self
                .rejects
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                s,
                "rejected {} inputs: {} (see rejects.jsonl)",
                self.rejected,
                reasons.join(", ")
            );
        } else {
            let _ = writeln!(s, "rejected 0 inputs");
        }
        if self.resumed_shards > 0 {
            let _ = writeln!(
                s,
                "resumed: kept {} shards from the interrupted run",
                self.resumed_shards
            );
        }
        let _ = writeln!(
            s,
            "processed {} images in {:.1} s ({:.1} images/s on {} workers)",
            self.processed, self.seconds, self.images_per_second, self.workers
        );
        s
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
    }

    #[test]
    fn summary_text_lists_rejects_by_reason() {
        let s = Summary {
            out: "/tmp/x".into(),
            layout: "folders".into(),
            splits: BTreeMap::from([("train".into(), 9), ("val".into(), 1)]),
            accepted: 10,
            rejected: 3,
            rejects: BTreeMap::from([("decode_error".into(), 1), ("no_face".into(), 2)]),
            identities: 4,
            shards: 2,
            bytes: 2048,
            resumed_shards: 1,
            processed: 6,
            seconds: 2.0,
            images_per_second: 3.0,
            workers: 2,
            already_complete: false,
        };
        let text = s.to_text();
        assert!(
            text.contains(
                "ingested 10 samples (train 9, val 1) of 4 identities into 2 shards, 2.0 KiB"
            ),
            "{text}"
        );
        assert!(
            text.contains("rejected 3 inputs: decode_error 1, no_face 2"),
            "{text}"
        );
        assert!(text.contains("kept 1 shards"), "{text}");
    }
}
