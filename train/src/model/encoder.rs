//! The shared encoder E: Inception-ResNet-v1 for the paper, a small residual net for CPUs.
//! Which one is configuration ([`EncoderConfig`]); both map images to a feature map that the two
//! branches read.

use tch::{nn, Tensor};

use super::config::{EncoderConfig, ResidualStage};
use super::inception_resnet::{self, InceptionResnetV1};
use super::layers::{cost_seq, forward_seq, ConvBn, ConvSpec, Hw};

/// The encoder E. Variables live under the path it is built on (`encoder.` in [`super::D2ae`]).
#[derive(Debug)]
pub enum Encoder {
    /// The paper's backbone.
    InceptionResnetV1(Box<InceptionResnetV1>),
    /// Stem + residual stages.
    Residual(Box<ResidualEncoder>),
}

impl Encoder {
    /// Build the encoder a config asks for.
    pub fn new(p: &nn::Path, cfg: &EncoderConfig) -> Self {
        match cfg {
            EncoderConfig::InceptionResnetV1 {
                blocks_a,
                blocks_b,
                blocks_c,
            } => Self::InceptionResnetV1(Box::new(InceptionResnetV1::new(
                p,
                [*blocks_a, *blocks_b, *blocks_c],
            ))),
            EncoderConfig::Residual {
                stem_channels,
                stages,
            } => Self::Residual(Box::new(ResidualEncoder::new(p, *stem_channels, stages))),
        }
    }

    /// Channels of the output map.
    pub fn out_channels(&self) -> i64 {
        match self {
            Self::InceptionResnetV1(_) => inception_resnet::OUT_CHANNELS,
            Self::Residual(e) => e.out_channels,
        }
    }

    /// Images `[B, 3, H, W]` → feature map `[B, C, h, w]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Self::InceptionResnetV1(e) => e.forward_t(xs, train),
            Self::Residual(e) => e.forward_t(xs, train),
        }
    }

    /// MACs per image and the output size for an input of size `hw`.
    pub fn cost(&self, hw: Hw) -> (u64, Hw) {
        match self {
            Self::InceptionResnetV1(e) => e.cost(hw),
            Self::Residual(e) => e.cost(hw),
        }
    }
}

/// A 3×3 stem conv at full resolution, then stages of basic residual blocks (two 3×3 convs, as
/// in ResNet-18), each stage starting with a stride-2 block. Variables: `stem`,
/// `stages.{s}.{b}.{conv1,conv2,shortcut}`.
#[derive(Debug)]
pub struct ResidualEncoder {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    out_channels: i64,
}

impl ResidualEncoder {
    /// Build from the stem width and the stages.
    pub fn new(p: &nn::Path, stem_channels: i64, stages: &[ResidualStage]) -> Self {
        let stem = ConvBn::new(&(p / "stem"), ConvSpec::square(3, stem_channels, 3, 1));
        let mut blocks = Vec::new();
        let mut c_in = stem_channels;
        for (s, stage) in stages.iter().enumerate() {
            for b in 0..stage.blocks {
                let stride = if b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    &(p / "stages" / s / b),
                    c_in,
                    stage.channels,
                    stride,
                ));
                c_in = stage.channels;
            }
        }
        Self {
            stem,
            blocks,
            out_channels: c_in,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        for b in &self.blocks {
            ys = b.forward_t(&ys, train);
        }
        ys
    }

    fn cost(&self, hw: Hw) -> (u64, Hw) {
        let (mut macs, mut hw) = self.stem.cost(hw);
        for b in &self.blocks {
            let (m, out) = b.cost(hw);
            (macs, hw) = (macs + m, out);
        }
        (macs, hw)
    }
}

/// relu(conv2(conv1(x)) + shortcut(x)); the shortcut is a 1×1 conv + BN when the shape changes.
#[derive(Debug)]
struct BasicBlock {
    convs: [ConvBn; 2],
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || c_in != c_out)
            .then(|| ConvBn::linear(&(p / "shortcut"), ConvSpec::square(c_in, c_out, 1, stride)));
        Self {
            convs: [
                ConvBn::new(&(p / "conv1"), ConvSpec::square(c_in, c_out, 3, stride)),
                ConvBn::linear(&(p / "conv2"), ConvSpec::square(c_out, c_out, 3, 1)),
            ],
            shortcut,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = forward_seq(&self.convs, xs, train);
        let skip = match &self.shortcut {
            Some(s) => s.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        (ys + skip).relu()
    }

    fn cost(&self, hw: Hw) -> (u64, Hw) {
        let (macs, out) = cost_seq(&self.convs, hw);
        let skip = self.shortcut.as_ref().map_or(0, |s| s.cost(hw).0);
        (macs + skip, out)
    }
}
