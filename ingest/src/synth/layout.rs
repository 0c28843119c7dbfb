//! The CelebA raw layout, byte for byte, plus d2ae's extension files.
//!
//! Writing exactly CelebA's formats (counts on line 1, names on line 2 with a trailing space, ±1
//! values padded to width 2) means the ingest tool reads synthetic data through the same code as
//! the real dataset, which is the point of the generator. Everything is formatted into a string
//! first so tests can check the bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::factors::{ATTRIBUTES, FACTORS};
use super::pairs::Fold;

pub const IDENTITY_FILE: &str = "identity_CelebA.txt";
pub const ATTRIBUTE_FILE: &str = "list_attr_celeba.txt";
pub const PARTITION_FILE: &str = "list_eval_partition.txt";
pub const LANDMARK_FILE: &str = "list_landmarks_celeba.txt";
pub const FACTOR_FILE: &str = "list_factors_d2ae.txt";
pub const PAIRS_FILE: &str = "pairs.txt";
pub const PAIR_KEYS_FILE: &str = "pairs_keys.csv";
pub const META_FILE: &str = "synth.json";
pub const PREVIEW_FILE: &str = "preview.png";
/// Directory of the images, relative to the output root.
pub const IMAGE_DIR: &str = "images";
/// Every file the generator writes at the root (removed by `--overwrite`).
pub const ROOT_FILES: [&str; 9] = [
    IDENTITY_FILE,
    ATTRIBUTE_FILE,
    PARTITION_FILE,
    LANDMARK_FILE,
    FACTOR_FILE,
    PAIRS_FILE,
    PAIR_KEYS_FILE,
    META_FILE,
    PREVIEW_FILE,
];

/// CelebA's landmark columns (line 2 of the landmark file).
pub const LANDMARK_HEADER: &str = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y \
                                   leftmouth_x leftmouth_y rightmouth_x rightmouth_y";

/// The partitions of `list_eval_partition.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    Train = 0,
    Val = 1,
    Test = 2,
}

/// Everything the text files say about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// File name inside [`IMAGE_DIR`], e.g. `000001.jpg`.
    pub file: String,
    /// Identity id as written in `identity_CelebA.txt` (1-based).
    pub identity: u32,
    pub partition: Partition,
    /// In [`ATTRIBUTES`] order.
    pub attributes: [bool; ATTRIBUTES.len()],
    /// Integer pixel coordinates in CelebA's column order.
    pub landmarks: [[i32; 2]; 5],
    /// In [`FACTORS`] order.
    pub factors: [f32; FACTORS.len()],
}

/// A failed write, with the file it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Write `contents` to `dir/name`.
pub fn write(dir: &Path, name: &str, contents: &[u8]) -> Result<(), WriteError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| WriteError { path, source })
}

/// `000001.jpg 7`
pub fn identity_file(records: &[ImageRecord]) -> String {
    let mut s = String::with_capacity(records.len() * 16);
    for r in records {
        let _ = writeln!(s, "{} {}", r.file, r.identity);
    }
    s
}

/// `000001.jpg 0`
pub fn partition_file(records: &[ImageRecord]) -> String {
    let mut s = String::with_capacity(records.len() * 13);
    for r in records {
        let _ = writeln!(s, "{} {}", r.file, r.partition as u8);
    }
    s
}

/// CelebA's attribute table: count, names with a trailing space, then `000001.jpg -1  1 ...`.
pub fn attribute_file(records: &[ImageRecord]) -> String {
    let mut s = header(records.len(), &ATTRIBUTES);
    for r in records {
        s.push_str(&r.file);
        for &a in &r.attributes {
            s.push_str(if a { "  1" } else { " -1" });
        }
        s.push('\n');
    }
    s
}

/// CelebA's landmark table: count, [`LANDMARK_HEADER`], then `000001.jpg 69 109 ...`.
pub fn landmark_file(records: &[ImageRecord]) -> String {
    let mut s = format!("{}\n{LANDMARK_HEADER}\n", records.len());
    for r in records {
        s.push_str(&r.file);
        for [x, y] in r.landmarks {
            let _ = write!(s, " {x} {y}");
        }
        s.push('\n');
    }
    s
}

/// The attribute table's layout with float values: `000001.jpg 0.512300 -0.030000 ...`.
pub fn factor_file(records: &[ImageRecord]) -> String {
    let mut s = header(records.len(), &FACTORS);
    for r in records {
        s.push_str(&r.file);
        for v in r.factors {
            let _ = write!(s, " {v:.6}");
        }
        s.push('\n');
    }
    s
}

fn header(count: usize, names: &[&str]) -> String {
    let mut s = format!("{count}\n");
    for n in names {
        s.push_str(n);
        s.push(' ');
    }
    s.push('\n');
    s
}

