//! Conv + batch norm + ReLU, the unit every part of the model is built from, and the analytic
//! cost model (`macs`) that `d2ae-train info` reports.
//!
//! MACs count the multiply-adds of convolutions and fully connected layers from their shapes:
//! a conv costs out_h·out_w·c_out·c_in·k_h·k_w per image. Batch norm, activations, pooling and
//! interpolation are element-wise (well under 1% of the total) and are not counted, the usual
//! convention for "GMAC per image".

use tch::{nn, Tensor};

/// Height and width of a feature map.
pub type Hw = (i64, i64);

/// The shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub c_in: i64,
    /// Output channels.
    pub c_out: i64,
    /// Kernel height and width.
    pub kernel: [i64; 2],
    /// Stride (same along both axes).
    pub stride: i64,
    /// Zero padding along height and width.
    pub padding: [i64; 2],
}

impl ConvSpec {
    /// A k×k conv with "same" padding (for odd k) and the given stride.
    pub fn square(c_in: i64, c_out: i64, k: i64, stride: i64) -> Self {
        Self {
            c_in,
            c_out,
            kernel: [k, k],
            stride,
            padding: [k / 2, k / 2],
        }
    }

    /// A k×k conv without padding ("valid", as in Inception's reductions).
    pub fn valid(c_in: i64, c_out: i64, k: i64, stride: i64) -> Self {
        Self {
            padding: [0, 0],
            ..Self::square(c_in, c_out, k, stride)
        }
    }

    /// A kh×kw conv with "same" padding and stride 1 (Inception's factorised 1×7, 7×1, ...).
    pub fn rect(c_in: i64, c_out: i64, kh: i64, kw: i64) -> Self {
        Self {
            c_in,
            c_out,
            kernel: [kh, kw],
            stride: 1,
            padding: [kh / 2, kw / 2],
        }
    }

    /// Output size for an input of size `hw`.
    pub fn out_hw(&self, (h, w): Hw) -> Hw {
        let o = |x: i64, k: i64, p: i64| (x + 2 * p - k) / self.stride + 1;
        (
            o(h, self.kernel[0], self.padding[0]),
            o(w, self.kernel[1], self.padding[1]),
        )
    }

    /// Multiply-adds per image for an input of size `hw`.
    pub fn macs(&self, hw: Hw) -> u64 {
        let (oh, ow) = self.out_hw(hw);
        (oh * ow * self.c_out * self.c_in * self.kernel[0] * self.kernel[1]) as u64
    }
}

/// A conv, optionally followed by batch norm and ReLU. Variables: `conv.weight` (`conv.bias` when
/// there is no batch norm), `bn.{weight,bias,running_mean,running_var}`.
#[derive(Debug)]
pub struct ConvBn {
    conv: nn::Conv<[i64; 2]>,
    bn: Option<nn::BatchNorm>,
    relu: bool,
    spec: ConvSpec,
}

impl ConvBn {
    /// Conv (no bias) → BN → ReLU.
    pub fn new(p: &nn::Path, spec: ConvSpec) -> Self {
        Self::build(p, spec, true, true)
    }

    /// Conv (no bias) → BN, no activation (residual shortcuts, before a residual sum).
    pub fn linear(p: &nn::Path, spec: ConvSpec) -> Self {
        Self::build(p, spec, true, false)
    }

    /// A plain conv with bias (Inception's residual up-projections, the decoder's RGB output).
    pub fn plain(p: &nn::Path, spec: ConvSpec) -> Self {
        Self::build(p, spec, false, false)
    }

    fn build(p: &nn::Path, spec: ConvSpec, bn: bool, relu: bool) -> Self {
        let cfg = nn::ConvConfigND::<[i64; 2]> {
            stride: [spec.stride, spec.stride],
            padding: spec.padding,
            bias: !bn,
            ..Default::default()
        };
        let conv = nn::conv(p / "conv", spec.c_in, spec.c_out, spec.kernel, cfg);
        let bn = bn.then(|| nn::batch_norm2d(p / "bn", spec.c_out, Default::default()));
        Self {
            conv,
            bn,
            relu,
            spec,
        }
    }

    /// The conv's shape.
    pub fn spec(&self) -> ConvSpec {
        self.spec
    }

    /// Apply; `train` selects batch statistics (and updates the running ones) in batch norm.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = xs.apply(&self.conv);
        let ys = match &self.bn {
            Some(bn) => ys.apply_t(bn, train),
            None => ys,
        };
        if self.relu {
            ys.relu()
        } else {
            ys
        }
    }

    /// Multiply-adds per image and the output size, for an input of size `hw`.
    pub fn cost(&self, hw: Hw) -> (u64, Hw) {
        (self.spec.macs(hw), self.spec.out_hw(hw))
    }
}

/// Apply a sequence of layers.
pub fn forward_seq(layers: &[ConvBn], xs: &Tensor, train: bool) -> Tensor {
    let mut ys = layers[0].forward_t(xs, train);
    for layer in &layers[1..] {
        ys = layer.forward_t(&ys, train);
    }
    ys
}

/// Cost of a sequence of layers: (MACs, output size).
pub fn cost_seq(layers: &[ConvBn], mut hw: Hw) -> (u64, Hw) {
    let mut macs = 0;
    for layer in layers {
        let (m, out) = layer.cost(hw);
        macs += m;
        hw = out;
    }
    (macs, hw)
}

/// Output size of a 3×3 stride-2 max pool without padding.
pub fn max_pool_out(hw: Hw) -> Hw {
    ((hw.0 - 3) / 2 + 1, (hw.1 - 3) / 2 + 1)
}

/// 3×3 stride-2 max pool without padding.
pub fn max_pool(xs: &Tensor) -> Tensor {
    xs.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn spec_shapes_and_macs_match_a_real_conv() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (i, spec) in [
            ConvSpec::square(3, 8, 3, 2),
            ConvSpec::valid(4, 6, 3, 2),
            ConvSpec::rect(5, 7, 1, 7),
            ConvSpec::rect(5, 7, 3, 1),
        ]
        .into_iter()
        .enumerate()
        {
            let layer = ConvBn::new(&(vs.root() / i), spec);
            let xs = Tensor::zeros([2, spec.c_in, 23, 17], (Kind::Float, Device::Cpu));
            let ys = layer.forward_t(&xs, false);
            let (macs, (oh, ow)) = layer.cost((23, 17));
            assert_eq!(ys.size(), vec![2, spec.c_out, oh, ow], "{spec:?}");
            assert_eq!(
                macs,
                (oh * ow * spec.c_out * spec.c_in * spec.kernel[0] * spec.kernel[1]) as u64
            );
        }
        assert_eq!(ConvSpec::square(1, 1, 3, 1).macs((4, 4)), 16 * 9);
    }
}
