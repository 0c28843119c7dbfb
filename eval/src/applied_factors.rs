//! Known image factors applied to photos that come without labels for them.
//!
//! Real photos carry no labels for the things f_P should hold and f_T should not (where the face
//! sits, how bright the picture is, which way it faces). `extract --apply-factors` makes such
//! labels: every image gets a mirror flip, a brightness offset, a shift and a scale drawn for it
//! alone, and the drawn values become the rows' factors. `attributes` (and the report) then
//! regress each factor on f_T and on f_P exactly as it does a synthetic set's own factors.
//!
//! The draw depends only on the seed and the sample's key, so a rerun, another batch size or
//! another device gives the same factors. The transform is one bilinear resampling of the
//! normalised image; at the identity (no flip, no shift, scale 1) it returns the input unchanged.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Tensor};

use crate::attributes::{self, FactorRow};
use crate::features::{FeatureChoice, FeatureSet};

/// The factors' column names, in [`AppliedFactors::values`] order.
pub const NAMES: [&str; 5] = [
    "applied_flip",
    "applied_brightness",
    "applied_shift_x",
    "applied_shift_y",
    "applied_scale",
];

/// Largest brightness offset, on the model's [−1, 1] pixel scale (0.25 is 32 grey levels).
pub const MAX_BRIGHTNESS: f32 = 0.25;
/// Largest shift, as a fraction of the image side (0.0625 is 4 pixels at 64 px).
pub const MAX_SHIFT: f32 = 0.0625;
/// Scales are drawn from `[1 − MAX_SCALE_CHANGE, 1 + MAX_SCALE_CHANGE]`.
pub const MAX_SCALE_CHANGE: f32 = 0.1;

/// What was done to one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppliedFactors {
    /// Mirrored left to right.
    pub flip: bool,
    /// Added to every channel of the normalised image (then clamped to [−1, 1]).
    pub brightness: f32,
    /// The content moved right by this fraction of the width (left when negative).
    pub shift_x: f32,
    /// The content moved down by this fraction of the height.
    pub shift_y: f32,
    /// The content magnified by this factor about the image centre.
    pub scale: f32,
}

impl AppliedFactors {
    /// Nothing applied.
    pub const IDENTITY: Self = Self {
        flip: false,
        brightness: 0.0,
        shift_x: 0.0,
        shift_y: 0.0,
        scale: 1.0,
    };

    /// The factors of the sample `key` under `seed`: uniform in their ranges, flip with
    /// probability ½, independent of each other.
    pub fn draw(key: &str, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(key.as_bytes()) ^ seed.rotate_left(32));
        Self {
            flip: rng.random_bool(0.5),
            brightness: rng.random_range(-MAX_BRIGHTNESS..=MAX_BRIGHTNESS),
            shift_x: rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
            shift_y: rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
            scale: rng.random_range(1.0 - MAX_SCALE_CHANGE..=1.0 + MAX_SCALE_CHANGE),
        }
    }

    /// The values stored as the row's factors, in [`NAMES`] order.
    pub fn values(&self) -> [f32; 5] {
        [
            f32::from(u8::from(self.flip)),
            self.brightness,
            self.shift_x,
            self.shift_y,
            self.scale,
        ]
    }

    /// The 2×3 affine map from output to input coordinates (both normalised to [−1, 1], as
    /// `affine_grid_generator` takes it): the output shows the flipped image, scaled about the
    /// centre, then shifted.
    fn theta(&self) -> [f32; 6] {
        let f = if self.flip { -1.0 } else { 1.0 };
        let s = self.scale;
        // A shift of a fraction `d` of the side is `2·d` in normalised coordinates.
        let (dx, dy) = (2.0 * self.shift_x, 2.0 * self.shift_y);
        [f / s, 0.0, -f * dx / s, 0.0, 1.0 / s, -dy / s]
    }
}

/// Apply `factors` (one per image) to normalised images `[n, 3, H, W]` in [−1, 1]. Pixels that
/// a shift or a shrink uncovers repeat the border, as the loader's shift does.
pub fn apply(images: &Tensor, factors: &[AppliedFactors]) -> Tensor {
    let size = images.size();
    assert_eq!(
        size[0] as usize,
        factors.len(),
        "one set of factors per image"
    );
    let device: Device = images.device();
    let theta: Vec<f32> = factors.iter().flat_map(|f| f.theta()).collect();
    let theta = Tensor::from_slice(&theta)
        .view([size[0], 2, 3])
        .to_device(device);
    let grid = Tensor::affine_grid_generator(&theta, &size, false);
    // interpolation 0 = bilinear, padding 1 = border.
    let moved = images.grid_sampler(&grid, 0, 1, false);
    let brightness: Vec<f32> = factors.iter().map(|f| f.brightness).collect();
    let brightness = Tensor::from_slice(&brightness)
        .view([size[0], 1, 1, 1])
        .to_device(device);
    (moved + brightness).clamp(-1.0, 1.0)
}

