//! One photo → one sample (image + `.cls` + `.json`), or a reject with a reason.
//!
//! The face work (decode, detect, align, encode) sits behind [`SampleMaker`], so the pipeline can
//! be exercised with a cheap stand-in and the face code evolves without touching the pipeline.
//! Everything else about a sample (reading the file, its key, class and metadata JSON) is here.

use std::collections::BTreeMap;
use std::path::Path;

use d2ae_shard::{Reject, SampleMeta};

use crate::align::Landmarks;
use crate::detect::Detector;
use crate::face::{prepare_face_in_box, FaceConfig};
use crate::image_io::{encode_jpeg, encode_png};
use crate::plan::Planned;
use crate::source::{SourceDataset, SourceItem};

/// The image part of a sample, as the face code made it.
#[derive(Debug, Clone, PartialEq)]
pub struct MadeImage {
    /// Encoded image bytes (the member `<key>.<ext>`).
    pub bytes: Vec<u8>,
    /// Landmarks in crop coordinates (empty when there were none, e.g. `--aligned`).
    pub landmarks: Vec<[f32; 2]>,
    /// Detector score when the detector supplied the landmarks.
    pub detector_score: Option<f32>,
}

/// Why a photo was not made into a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeReject {
    /// Machine-readable reason (`decode_error`, `no_face`, ...).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
}

/// Turns source bytes into an encoded, aligned face image.
pub trait SampleMaker: Sync {
    /// Extension of the images made (`jpg` or `png`).
    fn ext(&self) -> &'static str;
    /// Make the image for one photo, given its bytes, the source's landmarks and the labelled
    /// face's box (if any).
    fn make(
        &self,
        bytes: &[u8],
        landmarks: Option<&[[f32; 2]]>,
        face_box: Option<[f32; 4]>,
    ) -> Result<MadeImage, MakeReject>;
}

/// How crops are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JPEG at this quality (1–100).
    Jpeg(u8),
    /// Lossless PNG.
    Png,
}

/// The real maker: [`prepare_face_in_box`] (decode, detect when needed, align) then encode.
pub struct FaceMaker {
    /// Used for photos without landmarks.
    pub detector: Option<Detector>,
    pub config: FaceConfig,
    pub encoding: Encoding,
}

impl SampleMaker for FaceMaker {
    fn ext(&self) -> &'static str {
        match self.encoding {
            Encoding::Jpeg(_) => "jpg",
            Encoding::Png => "png",
        }
    }

    fn make(
        &self,
        bytes: &[u8],
        landmarks: Option<&[[f32; 2]]>,
        face_box: Option<[f32; 4]>,
    ) -> Result<MadeImage, MakeReject> {
        let landmarks = landmarks.map(|l| Landmarks(l.to_vec()));
        let face = prepare_face_in_box(
            bytes,
            landmarks.as_ref(),
            face_box,
            self.detector.as_ref(),
            &self.config,
        )
        .map_err(|r| MakeReject {
            reason: r.reason().to_owned(),
            detail: r.to_string(),
        })?;
        let encoded = match self.encoding {
            Encoding::Jpeg(q) => encode_jpeg(&face.image, q),
            Encoding::Png => encode_png(&face.image),
        }
        .map_err(|e| MakeReject {
            reason: ENCODE_ERROR.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(MadeImage {
            bytes: encoded,
            landmarks: face.landmarks,
            detector_score: face.detector_score,
        })
    }
}

/// Reason for a crop that could not be encoded.
pub const ENCODE_ERROR: &str = "encode_error";

/// A sample ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedSample {
    pub key: String,
    pub identity: u32,
    pub image: Vec<u8>,
    pub json: Vec<u8>,
}

impl EncodedSample {
    /// The `.cls` member: the class index in ASCII decimal.
    pub fn cls(&self) -> Vec<u8> {
        d2ae_shard::encode_class(self.identity)
    }
}

/// What became of one planned item.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sample(EncodedSample),
    Reject(Reject),
}

/// Reason for a listed file that is not there.
pub const MISSING_FILE: &str = "missing_file";
/// Reason for a file that exists but cannot be read.
pub const READ_ERROR: &str = "read_error";

