//! The factors behind every synthetic image, drawn from seeded random streams.
//!
//! Identity factors are fixed per identity; image factors are drawn per image, independently of the
//! identity, so any statistic of an image factor is the same for every identity by construction.
//! Geometry is in *face units*: one unit is the interpupillary distance, the eyes sit at
//! `(±0.5, 0)`, `y` grows downwards. Measuring in IPD units matters because alignment normalises
//! the IPD away: what stays visible after alignment (and so what identity can rest on) are the
//! ratios of every other feature to the eye distance.
//!
//! Every random stream is ChaCha8 seeded from SHA-256 of (purpose, seed, index), so an identity or
//! an image is the same whatever the scale of the run and whichever thread draws it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// An RGB colour with components in `0..=1`.
pub type Rgb = [f32; 3];

/// Binary attributes written to `list_attr_celeba.txt`, in column order (CelebA names).
pub const ATTRIBUTES: [&str; 7] = [
    "Big_Nose",
    "Black_Hair",
    "Bushy_Eyebrows",
    "Eyeglasses",
    "Mouth_Slightly_Open",
    "Smiling",
    "Wearing_Hat",
];

/// The attributes drawn per image, independently of the identity.
pub const IDENTITY_INDEPENDENT: [&str; 4] = [
    "Eyeglasses",
    "Mouth_Slightly_Open",
    "Smiling",
    "Wearing_Hat",
];

/// The attributes that are functions of the identity factors (constant within an identity).
pub const IDENTITY_DEPENDENT: [&str; 3] = ["Big_Nose", "Black_Hair", "Bushy_Eyebrows"];

/// Continuous per-image factors written to `list_factors_d2ae.txt`, in column order.
pub const FACTORS: [&str; 12] = [
    "background_r",
    "background_g",
    "background_b",
    "light_x",
    "light_y",
    "brightness",
    "pose_yaw",
    "head_roll",
    "translation_x",
    "translation_y",
    "scale",
    "noise",
];

/// Hair colours an identity can have; index 0 is the one `Black_Hair` names.
const HAIR_PALETTE: [Rgb; 6] = [
    [0.07, 0.06, 0.06],
    [0.26, 0.16, 0.09],
    [0.46, 0.30, 0.16],
    [0.86, 0.71, 0.42],
    [0.62, 0.25, 0.11],
    [0.68, 0.68, 0.70],
];
/// Probability of black hair, so that `Black_Hair` is roughly balanced.
const P_BLACK_HAIR: f64 = 0.45;

const IRIS_PALETTE: [Rgb; 5] = [
    [0.30, 0.17, 0.08],
    [0.15, 0.09, 0.05],
    [0.25, 0.45, 0.70],
    [0.30, 0.50, 0.30],
    [0.50, 0.38, 0.18],
];

/// How the hair meets the forehead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HairStyle {
    /// Short hair with a gently curved hairline.
    Short,
    /// A parting with hair swept low over one side of the forehead.
    SideSwept,
    /// Long hair falling behind the head to the shoulders (covers the ears).
    Long,
    /// A straight, low fringe just above the eyebrows.
    Bangs,
    /// A high, M-shaped hairline.
    Receding,
}

impl HairStyle {
    const ALL: [HairStyle; 5] = [
        HairStyle::Short,
        HairStyle::SideSwept,
        HairStyle::Long,
        HairStyle::Bangs,
        HairStyle::Receding,
    ];
}

/// What makes one identity look like itself. Lengths are in face units (IPD = 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IdentityFactors {
    /// Half the face width at its widest.
    pub face_half_width: f32,
    /// Height of the widest line of the face below the eyes.
    pub cheek_y: f32,
    /// Top of the skull above the eyes (positive number).
    pub crown_height: f32,
    /// Chin below the eyes.
    pub chin_y: f32,
    /// Superellipse exponent of the jaw: 2 is a round jaw, 4 a square one.
    pub jaw_squareness: f32,
    /// Half width of each eye opening.
    pub eye_half_width: f32,
    /// Half height of each eye opening.
    pub eye_half_height: f32,
    pub iris: Rgb,
    /// Eyebrow stroke width.
    pub brow_thickness: f32,
    /// Eyebrow height above the eye centre.
    pub brow_raise: f32,
    /// How much the eyebrow's middle rises above its ends.
    pub brow_arch: f32,
    /// Outer end of the brow higher (negative) or lower (positive) than the inner end.
    pub brow_slant: f32,
    pub brow_length: f32,
    /// Nose tip below the eyes.
    pub nose_length: f32,
    /// Half width of the nostrils.
    pub nose_half_width: f32,
    /// Mouth centre line below the eyes.
    pub mouth_y: f32,
    pub mouth_half_width: f32,
    pub lip_thickness: f32,
    pub ear_size: f32,
    pub skin: Rgb,
    pub lips: Rgb,
    pub hair: Rgb,
    pub hair_style: HairStyle,
    /// Centre of the hairline above the eyes (positive number).
    pub hairline_height: f32,
    /// Index into the hair palette (0 = black).
    pub hair_index: usize,
}

