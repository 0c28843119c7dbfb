//! The feature file `d2ae-eval extract` writes and every other subcommand reads.
//!
//! Two files, so that any tool reads them without this crate:
//! - `<out>` (safetensors): `f_t` f32 `[N, D_T]`, `f_p` f32 `[N, D_P]` (absent for a `baseline`
//!   model), `f_c` f32 `[N, D_T + D_P]` (only with `--concat`), `identity` i64 `[N]`, `attributes`
//!   i8 `[N, A]` (+1 present, −1 absent, 0 unknown), `factors` f32 `[N, F]` (NaN unknown);
//! - `<out>.json` (the sidecar, [`FeatureMeta`]): per-row keys, source paths, identity names and
//!   splits, the attribute and factor names, and where the features came from.
//!
//! Strings stay out of the safetensors file because safetensors holds numeric tensors only; a
//! `.npy` per tensor was the alternative, but one file per set is easier to move around. f_C is
//! `[f_T, f_P]` and costs nothing to rebuild, so readers here rebuild it when it was not stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use d2ae_metrics::Matrix;
use safetensors::tensor::Dtype;

use crate::tensor_file::{self, f32_bytes, HostTensor};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

/// Value of the `format` metadata entry of the safetensors file and of [`FeatureMeta::format`].
pub const FORMAT: &str = "d2ae-features/1";

/// Which representation a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// f_T: the identity distilling branch (D2AE-T in Table 1).
    T,
    /// f_P: the identity dispelling branch (D2AE-P).
    P,
    /// f_C = [f_T, f_P] (D2AE).
    C,
}

impl FeatureKind {
    /// All three, in table order.
    pub const ALL: [FeatureKind; 3] = [FeatureKind::T, FeatureKind::P, FeatureKind::C];

    /// The tensor name in the file (`f_t`, `f_p`, `f_c`).
    pub fn tensor_name(self) -> &'static str {
        match self {
            FeatureKind::T => "f_t",
            FeatureKind::P => "f_p",
            FeatureKind::C => "f_c",
        }
    }

    /// The row label of the paper's Table 1.
    pub fn paper_name(self) -> &'static str {
        match self {
            FeatureKind::T => "D2AE-T (f_T)",
            FeatureKind::P => "D2AE-P (f_P)",
            FeatureKind::C => "D2AE (f_C)",
        }
    }

    /// Short label for plots and tables.
    pub fn label(self) -> &'static str {
        match self {
            FeatureKind::T => "f_T",
            FeatureKind::P => "f_P",
            FeatureKind::C => "f_C",
        }
    }
}

/// `--feature t|p|c|all` as parsed from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FeatureChoice {
    T,
    P,
    C,
    All,
}

impl FeatureChoice {
    /// The kinds this choice names that `set` has (`all` quietly drops f_P and f_C for a
    /// baseline model; naming one explicitly that is absent is an error later).
    pub fn kinds(self, set: &FeatureSet) -> Vec<FeatureKind> {
        match self {
            FeatureChoice::T => vec![FeatureKind::T],
            FeatureChoice::P => vec![FeatureKind::P],
            FeatureChoice::C => vec![FeatureKind::C],
            FeatureChoice::All => FeatureKind::ALL
                .into_iter()
                .filter(|k| set.has(*k))
                .collect(),
        }
    }
}

/// The JSON sidecar: everything about the rows that is not a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Number of rows.
    pub rows: usize,
    /// Sample key per row.
    pub keys: Vec<String>,
    /// Source path (relative to the ingested root) per row.
    pub sources: Vec<String>,
    /// Identity name per row (the `identity` tensor holds the class index).
    pub identity_names: Vec<String>,
    /// Split per row.
    pub splits: Vec<String>,
    /// Column names of `attributes`.
    pub attribute_names: Vec<String>,
    /// Column names of `factors`.
    pub factor_names: Vec<String>,
    /// The checkpoint file the features came from.
    pub checkpoint: String,
    /// Training steps of that checkpoint.
    pub step: u64,
    /// The model configuration of the checkpoint (free-form JSON).
    pub model_config: serde_json::Value,
    /// The dataset URL.
    pub data: String,
    /// Whether each feature is the mean of the image's and its mirror image's features.
    pub flip: bool,
    /// Feature widths.
    pub dim_t: usize,
    pub dim_p: usize,
}

