//! The loss terms of eq. 6, each a scalar tensor averaged over the batch.
//!
//! Where gradients go is decided by what the model feeds in ([`super::ForwardOutput`]): these
//! functions are plain math.

use tch::{Device, Kind, Tensor};

/// Softmax cross-entropy against integer labels (eq. 2; also L_T^adv): mean over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(labels)
}

/// L_H: cross-entropy between the uniform distribution and softmax(logits),
/// −(1/N)·Σ_j log y_j, mean over the batch.
///
/// Eq. 3 as printed, (1/N)·Σ_j log y_j, is the negative of this and would be minimised by a
/// confident prediction; the text ("fool the classifier", "uniform ground truth") asks for this
/// sign. By Jensen's inequality it is ≥ log N, with equality exactly at the uniform prediction.
pub fn uniform_cross_entropy(logits: &Tensor) -> Tensor {
    -logits
        .log_softmax(-1, Kind::Float)
        .mean_dim(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// L_X (eq. 4): ½‖x − x̂‖² summed over channels and pixels, mean over the batch; with `weights`
/// (`[1, 1, H, W]`, broadcast over the batch and channels) each squared error is weighted first.
pub fn reconstruction(images: &Tensor, recon: &Tensor, weights: Option<&Tensor>) -> Tensor {
    let batch = images.size()[0] as f64;
    let err = (images - recon).square();
    let err = match weights {
        Some(w) => err * w,
        None => err,
    };
    err.sum(Kind::Float) * (0.5 / batch)
}

/// The inner-face emphasis of [`super::ModelConfig::recon_face_weight`]: `1 + k·g` with g a
/// Gaussian centred between the eyes and the mouth of `d2ae-ingest`'s aligned crop (eyes at 38% of
/// the height, mouth corners near 76%: docs/ALIGNMENT.md), σ 16% of the width and 20% of the
/// height, rescaled to mean 1. `[1, 1, size, size]`.
pub fn face_weight_map(size: i64, k: f64, device: Device) -> Tensor {
    let s = size as f64;
    let mut w = Vec::with_capacity((size * size) as usize);
    for i in 0..size {
        let y = (i as f64 + 0.5) / s;
        for j in 0..size {
            let x = (j as f64 + 0.5) / s;
            let (dx, dy) = ((x - 0.5) / 0.16, (y - 0.6) / 0.2);
            w.push(1.0 + k * (-0.5 * (dx * dx + dy * dy)).exp());
        }
    }
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    let w: Vec<f32> = w.iter().map(|v| (v / mean) as f32).collect();
    Tensor::from_slice(&w)
        .view([1, 1, size, size])
        .to_device(device)
}

/// Fraction of rows whose arg-max equals the label (a scalar tensor, no gradient).
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits
        .detach()
        .argmax(-1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_cross_entropy_is_log_n_at_uniform_and_larger_elsewhere() {
        let n = 7;
        let uniform = Tensor::full([3, n], 2.5, (Kind::Float, Device::Cpu));
        let at_uniform = uniform_cross_entropy(&uniform).double_value(&[]);
        assert!((at_uniform - (n as f64).ln()).abs() < 1e-6, "{at_uniform}");
        tch::manual_seed(1);
        for scale in [0.01, 0.1, 1.0, 10.0] {
            let logits = Tensor::randn([3, n], (Kind::Float, Device::Cpu)) * scale;
            let v = uniform_cross_entropy(&logits).double_value(&[]);
            assert!(v > (n as f64).ln(), "scale {scale}: {v}");
        }
        // The gradient vanishes at the uniform prediction (a minimum, not just a low value).
        let logits = uniform.set_requires_grad(true);
        uniform_cross_entropy(&logits).backward();
        assert!(logits.grad().abs().max().double_value(&[]) < 1e-8);
    }

    #[test]
    fn reconstruction_is_half_the_pixel_sum_per_image() {
        let x = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::ones([2, 3, 4, 4], (Kind::Float, Device::Cpu)) * 0.5;
        // ½ · (3·4·4 · 0.25) = 6 per image.
        assert!((reconstruction(&x, &y, None).double_value(&[]) - 6.0).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_and_accuracy_on_known_logits() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0]).view([2, 2]);
        let labels = Tensor::from_slice(&[1i64, 0]);
        assert!((accuracy(&logits, &labels).double_value(&[]) - 0.5).abs() < 1e-12);
        let ce = cross_entropy(&logits, &labels).double_value(&[]);
        let want = (2f64.ln() + (1.0 + (-10f64).exp()).ln()) / 2.0;
        assert!((ce - want).abs() < 1e-5, "{ce} vs {want}");
    }

    #[test]
    fn face_weight_map_averages_one_and_peaks_on_the_inner_face() {
        let w = face_weight_map(40, 8.0, Device::Cpu);
        assert_eq!(w.size(), [1, 1, 40, 40]);
        assert!((w.mean(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-5);
        let at = |x: i64, y: i64| w.double_value(&[0, 0, y, x]);
        // Between the eyes and the mouth (x 0.5, y 0.6) vs the top-left corner.
        assert!(
            at(20, 24) > 2.5 && at(0, 0) < 0.5,
            "{} {}",
            at(20, 24),
            at(0, 0)
        );
        // The mouth (y ≈ 0.76) still weighs more than average.
        assert!(at(20, 30) > 1.5, "{}", at(20, 30));
        // k = 0 is uniform, and weighting by it equals L_X.
        let flat = face_weight_map(8, 0.0, Device::Cpu);
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let a = reconstruction(&x, &y, Some(&flat)).double_value(&[]);
        let b = reconstruction(&x, &y, None).double_value(&[]);
        assert!((a - b).abs() < 1e-4 * b, "{a} {b}");
    }
}