impl IdentityFactors {
    /// Draw the factors of identity `identity` (0-based) for `seed`.
    pub fn sample(seed: u64, identity: u64) -> Self {
        let mut rng = stream(seed, "identity", identity);
        let r = &mut rng;
        let skin_tone = r.random::<f32>();
        let skin = mix([0.38, 0.24, 0.16], [0.96, 0.82, 0.72], skin_tone);
        let redness = r.random_range(-0.04..0.04);
        let skin = [skin[0] + redness, skin[1], skin[2] - redness];
        let lips = mix(skin, [0.72, 0.24, 0.26], r.random_range(0.35..0.6));
        let hair_index = if r.random_bool(P_BLACK_HAIR) {
            0
        } else {
            r.random_range(1..HAIR_PALETTE.len())
        };
        let jitter = r.random_range(-0.04..0.04);
        let hair = HAIR_PALETTE[hair_index].map(|c| (c + jitter).clamp(0.0, 1.0));
        let hair_style = HairStyle::ALL[r.random_range(0..HairStyle::ALL.len())];
        let hairline_height = match hair_style {
            HairStyle::Bangs => r.random_range(0.62..0.72),
            HairStyle::Receding => r.random_range(1.0..1.12),
            _ => r.random_range(0.78..0.95),
        };
        let eye_half_width = r.random_range(0.15..0.23);
        let nose_length = r.random_range(0.55..0.85);
        IdentityFactors {
            face_half_width: r.random_range(0.98..1.3),
            cheek_y: r.random_range(0.05..0.3),
            crown_height: r.random_range(1.15..1.4),
            chin_y: r.random_range(1.6..1.95),
            jaw_squareness: r.random_range(2.0..4.0),
            eye_half_width,
            eye_half_height: eye_half_width * r.random_range(0.42..0.7),
            iris: IRIS_PALETTE[r.random_range(0..IRIS_PALETTE.len())],
            brow_thickness: r.random_range(0.045..0.15),
            brow_raise: r.random_range(0.3..0.42),
            brow_arch: r.random_range(0.0..0.12),
            brow_slant: r.random_range(-0.08..0.08),
            brow_length: r.random_range(0.38..0.52),
            nose_length,
            nose_half_width: r.random_range(0.12..0.22),
            mouth_y: nose_length + r.random_range(0.38..0.5),
            mouth_half_width: r.random_range(0.34..0.5),
            lip_thickness: r.random_range(0.06..0.11),
            ear_size: r.random_range(0.22..0.34),
            skin: skin.map(|c| c.clamp(0.0, 1.0)),
            lips,
            hair,
            hair_style,
            hairline_height,
            hair_index,
        }
    }

    /// The identity-dependent attributes, in [`IDENTITY_DEPENDENT`] order. Thresholds sit at the
    /// middle of each factor's range, so each attribute holds for about half the identities.
    pub fn attributes(&self) -> [bool; 3] {
        let nose = (self.nose_length - 0.55) / 0.3 + (self.nose_half_width - 0.12) / 0.1;
        [
            nose > 1.0,
            self.hair_index == 0,
            self.brow_thickness > 0.0975,
        ]
    }
}

/// What changes from one image of an identity to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFactors {
    pub smiling: bool,
    pub mouth_open: bool,
    pub eyeglasses: bool,
    pub hat: bool,
    pub background: Rgb,
    /// Direction and strength of the lighting gradient (each in -1..1).
    pub light: [f32; 2],
    /// Overall exposure multiplier.
    pub brightness: f32,
    /// Head turn, -1 (towards the image's left) .. 1.
    pub yaw: f32,
    /// In-plane head rotation in degrees (clockwise in the image).
    pub roll_degrees: f32,
    /// Offset of the eye midpoint from its nominal place, as a fraction of the image size.
    pub translation: [f32; 2],
    /// Face size relative to nominal.
    pub scale: f32,
    /// Standard deviation of the pixel noise, in 8-bit levels.
    pub noise: f32,
    /// Nuisance colours (not written as factors: they only keep hats, glasses and clothes varied).
    pub hat_colour: Rgb,
    pub glasses_colour: Rgb,
    pub round_glasses: bool,
    pub clothes: Rgb,
    /// Seed of the pixel-noise generator.
    pub noise_seed: u64,
}

