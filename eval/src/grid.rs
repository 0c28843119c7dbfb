//! Labelled image grids for the editing figures: a title, column labels on top, row labels on
//! the left, one face per cell.
//!
//! Text is rasterised with `ab_glyph` from DejaVu Sans embedded in the binary (the `dejavu`
//! crate), the same font the charts of `d2ae-metrics` use, so grids render on machines without
//! any system font. Drawing straight onto an `image::RgbImage` keeps the faces pixel-exact;
//! going through plotters would resample them.

use std::path::Path;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{imageops, Rgb, RgbImage};

/// Errors making a grid.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("cannot load the embedded font")]
    Font,
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("a grid needs at least one cell")]
    Empty,
}

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
/// Frame around cells that show inputs rather than decoder outputs.
pub const INPUT_FRAME: Rgb<u8> = Rgb([31, 119, 180]);

fn font() -> Result<FontRef<'static>, GridError> {
    FontRef::try_from_slice(dejavu::sans::regular()).map_err(|_| GridError::Font)
}

/// Width in pixels of `text` at `px` pixels per em.
pub fn text_width(text: &str, px: f32) -> Result<u32, GridError> {
    let font = font()?;
    let scaled = font.as_scaled(PxScale::from(px));
    let w: f32 = text
        .chars()
        .map(|c| scaled.h_advance(scaled.glyph_id(c)))
        .sum();
    Ok(w.ceil() as u32)
}

/// Draw `text` with its top-left corner at (`x`, `y`), alpha-blending the glyph coverage.
pub fn draw_text(
    img: &mut RgbImage,
    x: i32,
    y: i32,
    text: &str,
    px: f32,
    color: Rgb<u8>,
) -> Result<(), GridError> {
    let font = font()?;
    let scale = PxScale::from(px);
    let scaled = font.as_scaled(scale);
    let mut caret = x as f32;
    let baseline = y as f32 + scaled.ascent();
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += scaled.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i32 + gx as i32;
            let py = bounds.min.y as i32 + gy as i32;
            if px < 0 || py < 0 || px >= img.width() as i32 || py >= img.height() as i32 {
                return;
            }
            let p = img.get_pixel_mut(px as u32, py as u32);
            for k in 0..3 {
                let a = coverage.clamp(0.0, 1.0);
                p.0[k] = (f32::from(p.0[k]) * (1.0 - a) + f32::from(color.0[k]) * a).round() as u8;
            }
        });
    }
    Ok(())
}

/// One cell: an image, and whether it is an input (framed) or a decoder output.
#[derive(Debug, Clone)]
pub struct Cell {
    pub image: RgbImage,
    pub input: bool,
}

/// A labelled grid of equally sized cells (`None` leaves a cell blank).
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub title: String,
    pub col_labels: Vec<String>,
    pub row_labels: Vec<String>,
    pub cells: Vec<Vec<Option<Cell>>>,
    /// Side of a cell in pixels; images are scaled to it (nearest neighbour above their size,
    /// so small model outputs stay sharp rather than blurred).
    pub cell: u32,
}

const PAD: u32 = 4;
const LABEL_PX: f32 = 14.0;
const TITLE_PX: f32 = 18.0;

