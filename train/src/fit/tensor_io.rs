//! Named tch tensors ⇄ a safetensors byte buffer with string metadata.
//!
//! Checkpoints are one safetensors file, so that one upload (or one rename on disk) makes a
//! checkpoint appear whole, and so that Python's `safetensors` package reads it as it is.
//!
//! safetensors has no checksum of its own, and a flipped or overwritten byte in the data section
//! still parses. So every buffer we write carries `tensors_sha256` in its metadata: SHA-256 over
//! the tensors in name order, each as its name, dtype, shape and data ([`tensors_digest`]).
//! Reading checks it when it is present (files written before it existed have none).

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

/// Errors converting tensors to or from safetensors.
#[derive(Debug, thiserror::Error)]
pub enum TensorIoError {
    #[error("tensor {name:?} has kind {kind:?}, which checkpoints do not store")]
    UnsupportedKind { name: String, kind: Kind },
    #[error("not a valid safetensors file: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    #[error("tensor {name:?} has dtype {dtype:?}, which checkpoints do not store")]
    UnsupportedDtype { name: String, dtype: Dtype },
    #[error("the tensors do not match their checksum (data overwritten or corrupted): {TENSORS_SHA256} says {expected}, the data hashes to {found}")]
    Checksum { expected: String, found: String },
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

/// Metadata key of the tensors' checksum.
pub const TENSORS_SHA256: &str = "tensors_sha256";

/// SHA-256 of tensors given as (name, dtype, shape, data), in name order: each contributes its
/// name's length and bytes, its dtype's name, its rank and dimensions and its data's length and
/// bytes, lengths and dimensions as little-endian u64.
pub fn tensors_digest<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    let len = |n: usize| (n as u64).to_le_bytes();
    for (name, dtype, shape, data) in sorted {
        h.update(len(name.len()));
        h.update(name.as_bytes());
        let dtype = format!("{dtype:?}");
        h.update(len(dtype.len()));
        h.update(dtype.as_bytes());
        h.update(len(shape.len()));
        for &d in shape {
            h.update(len(d));
        }
        h.update(len(data.len()));
        h.update(data);
    }
    hex::encode(h.finalize())
}

fn dtype_of(name: &str, kind: Kind) -> Result<Dtype, TensorIoError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        kind => {
            return Err(TensorIoError::UnsupportedKind {
                name: name.to_owned(),
                kind,
            })
        }
    })
}

/// The tch kind of a safetensors dtype (`name` is for the error).
pub fn kind_of(name: &str, dtype: Dtype) -> Result<Kind, TensorIoError> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        dtype => {
            return Err(TensorIoError::UnsupportedDtype {
                name: name.to_owned(),
                dtype,
            })
        }
    })
}

/// Serialise `tensors` (any device) and `metadata` into safetensors bytes, adding the tensors'
/// checksum to the metadata.
pub fn to_safetensors(
    tensors: &BTreeMap<String, Tensor>,
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>, TensorIoError> {
    let mut host = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(name, t.kind())?;
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        if numel > 0 {
            t.f_copy_data_u8(&mut bytes, numel)?;
        }
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        host.push((name.clone(), dtype, shape, bytes));
    }
    metadata.insert(
        TENSORS_SHA256.to_owned(),
        tensors_digest(host.iter().map(|(name, dtype, shape, bytes)| {
            (name.as_str(), *dtype, shape.as_slice(), bytes.as_slice())
        })),
    );
    let views = host
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Named tensors and string metadata, as read from a safetensors buffer.
pub type TensorsAndMetadata = (BTreeMap<String, Tensor>, HashMap<String, String>);

/// Tensors (on the CPU) and metadata of a safetensors buffer, after checking the tensors against
/// their checksum when the metadata has one.
pub fn from_safetensors(bytes: &[u8]) -> Result<TensorsAndMetadata, TensorIoError> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes)?;
    let views = st.tensors();
    if let Some(expected) = metadata.get(TENSORS_SHA256) {
        let found = tensors_digest(
            views
                .iter()
                .map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())),
        );
        if &found != expected {
            return Err(TensorIoError::Checksum {
                expected: expected.clone(),
                found,
            });
        }
    }
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        let kind = kind_of(&name, view.dtype())?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        tensors.insert(name, t);
    }
    Ok((tensors, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_kinds_and_metadata() {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "a.weight".to_string(),
            Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]),
        );
        tensors.insert("b.count".to_string(), Tensor::from_slice(&[7i64, -1]));
        tensors.insert("scalar".to_string(), Tensor::from(2.5f64));
        let meta = HashMap::from([("step".to_string(), "12".to_string())]);
        let bytes = to_safetensors(&tensors, meta.clone()).unwrap();
        let (back, back_meta) = from_safetensors(&bytes).unwrap();
        assert_eq!(back_meta["step"], "12");
        assert_eq!(back_meta[TENSORS_SHA256].len(), 64);
        assert_eq!(back.len(), 3);
        for (name, t) in &tensors {
            let b = &back[name];
            assert_eq!(b.size(), t.size(), "{name}");
            assert_eq!(b.kind(), t.kind(), "{name}");
            assert!(b.equal(t), "{name}");
        }
    }

    #[test]
    fn overwritten_tensor_data_fails_its_checksum() {
        let tensors = BTreeMap::from([(
            "w".to_string(),
            Tensor::arange(64, (Kind::Float, Device::Cpu)),
        )]);
        let mut bytes = to_safetensors(&tensors, HashMap::new()).unwrap();
        let n = bytes.len();
        // The data section is at the end: overwrite a value in it (still valid safetensors).
        bytes[n - 10] ^= 0x55;
        let err = from_safetensors(&bytes).unwrap_err();
        assert!(matches!(err, TensorIoError::Checksum { .. }), "{err}");
        // A file without the checksum (older writer) still reads.
        let plain = safetensors::serialize(
            [(
                "w",
                TensorView::new(Dtype::F32, vec![1], &[0u8, 0, 128, 63]).unwrap(),
            )],
            None,
        )
        .unwrap();
        let (t, _) = from_safetensors(&plain).unwrap();
        assert_eq!(t["w"].double_value(&[0]), 1.0);
    }

    #[test]
    fn garbage_is_a_format_error() {
        assert!(matches!(
            from_safetensors(b"not a safetensors file"),
            Err(TensorIoError::Format(_))
        ));
    }
}
