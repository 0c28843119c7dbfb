//! Validation: identity accuracy of f_T, the adversary's accuracy on f_P, reconstruction PSNR,
//! and a PNG grid of inputs above their reconstructions.
//!
//! The adversary's accuracy is the paper's measure of how much identity f_P still leaks: with L_H
//! working it falls toward chance (1 / N_ID) as training goes. Both classifiers can only name
//! identities they were trained on: the accuracies count the validation images of identities
//! the training batches have shown so far (all of them with the paper's 9:1 per-image split;
//! none with an identity-disjoint one, and then there is no accuracy, not a 0).

use std::path::Path;

use anyhow::{Context, Result};
use d2ae_loader::{BlockingLoader, LoaderConfig};
use image::{Rgb, RgbImage};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::model::{denormalise, normalise, D2ae};

/// The identities the training batches of this process have shown: the only ones W_T and the
/// adversary can name, so the only ones validation scores identity on. A resumed run starts
/// counting again with its first batch.
#[derive(Debug, Clone)]
pub struct SeenIdentities(Vec<bool>);

impl SeenIdentities {
    /// None seen yet, of `num_identities`.
    pub fn new(num_identities: usize) -> Self {
        Self(vec![false; num_identities])
    }

    /// Note the identity labels of a training batch (labels outside the range are ignored).
    pub fn mark(&mut self, ids: &[i64]) {
        for &id in ids {
            if let Some(seen) = usize::try_from(id).ok().and_then(|i| self.0.get_mut(i)) {
                *seen = true;
            }
        }
    }

    /// Whether a training batch has shown identity `id`.
    pub fn contains(&self, id: i64) -> bool {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
            .unwrap_or(false)
    }
}

/// Results of one validation pass.
#[derive(Debug, Clone, Serialize)]
pub struct ValReport {
    pub step: u64,
    pub images: u64,
    /// Images whose identity the training batches have shown: the ones the accuracies count.
    pub identity_images: u64,
    /// Identity accuracy of W_T on f_T (`None` when no validation image is of a trained identity).
    pub acc_t: Option<f64>,
    /// Identity accuracy of the adversary W_P on f_P (chance is 1 / identities).
    pub acc_p: Option<f64>,
    /// Chance level of either classifier.
    pub chance: f64,
    /// Mean PSNR of D(f_T, f_P) against the input, in dB over [0, 255] pixels.
    pub psnr_db: Option<f64>,
}

/// Run the model over up to `max_batches` batches (0: all) of `split` and write a grid PNG of the
/// first batch's inputs and reconstructions to `grid_path`. Only images of `trained` identities
/// count towards the accuracies.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    model: &D2ae,
    data: &str,
    loader_cfg: LoaderConfig,
    max_batches: u64,
    device: Device,
    step: u64,
    grid_path: Option<&Path>,
    trained: &SeenIdentities,
) -> Result<ValReport> {
    let loader = BlockingLoader::open(data, loader_cfg, None)
        .with_context(|| format!("opening the validation split of {data}"))?;
    let (mut n, mut hits_t, mut hits_p, mut sq_err, mut pixels) = (0u64, 0f64, 0f64, 0f64, 0f64);
    let mut identity_images = 0u64;
    let mut wrote_grid = false;
    for (i, batch) in loader.enumerate() {
        if max_batches > 0 && i as u64 >= max_batches {
            break;
        }
        let batch = batch.context("reading a validation batch")?;
        let b = batch.n as i64;
        let images_u8 =
            Tensor::from_slice(&batch.images).view([b, 3, batch.height as i64, batch.width as i64]);
        let labels = Tensor::from_slice(&batch.identities).to_device(device);
        let known: Vec<f32> = batch
            .identities
            .iter()
            .map(|&id| f32::from(u8::from(trained.contains(id))))
            .collect();
        identity_images += known.iter().filter(|&&k| k > 0.0).count() as u64;
        let known = Tensor::from_slice(&known).to_device(device);
        let images = normalise(&images_u8, device)?;
        let out = tch::no_grad(|| model.forward_t(&images, false))?;
        let correct = |logits: &Tensor| {
            (logits
                .argmax(-1, false)
                .eq_tensor(&labels)
                .to_kind(Kind::Float)
                * &known)
                .sum(Kind::Float)
                .double_value(&[])
        };
        hits_t += correct(&out.logits_t);
        if let Some(lp) = &out.logits_p {
            hits_p += correct(lp);
        }
        if let Some(recon) = &out.recon {
            let rec_u8 = denormalise(recon);
            let diff = rec_u8.to_kind(Kind::Float) - images_u8.to_kind(Kind::Float);
            sq_err += diff.square().sum(Kind::Double).double_value(&[]);
            pixels += diff.numel() as f64;
            if !wrote_grid {
                if let Some(path) = grid_path {
                    write_grid(&images_u8, &rec_u8, 8, path)?;
                }
                wrote_grid = true;
            }
        }
        n += b as u64;
    }
    anyhow::ensure!(n > 0, "the validation split of {data} yielded no images");
    let has_p = model.config().has_dispelling();
    let rate = |hits: f64| (identity_images > 0).then(|| hits / identity_images as f64);
    Ok(ValReport {
        step,
        images: n,
        identity_images,
        acc_t: rate(hits_t),
        acc_p: rate(hits_p).filter(|_| has_p),
        chance: 1.0 / model.num_identities() as f64,
        psnr_db: (pixels > 0.0).then(|| {
            let mse = sq_err / pixels;
            10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
        }),
    })
}

/// Inputs (top row) above reconstructions (bottom row), `max` columns, 2 px white gaps.
pub fn write_grid(inputs: &Tensor, recons: &Tensor, max: i64, path: &Path) -> Result<()> {
    let size = inputs.size();
    let (n, h, w) = (size[0].min(max), size[2] as u32, size[3] as u32);
    let gap = 2u32;
    let mut grid = RgbImage::from_pixel(
        n as u32 * (w + gap) + gap,
        2 * (h + gap) + gap,
        Rgb([255, 255, 255]),
    );
    for (row, t) in [inputs, recons].into_iter().enumerate() {
        // [B,3,H,W] → [B,H,W,3] bytes
        let hwc = t.narrow(0, 0, n).permute([0, 2, 3, 1]).contiguous();
        let bytes = Vec::<u8>::try_from(hwc.view([-1]))?;
        for i in 0..n as u32 {
            let x0 = gap + i * (w + gap);
            let y0 = gap + row as u32 * (h + gap);
            let base = (i * h * w * 3) as usize;
            for y in 0..h {
                for x in 0..w {
                    let o = base + ((y * w + x) * 3) as usize;
                    grid.put_pixel(x0 + x, y0 + y, Rgb([bytes[o], bytes[o + 1], bytes[o + 2]]));
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    grid.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_identities_mark_and_ignore_out_of_range_labels() {
        let mut seen = SeenIdentities::new(3);
        assert!(!seen.contains(1));
        seen.mark(&[1, 1, -4, 7]);
        assert!(seen.contains(1));
        assert!(!seen.contains(0) && !seen.contains(2));
        assert!(!seen.contains(-4) && !seen.contains(7));
    }
}