/// The report's section: each applied factor's held-out R² from f_T, f_P and f_C.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedFactorsOutput {
    pub seed: u64,
    pub max_brightness: f32,
    pub max_shift: f32,
    pub max_scale_change: f32,
    pub train_rows: usize,
    pub test_rows: usize,
    pub notes: Vec<String>,
    pub factors: Vec<FactorRow>,
}

/// Regress the applied factors of `set` (extracted with `--apply-factors`) on each feature:
/// ridge fitted on the `train` split, λ chosen on `val`, R² on `test` (as `attributes` does).
pub fn regress(set: &FeatureSet, seed: u64) -> Result<AppliedFactorsOutput> {
    let plan = attributes::plan_splits(set, "train", "val", "test")?;
    let which: Vec<usize> = set
        .meta
        .factor_names
        .iter()
        .enumerate()
        .filter(|(_, n)| NAMES.contains(&n.as_str()))
        .map(|(i, _)| i)
        .collect();
    if which.len() != NAMES.len() {
        // Features extracted without --apply-factors have none of these columns.
        bail!("the features were not extracted with --apply-factors");
    }
    let kinds = FeatureChoice::All.kinds(set);
    Ok(AppliedFactorsOutput {
        seed,
        max_brightness: MAX_BRIGHTNESS,
        max_shift: MAX_SHIFT,
        max_scale_change: MAX_SCALE_CHANGE,
        train_rows: plan.train.len(),
        test_rows: plan.test.len(),
        factors: attributes::regress_factors(set, &plan, &kinds, &which)?,
        notes: plan.notes,
    })
}

/// The Markdown of [`AppliedFactorsOutput`].
pub fn markdown(out: &AppliedFactorsOutput) -> String {
    format!(
        "Each image was given a known mirror flip (p = ½), a brightness offset (±{:.0} grey levels), \
         a shift (±{:.1}% of the side on each axis) and a scale (×{:.2}–{:.2}), drawn for it alone \
         (seed {}), before encoding. A ridge regression fitted on {} training images predicts each \
         from one feature; R² on {} held-out images (1 = fully explained, 0 = no better than the mean). \
         These are the factors identity does not explain: D²AE should carry them in f_P, not f_T. \
         The flip is a control: a mirrored face is as likely a photo as the original, so no feature \
         of one image can tell whether it was flipped (R² near 0 everywhere, unless the photos \
         themselves are asymmetric, such as most faces turned one way).\n\n{}\n",
        out.max_brightness * 127.5,
        out.max_shift * 100.0,
        1.0 - out.max_scale_change,
        1.0 + out.max_scale_change,
        out.seed,
        out.train_rows,
        out.test_rows,
        attributes::factor_table(&out.factors).to_markdown()
    )
}

