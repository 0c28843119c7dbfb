//! The pixel scale the model sees: u8 `[0, 255]` maps linearly to `[−1, 1]` (x = p/127.5 − 1).
//!
//! A symmetric scale matches the decoder's `tanh` output, and it fixes what L_X measures: a
//! squared error of 1 per channel is an error of 127.5 grey levels. The conversion runs on the
//! model's device, so the loader ships compact u8 batches.

use tch::{Device, Kind, Tensor};

use super::ModelError;

/// u8 images `[B, 3, H, W]` → f32 in [−1, 1] on `device`.
pub fn normalise(images: &Tensor, device: Device) -> Result<Tensor, ModelError> {
    if images.kind() != Kind::Uint8 {
        return Err(ModelError::Input(format!(
            "images must be u8, got {:?}",
            images.kind()
        )));
    }
    check_nchw(images)?;
    Ok(images.to_device(device).to_kind(Kind::Float) / 127.5 - 1.0)
}

/// f32 images in [−1, 1] (clamped) → u8 `[0, 255]` on the CPU, rounding to nearest.
pub fn denormalise(images: &Tensor) -> Tensor {
    ((images.detach().to_device(Device::Cpu).clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
}

/// Check a batch is `[B, 3, H, W]`.
pub(crate) fn check_nchw(images: &Tensor) -> Result<(), ModelError> {
    let size = images.size();
    if size.len() != 4 || size[1] != 3 {
        return Err(ModelError::Input(format!(
            "images must be [B, 3, H, W] (channels first), got {size:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_maps_to_minus_one_one_and_back() {
        let px = Tensor::from_slice(&[0u8, 1, 127, 128, 254, 255]).view([1, 3, 1, 2]);
        let x = normalise(&px, Device::Cpu).unwrap();
        let v = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        assert_eq!(v[0], -1.0);
        assert_eq!(v[5], 1.0);
        assert!((v[2] - (127.0 / 127.5 - 1.0)).abs() < 1e-7);
        assert!(denormalise(&x).equal(&px));
        let err = normalise(&px.to_kind(Kind::Float), Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("u8"), "{err}");
        let err = normalise(&px.view([1, 1, 2, 3]), Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("[1, 1, 2, 3]"), "{err}");
    }
}
