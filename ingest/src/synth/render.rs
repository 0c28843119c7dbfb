//! Drawing one face with `tiny-skia`, then lighting, noise and encoding.
//!
//! Every shape is built in face units and filled through [`FaceGeometry::transform`], so pose,
//! scale and roll apply to all features at once and the landmarks stay exact. Shapes are
//! antialiased paths (ellipses, quadratic Béziers, a superellipse jaw) rather than sprites: any
//! factor can then vary continuously. Lighting and noise are one pass over the pixels afterwards.

use tiny_skia::{
    Color, FillRule, GradientStop, LineCap, Mask, Paint, Path, PathBuilder, Pixmap, Point,
    RadialGradient, Rect, SpreadMode, Stroke, Transform,
};

use super::factors::{mix, shade, HairStyle, IdentityFactors, ImageFactors, Rgb};
use super::geometry::FaceGeometry;

/// How strongly the lighting gradient modulates brightness from the image centre to its edge.
const LIGHT_GAIN: f32 = 0.35;
const EYE_WHITE: Rgb = [0.95, 0.94, 0.92];
const PUPIL: Rgb = [0.04, 0.03, 0.03];
const MOUTH_INSIDE: Rgb = [0.13, 0.03, 0.04];
const TEETH: Rgb = [0.93, 0.92, 0.86];
/// Glass lenses are slightly tinted, so glasses show even where their frame is thin.
pub const LENS_TINT: Rgb = [0.85, 0.9, 0.95];
pub const LENS_ALPHA: f32 = 0.15;
/// The colour of the pupils, exposed for tests.
pub const PUPIL_COLOUR: Rgb = PUPIL;

/// Render the face of `id` with the per-image factors `img`, before lighting and noise.
pub fn draw(id: &IdentityFactors, img: &ImageFactors, g: &FaceGeometry, size: u32) -> Pixmap {
    let mut pm = Pixmap::new(size, size).expect("size is validated to be non-zero");
    let [r, gr, b] = img.background;
    pm.fill(Color::from_rgba(r, gr, b, 1.0).unwrap_or(Color::BLACK));
    let mut c = Canvas {
        pm: &mut pm,
        ts: g.transform,
    };
    draw_clothes(&mut c, id, img, g);
    if id.hair_style == HairStyle::Long {
        draw_hair_back(&mut c, id, g);
    }
    draw_neck(&mut c, id, g);
    if id.hair_style != HairStyle::Long {
        draw_ears(&mut c, id, g);
    }
    draw_face(&mut c, id, g);
    draw_nose(&mut c, id, g);
    draw_mouth(&mut c, id, img, g);
    if img.smiling {
        draw_smile_folds(&mut c, id, g);
    }
    draw_eyes(&mut c, id, g, size);
    draw_brows(&mut c, id, g);
    draw_hair_top(&mut c, id, g);
    if img.hat {
        draw_hat(&mut c, id, img, g);
    }
    if img.eyeglasses {
        draw_glasses(&mut c, id, img, g);
    }
    pm
}

/// Apply the lighting gradient, the exposure and pixel noise in place.
pub fn light_and_noise(pm: &mut Pixmap, img: &ImageFactors) {
    let size = pm.width() as usize;
    let height = pm.height() as usize;
    let mut rng = XorShift(img.noise_seed | 1);
    let sigma = img.noise;
    let to_unit = |i: usize, n: usize| (i as f32 + 0.5) / n as f32 * 2.0 - 1.0;
    let col_term: Vec<f32> = (0..size)
        .map(|x| LIGHT_GAIN * img.light[0] * to_unit(x, size))
        .collect();
    for (y, row) in pm
        .data_mut()
        .chunks_exact_mut(size * 4)
        .enumerate()
        .take(height)
    {
        let row_term = 1.0 + LIGHT_GAIN * img.light[1] * to_unit(y, height);
        for (px, col) in row.chunks_exact_mut(4).zip(&col_term) {
            let gain = img.brightness * (row_term + col);
            for c in &mut px[..3] {
                let v = *c as f32 * gain + sigma * rng.triangular();
                *c = v.round().clamp(0.0, 255.0) as u8;
            }
            px[3] = 255;
        }
    }
}

