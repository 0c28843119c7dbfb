//! Evaluation metrics for d2ae without libtorch: everything `d2ae-eval` computes once features
//! are extracted, over plain row-major `&[f32]` matrices ([`Matrix`]) and labels, with
//! serde-serialisable results.
//!
//! In the order an evaluation runs:
//! - [`pairs`]: LFW `pairs.txt` (View 2), View 1 files and generic CSV pair lists, resolved to
//!   feature rows through sample keys or (identity name, file name);
//! - [`verify`]: cosine similarity and the LFW 10-fold protocol (accuracy, TPR@FPR, AUC, EER, ROC);
//! - [`svm`]: liblinear-style linear SVMs per attribute, with C chosen on a validation split, and
//!   their weight directions for face editing;
//! - [`standardize`]: per-channel z-scoring before the SVMs and probes, mapped back after;
//! - [`regress`]: ridge regression of a continuous factor on features, scored by held-out R²;
//! - [`gauss`]: per-channel Gaussianity (adjusted R² of a Gaussian fitted to each histogram);
//! - [`tsne`]: 2-D Barnes-Hut t-SNE embeddings and a kNN score of how well labels separate;
//! - [`plot`]: PNG charts (ROC, bar, histogram, 6×6 grid, scatter, line) with an embedded font;
//! - [`table`]: aligned text tables for people.
//!
//! Why a separate crate: these are the parts of evaluation that need no GPU and no libtorch, so
//! they build fast, test against numpy/scikit-learn directly, and can be reused by any tool.

pub mod gauss;
pub mod matrix;
pub mod pairs;
pub mod plot;
pub mod regress;
pub mod standardize;
pub mod svm;
pub mod table;
pub mod tsne;
pub mod verify;

pub use matrix::{Matrix, ShapeError};
