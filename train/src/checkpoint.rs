//! Checkpoints and model files: one safetensors format, one error type, one loader.
//!
//! Every file holds each variable of the model's `VarStore` (parameters, batch-norm statistics, the
//! running σ of statistical augmentation) under its `VarStore` name, and in the header's metadata
//! `format` ([`FORMAT`]), the model `config`, `num_identities` and `tensors_sha256` (a checksum of
//! every tensor, checked on every read, so a checkpoint whose data was overwritten is refused
//! instead of resumed from). A **training checkpoint** (`<run>/checkpoints/step-00000100.safetensors`)
//! adds the optimizer's buffers (`optim/<name>`) and, in `extra.train_state`, the step, epoch, loader
//! state and training configuration ([`CheckpointMeta`]); a **model file** ([`save_model`]) may
//! carry free-form `extra.<key>` entries instead. Anything that loads a model loads either.
//!
//! Writes are atomic: [`save_model`] renames a temporary file into place; [`CheckpointDir`] writes
//! through `object_store` (a staging file renamed on disk, one PUT or a completed multipart upload
//! in a bucket), one file per step, so a killed process leaves the whole checkpoint or none and an
//! older one is never overwritten. Reads are strict (every variable present with its shape,
//! nothing extra), so a checkpoint of another config fails loudly instead of half-loading.
//! [`CheckpointDir::load_latest`] falls back to the newest checkpoint that reads intact.
//!
//! Why not `VarStore::save`: it writes no metadata, and its loader reports a bad file as a bare
//! `TchError` without the path or the variable.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::Bytes;
use d2ae_shard::{open_dataset, DatasetLocation, StoreOptions};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::fit::tensor_io::{from_safetensors, to_safetensors, TensorIoError};
use crate::model::{D2ae, ModelConfig, ModelError};

/// The `format` metadata value of files this module writes.
pub const FORMAT: &str = "d2ae-model/1";
/// Metadata key holding a training checkpoint's [`CheckpointMeta`] JSON.
pub const META_KEY: &str = "extra.train_state";
/// Prefix of the optimizer's tensors; model variables carry no prefix.
pub const OPTIM_PREFIX: &str = "optim/";
/// Above this size a checkpoint is uploaded in parts (each part this big).
const MULTIPART_CHUNK: usize = 32 << 20;

/// What a model file says about the model in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The config that built the model.
    pub config: ModelConfig,
    /// Rows of W_T / W_P.
    pub num_identities: i64,
    /// Free-form entries (`extra.<key>` in the metadata; a training checkpoint's state is one).
    pub extra: BTreeMap<String, String>,
}

/// What a training checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch the next batch belongs to.
    pub epoch: u64,
    /// Identity classes the classifiers were built for.
    pub num_identities: i64,
    /// Model preset name.
    pub preset: String,
    /// The model configuration (also in the `config` metadata entry, for weight loaders).
    pub model_config: serde_json::Value,
    /// The loader's resume state (opaque JSON owned by the loader).
    pub loader_state: serde_json::Value,
    /// The resolved training configuration.
    pub config: serde_json::Value,
}

/// Why a checkpoint or model file could not be written, found or read. Every variant names the
/// file (or directory) concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing a local file failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: String,
        source: object_store::Error,
    },
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: String,
        source: object_store::Error,
    },
    #[error("cannot list checkpoints in {url}: {source}")]
    List {
        url: String,
        source: object_store::Error,
    },
    /// Not a valid safetensors file, a tensor of a kind we do not store, or tensors that do not
    /// match their checksum.
    #[error("checkpoint {path} is damaged: {source}")]
    Damaged { path: String, source: TensorIoError },
    /// The metadata is missing or unreadable.
    #[error("checkpoint {path}: bad metadata: {reason}")]
    Metadata { path: String, reason: String },
    /// A tensor does not match the model's variable of the same name.
    #[error("checkpoint {path}: tensor `{name}`: {reason}")]
    Tensor {
        path: String,
        name: String,
        reason: String,
    },
    /// The file holds tensors the model does not have.
    #[error("checkpoint {path}: {} tensors the model does not have, e.g. `{}`", .names.len(), .names[0])]
    Unexpected { path: String, names: Vec<String> },
    /// The metadata's config does not build a model.
    #[error("checkpoint {path}: {source}")]
    Model { path: String, source: ModelError },
    #[error("no checkpoint in {url}")]
    None { url: String },
    /// Checkpoints exist but none reads intact: starting over would silently discard them.
    #[error("no intact checkpoint in {url}:\n  {}", .skipped.join("\n  "))]
    NoneIntact { url: String, skipped: Vec<String> },
    #[error("cannot open {url}: {source}")]
    Open {
        url: String,
        source: d2ae_shard::StoreError,
    },
    /// Turning tensors into bytes failed (before anything was written).
    #[error(transparent)]
    Encode(#[from] TensorIoError),
}

