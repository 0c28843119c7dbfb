//! d2ae-train: the D²AE model on libtorch (`tch`), its losses and checkpoints, and the trainer.
//!
//! - [`model`]: the network (encoder, branches, classifiers, decoder, statistical augmentation),
//!   the loss terms of eq. 6 and the gradient routing that makes the method work.
//! - [`checkpoint`]: model files and training checkpoints (one safetensors format, one loader).
//! - [`info`]: what libtorch/CUDA/NCCL the binary runs on, and a model's size and cost.

pub mod checkpoint;
pub mod dist;
pub mod fit;
pub mod info;
pub mod model;

pub use model::{
    Ablation, BranchPool, ClassifierNoise, D2ae, ForwardOutput, LossTerms, LossValues, ModelConfig,
    ModelError, ParamGroup,
};

/// Set libtorch's intra-op CPU threads: `requested`, or every available core. Returns the
/// number set. Call once at start-up, before any tensor work.
pub fn set_threads(requested: Option<usize>) -> usize {
    let n = requested
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    tch::set_num_threads(n as i32);
    n
}
