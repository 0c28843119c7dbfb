//! Checkpoints: one safetensors file per checkpoint, under `<run>/checkpoints/`.
//!
//! `step-00000100.safetensors` is a model file in the format of [`crate::checkpoint_io`] (every
//! VarStore variable under its own name, batch-norm and σ running statistics included; metadata
//! `format`, `config`, `num_identities`), so anything that loads model weights loads a training
//! checkpoint too. On top it holds the optimizer's momentum buffers (`optim/<name>`) and, in the
//! metadata entry `extra.train_state`, the step, epoch, loader state and training configuration
//! ([`CheckpointMeta`]).
//!
//! One file per checkpoint makes writing atomic everywhere: on local disk `object_store` writes a
//! staging file and renames it; on a bucket a single PUT (or a completed multipart upload) is all or
//! nothing. A killed process therefore leaves either the whole checkpoint or none, and an older
//! checkpoint is never overwritten (each step has its own name). After each write only the newest
//! `keep` checkpoints are kept.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use d2ae_shard::DatasetLocation;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::tensor_io::{from_safetensors, to_safetensors, TensorIoError};

/// Metadata key holding the [`CheckpointMeta`] JSON.
pub const META_KEY: &str = "extra.train_state";
/// Prefix of the optimizer's tensors; model variables carry no prefix.
pub const OPTIM_PREFIX: &str = "optim/";
/// Above this size a checkpoint is uploaded in parts (each part this big).
const MULTIPART_CHUNK: usize = 32 << 20;

/// What a checkpoint records besides tensors.
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

/// A loaded checkpoint.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    /// Model variables by VarStore name.
    pub model: BTreeMap<String, Tensor>,
    /// Optimizer momentum buffers by parameter name.
    pub optim: BTreeMap<String, Tensor>,
}

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
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
    #[error("checkpoint {path} is damaged: {source}")]
    Damaged { path: String, source: TensorIoError },
    #[error("checkpoint {path} has no valid {META_KEY} metadata: {detail}")]
    BadMeta { path: String, detail: String },
    #[error("no checkpoint in {url}")]
    None { url: String },
    #[error(transparent)]
    Encode(#[from] TensorIoError),
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

/// Encode a checkpoint to bytes.
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
    let metadata = HashMap::from([
        ("format".to_owned(), crate::checkpoint_io::FORMAT.to_owned()),
        ("config".to_owned(), meta.model_config.to_string()),
        ("num_identities".to_owned(), meta.num_identities.to_string()),
        (META_KEY.to_owned(), meta_json),
    ]);
    Ok(to_safetensors(&all, metadata)?)
}

/// Decode checkpoint bytes read from `path` (used in messages).
pub fn decode(path: &str, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let (tensors, metadata) =
        from_safetensors(bytes).map_err(|source| CheckpointError::Damaged {
            path: path.to_owned(),
            source,
        })?;
    let meta_json = metadata
        .get(META_KEY)
        .ok_or_else(|| CheckpointError::BadMeta {
            path: path.to_owned(),
            detail: "missing".into(),
        })?;
    let meta: CheckpointMeta =
        serde_json::from_str(meta_json).map_err(|e| CheckpointError::BadMeta {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let mut model = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for (name, t) in tensors {
        match name.strip_prefix(OPTIM_PREFIX) {
            Some(rest) => optim.insert(rest.to_owned(), t),
            None => model.insert(name, t),
        };
    }
    Ok(Checkpoint { meta, model, optim })
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
            path: format!("{}/{}", self.loc.url, checkpoint_name(step)),
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
        let shown = format!("{}/{}", self.loc.url, checkpoint_name(step));
        let bytes = async { self.loc.store.get(&path).await?.bytes().await }
            .await
            .map_err(|source| CheckpointError::Read {
                path: shown.clone(),
                source,
            })?;
        decode(&shown, &bytes)
    }

    /// The newest checkpoint, or [`CheckpointError::None`].
    pub async fn load_latest(&self) -> Result<Checkpoint, CheckpointError> {
        let steps = self.steps().await?;
        let Some(&step) = steps.last() else {
            return Err(CheckpointError::None {
                url: self.loc.url.clone(),
            });
        };
        self.load(step).await
    }
}

/// A model restored from a checkpoint for inference (evaluation, editing).
pub struct LoadedModel {
    pub vs: tch::nn::VarStore,
    pub model: crate::model::D2ae,
    pub meta: CheckpointMeta,
    /// The checkpoint file it came from.
    pub source: String,
}

/// Load a model for inference from `url`: a checkpoint file (`…/step-N.safetensors`), a run
/// directory (its newest checkpoint), or a `checkpoints/` directory — local or in a bucket.
pub fn load_model(
    url: &str,
    endpoint: Option<String>,
    device: tch::Device,
) -> anyhow::Result<LoadedModel> {
    use anyhow::Context;
    use d2ae_shard::{open_dataset, StoreOptions};

    let opts = StoreOptions {
        endpoint,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (source, checkpoint) = if let Some((dir, file)) = url
        .trim_end_matches('/')
        .rsplit_once('/')
        .filter(|(_, f)| f.ends_with(".safetensors"))
    {
        let loc = open_dataset(dir, &opts).with_context(|| format!("opening {dir}"))?;
        let path = loc.child(file);
        let bytes = rt
            .block_on(async { loc.store.get(&path).await?.bytes().await })
            .with_context(|| format!("reading {url}"))?;
        (url.to_owned(), decode(url, &bytes)?)
    } else {
        let loc = open_dataset(url, &opts).with_context(|| format!("opening {url}"))?;
        let run_ckpts = CheckpointDir::new(loc.subdir("checkpoints"));
        let steps = rt.block_on(run_ckpts.steps())?;
        let dir = if steps.is_empty() {
            CheckpointDir::new(loc)
        } else {
            run_ckpts
        };
        let steps = rt.block_on(dir.steps())?;
        let step = *steps
            .last()
            .with_context(|| format!("no checkpoint in {url} or {url}/checkpoints"))?;
        let c = rt.block_on(dir.load(step))?;
        (format!("{}/{}", dir.url(), checkpoint_name(step)), c)
    };
    let cfg: crate::model::ModelConfig =
        serde_json::from_value(checkpoint.meta.model_config.clone())
            .with_context(|| format!("the model config in {source} does not parse"))?;
    let vs = tch::nn::VarStore::new(device);
    let model = crate::model::D2ae::new(&vs.root(), &cfg, checkpoint.meta.num_identities)?;
    super::load_variables(&vs, &checkpoint.model)
        .with_context(|| format!("loading the weights of {source}"))?;
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

    use d2ae_shard::{open_dataset, StoreOptions};
    use tch::{Device, Kind};

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
        let loc = open_dataset(
            dir.path().to_str().unwrap(),
            &StoreOptions {
                create_local: true,
                ..Default::default()
            },
        )
        .unwrap();
        let ckpts = CheckpointDir::new(loc);
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
            Err(CheckpointError::BadMeta { .. })
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