impl CheckpointError {
    /// Whether this is the file's own fault (damaged, truncated, foreign), so that an older
    /// checkpoint is worth trying instead, rather than the store's or the caller's.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CheckpointError::Damaged { .. } | CheckpointError::Metadata { .. }
        )
    }
}

/// Where two model configurations differ, as `path: saved → current` lines (`path` in dotted
/// form, `(default)` where one side omits a key, as configs do for unset options); empty when
/// they are equal.
///
/// A resumed run must rebuild exactly the model its checkpoint holds; otherwise the first tensor
/// whose shape differs would fail the restore with a message about tensors, not about the flag
/// that changed.
pub fn config_differences(saved: &serde_json::Value, current: &serde_json::Value) -> Vec<String> {
    fn walk(
        path: &str,
        a: Option<&serde_json::Value>,
        b: Option<&serde_json::Value>,
        out: &mut Vec<String>,
    ) {
        use serde_json::Value;
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&sub, x.get(k), y.get(k), out);
                }
            }
            (a, b) if a == b => {}
            (a, b) => {
                let show = |v: Option<&Value>| v.map_or("(default)".to_owned(), Value::to_string);
                out.push(format!("{path}: {} → {}", show(a), show(b)));
            }
        }
    }
    let mut out = Vec::new();
    walk("", Some(saved), Some(current), &mut out);
    out
}

/// A decoded checkpoint or model file.
pub struct Checkpoint {
    /// The training state; for a model file, one made from its header ([`Checkpoint::meta`]).
    pub meta: CheckpointMeta,
    /// Whether `meta` came from a training checkpoint (`false`: a model file).
    pub has_train_state: bool,
    /// Model variables by VarStore name.
    pub model: BTreeMap<String, Tensor>,
    /// Optimizer buffers by parameter name (empty in a model file).
    pub optim: BTreeMap<String, Tensor>,
}

/// The file name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}.safetensors")
}

fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// The metadata every file carries: format, model config, identities.
fn base_metadata(model_config: String, num_identities: i64) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_owned(), FORMAT.to_owned()),
        ("config".to_owned(), model_config),
        ("num_identities".to_owned(), num_identities.to_string()),
    ])
}

/// Encode a training checkpoint to bytes.
pub fn encode(
    meta: &CheckpointMeta,
    model: &BTreeMap<String, Tensor>,
    optim: &BTreeMap<String, Tensor>,
) -> Result<Vec<u8>, CheckpointError> {
    let mut all = BTreeMap::new();
    for (k, v) in model {
        all.insert(k.clone(), v.shallow_clone());
    }
    for (k, v) in optim {
        all.insert(format!("{OPTIM_PREFIX}{k}"), v.shallow_clone());
    }
    let meta_json = serde_json::to_string(meta).expect("checkpoint meta serialises");
    let mut metadata = base_metadata(meta.model_config.to_string(), meta.num_identities);
    metadata.insert(META_KEY.to_owned(), meta_json);
    Ok(to_safetensors(&all, metadata)?)
}

/// Decode the bytes of a training checkpoint or a model file read from `path` (for messages).
pub fn decode(path: &str, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let (tensors, metadata) =
        from_safetensors(bytes).map_err(|source| CheckpointError::Damaged {
            path: path.to_owned(),
            source,
        })?;
    let format = metadata.get("format").map(String::as_str);
    if format != Some(FORMAT) {
        return Err(CheckpointError::Metadata {
            path: path.to_owned(),
            reason: format!("format {format:?}, expected `{FORMAT}` (not written by d2ae)"),
        });
    }
    // A training checkpoint says everything in its train state; a model file only in its header.
    let (meta, has_train_state) = match metadata.get(META_KEY) {
        Some(json) => {
            let meta: CheckpointMeta =
                serde_json::from_str(json).map_err(|e| CheckpointError::Metadata {
                    path: path.to_owned(),
                    reason: format!("{META_KEY}: {e}"),
                })?;
            (meta, true)
        }
        None => {
            let header = header_of(path, &metadata)?;
            let meta = CheckpointMeta {
                step: header
                    .extra
                    .get("step")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                epoch: 0,
                num_identities: header.num_identities,
                preset: header.config.name.clone(),
                model_config: serde_json::to_value(&header.config)
                    .expect("model config serialises"),
                loader_state: serde_json::Value::Null,
                config: serde_json::Value::Null,
            };
            (meta, false)
        }
    };
    let mut model = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for (name, t) in tensors {
        match name.strip_prefix(OPTIM_PREFIX) {
            Some(rest) => optim.insert(rest.to_owned(), t),
            None => model.insert(name, t),
        };
    }
    Ok(Checkpoint {
        meta,
        has_train_state,
        model,
        optim,
    })
}

