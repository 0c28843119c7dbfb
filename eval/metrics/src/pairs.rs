//! Verification pair lists: LFW View 2 (`pairs.txt`), View 1 (`pairsDevTrain.txt`,
//! `pairsDevTest.txt`) and a generic CSV, and their resolution to feature rows.
//!
//! LFW files name images as `name i` (the image `name/name_%04d.jpg`), so a side resolves through
//! a sample's identity name and the file name of its source path: an LFW-layout folder ingested
//! with `d2ae-ingest` is evaluated with the official file directly. A CSV side is a sample key or
//! a source path. Pairs naming samples that are not there are all reported in one error, or
//! skipped and counted ([`MissingPolicy`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Number of folds given to a CSV without a fold column (the LFW protocol's 10).
pub const DEFAULT_CSV_FOLDS: usize = 10;

/// One side of a pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PairSide {
    /// An LFW image: the identity (folder) name and the 1-based image number, i.e. the file
    /// `name/name_%04d.jpg`.
    Lfw { name: String, number: u32 },
    /// A sample key or a source path (`/`-separated, as in the sample metadata).
    Ref(String),
}

impl PairSide {
    /// The image's path as LFW lays it out, or the reference as given.
    pub fn describe(&self) -> String {
        match self {
            PairSide::Lfw { name, number } => format!("{name}/{name}_{number:04}.jpg"),
            PairSide::Ref(r) => r.clone(),
        }
    }
}

/// One labelled pair in a fold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub a: PairSide,
    pub b: PairSide,
    /// Whether both sides show the same identity (LFW's "matched" pairs).
    pub same: bool,
    /// 0-based fold index.
    pub fold: usize,
}

/// Which file format a pair list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairFormat {
    /// `pairs.txt`: header `folds\tn`, then per fold `n` matched and `n` mismatched lines.
    LfwView2,
    /// `pairsDevTrain.txt` / `pairsDevTest.txt`: header `n`, `n` matched then `n` mismatched.
    LfwView1,
    /// `a,b,label[,fold]`.
    Csv,
}

/// A parsed pair list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairList {
    pub format: PairFormat,
    /// Number of folds; every pair's `fold` is below it.
    pub folds: usize,
    pub pairs: Vec<Pair>,
}

/// A syntax error in a pair list, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Errors reading or resolving pairs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairsError {
    #[error("cannot read pairs file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed pairs file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    /// Every side that named no sample, so one run shows the whole problem.
    #[error(
        "{pairs} of {total} pairs name samples missing from the features ({} distinct): {}",
        missing.len(),
        missing.join(", ")
    )]
    Missing {
        pairs: usize,
        total: usize,
        missing: Vec<String>,
    },
}