/// LFW View 2's `pairs.txt`: `folds\tk`, then per fold `k` lines `name\ti\tj` and `k` lines
/// `name1\ti\tname2\tj`. Names are identity ids; `i` is the 1-based image number in file order.
pub fn pairs_file(folds: &[Fold], per_fold: usize) -> String {
    let mut s = format!("{}\t{per_fold}\n", folds.len());
    for fold in folds {
        for p in &fold.matched {
            let _ = writeln!(s, "{}\t{}\t{}", p.left.0, p.left.1, p.right.1);
        }
        for p in &fold.mismatched {
            let _ = writeln!(
                s,
                "{}\t{}\t{}\t{}",
                p.left.0, p.left.1, p.right.0, p.right.1
            );
        }
    }
    s
}

/// The same pairs by source path: `fold,left,right,same` with paths like `images/000123.jpg`.
/// `path_of(identity, i)` gives the file of image `i` of an identity.
pub fn pair_keys_file(folds: &[Fold], path_of: impl Fn(u32, u32) -> String) -> String {
    let mut s = String::from("fold,left,right,same\n");
    for (f, fold) in folds.iter().enumerate() {
        for (pairs, same) in [(&fold.matched, 1), (&fold.mismatched, 0)] {
            for p in pairs {
                let _ = writeln!(
                    s,
                    "{f},{},{},{same}",
                    path_of(p.left.0, p.left.1),
                    path_of(p.right.0, p.right.1)
                );
            }
        }
    }
    s
}

/// The file name of 0-based image number `n` out of `total`: CelebA's 6 digits, more if needed.
pub fn file_name(n: usize, total: usize, ext: &str) -> String {
    let width = total.to_string().len().max(6);
    format!("{:0width$}.{ext}", n + 1)
}

#[cfg(test)]
mod tests {
    use super::super::pairs::Pair;
    use super::*;

    fn record() -> ImageRecord {
        ImageRecord {
            file: "000001.jpg".into(),
            identity: 7,
            partition: Partition::Val,
            attributes: [true, false, false, true, false, true, false],
            landmarks: [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]],
            factors: [
                0.5, 0.25, 0.125, -0.03, 1.0, 1.0, 0.0, -3.5, 0.01, 0.0, 1.0, 2.0,
            ],
        }
    }

    #[test]
    fn celeba_tables_have_celebas_bytes() {
        let r = [record()];
        assert_eq!(identity_file(&r), "000001.jpg 7\n");
        assert_eq!(partition_file(&r), "000001.jpg 1\n");
        assert_eq!(
            attribute_file(&r),
            "1\nBig_Nose Black_Hair Bushy_Eyebrows Eyeglasses Mouth_Slightly_Open Smiling \
             Wearing_Hat \n000001.jpg  1 -1 -1  1 -1  1 -1\n"
        );
        assert_eq!(
            landmark_file(&r),
            format!("1\n{LANDMARK_HEADER}\n000001.jpg 69 109 106 113 77 142 73 152 108 154\n")
        );
        let factors = factor_file(&r);
        let lines: Vec<&str> = factors.lines().collect();
        assert_eq!(
            lines[1].split(' ').count(),
            FACTORS.len() + 1,
            "trailing space"
        );
        assert_eq!(
            lines[2],
            "000001.jpg 0.500000 0.250000 0.125000 -0.030000 1.000000 1.000000 0.000000 \
             -3.500000 0.010000 0.000000 1.000000 2.000000"
        );
    }

    #[test]
    fn the_attribute_row_matches_the_shared_celeba_sample() {
        // A row of the real list_attr_celeba.txt starts `005412.jpg -1  1 -1`: name, then each
        // value right-aligned in 2 columns after one space.
        let mut r = record();
        r.attributes = [false, true, false, false, false, false, false];
        let table = attribute_file(&[r]);
        assert!(table
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("000001.jpg -1  1 -1"));
    }

    #[test]
    fn pairs_are_written_in_lfw_shape() {
        let fold = Fold {
            matched: vec![Pair {
                left: (12, 1),
                right: (12, 4),
            }],
            mismatched: vec![Pair {
                left: (12, 2),
                right: (15, 3),
            }],
        };
        let folds = [fold.clone(), fold];
        assert_eq!(
            pairs_file(&folds, 1),
            "2\t1\n12\t1\t4\n12\t2\t15\t3\n12\t1\t4\n12\t2\t15\t3\n"
        );
        let keys = pair_keys_file(&folds[..1], |id, i| format!("images/{id}-{i}.jpg"));
        assert_eq!(
            keys,
            "fold,left,right,same\n0,images/12-1.jpg,images/12-4.jpg,1\n\
             0,images/12-2.jpg,images/15-3.jpg,0\n"
        );
    }

    #[test]
    fn file_names_are_zero_padded() {
        assert_eq!(file_name(0, 2000, "jpg"), "000001.jpg");
        assert_eq!(file_name(1_234_566, 1_500_000, "png"), "1234567.png");
    }
}