/// The drawing surface and the face-units → pixels transform.
struct Canvas<'a> {
    pm: &'a mut Pixmap,
    ts: Transform,
}

impl Canvas<'_> {
    fn fill(&mut self, path: Option<Path>, colour: Rgb, alpha: f32) {
        if let Some(path) = path {
            let paint = solid(colour, alpha);
            self.pm
                .fill_path(&path, &paint, FillRule::Winding, self.ts, None);
        }
    }

    fn fill_masked(&mut self, path: Option<Path>, colour: Rgb, mask: &Mask) {
        if let Some(path) = path {
            let paint = solid(colour, 1.0);
            self.pm
                .fill_path(&path, &paint, FillRule::Winding, self.ts, Some(mask));
        }
    }

    fn stroke(&mut self, path: Option<Path>, colour: Rgb, width: f32) {
        if let Some(path) = path {
            let paint = solid(colour, 1.0);
            let stroke = Stroke {
                width,
                line_cap: LineCap::Round,
                ..Stroke::default()
            };
            self.pm.stroke_path(&path, &paint, &stroke, self.ts, None);
        }
    }
}

fn solid(c: Rgb, alpha: f32) -> Paint<'static> {
    let mut paint = Paint::default();
    paint.set_color(Color::from_rgba(c[0], c[1], c[2], alpha).unwrap_or(Color::BLACK));
    paint.anti_alias = true;
    paint
}

fn colour(c: Rgb) -> Color {
    Color::from_rgba(c[0], c[1], c[2], 1.0).unwrap_or(Color::BLACK)
}

fn ellipse(cx: f32, cy: f32, rx: f32, ry: f32) -> Option<Path> {
    PathBuilder::from_oval(Rect::from_xywh(cx - rx, cy - ry, 2.0 * rx, 2.0 * ry)?)
}

/// A closed path through `points` (a polygon fine enough to look smooth).
fn polygon(points: impl IntoIterator<Item = (f32, f32)>) -> Option<Path> {
    let mut pb = PathBuilder::new();
    for (i, (x, y)) in points.into_iter().enumerate() {
        if i == 0 {
            pb.move_to(x, y);
        } else {
            pb.line_to(x, y);
        }
    }
    pb.close();
    pb.finish()
}

/// The control point of a quadratic Bézier from `a` to `b` that passes through `mid` at t = ½.
fn through(a: Point, mid: (f32, f32), b: Point) -> (f32, f32) {
    (
        2.0 * mid.0 - 0.5 * (a.x + b.x),
        2.0 * mid.1 - 0.5 * (a.y + b.y),
    )
}

/// Points of the face outline: an ellipse above the cheek line, a superellipse jaw below it.
fn outline_points(id: &IdentityFactors, shift: f32, grow: f32) -> Vec<(f32, f32)> {
    const N: usize = 96;
    let a = id.face_half_width + grow;
    let top = id.crown_height + id.cheek_y + grow;
    let bottom = id.chin_y - id.cheek_y + grow;
    let exp = 2.0 / id.jaw_squareness;
    (0..N)
        .map(|i| {
            let t = i as f32 / N as f32 * std::f32::consts::TAU;
            let (s, c) = t.sin_cos();
            if s < 0.0 {
                (shift + a * c, id.cheek_y + top * s)
            } else {
                let x = a * c.abs().powf(exp) * c.signum();
                (shift + x, id.cheek_y + bottom * s)
            }
        })
        .collect()
}

fn draw_clothes(c: &mut Canvas, id: &IdentityFactors, img: &ImageFactors, g: &FaceGeometry) {
    let top = id.chin_y + 0.45;
    c.fill(
        ellipse(g.outline_shift * 0.5, top + 1.7, 2.7, 1.7),
        img.clothes,
        1.0,
    );
}

