//! Inception-ResNet-v1 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
//! Connections on Learning", 2016, figures 10–15), the paper's encoder E, without the final
//! average pool (section 4.2: B_T/B_P replace it).
//!
//! Spatial sizes at the paper's 235×235 input: stem 117 → 115 → 115 → 57 → 57 → 55 → 27;
//! 5 × block A at 27×27×256; reduction A → 13×13×896; 10 × block B; reduction B → 6×6×1792;
//! 5 × block C. Every conv is conv + batch norm + ReLU except the residual up-projections (1×1
//! with bias, scaled by 0.17 / 0.10 / 0.20 before the sum, as in the reference implementation);
//! the last block C has no ReLU after its sum. About 3.7 GMAC per image at 235 px.

use tch::{nn, Tensor};

use super::layers::{cost_seq, forward_seq, max_pool, max_pool_out, ConvBn, ConvSpec, Hw};

/// Output channels of the encoder.
pub const OUT_CHANNELS: i64 = 1792;

/// The encoder. Variables under `stem.{0..6}`, `block_a.{i}`, `reduction_a`, `block_b.{i}`,
/// `reduction_b`, `block_c.{i}`.
#[derive(Debug)]
pub struct InceptionResnetV1 {
    stem: Vec<ConvBn>,
    block_a: Vec<ResidualInception>,
    reduction_a: Reduction,
    block_b: Vec<ResidualInception>,
    reduction_b: Reduction,
    block_c: Vec<ResidualInception>,
}

impl InceptionResnetV1 {
    /// Build with the given numbers of A, B and C blocks (5, 10, 5 in the paper).
    pub fn new(p: &nn::Path, blocks: [usize; 3]) -> Self {
        let s = &(p / "stem");
        // The stem's max pool sits between conv 2b and 3b (see `forward_t`).
        let stem = vec![
            ConvBn::new(&(s / 0), ConvSpec::valid(3, 32, 3, 2)),
            ConvBn::new(&(s / 1), ConvSpec::valid(32, 32, 3, 1)),
            ConvBn::new(&(s / 2), ConvSpec::square(32, 64, 3, 1)),
            ConvBn::new(&(s / 3), ConvSpec::square(64, 80, 1, 1)),
            ConvBn::new(&(s / 4), ConvSpec::valid(80, 192, 3, 1)),
            ConvBn::new(&(s / 5), ConvSpec::valid(192, 256, 3, 2)),
        ];
        let repeat = |name: &str, n: usize, make: fn(&nn::Path, bool) -> ResidualInception| {
            (0..n)
                .map(|i| make(&(p / name / i), true))
                .collect::<Vec<_>>()
        };
        let block_a = repeat("block_a", blocks[0], ResidualInception::a);
        let block_b = repeat("block_b", blocks[1], ResidualInception::b);
        let mut block_c = repeat("block_c", blocks[2].saturating_sub(1), ResidualInception::c);
        if blocks[2] > 0 {
            block_c.push(ResidualInception::c(
                &(p / "block_c" / (blocks[2] - 1)),
                false,
            ));
        }
        Self {
            stem,
            block_a,
            reduction_a: Reduction::a(&(p / "reduction_a")),
            block_b,
            reduction_b: Reduction::b(&(p / "reduction_b")),
            block_c,
        }
    }

    /// Images `[B, 3, H, W]` → feature map `[B, 1792, h, w]` (6×6 at 235 px).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = forward_seq(&self.stem[..3], xs, train);
        ys = max_pool(&ys);
        ys = forward_seq(&self.stem[3..], &ys, train);
        for b in &self.block_a {
            ys = b.forward_t(&ys, train);
        }
        ys = self.reduction_a.forward_t(&ys, train);
        for b in &self.block_b {
            ys = b.forward_t(&ys, train);
        }
        ys = self.reduction_b.forward_t(&ys, train);
        for b in &self.block_c {
            ys = b.forward_t(&ys, train);
        }
        ys
    }

    /// MACs per image and the output size for an input of size `hw`.
    pub fn cost(&self, hw: Hw) -> (u64, Hw) {
        let (mut macs, hw) = cost_seq(&self.stem[..3], hw);
        let (m, hw) = cost_seq(&self.stem[3..], max_pool_out(hw));
        let blocks = |bs: &[ResidualInception], hw| bs.iter().map(|b| b.cost(hw)).sum::<u64>();
        macs += m + blocks(&self.block_a, hw);
        let (m, hw) = self.reduction_a.cost(hw);
        macs += m + blocks(&self.block_b, hw);
        let (m, hw) = self.reduction_b.cost(hw);
        macs += m + blocks(&self.block_c, hw);
        (macs, hw)
    }
}

/// A residual Inception block (A, B or C): parallel conv towers, concatenated, projected back
/// by a 1×1 conv with bias, scaled and added to the input.
#[derive(Debug)]
struct ResidualInception {
    towers: Vec<Vec<ConvBn>>,
    up: ConvBn,
    scale: f64,
    relu: bool,
}