/// The [`Header`] in a file's metadata.
fn header_of(path: &str, map: &HashMap<String, String>) -> Result<Header, CheckpointError> {
    let meta_err = |reason: String| CheckpointError::Metadata {
        path: path.to_owned(),
        reason,
    };
    let get = |key: &str| {
        map.get(key)
            .ok_or_else(|| meta_err(format!("no `{key}` entry (not written by d2ae)")))
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
    Ok(Header {
        config,
        num_identities,
        extra,
    })
}

/// Write every variable of `vs` and `header` as a model file at `path` (atomically).
pub fn save_model(vs: &nn::VarStore, header: &Header, path: &Path) -> Result<(), CheckpointError> {
    let shown = path.display().to_string();
    let config = serde_json::to_string(&header.config).map_err(|e| CheckpointError::Metadata {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let mut metadata = base_metadata(config, header.num_identities);
    for (k, v) in &header.extra {
        metadata.insert(format!("extra.{k}"), v.clone());
    }
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let bytes = to_safetensors(&vars, metadata)?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|source| CheckpointError::Io {
        path: tmp.display().to_string(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| CheckpointError::Io {
        path: shown,
        source,
    })
}

/// The header of the model file or checkpoint at local `path`.
pub fn read_header(path: &Path) -> Result<Header, CheckpointError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: shown.clone(),
        source,
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|source| {
        CheckpointError::Damaged {
            path: shown.clone(),
            source: source.into(),
        }
    })?;
    header_of(&shown, &meta.metadata().clone().unwrap_or_default())
}

/// Copy `tensors` into the variables of `vs`: the same names and shapes, nothing missing or
/// extra. `path` names the file in errors.
pub fn load_variables(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    path: &str,
) -> Result<(), CheckpointError> {
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
        let src = tensors
            .get(name)
            .ok_or_else(|| tensor_err(name, "missing from the file".into()))?;
        if src.size() != var.size() {
            return Err(tensor_err(
                name,
                format!(
                    "shape {:?} in the file, {:?} in the model",
                    src.size(),
                    var.size()
                ),
            ));
        }
        tch::no_grad(|| var.shallow_clone().copy_(src));
    }
    let mut extra: Vec<String> = tensors
        .keys()
        .filter(|n| !vars.contains_key(*n))
        .cloned()
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(CheckpointError::Unexpected {
            path: path.to_owned(),
            names: extra,
        });
    }
    Ok(())
}

/// The checkpoints directory of a run, on disk or in a bucket.
pub struct CheckpointDir {
    loc: DatasetLocation,
}

impl CheckpointDir {
    /// `dir` is the run's `checkpoints/` location.
    pub fn new(dir: DatasetLocation) -> CheckpointDir {
        CheckpointDir { loc: dir }
    }

    /// Where the checkpoints live (URL).
    pub fn url(&self) -> &str {
        &self.loc.url
    }

    /// The URL of the checkpoint of `step`.
    pub fn url_of(&self, step: u64) -> String {
        format!("{}/{}", self.loc.url, checkpoint_name(step))
    }

