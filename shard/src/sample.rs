//! Per-sample metadata (the `.json` member) and reject records (`rejects.jsonl`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `<key>.json` member of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleMeta {
    /// The sample key (also the member name stem).
    pub key: String,
    /// Identity class index (the same number as the `.cls` member).
    pub identity: u32,
    /// Identity name in the source dataset.
    pub identity_name: String,
    /// Source image path relative to the dataset root given to ingest (`/`-separated).
    pub source: String,
    /// Split this sample belongs to.
    pub split: String,
    /// The 5 landmarks (right eye, left eye, nose, right mouth corner, left mouth corner, the
    /// subject's right first) in crop pixel coordinates, or only the 2 eyes when that is all the
    /// source had. Empty for `--aligned` inputs without landmarks.
    #[serde(default)]
    pub landmarks: Vec<[f32; 2]>,
    /// Face detector score when the landmarks came from the detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector_score: Option<f32>,
    /// Binary attributes by name (`true` = present; CelebA's `1`).
    #[serde(default)]
    pub attributes: BTreeMap<String, bool>,
    /// Continuous factors by name, when the source has them (synthetic data).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub factors: BTreeMap<String, f32>,
}

/// One line of `rejects.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Source path relative to the dataset root.
    pub source: String,
    /// Machine-readable reason, e.g. `decode_error`, `no_face`, `bad_landmarks`, `too_small`,
    /// `too_many_pixels`, `missing_file`, `excluded_identity`.
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_metadata_without_optional_fields_parses() {
        let meta: SampleMeta = serde_json::from_str(
            r#"{"key":"k","identity":1,"identity_name":"x","source":"a/b.jpg","split":"train"}"#,
        )
        .unwrap();
        assert!(meta.landmarks.is_empty());
        assert!(meta.attributes.is_empty());
        assert_eq!(meta.detector_score, None);
    }
}
