//! The decoder D (sections 3.3, 4.2): concat(f_T, f_P) → FC → square map → 3×3 conv stages with
//! a bilinear upsampling before each stage but the first → 3×3 conv to RGB → `tanh`. With
//! [`DecoderConfig::linear_image`](super::config::DecoderConfig::linear_image), a second FC maps
//! the features straight to a full-size image that is added to the RGB conv's output before
//! `tanh`: a linear decoder that the conv stages refine.
//!
//! The paper does not say how its 20 convs and 6 upsamplings reach 235 px. We start from the
//! input size halved six times with rounding up (4×4) and let each upsampling go to the next size
//! of that chain (4 → 8 → 15 → 30 → 59 → 118 → 235), so no crop or final resize is needed and any
//! input size works; see [`ModelConfig::decoder_sizes`]. Bilinear upsampling then a conv (rather
//! than transposed convs) avoids checkerboard artefacts. The output is in the normalised pixel
//! scale [−1, 1] (`tanh`), the scale of the input images (see [`super::pixels`]).

use tch::{nn, Tensor};

use super::config::ModelConfig;
use super::layers::{ConvBn, ConvSpec, Hw};

/// The decoder. Variables: `fc.{weight,bias}`, `fc_bn.*`, `stages.{s}.{c}.*`, `to_rgb.conv.*`,
/// and `linear_image.{weight,bias}` when configured.
#[derive(Debug)]
pub struct Decoder {
    fc: nn::Linear,
    linear_image: Option<nn::Linear>,
    fc_bn: nn::BatchNorm,
    stages: Vec<Vec<ConvBn>>,
    to_rgb: ConvBn,
    sizes: Vec<i64>,
    c0: i64,
    in_dim: i64,
}

impl Decoder {
    /// Build for features of `in_dim` = dim(f_T) + dim(f_P).
    pub fn new(p: &nn::Path, cfg: &ModelConfig, in_dim: i64) -> Self {
        let sizes = cfg.decoder_sizes();
        let stages_cfg = &cfg.decoder.stages;
        let c0 = stages_cfg[0].channels;
        let fc = nn::linear(
            p / "fc",
            in_dim,
            c0 * sizes[0] * sizes[0],
            Default::default(),
        );
        let fc_bn = nn::batch_norm2d(p / "fc_bn", c0, Default::default());
        let mut c_in = c0;
        let stages = stages_cfg
            .iter()
            .enumerate()
            .map(|(s, st)| {
                (0..st.convs)
                    .map(|c| {
                        let spec = ConvSpec::square(c_in, st.channels, 3, 1);
                        c_in = st.channels;
                        ConvBn::new(&(p / "stages" / s / c), spec)
                    })
                    .collect()
            })
            .collect();
        let to_rgb = ConvBn::plain(&(p / "to_rgb"), ConvSpec::square(c_in, 3, 3, 1));
        let s = cfg.image_size;
        let linear_image = cfg.decoder.linear_image.then(|| {
            // Zero-initialised: the model starts as the paper's decoder and the linear path
            // grows from the reconstruction gradient alone.
            let zeros = nn::LinearConfig {
                ws_init: nn::Init::Const(0.0),
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            };
            nn::linear(p / "linear_image", in_dim, 3 * s * s, zeros)
        });
        Self {
            fc,
            linear_image,
            fc_bn,
            stages,
            to_rgb,
            sizes,
            c0,
            in_dim,
        }
    }

    /// Features `[B, in_dim]` → images `[B, 3, H, W]` in [−1, 1].
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let s0 = self.sizes[0];
        let mut ys = features
            .apply(&self.fc)
            .view([-1, self.c0, s0, s0])
            .apply_t(&self.fc_bn, train)
            .relu();
        for (s, stage) in self.stages.iter().enumerate() {
            if s > 0 {
                ys = ys.upsample_bilinear2d([self.sizes[s], self.sizes[s]], false, None, None);
            }
            for conv in stage {
                ys = conv.forward_t(&ys, train);
            }
        }
        let rgb = self.to_rgb.forward_t(&ys, train);
        match &self.linear_image {
            Some(fc) => (features.apply(fc).view_as(&rgb) + rgb).tanh(),
            None => rgb.tanh(),
        }
    }

    /// MACs per image (one decode).
    pub fn cost(&self) -> u64 {
        let s0 = self.sizes[0];
        let mut macs = (self.in_dim * self.c0 * s0 * s0) as u64;
        let mut hw: Hw = (s0, s0);
        for (s, stage) in self.stages.iter().enumerate() {
            hw = (self.sizes[s], self.sizes[s]);
            macs += stage.iter().map(|c| c.cost(hw).0).sum::<u64>();
        }
        let linear = self
            .linear_image
            .as_ref()
            .map_or(0, |fc| fc.ws.size().iter().product::<i64>() as u64);
        macs + self.to_rgb.cost(hw).0 + linear
    }
}