fn draw_hair_back(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    let a = id.face_half_width + 0.28;
    let top = -(id.crown_height + 0.2);
    let bottom = id.chin_y + 0.55;
    let x = g.outline_shift * 1.5;
    let mut pb = PathBuilder::new();
    pb.move_to(x - a, bottom);
    pb.line_to(x - a, 0.0);
    pb.cubic_to(x - a, top * 0.6, x - a * 0.6, top, x, top);
    pb.cubic_to(x + a * 0.6, top, x + a, top * 0.6, x + a, 0.0);
    pb.line_to(x + a, bottom);
    pb.quad_to(x, bottom + 0.25, x - a, bottom);
    pb.close();
    c.fill(pb.finish(), shade(id.hair, 0.85), 1.0);
}

fn draw_neck(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    let w = id.face_half_width * 0.45;
    let x = g.outline_shift * 0.5;
    c.fill(
        Rect::from_ltrb(x - w, id.cheek_y + 0.3, x + w, id.chin_y + 0.9)
            .map(PathBuilder::from_rect),
        shade(id.skin, 0.66),
        1.0,
    );
}

fn draw_ears(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    for side in [-1.0f32, 1.0] {
        let x = g.outline_shift + side * (id.face_half_width - 0.03);
        let y = 0.18;
        c.fill(ellipse(x, y, 0.14, id.ear_size), shade(id.skin, 0.92), 1.0);
        c.fill(
            ellipse(x + side * 0.04, y, 0.06, id.ear_size * 0.6),
            shade(id.skin, 0.72),
            1.0,
        );
    }
}