/// FNV-1a, so that a key's draw does not depend on Rust's randomised hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureKind;
    use tch::Kind;

    fn ramp(n: i64, side: i64) -> Tensor {
        // A horizontal ramp in channel 0, a vertical one in channel 1, constant channel 2.
        let x = Tensor::linspace(-0.9, 0.9, side, (Kind::Float, Device::Cpu));
        let horizontal = x.view([1, side]).expand([side, side], false);
        let vertical = x.view([side, 1]).expand([side, side], false);
        let constant = Tensor::zeros([side, side], (Kind::Float, Device::Cpu));
        Tensor::stack(&[horizontal, vertical, constant], 0)
            .unsqueeze(0)
            .expand([n, 3, side, side], false)
            .contiguous()
    }

    #[test]
    fn identity_leaves_the_image_unchanged() {
        let x = ramp(2, 16);
        let y = apply(&x, &[AppliedFactors::IDENTITY; 2]);
        let err = f64::try_from((y - &x).abs().max()).unwrap();
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn flip_shift_scale_and_brightness_do_what_they_say() {
        let side = 16;
        let x = ramp(4, side);
        let flip = AppliedFactors {
            flip: true,
            ..AppliedFactors::IDENTITY
        };
        let shift = AppliedFactors {
            shift_x: 2.0 / side as f32,
            ..AppliedFactors::IDENTITY
        };
        let zoom = AppliedFactors {
            scale: 1.1,
            ..AppliedFactors::IDENTITY
        };
        let bright = AppliedFactors {
            brightness: 0.2,
            ..AppliedFactors::IDENTITY
        };
        let y = apply(&x, &[flip, shift, zoom, bright]);
        let at = |t: &Tensor, i: i64, c: i64, r: i64, col: i64| {
            f64::try_from(t.get(i).get(c).get(r).get(col)).unwrap()
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        // Mirror: column j shows column side−1−j; rows untouched.
        assert!(close(at(&y, 0, 0, 3, 2), at(&x, 0, 0, 3, side - 3)));
        assert!(close(at(&y, 0, 1, 3, 2), at(&x, 0, 1, 3, 2)));
        // Moved right by 2 px: column j shows column j−2; the first columns repeat the border.
        assert!(close(at(&y, 1, 0, 5, 9), at(&x, 1, 0, 5, 7)));
        assert!(close(at(&y, 1, 0, 5, 0), at(&x, 1, 0, 5, 0)));
        // Magnified about the centre: the ramp spreads out by the scale, the centre stays put.
        let slope = |t: &Tensor, i| at(t, i, 0, 8, 12) - at(t, i, 0, 8, 4);
        let ratio = slope(&x, 2) / slope(&y, 2);
        assert!((ratio - 1.1).abs() < 1e-3, "{ratio}");
        assert!((at(&y, 2, 0, 8, 8) + at(&y, 2, 0, 8, 7)).abs() < 1e-4);
        // Brighter by 0.2 everywhere (channel 2 is 0 in the input).
        assert!(close(at(&y, 3, 2, 7, 7), 0.2));
        assert!(close(at(&y, 3, 0, 7, 7), at(&x, 3, 0, 7, 7) + 0.2));
    }

    #[test]
    fn draws_depend_on_key_and_seed_only_and_fill_their_ranges() {
        assert_eq!(
            AppliedFactors::draw("a/b", 3),
            AppliedFactors::draw("a/b", 3)
        );
        assert_ne!(
            AppliedFactors::draw("a/b", 3),
            AppliedFactors::draw("a/b", 4)
        );
        let draws: Vec<AppliedFactors> = (0..2000)
            .map(|i| AppliedFactors::draw(&format!("key{i}"), 0))
            .collect();
        let flips = draws.iter().filter(|f| f.flip).count();
        assert!((850..1150).contains(&flips), "{flips}");
        for f in &draws {
            assert!(f.brightness.abs() <= MAX_BRIGHTNESS);
            assert!(f.shift_x.abs() <= MAX_SHIFT && f.shift_y.abs() <= MAX_SHIFT);
            assert!((f.scale - 1.0).abs() <= MAX_SCALE_CHANGE + 1e-6);
        }
        let max_b = draws.iter().map(|f| f.brightness).fold(f32::MIN, f32::max);
        assert!(max_b > 0.9 * MAX_BRIGHTNESS, "{max_b}");
    }

    #[test]
    fn regress_reads_the_applied_factors_and_refuses_features_without_them() {
        let mut set = crate::features::tests::toy_set(60, 4);
        let err = regress(&set, 0).unwrap_err().to_string();
        assert!(err.contains("--apply-factors"), "{err}");

        // f_P channel 0 is the shift, channel 1 the brightness; f_T knows neither.
        set.meta.factor_names = NAMES.iter().map(|n| n.to_string()).collect();
        set.factors.clear();
        let f_p = set.f_p.as_mut().unwrap();
        for (i, key) in set.meta.keys.iter().enumerate() {
            let a = AppliedFactors::draw(key, 0);
            set.factors.extend_from_slice(&a.values());
            f_p[i * 4] = 10.0 * a.shift_x;
            f_p[i * 4 + 1] = 3.0 * a.brightness;
        }
        let out = regress(&set, 0).unwrap();
        let names: Vec<&str> = out.factors.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, NAMES);
        let r2 = |name: &str, kind: FeatureKind| {
            out.factors.iter().find(|f| f.name == name).unwrap().fits[&kind].r2
        };
        for name in ["applied_shift_x", "applied_brightness"] {
            assert!(
                r2(name, FeatureKind::P) > 0.95,
                "{name}: {}",
                r2(name, FeatureKind::P)
            );
            assert!(
                r2(name, FeatureKind::T) < 0.5,
                "{name}: {}",
                r2(name, FeatureKind::T)
            );
        }
        assert!(markdown(&out).contains("| applied_shift_x"));
    }
}