impl ResidualInception {
    fn build(p: &nn::Path, towers: &[&[ConvSpec]], c: i64, scale: f64, relu: bool) -> Self {
        let towers: Vec<Vec<ConvBn>> = towers
            .iter()
            .enumerate()
            .map(|(t, specs)| {
                specs
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| ConvBn::new(&(p / "tower" / t / i), s))
                    .collect()
            })
            .collect();
        let cat: i64 = towers
            .iter()
            .map(|t| t.last().expect("tower").spec().c_out)
            .sum();
        Self {
            towers,
            up: ConvBn::plain(&(p / "up"), ConvSpec::square(cat, c, 1, 1)),
            scale,
            relu,
        }
    }

    /// Block A (35×35 grid in the original, 27×27 here), 256 channels.
    fn a(p: &nn::Path, relu: bool) -> Self {
        let c = 256;
        let sq = ConvSpec::square;
        Self::build(
            p,
            &[
                &[sq(c, 32, 1, 1)],
                &[sq(c, 32, 1, 1), sq(32, 32, 3, 1)],
                &[sq(c, 32, 1, 1), sq(32, 32, 3, 1), sq(32, 32, 3, 1)],
            ],
            c,
            0.17,
            relu,
        )
    }

    /// Block B (17×17 in the original, 13×13 here), 896 channels, factorised 7×7.
    fn b(p: &nn::Path, relu: bool) -> Self {
        let c = 896;
        let (sq, r) = (ConvSpec::square, ConvSpec::rect);
        Self::build(
            p,
            &[
                &[sq(c, 128, 1, 1)],
                &[sq(c, 128, 1, 1), r(128, 128, 1, 7), r(128, 128, 7, 1)],
            ],
            c,
            0.10,
            relu,
        )
    }

    /// Block C (8×8 in the original, 6×6 here), 1792 channels, factorised 3×3.
    fn c(p: &nn::Path, relu: bool) -> Self {
        let c = OUT_CHANNELS;
        let (sq, r) = (ConvSpec::square, ConvSpec::rect);
        Self::build(
            p,
            &[
                &[sq(c, 192, 1, 1)],
                &[sq(c, 192, 1, 1), r(192, 192, 1, 3), r(192, 192, 3, 1)],
            ],
            c,
            0.20,
            relu,
        )
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let outs: Vec<Tensor> = self
            .towers
            .iter()
            .map(|t| forward_seq(t, xs, train))
            .collect();
        let up = self.up.forward_t(&Tensor::cat(&outs, 1), train);
        let ys = xs + up * self.scale;
        if self.relu {
            ys.relu()
        } else {
            ys
        }
    }

    fn cost(&self, hw: Hw) -> u64 {
        let towers: u64 = self.towers.iter().map(|t| cost_seq(t, hw).0).sum();
        towers + self.up.cost(hw).0
    }
}

/// A reduction block: stride-2 conv towers plus a max pool, concatenated.
#[derive(Debug)]
struct Reduction {
    towers: Vec<Vec<ConvBn>>,
}

impl Reduction {
    fn build(p: &nn::Path, towers: &[&[ConvSpec]]) -> Self {
        let towers = towers
            .iter()
            .enumerate()
            .map(|(t, specs)| {
                specs
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| ConvBn::new(&(p / "tower" / t / i), s))
                    .collect()
            })
            .collect();
        Self { towers }
    }

    /// Reduction A with k = l = 192, m = 256, n = 384: 256 → 256 + 384 + 256 = 896 channels.
    fn a(p: &nn::Path) -> Self {
        let (sq, v) = (ConvSpec::square, ConvSpec::valid);
        Self::build(
            p,
            &[
                &[v(256, 384, 3, 2)],
                &[sq(256, 192, 1, 1), sq(192, 192, 3, 1), v(192, 256, 3, 2)],
            ],
        )
    }

    /// Reduction B: 896 → 384 + 256 + 256 + 896 = 1792 channels.
    fn b(p: &nn::Path) -> Self {
        let (sq, v) = (ConvSpec::square, ConvSpec::valid);
        Self::build(
            p,
            &[
                &[sq(896, 256, 1, 1), v(256, 384, 3, 2)],
                &[sq(896, 256, 1, 1), v(256, 256, 3, 2)],
                &[sq(896, 256, 1, 1), sq(256, 256, 3, 1), v(256, 256, 3, 2)],
            ],
        )
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut outs: Vec<Tensor> = self
            .towers
            .iter()
            .map(|t| forward_seq(t, xs, train))
            .collect();
        outs.push(max_pool(xs));
        Tensor::cat(&outs, 1)
    }

    fn cost(&self, hw: Hw) -> (u64, Hw) {
        let macs = self.towers.iter().map(|t| cost_seq(t, hw).0).sum();
        (macs, max_pool_out(hw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn ends_in_a_6x6x1792_map_at_235_px() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = InceptionResnetV1::new(&vs.root(), [1, 1, 1]);
        let (_, hw) = net.cost((235, 235));
        assert_eq!(hw, (6, 6));
        let xs = Tensor::zeros([1, 3, 235, 235], (Kind::Float, Device::Cpu));
        let ys = tch::no_grad(|| net.forward_t(&xs, false));
        assert_eq!(ys.size(), [1, OUT_CHANNELS, 6, 6]);
    }
}
