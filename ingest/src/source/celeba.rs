//! The `celeba` layout: the CelebA root with its metadata files (formats in `shared/data/README.md`).
//!
//! `identity_CelebA.txt` is the master list: every image named there is an input, in that order.
//! When present, `list_attr_celeba.txt` gives ±1 attributes (→ `false`/`true`),
//! `list_eval_partition.txt` the official split (0 train, 1 val, 2 test), the landmark list the 5
//! points, and our own `list_factors_d2ae.txt` (attribute-file layout, float values; written by
//! `d2ae-ingest synth`) continuous factors. A listed image missing from a present metadata file is
//! an error: silently training without its labels would be worse.
//!
//! CelebA's landmark order is `lefteye righteye nose leftmouth rightmouth` where "left" means the
//! image's left, i.e. the subject's right: exactly our order (subject's right eye first), so the
//! points are taken as they are.
//!
//! `list_bbox_celeba.txt` (`x_1 y_1 width height`, for the in-the-wild images only) gives the
//! labelled person's box: when the detector runs, it picks which detected face is aligned (see
//! [`crate::detect::best_in_box`]), so a photo with several faces yields the labelled person.
//! Given landmarks decide the crop without it.

use std::collections::HashMap;
use std::path::Path;

use super::{points_from_flat, Layout, Points, SourceDataset, SourceError, SourceItem};

/// The file whose presence makes `--layout auto` choose `celeba`.
pub const IDENTITY_FILE: &str = "identity_CelebA.txt";
const ATTR_FILE: &str = "list_attr_celeba.txt";
const PARTITION_FILE: &str = "list_eval_partition.txt";
const FACTORS_FILE: &str = "list_factors_d2ae.txt";
const LANDMARKS_FILE: &str = "list_landmarks_celeba.txt";
const LANDMARKS_ALIGN_FILE: &str = "list_landmarks_align_celeba.txt";
const BBOX_FILE: &str = "list_bbox_celeba.txt";
/// Image folders, in the order they are looked for.
const IMAGE_DIRS: &[&str] = &["img_celeba", "img_align_celeba", "images"];

/// Read a CelebA root.
pub fn load(root: &Path) -> Result<SourceDataset, SourceError> {
    let image_dir = IMAGE_DIRS
        .iter()
        .find(|d| root.join(d).is_dir())
        .ok_or_else(|| SourceError::Invalid {
            path: root.to_owned(),
            message: format!("no image folder (looked for {})", IMAGE_DIRS.join(", ")),
        })?;
    // The aligned crops have their own landmark file; the in-the-wild photos the other one.
    let landmarks_file = if *image_dir == "img_align_celeba" {
        LANDMARKS_ALIGN_FILE
    } else {
        LANDMARKS_FILE
    };

    let identities = read_identities(&root.join(IDENTITY_FILE))?;
    let attrs = optional(root, ATTR_FILE, |p| read_table(p, parse_sign))?;
    let factors = optional(root, FACTORS_FILE, |p| read_table(p, parse_float))?;
    let partition = optional(root, PARTITION_FILE, read_partition)?;
    let landmarks = optional(root, landmarks_file, read_landmarks)?;
    // The boxes describe the in-the-wild photos; the aligned crops are never detected.
    let boxes = if *image_dir == "img_align_celeba" {
        None
    } else {
        optional(root, BBOX_FILE, read_boxes)?
    };

    let mut items = Vec::with_capacity(identities.len());
    for (image, identity) in identities {
        let attributes =
            lookup(&attrs, &image, root, ATTR_FILE)?.map(|v| v.iter().map(|b| Some(*b)).collect());
        let factor_values = lookup(&factors, &image, root, FACTORS_FILE)?
            .map(|v| v.iter().map(|f| Some(*f)).collect());
        let split = lookup(&partition, &image, root, PARTITION_FILE)?.cloned();
        let points = lookup(&landmarks, &image, root, landmarks_file)?.cloned();
        let face_box = lookup(&boxes, &image, root, BBOX_FILE)?.copied();
        items.push(SourceItem {
            source: format!("{image_dir}/{image}"),
            path: root.join(image_dir).join(&image),
            identity,
            landmarks: points,
            face_box,
            attributes: attributes.unwrap_or_default(),
            factors: factor_values.unwrap_or_default(),
            split,
        });
    }
    Ok(SourceDataset {
        layout: Layout::Celeba,
        root: root.to_owned(),
        items,
        attributes: attrs.map(|t| t.names).unwrap_or_default(),
        factors: factors.map(|t| t.names).unwrap_or_default(),
    })
}

/// A metadata file keyed by image name.
trait Keyed {
    type Value;
    fn get(&self, image: &str) -> Option<&Self::Value>;
}

impl<V> Keyed for HashMap<String, V> {
    type Value = V;
    fn get(&self, image: &str) -> Option<&V> {
        HashMap::get(self, image)
    }
}