/// Features and labels of every row, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    pub meta: FeatureMeta,
    /// `[rows, dim_t]` row-major.
    pub f_t: Vec<f32>,
    /// `[rows, dim_p]` row-major; `None` for a baseline model.
    pub f_p: Option<Vec<f32>>,
    /// Whether `f_c` is written to the file (it is always available in memory, see [`Self::matrix`]).
    pub store_concat: bool,
    /// Identity class per row.
    pub identity: Vec<i64>,
    /// `[rows, attribute_names.len()]`: +1, −1, or 0 unknown.
    pub attributes: Vec<i8>,
    /// `[rows, factor_names.len()]`, NaN unknown.
    pub factors: Vec<f32>,
}

/// Errors reading or writing feature files.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors file")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{path} is not a valid feature sidecar")]
    Sidecar {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("these features have no {0} (the model is a baseline without the dispelling branch)")]
    Missing(&'static str),
}

/// Where the sidecar of `path` lives: `<path>.json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

impl FeatureSet {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.meta.rows
    }

    /// Whether the kind can be had (f_P and f_C need the dispelling branch).
    pub fn has(&self, kind: FeatureKind) -> bool {
        kind == FeatureKind::T || self.f_p.is_some()
    }

    /// The features of `kind` as a row-major buffer and its width; f_C is built on demand.
    pub fn features(
        &self,
        kind: FeatureKind,
    ) -> Result<(std::borrow::Cow<'_, [f32]>, usize), FeatureError> {
        use std::borrow::Cow;
        match kind {
            FeatureKind::T => Ok((Cow::Borrowed(&self.f_t), self.meta.dim_t)),
            FeatureKind::P => {
                let p = self.f_p.as_ref().ok_or(FeatureError::Missing("f_P"))?;
                Ok((Cow::Borrowed(p), self.meta.dim_p))
            }
            FeatureKind::C => {
                let p = self.f_p.as_ref().ok_or(FeatureError::Missing("f_C"))?;
                Ok((
                    Cow::Owned(self.concat(p)),
                    self.meta.dim_t + self.meta.dim_p,
                ))
            }
        }
    }

    /// `f(kind)` as a [`Matrix`] over `buf` (call [`Self::features`] first for the buffer).
    pub fn matrix(buf: &[f32], cols: usize) -> Matrix<'_> {
        Matrix::new(buf, cols.max(1)).expect("feature buffers are rows × cols")
    }

    fn concat(&self, p: &[f32]) -> Vec<f32> {
        let (dt, dp) = (self.meta.dim_t, self.meta.dim_p);
        let mut out = Vec::with_capacity(self.rows() * (dt + dp));
        for i in 0..self.rows() {
            out.extend_from_slice(&self.f_t[i * dt..(i + 1) * dt]);
            out.extend_from_slice(&p[i * dp..(i + 1) * dp]);
        }
        out
    }

    /// Rows whose split is `split`, in file order.
    pub fn rows_of_split(&self, split: &str) -> Vec<usize> {
        (0..self.rows())
            .filter(|&i| self.meta.splits[i] == split)
            .collect()
    }

    /// The distinct splits in order of first appearance.
    pub fn split_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.meta.splits {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// The attribute row of sample `i`.
    pub fn attributes_of(&self, i: usize) -> &[i8] {
        let a = self.meta.attribute_names.len();
        &self.attributes[i * a..(i + 1) * a]
    }

    /// Row of each key.
    pub fn key_rows(&self) -> HashMap<&str, usize> {
        self.meta
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect()
    }

    /// Check that every per-row buffer has `rows` rows of the declared width.
    pub fn validate(&self, path: &Path) -> Result<(), FeatureError> {
        let m = &self.meta;
        let n = m.rows;
        let bad = |message: String| {
            Err(FeatureError::Invalid {
                path: path.to_owned(),
                message,
            })
        };
        for (what, len) in [
            ("keys", m.keys.len()),
            ("sources", m.sources.len()),
            ("identity_names", m.identity_names.len()),
            ("splits", m.splits.len()),
            ("identity", self.identity.len()),
        ] {
            if len != n {
                return bad(format!("{what} has {len} entries for {n} rows"));
            }
        }
        let checks = [
            ("f_t", self.f_t.len(), n * m.dim_t),
            (
                "attributes",
                self.attributes.len(),
                n * m.attribute_names.len(),
            ),
            ("factors", self.factors.len(), n * m.factor_names.len()),
        ];
        for (what, got, want) in checks {
            if got != want {
                return bad(format!("{what} has {got} values, expected {want}"));
            }
        }
        if let Some(p) = &self.f_p {
            if p.len() != n * m.dim_p {
                return bad(format!(
                    "f_p has {} values, expected {}",
                    p.len(),
                    n * m.dim_p
                ));
            }
        }
        Ok(())
    }

    /// Write `<path>` and `<path>.json`.
    pub fn write(&self, path: &Path) -> Result<(), FeatureError> {
        self.validate(path)?;
        let n = self.rows();
        let m = &self.meta;
        let mut host: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("f_t", Dtype::F32, vec![n, m.dim_t], f32_bytes(&self.f_t)),
            (
                "identity",
                Dtype::I64,
                vec![n],
                self.identity.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "attributes",
                Dtype::I8,
                vec![n, m.attribute_names.len()],
                self.attributes.iter().map(|&x| x as u8).collect(),
            ),
            (
                "factors",
                Dtype::F32,
                vec![n, m.factor_names.len()],
                f32_bytes(&self.factors),
            ),
        ];
        if let Some(p) = &self.f_p {
            host.push(("f_p", Dtype::F32, vec![n, m.dim_p], f32_bytes(p)));
            if self.store_concat {
                host.push((
                    "f_c",
                    Dtype::F32,
                    vec![n, m.dim_t + m.dim_p],
                    f32_bytes(&self.concat(p)),
                ));
            }
        }
        let host: Vec<HostTensor> = host
            .into_iter()
            .map(|(name, dtype, shape, bytes)| (name.to_owned(), dtype, shape, bytes))
            .collect();
        let metadata = HashMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("sidecar".to_owned(), file_name(&sidecar_path(path))),
        ]);
        tensor_file::write(path, &host, metadata).map_err(|e| FeatureError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut json = serde_json::to_vec_pretty(m).expect("feature meta serialises");
        json.push(b'\n');
        let side = sidecar_path(path);
        tensor_file::write_atomic(&side, &json).map_err(|e| FeatureError::Invalid {
            path: side.clone(),
            message: e.to_string(),
        })
    }

    /// Read `<path>` and `<path>.json`, checking that they agree.
    pub fn read(path: &Path) -> Result<FeatureSet, FeatureError> {
        let bytes = std::fs::read(path).map_err(|source| FeatureError::Read {
            path: path.to_owned(),
            source,
        })?;
        let side = sidecar_path(path);
        let json = std::fs::read(&side).map_err(|source| FeatureError::Read {
            path: side.clone(),
            source,
        })?;
        let meta: FeatureMeta =
            serde_json::from_slice(&json).map_err(|source| FeatureError::Sidecar {
                path: side.clone(),
                source,
            })?;
        if meta.format != FORMAT {
            return Err(FeatureError::Invalid {
                path: side,
                message: format!("format is {:?}, expected {FORMAT:?}", meta.format),
            });
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|source| FeatureError::Safetensors {
            path: path.to_owned(),
            source,
        })?;
        let get = |name: &str, dtype: Dtype| -> Result<Option<Vec<u8>>, FeatureError> {
            match st.tensor(name) {
                Ok(view) if view.dtype() == dtype => Ok(Some(view.data().to_vec())),
                Ok(view) => Err(FeatureError::Invalid {
                    path: path.to_owned(),
                    message: format!("{name} has dtype {:?}, expected {dtype:?}", view.dtype()),
                }),
                Err(_) => Ok(None),
            }
        };
        let need = |name: &str, dtype: Dtype| -> Result<Vec<u8>, FeatureError> {
            get(name, dtype)?.ok_or_else(|| FeatureError::Invalid {
                path: path.to_owned(),
                message: format!("no tensor {name:?}"),
            })
        };
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let set = FeatureSet {
            f_t: f32s(need("f_t", Dtype::F32)?),
            f_p: get("f_p", Dtype::F32)?.map(f32s),
            store_concat: get("f_c", Dtype::F32)?.is_some(),
            identity: need("identity", Dtype::I64)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            attributes: need("attributes", Dtype::I8)?
                .into_iter()
                .map(|b| b as i8)
                .collect(),
            factors: f32s(need("factors", Dtype::F32)?),
            meta,
        };
        set.validate(path)?;
        Ok(set)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small set: `rows` rows, 2 identities alternating, 1 attribute, 1 factor.
    pub(crate) fn toy_set(rows: usize, dim: usize) -> FeatureSet {
        let f_t: Vec<f32> = (0..rows * dim).map(|i| (i % 7) as f32 - 3.0).collect();
        let f_p: Vec<f32> = (0..rows * dim).map(|i| (i % 5) as f32 * 0.5).collect();
        FeatureSet {
            meta: FeatureMeta {
                format: FORMAT.into(),
                rows,
                keys: (0..rows).map(|i| format!("k{i}")).collect(),
                sources: (0..rows)
                    .map(|i| format!("id{}/img_{i}.jpg", i % 2))
                    .collect(),
                identity_names: (0..rows).map(|i| format!("id{}", i % 2)).collect(),
                splits: (0..rows)
                    .map(|i| if i % 4 == 3 { "test" } else { "train" }.to_owned())
                    .collect(),
                attribute_names: vec!["Smiling".into()],
                factor_names: vec!["bg".into()],
                checkpoint: "run/checkpoints/step-00000001.safetensors".into(),
                step: 1,
                model_config: serde_json::json!({"name": "small"}),
                data: "data".into(),
                flip: false,
                dim_t: dim,
                dim_p: dim,
            },
            f_t,
            f_p: Some(f_p),
            store_concat: true,
            identity: (0..rows as i64).map(|i| i % 2).collect(),
            attributes: (0..rows).map(|i| if i % 3 == 0 { 1 } else { -1 }).collect(),
            factors: (0..rows).map(|i| i as f32 * 0.1).collect(),
        }
    }

    #[test]
    fn round_trips_through_safetensors_and_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/feat.safetensors");
        let set = toy_set(6, 3);
        set.write(&path).unwrap();
        assert!(dir.path().join("sub/feat.safetensors.json").exists());
        let back = FeatureSet::read(&path).unwrap();
        assert_eq!(back, set);
        let (c, w) = back.features(FeatureKind::C).unwrap();
        assert_eq!(w, 6);
        assert_eq!(
            &c[6..12],
            &[
                set.f_t[3],
                set.f_t[4],
                set.f_t[5],
                set.f_p.as_ref().unwrap()[3],
                set.f_p.as_ref().unwrap()[4],
                set.f_p.as_ref().unwrap()[5]
            ]
        );
        assert_eq!(back.rows_of_split("test"), vec![3]);
        assert_eq!(back.split_names(), vec!["train", "test"]);
    }

    #[test]
    fn baseline_sets_have_only_f_t() {
        let mut set = toy_set(4, 2);
        set.f_p = None;
        assert!(!set.has(FeatureKind::P));
        assert_eq!(FeatureChoice::All.kinds(&set), vec![FeatureKind::T]);
        assert!(matches!(
            set.features(FeatureKind::C),
            Err(FeatureError::Missing("f_C"))
        ));
    }

    #[test]
    fn mismatched_sidecar_is_an_error_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feat.safetensors");
        let mut set = toy_set(4, 2);
        set.write(&path).unwrap();
        set.meta.keys.pop();
        let json = serde_json::to_vec(&set.meta).unwrap();
        std::fs::write(sidecar_path(&path), json).unwrap();
        let err = FeatureSet::read(&path).unwrap_err().to_string();
        assert!(err.contains("keys has 3 entries for 4 rows"), "{err}");
    }
}
