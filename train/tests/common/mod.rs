//! Shared pieces of the train crate's integration tests: a tiny model config and batches.
#![allow(dead_code)]

use d2ae_train::model::config::{DecoderStage, EncoderConfig, ResidualStage};
use d2ae_train::ModelConfig;
use tch::{Device, Kind, Tensor};

/// The `small` preset shrunk to 16 px and a few channels: every part and loss is present, and a
/// forward/backward takes milliseconds.
pub fn tiny_config() -> ModelConfig {
    let mut cfg = ModelConfig::small();
    cfg.name = "tiny".into();
    cfg.image_size = 16;
    cfg.encoder = EncoderConfig::Residual {
        stem_channels: 8,
        stages: vec![
            ResidualStage {
                channels: 12,
                blocks: 1,
            },
            ResidualStage {
                channels: 16,
                blocks: 1,
            },
        ],
    };
    cfg.branch.channels = 8;
    cfg.branch.feature_dim = 6;
    cfg.decoder.stages = vec![
        DecoderStage {
            channels: 16,
            convs: 1,
        },
        DecoderStage {
            channels: 8,
            convs: 1,
        },
        DecoderStage {
            channels: 8,
            convs: 1,
        },
    ];
    cfg
}

/// Deterministic normalised images `[b, 3, s, s]` and labels in `0..n` (every label used).
pub fn batch(b: i64, s: i64, n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let images = Tensor::rand([b, 3, s, s], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let labels = Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(n);
    (images, labels)
}

/// Images a small model can learn to reconstruct: per-identity phase-shifted waves along x, one
/// phase per channel, in [−0.8, 0.8]; labels cycle through `0..n`.
pub fn structured_batch(b: i64, s: i64, n: i64) -> (Tensor, Tensor) {
    let opts = (Kind::Float, Device::Cpu);
    let labels = Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(n);
    let ramp = Tensor::arange(s, opts).view([1, 1, 1, s]) / s as f64;
    let phase = labels.to_kind(Kind::Float).view([b, 1, 1, 1]) * 1.3;
    let chan = Tensor::arange(3, opts).view([1, 3, 1, 1]) * 0.7;
    let images = ((ramp * 6.0 + phase + chan).sin() * 0.8)
        .expand([b, 3, s, s], false)
        .contiguous();
    (images, labels)
}