/// `list_attr_celeba.txt`-style table: a count line, a names line, then `image v1 v2 ...`.
struct Table<T> {
    names: Vec<String>,
    rows: HashMap<String, Vec<T>>,
}

impl<T> Keyed for Table<T> {
    type Value = Vec<T>;
    fn get(&self, image: &str) -> Option<&Vec<T>> {
        self.rows.get(image)
    }
}

fn optional<T>(
    root: &Path,
    name: &str,
    read: impl FnOnce(&Path) -> Result<T, SourceError>,
) -> Result<Option<T>, SourceError> {
    let path = root.join(name);
    if path.is_file() {
        read(&path).map(Some)
    } else {
        Ok(None)
    }
}

fn lookup<'a, K: Keyed>(
    file: &'a Option<K>,
    image: &str,
    root: &Path,
    name: &str,
) -> Result<Option<&'a K::Value>, SourceError> {
    match file {
        None => Ok(None),
        Some(f) => f.get(image).map(Some).ok_or_else(|| SourceError::Invalid {
            path: root.join(name),
            message: format!("no entry for {image}, which {IDENTITY_FILE} lists"),
        }),
    }
}

fn read_text(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|e| SourceError::io(path, e))
}

/// Non-empty lines with their 1-based line numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

fn read_identities(path: &Path) -> Result<Vec<(String, String)>, SourceError> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (n, line) in lines(&text) {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(image), Some(id), None) => out.push((image.to_owned(), id.to_owned())),
            _ => return Err(SourceError::parse(path, n, "expected `<image> <identity>`")),
        }
    }
    Ok(out)
}

fn read_partition(path: &Path) -> Result<HashMap<String, String>, SourceError> {
    let text = read_text(path)?;
    let mut out = HashMap::new();
    for (n, line) in lines(&text) {
        let mut fields = line.split_whitespace();
        let (Some(image), Some(part), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(SourceError::parse(path, n, "expected `<image> <0|1|2>`"));
        };
        let split = match part {
            "0" => "train",
            "1" => "val",
            "2" => "test",
            other => {
                return Err(SourceError::parse(
                    path,
                    n,
                    format!("partition {other:?} is not 0 (train), 1 (val) or 2 (test)"),
                ))
            }
        };
        out.insert(image.to_owned(), split.to_owned());
    }
    Ok(out)
}

fn read_landmarks(path: &Path) -> Result<HashMap<String, Points>, SourceError> {
    let table = read_table(path, parse_float)?;
    if table.names.len() != 10 {
        return Err(SourceError::parse(
            path,
            2,
            format!("expected 10 landmark columns, found {}", table.names.len()),
        ));
    }
    table
        .rows
        .into_iter()
        .map(|(image, values)| {
            let points = points_from_flat(&values).map_err(|m| SourceError::Invalid {
                path: path.to_owned(),
                message: format!("{image}: {m}"),
            })?;
            Ok((image, points))
        })
        .collect()
}

/// `list_bbox_celeba.txt` → `[x1, y1, x2, y2]` per image.
fn read_boxes(path: &Path) -> Result<HashMap<String, [f32; 4]>, SourceError> {
    let table = read_table(path, parse_float)?;
    if table.names.len() != 4 {
        return Err(SourceError::parse(
            path,
            2,
            format!(
                "expected 4 box columns (x_1 y_1 width height), found {}",
                table.names.len()
            ),
        ));
    }
    table
        .rows
        .into_iter()
        .map(|(image, v)| {
            if !(v[2] > 0.0 && v[3] > 0.0) {
                return Err(SourceError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "{image}: box width and height must be positive, got {} x {}",
                        v[2], v[3]
                    ),
                });
            }
            Ok((image, [v[0], v[1], v[0] + v[2], v[1] + v[3]]))
        })
        .collect()
}

fn parse_sign(v: &str) -> Result<bool, String> {
    match v {
        "1" => Ok(true),
        "-1" => Ok(false),
        other => Err(format!("attribute value {other:?} is not 1 or -1")),
    }
}

fn parse_float(v: &str) -> Result<f32, String> {
    v.parse::<f32>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("{v:?} is not a finite number"))
}