fn draw_face(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    let path = polygon(outline_points(id, g.outline_shift, 0.0));
    let centre = Point::from_xy(g.outline_shift - 0.15, id.cheek_y - 0.35);
    let shader = RadialGradient::new(
        centre,
        centre,
        2.3,
        vec![
            GradientStop::new(0.0, colour(shade(id.skin, 1.05))),
            GradientStop::new(0.6, colour(id.skin)),
            GradientStop::new(1.0, colour(shade(id.skin, 0.8))),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    );
    if let (Some(path), Some(shader)) = (path, shader) {
        let paint = Paint {
            shader,
            anti_alias: true,
            ..Paint::default()
        };
        c.pm.fill_path(&path, &paint, FillRule::Winding, c.ts, None);
    }
}

fn draw_nose(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    let t = g.nose_tip;
    let b = g.nose_bridge;
    let w = id.nose_half_width;
    let side = shade(id.skin, 0.78);
    // A shadowed flank down one side of the nose gives it length at low resolution.
    let mut pb = PathBuilder::new();
    pb.move_to(b.x - 0.07, b.y + 0.12);
    pb.quad_to(t.x - w * 0.9, t.y - 0.3, t.x - w * 0.95, t.y + 0.02);
    pb.line_to(t.x - w * 0.45, t.y + 0.02);
    pb.quad_to(t.x - w * 0.35, t.y - 0.3, b.x - 0.02, b.y + 0.12);
    pb.close();
    c.fill(pb.finish(), side, 0.75);
    // Tip, nostril wings and nostrils.
    c.fill(
        ellipse(t.x, t.y - 0.01, w * 0.62, 0.085),
        mix(id.skin, id.lips, 0.22),
        1.0,
    );
    for s in [-1.0f32, 1.0] {
        let mut pb = PathBuilder::new();
        pb.move_to(t.x + s * w * 0.4, t.y + 0.07);
        pb.quad_to(t.x + s * w * 1.2, t.y + 0.06, t.x + s * w * 0.85, t.y - 0.1);
        c.stroke(pb.finish(), shade(id.skin, 0.6), 0.035);
        c.fill(
            ellipse(t.x + s * w * 0.45, t.y + 0.065, w * 0.25, 0.035),
            shade(id.skin, 0.32),
            1.0,
        );
    }
}

fn draw_mouth(c: &mut Canvas, id: &IdentityFactors, img: &ImageFactors, g: &FaceGeometry) {
    let [l, r] = g.mouth_corners;
    let x = g.mouth_x;
    let y = g.mouth_centre_y;
    let lip = id.lip_thickness;
    let h = g.mouth_opening;
    // Curves from corner to corner, each given by its height at the centre.
    let curve = |pb: &mut PathBuilder, from: Point, to: Point, mid_y: f32| {
        let (cx, cy) = through(from, (x, mid_y), to);
        pb.quad_to(cx, cy, to.x, to.y);
    };
    let band = |top: f32, bottom: f32| {
        let mut pb = PathBuilder::new();
        pb.move_to(l.x, l.y);
        curve(&mut pb, l, r, top);
        curve(&mut pb, r, l, bottom);
        pb.close();
        pb.finish()
    };
    let (open_top, open_bottom) = (y - h * 0.35, y + h * 0.65);
    c.fill(band(open_top - lip * 1.1, open_top), id.lips, 1.0);
    c.fill(
        band(open_bottom, open_bottom + lip * 1.4),
        shade(id.lips, 1.08),
        1.0,
    );
    if img.mouth_open {
        c.fill(band(open_top, open_bottom), MOUTH_INSIDE, 1.0);
        if img.smiling {
            c.fill(band(open_top, open_top + h * 0.3), TEETH, 1.0);
        }
    } else if img.smiling {
        c.fill(band(open_top, open_bottom), TEETH, 1.0);
    } else {
        let mut pb = PathBuilder::new();
        pb.move_to(l.x, l.y);
        curve(&mut pb, l, r, y);
        c.stroke(pb.finish(), shade(id.lips, 0.35), 0.055);
    }
}

/// The folds from the nose wings to beyond the mouth corners that a smile pushes up.
fn draw_smile_folds(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    let t = g.nose_tip;
    let w = id.nose_half_width;
    for (corner, s) in g.mouth_corners.into_iter().zip([-1.0f32, 1.0]) {
        let start = (t.x + s * w * 1.3, t.y - 0.04);
        let end = (corner.x + s * 0.14, corner.y + 0.08);
        let mut pb = PathBuilder::new();
        pb.move_to(start.0, start.1);
        pb.quad_to(end.0 + s * 0.08, start.1 + 0.18, end.0, end.1);
        c.stroke(pb.finish(), shade(id.skin, 0.7), 0.035);
    }
}

fn draw_eyes(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry, size: u32) {
    let almond = |e: Point, w: f32| {
        let h = id.eye_half_height;
        let mut pb = PathBuilder::new();
        pb.move_to(e.x - w, e.y);
        pb.quad_to(e.x, e.y - 2.0 * h, e.x + w, e.y);
        pb.quad_to(e.x, e.y + 1.6 * h, e.x - w, e.y);
        pb.close();
        pb.finish()
    };
    let Some(mut mask) = Mask::new(size, size) else {
        return;
    };
    for (e, w) in g.eyes.into_iter().zip(g.eye_half_widths) {
        if let Some(path) = almond(e, w) {
            mask.fill_path(&path, FillRule::Winding, true, c.ts);
        }
    }
    for (e, w) in g.eyes.into_iter().zip(g.eye_half_widths) {
        c.fill(almond(e, w), EYE_WHITE, 1.0);
        let r = (id.eye_half_height * 1.05).min(w * 0.6);
        c.fill_masked(ellipse(e.x, e.y, r, r), id.iris, &mask);
        c.fill_masked(ellipse(e.x, e.y, r * 0.48, r * 0.48), PUPIL, &mask);
        c.fill_masked(
            ellipse(e.x + r * 0.4, e.y - r * 0.4, r * 0.16, r * 0.16),
            [1.0, 1.0, 1.0],
            &mask,
        );
        let mut lid = PathBuilder::new();
        lid.move_to(e.x - w * 1.05, e.y + 0.01);
        lid.quad_to(
            e.x,
            e.y - 2.0 * id.eye_half_height,
            e.x + w * 1.05,
            e.y + 0.01,
        );
        c.stroke(lid.finish(), [0.1, 0.07, 0.07], 0.045);
    }
}

fn draw_brows(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    // Light hair still comes with visibly darker brows.
    let colour = shade(id.hair, if id.hair_index >= 3 { 0.7 } else { 0.9 });
    for (e, inward) in g.eyes.into_iter().zip([1.0f32, -1.0]) {
        let inner = Point::from_xy(e.x + inward * id.brow_length * 0.42, -id.brow_raise);
        let outer = Point::from_xy(
            e.x - inward * id.brow_length * 0.58,
            -id.brow_raise + id.brow_slant,
        );
        let mid = (
            0.5 * (inner.x + outer.x),
            0.5 * (inner.y + outer.y) - id.brow_arch,
        );
        let (cx, cy) = through(inner, mid, outer);
        let mut pb = PathBuilder::new();
        pb.move_to(inner.x, inner.y);
        pb.quad_to(cx, cy, outer.x, outer.y);
        c.stroke(pb.finish(), colour, id.brow_thickness);
    }
}

fn draw_hair_top(c: &mut Canvas, id: &IdentityFactors, g: &FaceGeometry) {
    let a = id.face_half_width;
    let x0 = g.outline_shift;
    let hl = -id.hairline_height;
    let side_y = 0.02;
    let temple = a * 0.93;
    // Outer edge: the skull outline grown by the hair's volume, from the left sideburn over the top.
    let outer = outline_points(id, x0, 0.09);
    let mut pb = PathBuilder::new();
    pb.move_to(x0 - a - 0.09, side_y);
    // outline_points runs right → chin → left → crown → right, so the points above the sideburns,
    // in order, are the upper arc from left to right.
    for &(x, y) in outer.iter().filter(|p| p.1 < side_y) {
        pb.line_to(x, y);
    }
    pb.line_to(x0 + a + 0.09, side_y);
    pb.line_to(x0 + temple, side_y);
    // Inner edge, the hairline, from the right temple back to the left one.
    match id.hair_style {
        HairStyle::Short | HairStyle::Long => {
            pb.quad_to(x0 + temple * 0.95, hl, x0, hl);
            pb.quad_to(x0 - temple * 0.95, hl, x0 - temple, side_y);
        }
        HairStyle::SideSwept => {
            pb.quad_to(x0 + temple, hl - 0.1, x0 + 0.15, hl - 0.05);
            pb.cubic_to(
                x0 - 0.3,
                hl + 0.1,
                x0 - temple * 0.8,
                hl + 0.3,
                x0 - temple,
                -0.2,
            );
            pb.line_to(x0 - temple, side_y);
        }
        HairStyle::Bangs => {
            pb.line_to(x0 + temple * 0.95, hl + 0.05);
            pb.quad_to(x0, hl - 0.04, x0 - temple * 0.95, hl + 0.05);
            pb.line_to(x0 - temple, side_y);
        }
        HairStyle::Receding => {
            pb.quad_to(x0 + temple, hl - 0.05, x0 + temple * 0.6, hl - 0.18);
            pb.quad_to(x0 + 0.2, hl - 0.05, x0, hl + 0.07);
            pb.quad_to(x0 - 0.2, hl - 0.05, x0 - temple * 0.6, hl - 0.18);
            pb.quad_to(x0 - temple, hl - 0.05, x0 - temple, side_y);
        }
    }
    pb.close();
    c.fill(pb.finish(), id.hair, 1.0);
}

fn draw_hat(c: &mut Canvas, id: &IdentityFactors, img: &ImageFactors, g: &FaceGeometry) {
    let a = id.face_half_width + 0.14;
    let x = g.outline_shift;
    let brim = -0.74;
    let top = -(id.crown_height + 0.4);
    let mut pb = PathBuilder::new();
    pb.move_to(x - a, brim);
    pb.cubic_to(x - a, top * 0.9, x - a * 0.5, top, x, top);
    pb.cubic_to(x + a * 0.5, top, x + a, top * 0.9, x + a, brim);
    pb.close();
    c.fill(pb.finish(), img.hat_colour, 1.0);
    let band = Rect::from_ltrb(x - a - 0.22, brim - 0.16, x + a + 0.22, brim + 0.02);
    c.fill(
        band.map(PathBuilder::from_rect),
        shade(img.hat_colour, 0.6),
        1.0,
    );
}

fn draw_glasses(c: &mut Canvas, id: &IdentityFactors, img: &ImageFactors, g: &FaceGeometry) {
    let (gw, gh) = (0.37, 0.25);
    let width = 0.065;
    let col = img.glasses_colour;
    for e in g.eyes {
        let (cx, cy) = (e.x, e.y + 0.03);
        let rim = if img.round_glasses {
            ellipse(cx, cy, gw, gh)
        } else {
            let k = 0.08;
            let mut pb = PathBuilder::new();
            pb.move_to(cx - gw + k, cy - gh);
            pb.line_to(cx + gw - k, cy - gh);
            pb.quad_to(cx + gw, cy - gh, cx + gw, cy - gh + k);
            pb.line_to(cx + gw, cy + gh - k);
            pb.quad_to(cx + gw, cy + gh, cx + gw - k, cy + gh);
            pb.line_to(cx - gw + k, cy + gh);
            pb.quad_to(cx - gw, cy + gh, cx - gw, cy + gh - k);
            pb.line_to(cx - gw, cy - gh + k);
            pb.quad_to(cx - gw, cy - gh, cx - gw + k, cy - gh);
            pb.close();
            pb.finish()
        };
        c.fill(rim.clone(), LENS_TINT, LENS_ALPHA);
        c.stroke(rim, col, width);
    }
    let [l, r] = g.eyes;
    let mut bridge = PathBuilder::new();
    bridge.move_to(l.x + gw, 0.0);
    bridge.quad_to(0.5 * (l.x + r.x), -0.1, r.x - gw, 0.0);
    c.stroke(bridge.finish(), col, width);
    for (e, s) in [(l, -1.0f32), (r, 1.0)] {
        let mut arm = PathBuilder::new();
        arm.move_to(e.x + s * gw, -0.02);
        arm.line_to(g.outline_shift + s * (id.face_half_width + 0.02), -0.07);
        c.stroke(arm.finish(), col, width);
    }
}

/// A small, fast generator for pixel noise; quality needs are modest and speed matters (one draw
/// per channel per pixel).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A triangular variate with mean 0 and variance 1 (sum of two uniforms, rescaled).
    fn triangular(&mut self) -> f32 {
        let v = self.next();
        let u1 = (v & 0xFFFF) as f32 / 65535.0;
        let u2 = ((v >> 16) & 0xFFFF) as f32 / 65535.0;
        // Var(u1 + u2 - 1) = 1/6.
        (u1 + u2 - 1.0) * 6f32.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangular_noise_has_unit_variance() {
        let mut rng = XorShift(12345);
        let n = 100_000;
        let xs: Vec<f32> = (0..n).map(|_| rng.triangular()).collect();
        let mean = xs.iter().sum::<f32>() / n as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n as f32;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.03, "{var}");
    }

    #[test]
    fn lighting_follows_its_direction() {
        let mut img = ImageFactors::sample(0, 0);
        img.light = [1.0, 0.0];
        img.brightness = 1.0;
        img.noise = 0.0;
        let mut pm = Pixmap::new(64, 64).unwrap();
        pm.fill(Color::from_rgba8(100, 100, 100, 255));
        light_and_noise(&mut pm, &img);
        let left = pm.pixel(0, 32).unwrap().red();
        let right = pm.pixel(63, 32).unwrap().red();
        // 100 · (1 ± 0.35 · 63/64).
        assert_eq!((left, right), (66, 134));
    }
}