/// Reason for a path that is a directory, FIFO, socket or device rather than a file.
pub const NOT_A_FILE: &str = "not_a_file";
/// Reason for a file larger than [`MAX_INPUT_BYTES`].
pub const TOO_LARGE: &str = "too_large";
/// Largest input file read into memory: far above any photo, far below the machine's memory.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// The bytes of the input file at `path`, or a reject reason and detail. Only regular files (a
/// symlink to one included) are opened: a FIFO named `x.jpg` would block the read forever, a
/// device could be endless. The detail never quotes the file's content.
pub fn read_input(path: &Path) -> Result<Vec<u8>, (&'static str, String)> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((MISSING_FILE, format!("{shown} does not exist")))
        }
        Err(e) => return Err((READ_ERROR, format!("cannot read {shown}: {e}"))),
    };
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err((NOT_A_FILE, format!("{shown} is {what}, not a regular file")));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err((
            TOO_LARGE,
            format!(
                "{shown} is {} bytes, over the {MAX_INPUT_BYTES}-byte limit for one photo",
                meta.len()
            ),
        ));
    }
    let read = std::fs::File::open(path).and_then(|f| {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The size can change after the check; never read more than the limit.
        f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(b) if b.len() as u64 > MAX_INPUT_BYTES => Err((
            TOO_LARGE,
            format!("{shown} grew past the {MAX_INPUT_BYTES}-byte limit while being read"),
        )),
        Ok(b) => Ok(b),
        Err(e) => Err((READ_ERROR, format!("cannot read {shown}: {e}"))),
    }
}

/// Read, make and describe one planned item of `split`.
pub fn make_sample(
    dataset: &SourceDataset,
    identities: &[String],
    split: &str,
    planned: &Planned,
    maker: &dyn SampleMaker,
) -> Outcome {
    let item = &dataset.items[planned.item];
    let reject = |reason: &str, detail: String| {
        Outcome::Reject(Reject {
            source: item.source.clone(),
            reason: reason.to_owned(),
            detail,
        })
    };
    let bytes = match read_input(&item.path) {
        Ok(b) => b,
        Err((reason, detail)) => return reject(reason, detail),
    };
    let made = match maker.make(&bytes, item.landmarks.as_deref(), item.face_box) {
        Ok(m) => m,
        Err(r) => return reject(&r.reason, r.detail),
    };
    let meta = sample_meta(dataset, item, identities, split, planned, &made);
    Outcome::Sample(EncodedSample {
        key: planned.key.clone(),
        identity: planned.identity,
        image: made.bytes,
        json: serde_json::to_vec(&meta).expect("sample metadata serialises"),
    })
}

fn sample_meta(
    dataset: &SourceDataset,
    item: &SourceItem,
    identities: &[String],
    split: &str,
    planned: &Planned,
    made: &MadeImage,
) -> SampleMeta {
    let attributes: BTreeMap<String, bool> = dataset
        .attributes
        .iter()
        .zip(&item.attributes)
        .filter_map(|(name, v)| v.map(|v| (name.clone(), v)))
        .collect();
    let factors: BTreeMap<String, f32> = dataset
        .factors
        .iter()
        .zip(&item.factors)
        .filter_map(|(name, v)| v.map(|v| (name.clone(), v)))
        .collect();
    SampleMeta {
        key: planned.key.clone(),
        identity: planned.identity,
        identity_name: identities[planned.identity as usize].clone(),
        source: item.source.clone(),
        split: split.to_owned(),
        landmarks: made.landmarks.iter().map(|p| p.map(round_px)).collect(),
        detector_score: made.detector_score.map(|s| (s * 1e4).round() / 1e4),
        attributes,
        factors,
    }
}

