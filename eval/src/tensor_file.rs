//! One small writer for eval's own safetensors files (feature files, SVM directions): named
//! little-endian tensors plus string metadata, written through a temporary file that is renamed
//! into place, so a killed run never leaves half a file under the final name.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

/// One tensor to write: name, dtype, shape and its data as little-endian bytes.
pub type HostTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Why a tensor file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: {source}")]
    Format {
        path: String,
        source: safetensors::SafeTensorError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Serialise `tensors` with `metadata` and write them to `path` atomically (creating its
/// directory).
pub fn write(
    path: &Path,
    tensors: &[HostTensor],
    metadata: HashMap<String, String>,
) -> Result<(), TensorFileError> {
    let shown = || path.display().to_string();
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TensorFileError::Format {
            path: shown(),
            source,
        })?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|source| {
        TensorFileError::Format {
            path: shown(),
            source,
        }
    })?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` through `<path>.tmp` and a rename (creating the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TensorFileError> {
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |source| TensorFileError::Write { path: p, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_file_python_style_readers_parse_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/t.safetensors");
        let tensors = vec![(
            "x".to_string(),
            Dtype::F32,
            vec![2],
            f32_bytes(&[1.5, -2.0]),
        )];
        write(
            &path,
            &tensors,
            HashMap::from([("format".to_string(), "test".to_string())]),
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("x").unwrap().data(), &f32_bytes(&[1.5, -2.0])[..]);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["t.safetensors"]);
        // A shape that does not fit the data is an error naming the file, and writes nothing.
        let bad = vec![("y".to_string(), Dtype::F32, vec![3], f32_bytes(&[1.0]))];
        let err = write(&dir.path().join("bad.safetensors"), &bad, HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("bad.safetensors"), "{err}");
        assert!(!dir.path().join("bad.safetensors").exists());
    }
}