impl Grid {
    /// Render the grid to an image.
    pub fn render(&self) -> Result<RgbImage, GridError> {
        let rows = self.cells.len() as u32;
        let cols = self.cells.iter().map(Vec::len).max().unwrap_or(0) as u32;
        if rows == 0 || cols == 0 {
            return Err(GridError::Empty);
        }
        let cell = self.cell.max(16);
        let mut left = 0;
        for l in &self.row_labels {
            left = left.max(text_width(l, LABEL_PX)?);
        }
        let left = if left > 0 { left + 2 * PAD } else { PAD };
        let title_h = if self.title.is_empty() {
            0
        } else {
            TITLE_PX as u32 + 2 * PAD
        };
        // Column labels longer than a cell wrap onto a second line.
        let label_lines = self
            .col_labels
            .iter()
            .map(|l| wrap(l, cell).map(|w| w.len()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .unwrap_or(0) as u32;
        let top = title_h + label_lines * (LABEL_PX as u32 + 2) + PAD;
        let width = left + cols * (cell + PAD) + PAD;
        let width = width.max(text_width(&self.title, TITLE_PX)? + 2 * PAD);
        let height = top + rows * (cell + PAD) + PAD;
        let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
        if !self.title.is_empty() {
            draw_text(&mut img, PAD as i32, PAD as i32, &self.title, TITLE_PX, INK)?;
        }
        for (c, label) in self.col_labels.iter().enumerate() {
            let x0 = left + c as u32 * (cell + PAD);
            for (line, text) in wrap(label, cell)?.iter().enumerate() {
                let w = text_width(text, LABEL_PX)?;
                let x = x0 + cell.saturating_sub(w) / 2;
                let y = title_h + line as u32 * (LABEL_PX as u32 + 2);
                draw_text(&mut img, x as i32, y as i32, text, LABEL_PX, INK)?;
            }
        }
        for (r, row) in self.cells.iter().enumerate() {
            let y0 = top + r as u32 * (cell + PAD);
            if let Some(label) = self.row_labels.get(r) {
                let y = y0 + cell / 2 - LABEL_PX as u32 / 2;
                draw_text(&mut img, PAD as i32, y as i32, label, LABEL_PX, INK)?;
            }
            for (c, slot) in row.iter().enumerate() {
                let Some(cell_img) = slot else { continue };
                let x0 = left + c as u32 * (cell + PAD);
                let filter = if cell_img.image.width() < cell {
                    imageops::FilterType::Nearest
                } else {
                    imageops::FilterType::Triangle
                };
                let scaled = imageops::resize(&cell_img.image, cell, cell, filter);
                if cell_img.input {
                    frame(&mut img, x0, y0, cell, INPUT_FRAME);
                }
                imageops::replace(&mut img, &scaled, i64::from(x0), i64::from(y0));
            }
        }
        Ok(img)
    }

    /// Render and write a PNG.
    pub fn save(&self, path: &Path) -> Result<(), GridError> {
        let img = self.render()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| GridError::Write {
                path: path.to_owned(),
                source: image::ImageError::IoError(e),
            })?;
        }
        img.save(path).map_err(|source| GridError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// A 2-pixel frame just outside the cell at (`x`, `y`).
fn frame(img: &mut RgbImage, x: u32, y: u32, side: u32, color: Rgb<u8>) {
    let (x0, y0) = (x.saturating_sub(2), y.saturating_sub(2));
    let (x1, y1) = (
        (x + side + 1).min(img.width() - 1),
        (y + side + 1).min(img.height() - 1),
    );
    for xx in x0..=x1 {
        for yy in y0..=y1 {
            if xx < x || xx >= x + side || yy < y || yy >= y + side {
                img.put_pixel(xx, yy, color);
            }
        }
    }
}

/// Split `text` at spaces into lines that fit `width` pixels (a word longer than that gets
/// its own line).
fn wrap(text: &str, width: u32) -> Result<Vec<String>, GridError> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        let candidate = if current.is_empty() {
            word.to_owned()
        } else {
            format!("{current} {word}")
        };
        if !current.is_empty() && text_width(&candidate, LABEL_PX)? > width {
            lines.push(std::mem::take(&mut current));
            current = word.to_owned();
        } else {
            current = candidate;
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    Ok(lines)
}

/// A u8 `[3, H, W]` planar RGB buffer as an image.
pub fn planar_to_image(planar: &[u8], width: u32, height: u32) -> RgbImage {
    let plane = (width * height) as usize;
    RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        Rgb([planar[i], planar[plane + i], planar[2 * plane + i]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_ink_and_labels_fit() {
        let mut img = RgbImage::from_pixel(120, 30, BACKGROUND);
        draw_text(&mut img, 2, 2, "Smiling +3σ", 14.0, INK).unwrap();
        let dark = img.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 40, "only {dark} dark pixels");
        assert!(text_width("Smiling", 14.0).unwrap() > text_width("Smi", 14.0).unwrap());
    }

    #[test]
    fn grid_places_cells_exactly_and_frames_inputs() {
        let red = RgbImage::from_pixel(8, 8, Rgb([200, 0, 0]));
        let green = RgbImage::from_pixel(8, 8, Rgb([0, 200, 0]));
        let grid = Grid {
            title: String::new(),
            col_labels: vec![],
            row_labels: vec![],
            cells: vec![vec![
                Some(Cell {
                    image: red,
                    input: true,
                }),
                None,
                Some(Cell {
                    image: green,
                    input: false,
                }),
            ]],
            cell: 16,
        };
        let img = grid.render().unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (PAD + 3 * (16 + PAD) + PAD, PAD + 16 + PAD + PAD)
        );
        let top = PAD;
        assert_eq!(img.get_pixel(PAD + 5, top + 5), &Rgb([200, 0, 0]));
        assert_eq!(
            img.get_pixel(PAD + 2 * (16 + PAD) + 15, top + 15),
            &Rgb([0, 200, 0])
        );
        assert_eq!(img.get_pixel(PAD + (16 + PAD) + 8, top + 8), &BACKGROUND);
        assert_eq!(img.get_pixel(PAD - 1, top + 3), &INPUT_FRAME);
        assert!(matches!(Grid::default().render(), Err(GridError::Empty)));
    }

    #[test]
    fn planar_buffers_become_rgb_pixels() {
        // 2×1 image: R plane [1, 2], G [3, 4], B [5, 6].
        let img = planar_to_image(&[1, 2, 3, 4, 5, 6], 2, 1);
        assert_eq!(img.get_pixel(1, 0), &Rgb([2, 4, 6]));
    }
}