/// Landmarks are stored to 1/100 px: enough for any use, and it keeps the JSON short and free of
/// float-printing noise.
fn round_px(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, PlanOptions};
    use crate::source::{Layout, SourceItem};

    struct Echo;
    impl SampleMaker for Echo {
        fn ext(&self) -> &'static str {
            "jpg"
        }
        fn make(
            &self,
            bytes: &[u8],
            lm: Option<&[[f32; 2]]>,
            _: Option<[f32; 4]>,
        ) -> Result<MadeImage, MakeReject> {
            if bytes.starts_with(b"bad") {
                return Err(MakeReject {
                    reason: "decode_error".into(),
                    detail: "not an image".into(),
                });
            }
            Ok(MadeImage {
                bytes: bytes.to_vec(),
                landmarks: lm.map(|l| l.to_vec()).unwrap_or_default(),
                detector_score: Some(0.912_345),
            })
        }
    }

    #[test]
    fn builds_metadata_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"good").unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"bad!").unwrap();
        let item = |name: &str, id: &str| SourceItem {
            source: format!("{id}/{name}"),
            path: dir.path().join(name),
            identity: id.into(),
            landmarks: Some(vec![[1.234_567, 2.0], [3.0, 4.0]]),
            face_box: None,
            attributes: vec![Some(true), None],
            factors: vec![Some(0.5)],
            split: Some("train".into()),
        };
        let ds = SourceDataset {
            layout: Layout::Manifest,
            root: dir.path().into(),
            items: vec![item("a.jpg", "x"), item("b.jpg", "y"), item("c.jpg", "y")],
            attributes: vec!["Smiling".into(), "Male".into()],
            factors: vec!["light".into()],
        };
        let p = plan(&ds, &PlanOptions::default()).unwrap();
        let train = &p.splits[0];
        let by_item = |i: usize| train.items.iter().find(|x| x.item == i).unwrap();

        let Outcome::Sample(s) = make_sample(&ds, &p.identities, "train", by_item(0), &Echo) else {
            panic!("a.jpg should be accepted");
        };
        assert_eq!(s.image, b"good");
        assert_eq!(s.cls(), b"0");
        let meta: SampleMeta = serde_json::from_slice(&s.json).unwrap();
        assert_eq!(meta.key, s.key);
        assert_eq!(meta.identity_name, "x");
        assert_eq!(meta.source, "x/a.jpg");
        assert_eq!(meta.landmarks, vec![[1.23, 2.0], [3.0, 4.0]]);
        assert_eq!(meta.detector_score, Some(0.9123));
        assert_eq!(
            meta.attributes,
            BTreeMap::from([("Smiling".to_string(), true)])
        );
        assert_eq!(meta.factors, BTreeMap::from([("light".to_string(), 0.5)]));

        let Outcome::Reject(r) = make_sample(&ds, &p.identities, "train", by_item(1), &Echo) else {
            panic!("b.jpg should be rejected");
        };
        assert_eq!(
            (r.source.as_str(), r.reason.as_str()),
            ("y/b.jpg", "decode_error")
        );
        let Outcome::Reject(r) = make_sample(&ds, &p.identities, "train", by_item(2), &Echo) else {
            panic!("c.jpg is missing");
        };
        assert_eq!(r.reason, MISSING_FILE);
    }

    #[test]
    fn only_regular_files_are_read_and_no_bytes_reach_the_reject() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.jpg");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Reading a FIFO would block forever; it is refused from its metadata instead.
        let (reason, detail) = read_input(&fifo).unwrap_err();
        assert_eq!(reason, NOT_A_FILE);
        assert!(detail.contains("a FIFO"), "{detail}");
        std::fs::create_dir(dir.path().join("d.jpg")).unwrap();
        assert_eq!(
            read_input(&dir.path().join("d.jpg")).unwrap_err().0,
            NOT_A_FILE
        );
        // A symlink to a file is read as the file.
        std::fs::write(dir.path().join("real.jpg"), b"bytes").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.jpg"), dir.path().join("link.jpg"))
            .unwrap();
        assert_eq!(read_input(&dir.path().join("link.jpg")).unwrap(), b"bytes");
        // A secret behind a photo's name: rejected without a byte of it in the detail.
        let secret = b"root:$6$saltsalt$hashhashhash:19000:0:99999:7:::";
        let err = crate::image_io::decode_rgb(secret, &Default::default()).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("72") && !text.contains("root"), "{text}");
        assert_eq!(err.reason(), "unsupported_format");
        // A GIF is rejected with its format named.
        let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!";
        let err = crate::image_io::decode_rgb(gif, &Default::default()).unwrap_err();
        assert_eq!(err.reason(), "unsupported_format");
        assert!(err.to_string().contains("Gif"), "{err}");
    }
}