fn perr(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

impl PairList {
    /// Read a pair list, choosing the parser by extension: `.csv` is [`PairList::parse_csv`],
    /// anything else [`PairList::parse_lfw`].
    pub fn read(path: &Path) -> Result<PairList, PairsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PairsError::Io {
            path: path.to_owned(),
            source,
        })?;
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let parsed = if is_csv {
            PairList::parse_csv(&text)
        } else {
            PairList::parse_lfw(&text)
        };
        parsed.map_err(|source| PairsError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parse an LFW pair file. The header decides the view: `folds n` (View 2) or `n` (View 1,
    /// one fold). Each fold must hold exactly `n` matched lines (`name i j`) followed by `n`
    /// mismatched lines (`name1 i name2 j`); fields are separated by tabs or spaces.
    pub fn parse_lfw(text: &str) -> Result<PairList, ParseError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty());
        let (hline, header) = lines.next().ok_or_else(|| perr(1, "empty file"))?;
        let nums: Vec<usize> = header
            .split_whitespace()
            .map(|f| f.parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| perr(hline, format!("header {header:?} is not `folds n` or `n`")))?;
        let (format, folds, per_fold) = match nums[..] {
            [folds, n] => (PairFormat::LfwView2, folds, n),
            [n] => (PairFormat::LfwView1, 1, n),
            _ => {
                return Err(perr(
                    hline,
                    format!("header {header:?} is not `folds n` or `n`"),
                ))
            }
        };
        if folds == 0 || per_fold == 0 {
            return Err(perr(hline, "header announces no pairs"));
        }
        let expected = folds * per_fold * 2;
        let mut pairs = Vec::with_capacity(expected);
        for (lineno, line) in lines {
            let idx = pairs.len();
            if idx == expected {
                return Err(perr(
                    lineno,
                    format!("more than the {expected} pairs the header announces"),
                ));
            }
            let fold = idx / (2 * per_fold);
            let want_same = idx % (2 * per_fold) < per_fold;
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| perr(lineno, format!("image number {s:?} is not a number")))
            };
            let pair = match (want_same, f.len()) {
                (true, 3) => Pair {
                    a: PairSide::Lfw {
                        name: f[0].to_owned(),
                        number: num(f[1])?,
                    },
                    b: PairSide::Lfw {
                        name: f[0].to_owned(),
                        number: num(f[2])?,
                    },
                    same: true,
                    fold,
                },
                (false, 4) => Pair {
                    a: PairSide::Lfw {
                        name: f[0].to_owned(),
                        number: num(f[1])?,
                    },
                    b: PairSide::Lfw {
                        name: f[2].to_owned(),
                        number: num(f[3])?,
                    },
                    same: false,
                    fold,
                },
                (same, n) => {
                    let kind = if same {
                        "a matched pair `name i j`"
                    } else {
                        "a mismatched pair `name1 i name2 j`"
                    };
                    return Err(perr(
                        lineno,
                        format!(
                            "expected {kind} (pair {} of fold {}), found {n} fields: {line:?}",
                            idx % (2 * per_fold) + 1,
                            fold + 1
                        ),
                    ));
                }
            };
            pairs.push(pair);
        }
        if pairs.len() != expected {
            return Err(perr(
                hline,
                format!(
                    "header announces {expected} pairs ({folds} folds × {per_fold} matched + {per_fold} mismatched), file has {}",
                    pairs.len()
                ),
            ));
        }
        Ok(PairList {
            format,
            folds,
            pairs,
        })
    }

    /// Parse `a,b,label[,fold]` lines. `label` is `1`/`0`, `true`/`false`, `same`/`different`
    /// (or `diff`); a first line whose label is none of these is a header. `fold` is a 0-based
    /// number; without that column, pairs are dealt round-robin into [`DEFAULT_CSV_FOLDS`] folds
    /// (interleaved rather than contiguous, so a file sorted by label still gives balanced folds).
    pub fn parse_csv(text: &str) -> Result<PairList, ParseError> {
        let mut pairs = Vec::new();
        let mut explicit_folds: Option<bool> = None;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if !(3..=4).contains(&f.len()) {
                return Err(perr(
                    lineno,
                    format!("expected `a,b,label[,fold]`, found {} fields", f.len()),
                ));
            }
            let Some(same) = parse_label(f[2]) else {
                if pairs.is_empty() && explicit_folds.is_none() {
                    explicit_folds = Some(f.len() == 4);
                    continue; // header
                }
                return Err(perr(
                    lineno,
                    format!("label {:?} is not 1/0, true/false or same/different", f[2]),
                ));
            };
            let has_fold = f.len() == 4;
            if *explicit_folds.get_or_insert(has_fold) != has_fold {
                return Err(perr(
                    lineno,
                    "some lines have a fold column and others do not",
                ));
            }
            let fold = if has_fold {
                f[3].parse::<usize>()
                    .map_err(|_| perr(lineno, format!("fold {:?} is not a number", f[3])))?
            } else {
                0
            };
            if f[0].is_empty() || f[1].is_empty() {
                return Err(perr(lineno, "empty pair side"));
            }
            pairs.push(Pair {
                a: PairSide::Ref(f[0].to_owned()),
                b: PairSide::Ref(f[1].to_owned()),
                same,
                fold,
            });
        }
        if pairs.is_empty() {
            return Err(perr(1, "no pairs"));
        }
        let folds = if explicit_folds == Some(true) {
            pairs.iter().map(|p| p.fold).max().unwrap_or(0) + 1
        } else {
            let k = DEFAULT_CSV_FOLDS.min(pairs.len());
            for (i, p) in pairs.iter_mut().enumerate() {
                p.fold = i % k;
            }
            k
        };
        Ok(PairList {
            format: PairFormat::Csv,
            folds,
            pairs,
        })
    }

    /// Number of pairs labelled same.
    pub fn matched(&self) -> usize {
        self.pairs.iter().filter(|p| p.same).count()
    }
}

fn parse_label(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "same" | "match" | "matched" => Some(true),
        "0" | "-1" | "false" | "different" | "diff" | "mismatch" | "mismatched" => Some(false),
        _ => None,
    }
}

/// What to do with pairs that name samples not present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Fail with [`PairsError::Missing`] listing every missing side.
    #[default]
    Error,
    /// Drop those pairs and report them in [`ResolvedPairs::missing`].
    Skip,
}

impl MissingPolicy {
    /// `Skip` when `skip` (a `--skip-missing` flag), else `Error`.
    pub fn skipping(skip: bool) -> Self {
        if skip {
            MissingPolicy::Skip
        } else {
            MissingPolicy::Error
        }
    }
}