/// Read a count line, a names line and `image v1 v2 ...` rows, checking widths and the count.
fn read_table<T>(
    path: &Path,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Table<T>, SourceError> {
    let text = read_text(path)?;
    let mut lines = lines(&text);
    let (_, count_line) = lines
        .next()
        .ok_or_else(|| SourceError::parse(path, 1, "empty file (expected a row count)"))?;
    let count: usize = count_line
        .parse()
        .map_err(|_| SourceError::parse(path, 1, format!("{count_line:?} is not a row count")))?;
    let (_, names_line) = lines
        .next()
        .ok_or_else(|| SourceError::parse(path, 2, "missing the column names line"))?;
    // `list_bbox_celeba.txt` names its first column (`image_id`); the other files do not.
    let names: Vec<String> = names_line
        .split_whitespace()
        .skip_while(|n| *n == "image_id")
        .map(str::to_owned)
        .collect();
    let mut rows = HashMap::with_capacity(count);
    for (n, line) in lines {
        let mut fields = line.split_whitespace();
        let image = fields.next().unwrap_or_default().to_owned();
        let values = fields
            .map(&parse)
            .collect::<Result<Vec<T>, String>>()
            .map_err(|m| SourceError::parse(path, n, m))?;
        if values.len() != names.len() {
            return Err(SourceError::parse(
                path,
                n,
                format!("{} values for {} columns", values.len(), names.len()),
            ));
        }
        rows.insert(image, values);
    }
    if rows.len() != count {
        return Err(SourceError::Invalid {
            path: path.to_owned(),
            message: format!("header says {count} rows, found {}", rows.len()),
        });
    }
    Ok(Table { names, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, name: &str, text: &str) {
        std::fs::write(root.join(name), text).unwrap();
    }

    fn mini_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("images")).unwrap();
        write(root, IDENTITY_FILE, "000002.jpg 7\n000001.jpg 12\n");
        write(
            root,
            ATTR_FILE,
            "2\nSmiling Male \n000001.jpg  1 -1\n000002.jpg -1  1\n",
        );
        write(root, PARTITION_FILE, "000001.jpg 0\n000002.jpg 2\n");
        write(
            root,
            LANDMARKS_FILE,
            "2\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n\
             000001.jpg 69 109 106 113 77 142 73 152 108 154\n\
             000002.jpg 1 2 3 4 5 6 7 8 9 10\n",
        );
        dir
    }

    #[test]
    fn reads_identities_attributes_partition_and_landmarks() {
        let dir = mini_root();
        let ds = load(dir.path()).unwrap();
        assert_eq!(ds.layout, Layout::Celeba);
        assert_eq!(ds.attributes, vec!["Smiling", "Male"]);
        assert_eq!(ds.items.len(), 2);
        let first = &ds.items[1];
        assert_eq!(first.source, "images/000001.jpg");
        assert_eq!(first.identity, "12");
        assert_eq!(first.attributes, vec![Some(true), Some(false)]);
        assert_eq!(first.split.as_deref(), Some("train"));
        // CelebA "lefteye" (image left) is the subject's right eye: our first point.
        assert_eq!(first.landmarks.as_ref().unwrap()[0], [69.0, 109.0]);
        assert_eq!(first.landmarks.as_ref().unwrap()[4], [108.0, 154.0]);
        assert_eq!(ds.items[0].split.as_deref(), Some("test"));
        assert!(ds.factors.is_empty());
    }

    #[test]
    fn reads_the_factor_extension() {
        let dir = mini_root();
        write(
            dir.path(),
            FACTORS_FILE,
            "2\nbg_r bg_g\n000001.jpg 0.25 -1.5\n000002.jpg 0 1e-3\n",
        );
        let ds = load(dir.path()).unwrap();
        assert_eq!(ds.factors, vec!["bg_r", "bg_g"]);
        assert_eq!(ds.items[1].factors, vec![Some(0.25), Some(-1.5)]);
        assert_eq!(ds.items[0].factors, vec![Some(0.0), Some(0.001)]);
    }

    #[test]
    fn bad_metadata_is_reported_with_file_and_line() {
        let dir = mini_root();
        write(
            dir.path(),
            ATTR_FILE,
            "2\nSmiling Male\n000001.jpg 1 0\n000002.jpg 1 1\n",
        );
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("list_attr_celeba.txt:3") && err.contains("\"0\""),
            "{err}"
        );

        let dir = mini_root();
        write(dir.path(), PARTITION_FILE, "000001.jpg 0\n");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no entry for 000002.jpg"), "{err}");

        let dir = mini_root();
        write(
            dir.path(),
            ATTR_FILE,
            "3\nSmiling Male\n000001.jpg 1 1\n000002.jpg 1 1\n",
        );
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("header says 3 rows, found 2"), "{err}");
    }

    #[test]
    fn reads_the_real_mini_set() {
        // The crate's directory as `cargo test` sets it at run time (see ingest/tests/support).
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        );
        let data = std::env::var_os("D2AE_SHARED_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate_dir.join("../../shared/data"));
        let root = data.join("celeba-mini");
        let ds = load(&root).unwrap();
        assert_eq!(ds.items.len(), 20);
        assert_eq!(ds.attributes.len(), 40);
        assert_eq!(ds.attributes[0], "5_o_Clock_Shadow");
        let mut ids: Vec<_> = ds.items.iter().map(|i| i.identity.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5);
        assert!(ds.items.iter().all(|i| i.split.as_deref() == Some("train")));
        assert!(ds
            .items
            .iter()
            .all(|i| i.path.is_file() && i.landmarks.is_none()));
    }
}
