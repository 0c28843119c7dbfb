//! Model weights as one safetensors file that describes itself: every variable of the
//! `VarStore` (parameters, batch-norm statistics and the running σ of statistical augmentation)
//! under its `VarStore` name, and in the header's metadata the model config and the number of
//! identities, so [`load_model`] can rebuild the model without any other file.
//!
//! Why not `VarStore::save`: it writes no metadata, and its loader reports a bad file as a bare
//! `TchError` without the path or the variable. Reads are strict (every variable present with
//! its shape, nothing extra), so a checkpoint from another config fails loudly instead of
//! half-loading. Writes go to a temporary file that is renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tch::{nn, Device, Tensor};

use crate::fit::tensor_io::{kind_of, to_safetensors, TensorIoError};
use crate::model::{D2ae, ModelConfig, ModelError};

/// The `format` metadata value of files this module writes.
pub const FORMAT: &str = "d2ae-model/1";

/// What a checkpoint says about the model in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The config that built the model.
    pub config: ModelConfig,
    /// Rows of W_T / W_P.
    pub num_identities: i64,
    /// Free-form entries for the trainer (step, epoch, ...), stored as `extra.<key>`.
    pub extra: BTreeMap<String, String>,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The checkpoint.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid safetensors.
    #[error("checkpoint {path}: not a valid safetensors file: {source}")]
    Format {
        /// The checkpoint.
        path: PathBuf,
        /// The parser's error.
        source: safetensors::SafeTensorError,
    },
    /// The metadata is missing or unreadable.
    #[error("checkpoint {path}: bad metadata: {reason}")]
    Metadata {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor does not match the model's variable of the same name.
    #[error("checkpoint {path}: tensor `{name}`: {reason}")]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The variable name.
        name: String,
        /// Missing, shape or dtype mismatch.
        reason: String,
    },
    /// The file holds tensors the model does not have.
    #[error("checkpoint {path}: {} tensors the model does not have, e.g. `{}`", .names.len(), .names[0])]
    Unexpected {
        /// The checkpoint.
        path: PathBuf,
        /// The extra names, sorted.
        names: Vec<String>,
    },
    /// The metadata's config does not build a model.
    #[error("checkpoint {path}: {source}")]
    Model {
        /// The checkpoint.
        path: PathBuf,
        /// Why the model could not be built.
        source: ModelError,
    },
}

/// Write every variable of `vs` and the header to `path` (atomically).
pub fn save(vs: &nn::VarStore, header: &Header, path: &Path) -> Result<(), CheckpointError> {
    let meta_err = |reason: String| CheckpointError::Metadata {
        path: path.to_owned(),
        reason,
    };
    let config = serde_json::to_string(&header.config).map_err(|e| meta_err(e.to_string()))?;
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), config),
        (
            "num_identities".to_string(),
            header.num_identities.to_string(),
        ),
    ]);
    for (k, v) in &header.extra {
        metadata.insert(format!("extra.{k}"), v.clone());
    }

    // One tensor ⇄ safetensors conversion for model files and training checkpoints.
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let bytes = to_safetensors(&vars, metadata).map_err(|e| match e {
        TensorIoError::Format(source) => CheckpointError::Format {
            path: path.to_owned(),
            source,
        },
        TensorIoError::UnsupportedKind { name, kind } => CheckpointError::Tensor {
            path: path.to_owned(),
            name,
            reason: format!("unsupported kind {kind:?}"),
        },
        other => CheckpointError::Metadata {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })?;

    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|source| CheckpointError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })
}

fn header_of<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(Header, SafeTensors<'a>), CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|source| CheckpointError::Format {
        path: path.to_owned(),
        source,
    })?;
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|source| CheckpointError::Format {
            path: path.to_owned(),
            source,
        })?;
    let meta_err = |reason: String| CheckpointError::Metadata {
        path: path.to_owned(),
        reason,
    };
    let map = meta
        .metadata()
        .clone()
        .ok_or_else(|| meta_err("no metadata (not written by d2ae)".into()))?;
    let get = |key: &str| {
        map.get(key)
            .ok_or_else(|| meta_err(format!("no `{key}` entry")))
    };
    if get("format")? != FORMAT {
        return Err(meta_err(format!(
            "format `{}`, expected `{FORMAT}`",
            get("format")?
        )));
    }
    let config: ModelConfig =
        serde_json::from_str(get("config")?).map_err(|e| meta_err(format!("config: {e}")))?;
    let num_identities = get("num_identities")?
        .parse()
        .map_err(|e| meta_err(format!("num_identities: {e}")))?;
    let extra = map
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("extra.")?.to_string(), v.clone())))
        .collect();
    Ok((
        Header {
            config,
            num_identities,
            extra,
        },
        st,
    ))
}

/// The header of a checkpoint.
pub fn read_header(path: &Path) -> Result<Header, CheckpointError> {
    let bytes = read(path)?;
    Ok(header_of(path, &bytes)?.0)
}

/// Copy a checkpoint's tensors into the variables of `vs` (same names and shapes, nothing
/// missing or extra), and return its header.
pub fn load_into(vs: &nn::VarStore, path: &Path) -> Result<Header, CheckpointError> {
    let bytes = read(path)?;
    let (header, st) = header_of(path, &bytes)?;
    let vars = vs.variables();
    let tensor_err = |name: &str, reason: String| CheckpointError::Tensor {
        path: path.to_owned(),
        name: name.to_string(),
        reason,
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let view = st
            .tensor(name)
            .map_err(|_| tensor_err(name, "missing from the file".into()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if shape != var.size() {
            return Err(tensor_err(
                name,
                format!("shape {shape:?} in the file, {:?} in the model", var.size()),
            ));
        }
        let kind = kind_of(name, view.dtype()).map_err(|e| tensor_err(name, e.to_string()))?;
        let value = Tensor::from_data_size(view.data(), &shape, kind);
        tch::no_grad(|| var.shallow_clone().copy_(&value));
    }
    let mut extra: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !vars.contains_key(*n))
        .map(str::to_string)
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(CheckpointError::Unexpected {
            path: path.to_owned(),
            names: extra,
        });
    }
    Ok(header)
}

/// Rebuild the model a checkpoint was saved from, on `device`, with its weights loaded.
pub fn load_model(
    path: &Path,
    device: Device,
) -> Result<(nn::VarStore, D2ae, Header), CheckpointError> {
    let header = read_header(path)?;
    let vs = nn::VarStore::new(device);
    let model = D2ae::new(&vs.root(), &header.config, header.num_identities).map_err(|source| {
        CheckpointError::Model {
            path: path.to_owned(),
            source,
        }
    })?;
    load_into(&vs, path)?;
    Ok((vs, model, header))
}