/// What the lookup needs to know of one feature row.
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    pub key: &'a str,
    pub identity_name: &'a str,
    /// Source path relative to the ingested root, `/`-separated.
    pub source: &'a str,
}

/// Finds feature rows by key, source path, or (identity name, file name).
#[derive(Debug, Default)]
pub struct SampleLookup {
    by_key: HashMap<String, usize>,
    by_source: HashMap<String, Vec<usize>>,
    by_identity_file: HashMap<(String, String), Vec<usize>>,
    by_tail: HashMap<String, Vec<usize>>,
}

fn file_name(source: &str) -> &str {
    source.rsplit('/').next().unwrap_or(source)
}

/// The last two components `dir/file`, which is how LFW names an image.
fn tail2(source: &str) -> &str {
    match source.rmatch_indices('/').nth(1) {
        Some((i, _)) => &source[i + 1..],
        None => source,
    }
}

impl SampleLookup {
    /// Index rows `0..n` in the order given.
    pub fn new<'a>(samples: impl IntoIterator<Item = SampleRef<'a>>) -> SampleLookup {
        let mut l = SampleLookup::default();
        for (row, s) in samples.into_iter().enumerate() {
            l.by_key.entry(s.key.to_owned()).or_insert(row);
            l.by_source
                .entry(s.source.to_owned())
                .or_default()
                .push(row);
            l.by_identity_file
                .entry((s.identity_name.to_owned(), file_name(s.source).to_owned()))
                .or_default()
                .push(row);
            l.by_tail
                .entry(tail2(s.source).to_owned())
                .or_default()
                .push(row);
        }
        l
    }

    /// The rows a side names: for LFW sides (identity, file) and then the path tail `name/file`;
    /// for references the key, the full source path, then the tail. Several rows come back when
    /// one photo gave several samples (e.g. several faces).
    pub fn find(&self, side: &PairSide) -> &[usize] {
        match side {
            PairSide::Lfw { name, .. } => {
                let path = side.describe();
                self.by_identity_file
                    .get(&(name.clone(), file_name(&path).to_owned()))
                    .or_else(|| self.by_tail.get(&path))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
            }
            PairSide::Ref(r) => {
                if let Some(row) = self.by_key.get(r) {
                    return std::slice::from_ref(row);
                }
                self.by_source
                    .get(r)
                    .or_else(|| {
                        if r.contains('/') {
                            self.by_tail.get(tail2(r))
                        } else {
                            None
                        }
                    })
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
            }
        }
    }

    /// Resolve every pair to feature rows. When a side matches several rows the first (in
    /// feature order) is used and the side is listed in [`ResolvedPairs::ambiguous`].
    pub fn resolve(
        &self,
        list: &PairList,
        policy: MissingPolicy,
    ) -> Result<ResolvedPairs, PairsError> {
        let mut out = ResolvedPairs {
            folds: list.folds,
            ..ResolvedPairs::default()
        };
        let mut missing: Vec<String> = Vec::new();
        let mut ambiguous: Vec<String> = Vec::new();
        let mut missing_pairs = 0;
        for p in &list.pairs {
            let mut rows = [0usize; 2];
            let mut ok = true;
            for (slot, side) in rows.iter_mut().zip([&p.a, &p.b]) {
                match self.find(side) {
                    [] => {
                        missing.push(side.describe());
                        ok = false;
                    }
                    [row] => *slot = *row,
                    [row, ..] => {
                        ambiguous.push(side.describe());
                        *slot = *row;
                    }
                }
            }
            if ok {
                out.rows.push((rows[0], rows[1]));
                out.same.push(p.same);
                out.fold.push(p.fold);
            } else {
                missing_pairs += 1;
            }
        }
        dedup_keep_order(&mut missing);
        dedup_keep_order(&mut ambiguous);
        if missing_pairs > 0 && policy == MissingPolicy::Error {
            return Err(PairsError::Missing {
                pairs: missing_pairs,
                total: list.pairs.len(),
                missing,
            });
        }
        out.skipped = missing_pairs;
        out.missing = missing;
        out.ambiguous = ambiguous;
        Ok(out)
    }
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// Pairs as feature rows, ready for [`crate::verify`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPairs {
    /// (row of side a, row of side b).
    pub rows: Vec<(usize, usize)>,
    pub same: Vec<bool>,
    pub fold: Vec<usize>,
    /// Number of folds of the list (some may be empty after skipping).
    pub folds: usize,
    /// Pairs dropped under [`MissingPolicy::Skip`].
    pub skipped: usize,
    /// Distinct sides that named no sample.
    pub missing: Vec<String>,
    /// Distinct sides that named several samples (the first was used).
    pub ambiguous: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW2: &str = "2\t2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t2\nC\t1\tA\t3\n\
                         C\t1\t2\nB\t2\t3\nA\t2\tC\t2\nB\t1\tC\t1\n";

    #[test]
    fn view2_folds_and_labels_follow_positions() {
        let l = PairList::parse_lfw(VIEW2).unwrap();
        assert_eq!(
            (l.format, l.folds, l.pairs.len(), l.matched()),
            (PairFormat::LfwView2, 2, 8, 4)
        );
        let folds: Vec<usize> = l.pairs.iter().map(|p| p.fold).collect();
        assert_eq!(folds, [0, 0, 0, 0, 1, 1, 1, 1]);
        let same: Vec<bool> = l.pairs.iter().map(|p| p.same).collect();
        assert_eq!(same, [true, true, false, false, true, true, false, false]);
        assert_eq!(l.pairs[3].a.describe(), "C/C_0001.jpg");
        assert_eq!(l.pairs[3].b.describe(), "A/A_0003.jpg");
    }

    #[test]
    fn view1_is_one_fold_and_structure_errors_name_the_line() {
        let l = PairList::parse_lfw("1\nA 1 2\nA 1 B 1\n").unwrap();
        assert_eq!(
            (l.format, l.folds, l.pairs.len()),
            (PairFormat::LfwView1, 1, 2)
        );
        let e = PairList::parse_lfw("1\nA 1 B 1\nA 1 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("matched pair"), "{e}");
        let e = PairList::parse_lfw("2\nA 1 2\nA 1 3\nA 1 B 1\n").unwrap_err();
        assert!(e.message.contains("announces 4 pairs"), "{e}");
        let e = PairList::parse_lfw("1\nA x 2\nA 1 B 1\n").unwrap_err();
        assert!(e.message.contains("\"x\""), "{e}");
        assert!(PairList::parse_lfw("1\nA 1 2\nA 1 B 1\nA 1 2\n").is_err());
    }

    #[test]
    fn csv_with_header_without_folds_is_dealt_round_robin() {
        let text = "a,b,label\n".to_owned()
            + &(0..12)
                .map(|i| format!("k{i},k{},{}\n", i + 1, i % 2))
                .collect::<String>();
        let l = PairList::parse_csv(&text).unwrap();
        assert_eq!((l.folds, l.pairs.len(), l.matched()), (10, 12, 6));
        assert_eq!(l.pairs[11].fold, 1);
        let l = PairList::parse_csv("x,y,same,3\nx,z,different,0\n").unwrap();
        assert_eq!(l.folds, 4);
        assert!(!l.pairs[1].same);
        let e = PairList::parse_csv("x,y,1\nx,z,maybe\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn resolution_by_identity_file_key_and_tail_reports_all_missing() {
        let samples = [
            ("k0", "A", "lfw/A/A_0001.jpg"),
            ("k1", "A", "lfw/A/A_0002.jpg"),
            ("k2", "B", "lfw/B/B_0002.jpg"),
            ("k3", "B", "lfw/B/B_0002.jpg"),
        ];
        let lookup =
            SampleLookup::new(
                samples
                    .iter()
                    .map(|&(key, identity_name, source)| SampleRef {
                        key,
                        identity_name,
                        source,
                    }),
            );
        let l = PairList::parse_lfw("1\nA 1 2\nA 1 B 2\n").unwrap();
        let r = lookup.resolve(&l, MissingPolicy::Error).unwrap();
        assert_eq!(r.rows, [(0, 1), (0, 2)]);
        assert_eq!(r.ambiguous, ["B/B_0002.jpg"]);
        let l = PairList::parse_lfw("1\nA 1 7\nC 1 B 9\n").unwrap();
        let e = lookup.resolve(&l, MissingPolicy::Error).unwrap_err();
        let msg = e.to_string();
        for name in ["A/A_0007.jpg", "C/C_0001.jpg", "B/B_0009.jpg"] {
            assert!(msg.contains(name), "{msg}");
        }
        assert!(msg.starts_with("2 of 2 pairs"), "{msg}");
        let r = lookup.resolve(&l, MissingPolicy::Skip).unwrap();
        assert_eq!((r.rows.len(), r.skipped, r.missing.len()), (0, 2, 3));
        let l = PairList::parse_csv("k1,A/A_0001.jpg,1\nlfw/B/B_0002.jpg,k0,0\n").unwrap();
        let r = lookup.resolve(&l, MissingPolicy::Error).unwrap();
        assert_eq!(r.rows, [(1, 0), (2, 0)]);
    }
}