impl ImageFactors {
    /// Draw the factors of global image number `image` (0-based). The identity is deliberately
    /// not an input: that is what makes these factors identity-independent.
    pub fn sample(seed: u64, image: u64) -> Self {
        let mut rng = stream(seed, "image", image);
        let r = &mut rng;
        let angle = r.random_range(0.0..std::f32::consts::TAU);
        let strength = r.random::<f32>().sqrt();
        ImageFactors {
            smiling: r.random_bool(0.5),
            mouth_open: r.random_bool(0.5),
            eyeglasses: r.random_bool(0.5),
            hat: r.random_bool(0.5),
            background: [
                r.random_range(0.05..0.95),
                r.random_range(0.05..0.95),
                r.random_range(0.05..0.95),
            ],
            light: [strength * angle.cos(), strength * angle.sin()],
            brightness: r.random_range(0.8..1.15),
            yaw: r.random_range(-1.0..1.0),
            roll_degrees: r.random_range(-12.0..12.0),
            translation: [r.random_range(-0.06..0.06), r.random_range(-0.05..0.05)],
            scale: r.random_range(0.9..1.1),
            noise: r.random_range(0.0..6.0),
            hat_colour: hsv(
                r.random::<f32>(),
                r.random_range(0.3..0.9),
                r.random_range(0.2..0.85),
            ),
            glasses_colour: hsv(
                r.random::<f32>(),
                r.random_range(0.0..0.6),
                r.random_range(0.05..0.3),
            ),
            round_glasses: r.random_bool(0.5),
            clothes: hsv(
                r.random::<f32>(),
                r.random_range(0.1..0.8),
                r.random_range(0.2..0.9),
            ),
            noise_seed: r.random(),
        }
    }

    /// The identity-independent attributes, in [`IDENTITY_INDEPENDENT`] order.
    pub fn attributes(&self) -> [bool; 4] {
        [self.eyeglasses, self.mouth_open, self.smiling, self.hat]
    }

    /// The continuous factors, in [`FACTORS`] order.
    pub fn values(&self) -> [f32; 12] {
        [
            self.background[0],
            self.background[1],
            self.background[2],
            self.light[0],
            self.light[1],
            self.brightness,
            self.yaw,
            self.roll_degrees,
            self.translation[0],
            self.translation[1],
            self.scale,
            self.noise,
        ]
    }
}

/// All attributes of one image, in [`ATTRIBUTES`] order.
pub fn attribute_row(id: &IdentityFactors, image: &ImageFactors) -> [bool; 7] {
    let [big_nose, black_hair, bushy] = id.attributes();
    let [glasses, open, smiling, hat] = image.attributes();
    [big_nose, black_hair, bushy, glasses, open, smiling, hat]
}

/// A ChaCha8 stream for one purpose and index, independent of every other stream.
pub fn stream(seed: u64, purpose: &str, index: u64) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"d2ae-synth/");
    h.update(purpose.as_bytes());
    h.update(seed.to_le_bytes());
    h.update(index.to_le_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// Linear interpolation between two colours.
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Scale a colour towards black (`k < 1`) or brighten it, clamped.
pub fn shade(c: Rgb, k: f32) -> Rgb {
    c.map(|v| (v * k).clamp(0.0, 1.0))
}

fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h6 = (h.fract() * 6.0).min(5.999);
    let sector = h6 as u32;
    let f = h6 - sector as f32;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match sector {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        assert_eq!(IdentityFactors::sample(7, 3), IdentityFactors::sample(7, 3));
        assert_ne!(IdentityFactors::sample(7, 3), IdentityFactors::sample(7, 4));
        assert_ne!(IdentityFactors::sample(7, 3), IdentityFactors::sample(8, 3));
        assert_eq!(ImageFactors::sample(1, 10), ImageFactors::sample(1, 10));
        assert_ne!(ImageFactors::sample(1, 10), ImageFactors::sample(1, 11));
    }

    #[test]
    fn identity_dependent_attributes_are_roughly_balanced() {
        let n = 2000;
        let mut counts = [0usize; 3];
        for i in 0..n {
            for (c, a) in counts
                .iter_mut()
                .zip(IdentityFactors::sample(0, i).attributes())
            {
                *c += a as usize;
            }
        }
        for (name, c) in IDENTITY_DEPENDENT.iter().zip(counts) {
            let p = c as f64 / n as f64;
            assert!((0.35..0.65).contains(&p), "{name}: {p}");
        }
    }

    #[test]
    fn factor_ranges_hold() {
        for i in 0..500 {
            let f = ImageFactors::sample(3, i);
            assert!(f.background.iter().all(|c| (0.05..0.95).contains(c)));
            assert!(f.light[0].hypot(f.light[1]) <= 1.0 + 1e-6);
            let id = IdentityFactors::sample(3, i);
            assert!(id.mouth_y - id.nose_length >= 0.38);
            assert!(id
                .skin
                .iter()
                .chain(&id.hair)
                .all(|c| (0.0..=1.0).contains(c)));
        }
    }

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]);
        let g = hsv(1.0 / 3.0, 1.0, 1.0);
        assert!(g[0].abs() < 1e-5 && (g[1] - 1.0).abs() < 1e-5 && g[2].abs() < 1e-5);
    }
}
