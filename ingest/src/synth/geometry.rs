//! Where every feature of a face lies, shared by the renderer and the landmark writer.
//!
//! The renderer draws from these points and the landmarks are these points mapped through the same
//! transform, so landmarks are exact by construction rather than re-detected.

use tiny_skia::{Point, Transform};

use super::factors::{IdentityFactors, ImageFactors};

/// Interpupillary distance of a face at scale 1, as a fraction of the image width. The aligned
/// crop (IPD 35% of its width) then covers the middle 57% of the generated image.
pub const NOMINAL_IPD: f32 = 0.2;
/// Height of the eye line at zero translation, as a fraction of the image height.
pub const EYE_LINE: f32 = 0.47;

/// How far features move sideways per unit of yaw, by depth: the nose tip sticks out furthest.
const YAW_EYES: f32 = 0.10;
const YAW_NOSE: f32 = 0.28;
const YAW_MOUTH: f32 = 0.12;

/// Feature positions of one image, in face units (see [`super::factors`]).
#[derive(Debug, Clone)]
pub struct FaceGeometry {
    /// Face units → image pixels.
    pub transform: Transform,
    /// Eye centres (the iris centre), image-left first.
    pub eyes: [Point; 2],
    /// Half widths of the eye openings; the eye on the far side of a turned head looks narrower.
    pub eye_half_widths: [f32; 2],
    /// Where the nose bridge starts (between the eyes).
    pub nose_bridge: Point,
    /// The nose tip.
    pub nose_tip: Point,
    /// Mouth corners, image-left first.
    pub mouth_corners: [Point; 2],
    /// Height of the line between the lips at the mouth's centre (a smile pulls the corners up, so
    /// the centre sits lower than the corners).
    pub mouth_centre_y: f32,
    /// Horizontal position of the mouth centre.
    pub mouth_x: f32,
    /// Gap between the lips at the centre: dark when the mouth is open, teeth for a closed smile,
    /// 0 otherwise.
    pub mouth_opening: f32,
    /// Horizontal shift of the hair and outline against the features (opposite to the features).
    pub outline_shift: f32,
}

impl FaceGeometry {
    pub fn new(id: &IdentityFactors, img: &ImageFactors, size: u32) -> Self {
        let s = size as f32;
        let ipd = NOMINAL_IPD * s * img.scale;
        let centre_x = s * (0.5 + img.translation[0]);
        let centre_y = s * (EYE_LINE + img.translation[1]);
        let transform = Transform::from_row(ipd, 0.0, 0.0, ipd, 0.0, 0.0)
            .post_rotate(img.roll_degrees)
            .post_translate(centre_x, centre_y);

        let yaw = img.yaw;
        let eye_dx = yaw * YAW_EYES;
        let eyes = [
            Point::from_xy(-0.5 + eye_dx, 0.0),
            Point::from_xy(0.5 + eye_dx, 0.0),
        ];
        // Turning towards +x shows less of the image-right half of the face.
        let eye_half_widths = [
            id.eye_half_width * (1.0 + 0.12 * yaw),
            id.eye_half_width * (1.0 - 0.12 * yaw),
        ];
        let nose_tip = Point::from_xy(yaw * YAW_NOSE, id.nose_length);
        let nose_bridge = Point::from_xy(yaw * YAW_EYES * 1.3, 0.05);

        let mouth_x = yaw * YAW_MOUTH;
        let (corner_lift, centre_drop) = if img.smiling {
            (0.13, 0.05)
        } else {
            (-0.02, 0.0)
        };
        let corner_y = id.mouth_y - corner_lift;
        let widen = if img.smiling { 1.08 } else { 1.0 };
        let half = id.mouth_half_width * widen;
        let mouth_corners = [
            Point::from_xy(mouth_x - half * (1.0 + 0.1 * yaw), corner_y),
            Point::from_xy(mouth_x + half * (1.0 - 0.1 * yaw), corner_y),
        ];
        FaceGeometry {
            transform,
            eyes,
            eye_half_widths,
            nose_bridge,
            nose_tip,
            mouth_corners,
            mouth_centre_y: id.mouth_y + centre_drop,
            mouth_x,
            mouth_opening: match (img.mouth_open, img.smiling) {
                (true, _) => 0.26,
                // A closed-mouth smile parts the lips on a row of teeth.
                (false, true) => 0.13,
                (false, false) => 0.0,
            },
            outline_shift: -yaw * 0.04,
        }
    }

