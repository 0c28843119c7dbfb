//! A borrowed row-major `N × D` matrix of `f32`: the one shape every metric takes.
//!
//! Features come out of extraction as one flat buffer (safetensors or `.npy`), so a view over a
//! slice avoids copying them into a matrix type of some linear-algebra crate.

use serde::{Deserialize, Serialize};

/// A row-major matrix view: `rows × cols` values in `data`.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

/// The buffer and the claimed shape disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("matrix of {len} values cannot have {cols} columns")]
pub struct ShapeError {
    /// Length of the buffer.
    pub len: usize,
    /// Requested number of columns.
    pub cols: usize,
}

impl<'a> Matrix<'a> {
    /// View `data` as rows of `cols` values; fails unless `cols > 0` divides `data.len()`.
    pub fn new(data: &'a [f32], cols: usize) -> Result<Self, ShapeError> {
        if cols == 0 || !data.len().is_multiple_of(cols) {
            return Err(ShapeError {
                len: data.len(),
                cols,
            });
        }
        Ok(Matrix {
            data,
            rows: data.len() / cols,
            cols,
        })
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (feature dimensions).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`; panics when out of range, like slice indexing.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Iterator over rows.
    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = &'a [f32]> + 'a {
        self.data.chunks_exact(self.cols)
    }

    /// Column `j` copied out (channel statistics work per column).
    pub fn column(&self, j: usize) -> Vec<f32> {
        self.iter_rows().map(|r| r[j]).collect()
    }

    /// The rows at `indices`, copied into a new buffer (for splits and subsets).
    pub fn select_rows(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            out.extend_from_slice(self.row(i));
        }
        out
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it (a single
/// running sum is a serial dependency chain it may not reorder).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x`, elementwise.
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_checked_and_rows_are_views() {
        let data: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let m = Matrix::new(&data, 3).unwrap();
        assert_eq!((m.rows(), m.cols()), (2, 3));
        assert_eq!(m.row(1), &[3.0, 4.0, 5.0]);
        assert_eq!(m.column(2), vec![2.0, 5.0]);
        assert_eq!(m.select_rows(&[1, 0]), vec![3.0, 4.0, 5.0, 0.0, 1.0, 2.0]);
        assert_eq!(
            Matrix::new(&data, 4).unwrap_err(),
            ShapeError { len: 6, cols: 4 }
        );
        assert!(Matrix::new(&data, 0).is_err());
    }

    #[test]
    fn dot_matches_a_plain_sum_for_odd_lengths() {
        let a: Vec<f32> = (0..19).map(|v| v as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|v| 1.0 - v as f32).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
        let mut y = vec![1.0; 3];
        axpy(2.0, &[1.0, 2.0, 3.0], &mut y);
        assert_eq!(y, vec![3.0, 5.0, 7.0]);
    }
}
