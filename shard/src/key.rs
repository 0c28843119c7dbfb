//! Sample keys and shard names.
//!
//! A key must be unique within a dataset, stable across runs (so resume and re-ingest agree), safe
//! as a file name, and free of dots (webdataset splits a member name at its first dot). We keep a
//! readable stem of the source path and append a short hash of the full path, so two sources whose
//! stems sanitise to the same text still get different keys.

use sha2::{Digest, Sha256};

/// Longest readable part kept from the source path.
const MAX_STEM: usize = 80;

/// The key of the sample made from `source` (its path relative to the dataset root, `/`-separated).
pub fn sample_key(source: &str) -> String {
    let without_ext = match source.rfind('.') {
        Some(dot) if !source[dot..].contains('/') => &source[..dot],
        _ => source,
    };
    let mut stem: String = without_ext
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.len() > MAX_STEM {
        stem = stem[stem.len() - MAX_STEM..].to_owned();
    }
    let digest = Sha256::digest(source.as_bytes());
    format!("{stem}_{}", hex::encode(&digest[..4]))
}

/// File name of shard number `n` of `split`: `train-000000.tar.zst`.
pub fn shard_name(split: &str, n: usize) -> String {
    format!("{split}-{n:06}.tar.zst")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_safe_and_dot_free() {
        let k = sample_key("Anthony_Hopkins/Anthony_Hopkins_0001.jpg");
        assert_eq!(k, sample_key("Anthony_Hopkins/Anthony_Hopkins_0001.jpg"));
        assert!(
            k.starts_with("Anthony_Hopkins_Anthony_Hopkins_0001_"),
            "{k}"
        );
        assert!(!k.contains('.') && !k.contains('/'));
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }

    #[test]
    fn colliding_stems_get_different_keys() {
        assert_ne!(sample_key("a b/c.jpg"), sample_key("a_b/c.jpg"));
        assert_ne!(sample_key("x.jpg"), sample_key("x.png"));
    }

    #[test]
    fn long_paths_are_shortened() {
        let long = format!("{}/img.jpg", "d".repeat(300));
        assert!(sample_key(&long).len() <= MAX_STEM + 9);
    }

    #[test]
    fn shard_names_are_zero_padded() {
        assert_eq!(shard_name("val", 12), "val-000012.tar.zst");
    }
}