    /// The 5 landmarks in image pixels, in CelebA's column order: `lefteye`, `righteye`, `nose`,
    /// `leftmouth`, `rightmouth`, where "left" is the point at smaller image x.
    pub fn landmarks(&self) -> [[f32; 2]; 5] {
        let pts = [
            self.eyes[0],
            self.eyes[1],
            self.nose_tip,
            self.mouth_corners[0],
            self.mouth_corners[1],
        ];
        pts.map(|p| self.to_pixels(p))
    }

    /// The point at `t` (0 = image-left corner, 1 = right corner) of the line between the lips:
    /// the quadratic through both corners and the mouth centre, as the renderer draws it.
    pub fn mouth_line(&self, t: f32) -> Point {
        let [l, r] = self.mouth_corners;
        // Control point of the quadratic that passes through the centre at t = ½.
        let cx = 2.0 * self.mouth_x - 0.5 * (l.x + r.x);
        let cy = 2.0 * self.mouth_centre_y - 0.5 * (l.y + r.y);
        let u = 1.0 - t;
        Point::from_xy(
            u * u * l.x + 2.0 * u * t * cx + t * t * r.x,
            u * u * l.y + 2.0 * u * t * cy + t * t * r.y,
        )
    }

    /// Map a face-unit point to image pixels.
    pub fn to_pixels(&self, mut p: Point) -> [f32; 2] {
        self.transform.map_point(&mut p);
        [p.x, p.y]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eyes_are_ipd_apart_and_ordered_by_x() {
        for i in 0..200 {
            let id = IdentityFactors::sample(5, i);
            let img = ImageFactors::sample(5, i);
            let g = FaceGeometry::new(&id, &img, 256);
            let [le, re, nose, lm, rm] = g.landmarks();
            let ipd = (re[0] - le[0]).hypot(re[1] - le[1]);
            let expected = NOMINAL_IPD * 256.0 * img.scale;
            assert!(
                (ipd - expected).abs() < 1e-3 * expected,
                "{ipd} vs {expected}"
            );
            assert!(
                le[0] < re[0] && lm[0] < rm[0],
                "left points must have smaller x"
            );
            // The nose lies below the eye line and above the mouth line, in the face's own frame.
            let inv = g.transform.invert().unwrap();
            let to_face = |p: [f32; 2]| {
                let mut q = Point::from_xy(p[0], p[1]);
                inv.map_point(&mut q);
                q
            };
            assert!(to_face(nose).y > 0.5 && to_face(nose).y < to_face(lm).y);
            let roll = (re[1] - le[1]).atan2(re[0] - le[0]).to_degrees();
            assert!(
                (roll - img.roll_degrees).abs() < 1e-3,
                "{roll} vs {}",
                img.roll_degrees
            );
        }
    }

    #[test]
    fn smiling_raises_the_corners_above_the_centre() {
        let id = IdentityFactors::sample(1, 1);
        let mut img = ImageFactors::sample(1, 1);
        img.smiling = true;
        let g = FaceGeometry::new(&id, &img, 256);
        assert!(g.mouth_corners[0].y < g.mouth_centre_y - 0.15);
        img.smiling = false;
        let g = FaceGeometry::new(&id, &img, 256);
        assert!(g.mouth_corners[0].y >= g.mouth_centre_y);
    }
}