    /// Steps of the complete checkpoints present, ascending.
    pub async fn steps(&self) -> Result<Vec<u64>, CheckpointError> {
        let prefix = self.loc.prefix.clone();
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let list: Vec<_> = self
            .loc
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                source => Err(CheckpointError::List {
                    url: self.loc.url.clone(),
                    source,
                }),
            })?;
        let mut steps: Vec<u64> = list
            .iter()
            .filter_map(|m| m.location.filename().and_then(step_of))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    /// Write a checkpoint atomically, then keep only the newest `keep` (0 keeps all).
    pub async fn save(
        &self,
        step: u64,
        bytes: Vec<u8>,
        keep: usize,
    ) -> Result<(), CheckpointError> {
        let path = self.loc.child(&checkpoint_name(step));
        let write_err = |source| CheckpointError::Write {
            path: self.url_of(step),
            source,
        };
        if bytes.len() <= MULTIPART_CHUNK {
            self.loc
                .store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(write_err)?;
        } else {
            let upload = self
                .loc
                .store
                .put_multipart(&path)
                .await
                .map_err(write_err)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
            writer.put(Bytes::from(bytes));
            writer.finish().await.map_err(write_err)?;
        }
        if keep > 0 {
            let steps = self.steps().await?;
            let excess = steps.len().saturating_sub(keep);
            for old in &steps[..excess] {
                let old_path = self.loc.child(&checkpoint_name(*old));
                // A failed delete only leaves an extra checkpoint behind; it is not worth failing a run.
                if let Err(e) = self.loc.store.delete(&old_path).await {
                    tracing::warn!("could not delete old checkpoint {old_path}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Read the checkpoint of `step`.
    pub async fn load(&self, step: u64) -> Result<Checkpoint, CheckpointError> {
        let path = self.loc.child(&checkpoint_name(step));
        let shown = self.url_of(step);
        let bytes = async { self.loc.store.get(&path).await?.bytes().await }
            .await
            .map_err(|source| CheckpointError::Read {
                path: shown.clone(),
                source,
            })?;
        decode(&shown, &bytes)
    }

    /// The newest checkpoint that reads intact. A damaged newer one (truncated, overwritten,
    /// foreign) is skipped with a warning that says why; any other error (the store cannot be
    /// read) stops the search. [`CheckpointError::None`] when there are no checkpoints,
    /// [`CheckpointError::NoneIntact`] when there are some but every one is damaged.
    pub async fn load_latest(&self) -> Result<Checkpoint, CheckpointError> {
        let steps = self.steps().await?;
        let mut skipped = Vec::new();
        for &step in steps.iter().rev() {
            match self.load(step).await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_damage() => {
                    tracing::warn!("skipping a damaged checkpoint: {e}");
                    skipped.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let url = self.loc.url.clone();
        Err(if skipped.is_empty() {
            CheckpointError::None { url }
        } else {
            CheckpointError::NoneIntact { url, skipped }
        })
    }
}

/// A model restored from a checkpoint or model file for inference (evaluation, editing).
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: D2ae,
    pub meta: CheckpointMeta,
    /// The checkpoint file it came from.
    pub source: String,
}

/// Load a model for inference from `url`: a checkpoint or model file (`…/name.safetensors`), a
/// run directory (its newest intact checkpoint), or a `checkpoints/` directory — local or in a
/// bucket.
pub fn load_model(
    url: &str,
    endpoint: Option<String>,
    device: Device,
) -> Result<LoadedModel, CheckpointError> {
    let opts = StoreOptions {
        endpoint,
        ..Default::default()
    };
    let open = |u: &str| {
        open_dataset(u, &opts).map_err(|source| CheckpointError::Open {
            url: u.to_owned(),
            source,
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CheckpointError::Io {
            path: url.to_owned(),
            source,
        })?;
    let (source, checkpoint) = if let Some((dir, file)) = url
        .trim_end_matches('/')
        .rsplit_once('/')
        .filter(|(_, f)| f.ends_with(".safetensors"))
    {
        let loc = open(dir)?;
        let path = loc.child(file);
        let bytes = rt
            .block_on(async { loc.store.get(&path).await?.bytes().await })
            .map_err(|source| CheckpointError::Read {
                path: url.to_owned(),
                source,
            })?;
        (url.to_owned(), decode(url, &bytes)?)
    } else {
        let loc = open(url)?;
        let run_ckpts = CheckpointDir::new(loc.subdir("checkpoints"));
        let dir = if rt.block_on(run_ckpts.steps())?.is_empty() {
            CheckpointDir::new(loc)
        } else {
            run_ckpts
        };
        let c = rt.block_on(dir.load_latest()).map_err(|e| match e {
            CheckpointError::None { .. } => CheckpointError::None {
                url: format!("{url} or {url}/checkpoints"),
            },
            e => e,
        })?;
        (dir.url_of(c.meta.step), c)
    };
    let cfg: ModelConfig =
        serde_json::from_value(checkpoint.meta.model_config.clone()).map_err(|e| {
            CheckpointError::Metadata {
                path: source.clone(),
                reason: format!("the model config does not parse: {e}"),
            }
        })?;
    let vs = nn::VarStore::new(device);
    let model = D2ae::new(&vs.root(), &cfg, checkpoint.meta.num_identities).map_err(|e| {
        CheckpointError::Model {
            path: source.clone(),
            source: e,
        }
    })?;
    load_variables(&vs, &checkpoint.model, &source)?;
    Ok(LoadedModel {
        vs,
        model,
        meta: checkpoint.meta,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use tch::Kind;

    fn meta(step: u64) -> CheckpointMeta {
        CheckpointMeta {
            step,
            epoch: 1,
            num_identities: 5,
            preset: "small".into(),
            model_config: serde_json::json!({"name": "small"}),
            loader_state: serde_json::json!({"epoch": 1, "batches": 3}),
            config: serde_json::json!({"lr": 0.01}),
        }
    }

    /// A checkpoints directory on local disk at `dir`.
    fn local_dir(dir: &std::path::Path) -> CheckpointDir {
        let options = StoreOptions {
            create_local: true,
            ..Default::default()
        };
        CheckpointDir::new(open_dataset(dir.to_str().unwrap(), &options).unwrap())
    }

    fn tensors() -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
        let model = BTreeMap::from([(
            "enc.conv.weight".to_string(),
            Tensor::randn([4, 3], (Kind::Float, Device::Cpu)),
        )]);
        let optim = BTreeMap::from([(
            "enc.conv.weight".to_string(),
            Tensor::randn([4, 3], (Kind::Float, Device::Cpu)),
        )]);
        (model, optim)
    }

    #[tokio::test]
    async fn saves_loads_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = local_dir(dir.path());
        assert!(matches!(
            ckpts.load_latest().await,
            Err(CheckpointError::None { .. })
        ));
        let (model, optim) = tensors();
        for step in [5, 10, 15, 20] {
            let bytes = encode(&meta(step), &model, &optim).unwrap();
            ckpts.save(step, bytes, 2).await.unwrap();
        }
        assert_eq!(ckpts.steps().await.unwrap(), vec![15, 20]);
        let latest = ckpts.load_latest().await.unwrap();
        assert_eq!(latest.meta, meta(20));
        assert!(latest.model["enc.conv.weight"].equal(&model["enc.conv.weight"]));
        assert!(latest.optim["enc.conv.weight"].equal(&optim["enc.conv.weight"]));
    }

    #[tokio::test]
    async fn resume_falls_back_past_a_truncated_or_overwritten_newest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = local_dir(dir.path());
        let (model, optim) = tensors();
        for step in [10, 20, 30] {
            let bytes = encode(&meta(step), &model, &optim).unwrap();
            ckpts.save(step, bytes, 0).await.unwrap();
        }
        // Step 30: tensor data overwritten in place (the file still parses as safetensors).
        let p30 = dir.path().join(checkpoint_name(30));
        let mut bytes = std::fs::read(&p30).unwrap();
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&[0x7f; 8]);
        std::fs::write(&p30, &bytes).unwrap();
        let err = ckpts.load(30).await.err().unwrap();
        assert!(
            err.is_damage() && err.to_string().contains("checksum"),
            "{err}"
        );
        // Step 20: truncated.
        let p20 = dir.path().join(checkpoint_name(20));
        let bytes = std::fs::read(&p20).unwrap();
        std::fs::write(&p20, &bytes[..bytes.len() / 2]).unwrap();
        let latest = ckpts.load_latest().await.unwrap();
        assert_eq!(latest.meta.step, 10);
        assert!(latest.has_train_state);
        // Nothing intact at all: an error naming every file, not a silent fresh start.
        std::fs::write(dir.path().join(checkpoint_name(10)), b"junk").unwrap();
        let err = ckpts.load_latest().await.err().unwrap();
        assert!(matches!(err, CheckpointError::NoneIntact { .. }), "{err}");
        let msg = err.to_string();
        for step in [10, 20, 30] {
            assert!(msg.contains(&checkpoint_name(step)), "{msg}");
        }
    }

    #[test]
    fn damaged_and_foreign_files_are_reported() {
        assert!(matches!(
            decode("x", b"junk"),
            Err(CheckpointError::Damaged { .. })
        ));
        let (model, _) = tensors();
        let plain = to_safetensors(&model, HashMap::new()).unwrap();
        assert!(matches!(
            decode("x", &plain),
            Err(CheckpointError::Metadata { .. })
        ));
    }

    #[test]
    fn names_sort_by_step() {
        assert_eq!(checkpoint_name(42), "step-00000042.safetensors");
        assert_eq!(step_of("step-00000042.safetensors"), Some(42));
        assert_eq!(step_of("step-x.safetensors"), None);
    }

    #[test]
    fn config_differences_name_each_changed_key_by_its_path() {
        let saved = serde_json::json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "gone": true});
        let same = saved.clone();
        assert!(config_differences(&saved, &same).is_empty());
        let current = serde_json::json!({"a": 2, "b": {"c": "x", "d": [1, 3]}, "new": null});
        assert_eq!(
            config_differences(&saved, &current),
            [
                "a: 1 → 2",
                "b.d: [1,2] → [1,3]",
                "gone: true → (default)",
                "new: (default) → null"
            ]
        );
    }
}
