//! Raw dataset layouts → one flat list of [`SourceItem`]s.
//!
//! Every layout (a folder per identity, the CelebA root, a CSV/JSONL manifest) is read up front into
//! the same in-memory list, so that splitting, ordering and resuming work the same whatever the
//! input. Reading the listing is cheap next to decoding the photos, and having it whole lets the
//! plan be a pure function of the inputs (the basis of byte-identical, resumable output).
//!
//! Per-image attributes and factors are stored as vectors aligned with the dataset's name lists
//! rather than per-item maps: CelebA has 40 attributes × 200k images, and maps would cost ~1 GB.

pub mod celeba;
pub mod folders;
pub mod manifest;

use std::path::{Path, PathBuf};

/// Landmarks in source-image pixels: 5 points (right eye, left eye, nose, right mouth corner, left
/// mouth corner, the subject's right first, i.e. image-left first) or only the 2 eyes.
pub type Points = Vec<[f32; 2]>;

/// How the source is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `manifest` for a file, `celeba` for a folder with `identity_CelebA.txt`, else `folders`.
    Auto,
    /// `root/<identity>/<image>` (CASIA-WebFace, LFW, VGGFace2 style).
    Folders,
    /// The CelebA root with its metadata files.
    Celeba,
    /// A CSV or JSONL manifest file.
    Manifest,
}

/// One input photo.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceItem {
    /// Path relative to the dataset root (`/`-separated): the sample key is derived from it.
    pub source: String,
    /// Where to read the file.
    pub path: PathBuf,
    /// Identity name as the source spells it.
    pub identity: String,
    /// Landmarks given by the source, if any.
    pub landmarks: Option<Points>,
    /// The labelled person's face box `[x1, y1, x2, y2]` in source pixels (CelebA's
    /// `list_bbox_celeba.txt`, a manifest's box): with the detector, picks which detected face to
    /// align. Not yet checked against the photo (that is [`crate::face::check_box`]'s job).
    pub face_box: Option<[f32; 4]>,
    /// Values of [`SourceDataset::attributes`], in that order (`None` = not given).
    pub attributes: Vec<Option<bool>>,
    /// Values of [`SourceDataset::factors`], in that order.
    pub factors: Vec<Option<f32>>,
    /// The dataset's own split for this image, if it has one.
    pub split: Option<String>,
}

/// A listed dataset.
#[derive(Debug, Clone)]
pub struct SourceDataset {
    /// The layout that was read (never `Auto`).
    pub layout: Layout,
    /// The dataset root (the manifest's folder for a manifest).
    pub root: PathBuf,
    /// Every input photo, in listing order.
    pub items: Vec<SourceItem>,
    /// Binary attribute names.
    pub attributes: Vec<String>,
    /// Continuous factor names.
    pub factors: Vec<String>,
}

/// Problems reading a dataset listing (not the photos: those become rejects).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no images found under {path} (expected {expected})")]
    Empty { path: PathBuf, expected: String },
}

impl SourceError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        SourceError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn parse(path: &Path, line: usize, message: impl Into<String>) -> Self {
        SourceError::Parse {
            path: path.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// Image file extensions the listing picks up (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "bmp", // read
    "gif", "tif", "tiff", "heic", "heif", "avif", "jp2",
    "jxl", // listed, then rejected with a reason
];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`]: a photo a user would expect ingest to take or
/// to report. Formats we cannot decode are listed too, so that each gets a `rejects.jsonl` line
/// (`unsupported_format`) instead of vanishing silently.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The layout `auto` resolves to for `source`.
pub fn detect_layout(source: &Path) -> Result<Layout, SourceError> {
    if !source.exists() {
        return Err(SourceError::Missing {
            path: source.to_owned(),
        });
    }
    Ok(if source.is_file() {
        Layout::Manifest
    } else if source.join(celeba::IDENTITY_FILE).is_file() {
        Layout::Celeba
    } else {
        Layout::Folders
    })
}

/// List the dataset at `source` in `layout` (`Auto` is resolved first).
pub fn load(source: &Path, layout: Layout) -> Result<SourceDataset, SourceError> {
    let layout = match layout {
        Layout::Auto => detect_layout(source)?,
        other => other,
    };
    if !source.exists() {
        return Err(SourceError::Missing {
            path: source.to_owned(),
        });
    }
    let dataset = match layout {
        Layout::Folders => folders::load(source)?,
        Layout::Celeba => celeba::load(source)?,
        Layout::Manifest => manifest::load(source)?,
        Layout::Auto => unreachable!("resolved above"),
    };
    if dataset.items.is_empty() {
        return Err(SourceError::Empty {
            path: source.to_owned(),
            expected: match layout {
                Layout::Folders => "root/<identity>/<image>".into(),
                Layout::Celeba => "images listed in identity_CelebA.txt".into(),
                _ => "at least one manifest row".into(),
            },
        });
    }
    Ok(dataset)
}

/// Parse landmarks given as a flat list of 10 (5 points) or 4 (2 eyes) finite numbers.
pub fn points_from_flat(values: &[f32]) -> Result<Points, String> {
    if values.len() != 10 && values.len() != 4 {
        return Err(format!(
            "landmarks need 10 numbers (5 points) or 4 (2 eyes), got {}",
            values.len()
        ));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("landmark value {bad} is not a finite number"));
    }
    Ok(values.chunks(2).map(|p| [p[0], p[1]]).collect())
}

/// A `/`-separated relative path string for `path` under `root`.
pub(crate) fn relative_source(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_layout() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "path,identity\n").unwrap();
        assert_eq!(detect_layout(&manifest).unwrap(), Layout::Manifest);
        assert_eq!(detect_layout(dir.path()).unwrap(), Layout::Folders);
        std::fs::write(dir.path().join(celeba::IDENTITY_FILE), "").unwrap();
        assert_eq!(detect_layout(dir.path()).unwrap(), Layout::Celeba);
        assert!(matches!(
            detect_layout(&dir.path().join("nope")),
            Err(SourceError::Missing { .. })
        ));
    }

    #[test]
    fn flat_landmarks_become_points() {
        let p = points_from_flat(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(p, vec![[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(points_from_flat(&[0.0; 10]).unwrap().len(), 5);
        assert!(points_from_flat(&[0.0; 6]).unwrap_err().contains("got 6"));
        assert!(points_from_flat(&[f32::NAN, 0.0, 0.0, 0.0]).is_err());
    }

    #[test]
    fn image_extensions_are_case_insensitive() {
        assert!(is_image(Path::new("a/B.JPG")));
        assert!(is_image(Path::new("x.webp")));
        assert!(!is_image(Path::new("notes.txt")));
        assert!(!is_image(Path::new("noext")));
        assert!(
            is_image(Path::new("anim.GIF")),
            "listed so that it is rejected with a reason"
        );
    }
}
