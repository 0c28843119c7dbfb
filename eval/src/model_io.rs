//! The model side shared by `extract`, `edit` and `bench`: loading a checkpoint, encoding u8
//! batches (with optional flip test-time augmentation) and decoding features to u8 images.

use anyhow::{Context, Result};
use d2ae_train::checkpoint::{load_model, LoadedModel};
use d2ae_train::model::{denormalise, normalise};
use d2ae_train::D2ae;
use tch::{Device, Kind, Tensor};

/// Parse `cpu`, `cuda` or `cuda:K` (as the trainer does).
pub fn parse_device(name: &str) -> Result<Device> {
    d2ae_train::fit::parse_device(name)
}

/// Load a checkpoint file, a run directory (its newest checkpoint) or a `checkpoints/` directory.
pub fn load(checkpoint: &str, endpoint: Option<String>, device: Device) -> Result<LoadedModel> {
    load_model(checkpoint, endpoint, device)
        .with_context(|| format!("loading the model from {checkpoint}"))
}

/// A batch of u8 RGB images `[n, 3, h, w]` (the loader's layout) as a CPU tensor.
pub fn images_tensor(pixels: &[u8], n: usize, height: u32, width: u32) -> Tensor {
    Tensor::from_slice(pixels).view([n as i64, 3, i64::from(height), i64::from(width)])
}

/// (f_T, f_P) of u8 images, in evaluation mode, on the model's device.
///
/// With `flip`, each feature is the mean of the features of the image and of its left-right
/// mirror: faces are close to symmetric, so this averages out some pose and lighting noise, the
/// usual test-time augmentation for face verification. It costs a second forward pass.
pub fn encode_u8(
    model: &D2ae,
    images: &Tensor,
    device: Device,
    flip: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    encode_with(model, images, device, flip, |x| x)
}

/// [`encode_u8`] with `transform` applied to the normalised images (on the model's device)
/// before the encoder sees them.
pub fn encode_with(
    model: &D2ae,
    images: &Tensor,
    device: Device,
    flip: bool,
    transform: impl FnOnce(Tensor) -> Tensor,
) -> Result<(Tensor, Option<Tensor>)> {
    tch::no_grad(|| -> Result<(Tensor, Option<Tensor>)> {
        let x = transform(normalise(images, device)?);
        let (mut f_t, mut f_p) = model.encode(&x)?;
        if flip {
            let (ft2, fp2) = model.encode(&x.flip([3]))?;
            f_t = (f_t + ft2) / 2.0;
            f_p = match (f_p, fp2) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                _ => None,
            };
        }
        Ok((f_t, f_p))
    })
}

/// D(f_T, f_P) as u8 images `[n, 3, S, S]` on the CPU.
pub fn decode_u8(model: &D2ae, f_t: &Tensor, f_p: &Tensor) -> Result<Tensor> {
    tch::no_grad(|| -> Result<Tensor> { Ok(denormalise(&model.decode(f_t, f_p)?)) })
}

/// A 2-D f32 tensor as a row-major host vector.
pub fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    Ok(Vec::<f32>::try_from(&t)?)
}
