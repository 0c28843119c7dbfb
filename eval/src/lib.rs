//! d2ae-eval: scoring and inspecting trained D²AE checkpoints (section 4.3 of the paper).
//!
//! One module per subcommand, in the order an evaluation runs:
//! - [`extract`]: checkpoint × dataset → a feature file ([`features`] is its format);
//! - [`verify`]: LFW-protocol face verification with f_T, f_P and f_C (Table 1);
//! - [`attributes`]: per-attribute linear SVMs (Table 1, Figure 5a) and the share of continuous
//!   factors each feature explains (`d2ae_metrics::regress`);
//! - [`edit`]: attribute editing, identity swap and interpolation grids (Figures 1a, 9, 10);
//! - [`fidelity`]: reconstruction PSNR, identity swaps and attribute edits re-encoded (does the
//!   decoder carry the face, and do swaps and edits do what Figures 9 and 10 show);
//! - [`probe`]: a freshly trained linear identity probe on each feature (the ablations' test);
//! - [`analyze`]: Gaussianity of the feature channels and t-SNE maps (Figures 1b, 4, 7, 8);
//! - [`report`]: one Markdown + JSON report of a trained run;
//! - [`bench`]: extraction throughput.
//!
//! The metric computations themselves live in the libtorch-free `d2ae-metrics` crate; this crate
//! runs the model and wires data, metrics and files together. The command modules return
//! `anyhow` errors because they are the binary's logic (kept here so tests call them directly);
//! the reusable pieces ([`features`], [`grid`]) have typed errors.

pub mod analyze;
pub mod applied_factors;
pub mod attributes;
pub mod bench;
pub mod edit;
pub mod extract;
pub mod features;
pub mod fidelity;
pub mod grid;
pub mod model_io;
pub mod probe;
pub mod progress;
pub mod report;
pub mod tensor_file;
pub mod verify;
