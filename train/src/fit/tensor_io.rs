//! Named tch tensors ⇄ a safetensors byte buffer with string metadata.
//!
//! Checkpoints are one safetensors file, so that one upload (or one rename on disk) makes a
//! checkpoint appear whole, and so that Python's `safetensors` package reads it as it is.

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
    #[error(transparent)]
    Tch(#[from] tch::TchError),
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

/// Serialise `tensors` (any device) and `metadata` into safetensors bytes.
pub fn to_safetensors(
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
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

/// Tensors (on the CPU) and metadata of a safetensors buffer.
pub fn from_safetensors(bytes: &[u8]) -> Result<TensorsAndMetadata, TensorIoError> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
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
        assert_eq!(back_meta, meta);
        assert_eq!(back.len(), 3);
        for (name, t) in &tensors {
            let b = &back[name];
            assert_eq!(b.size(), t.size(), "{name}");
            assert_eq!(b.kind(), t.kind(), "{name}");
            assert!(b.equal(t), "{name}");
        }
    }

    #[test]
    fn garbage_is_a_format_error() {
        assert!(matches!(
            from_safetensors(b"not a safetensors file"),
            Err(TensorIoError::Format(_))
        ));
    }
}
