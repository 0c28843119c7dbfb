//! Batches as `tch` tensors, and [`DeviceFeeder`], which keeps a device fed (feature `tch`).
//!
//! On CUDA each batch is copied once into page-locked (pinned) host memory and sent with a
//! `non_blocking` copy, while `depth` further batches are already in flight, so the host→device
//! transfer of batch `i+1` overlaps the compute on batch `i`. Pinned memory comes from PyTorch's
//! caching host allocator (`Tensor::pin_memory`): blocks are reused across batches, not
//! reallocated, and a block is handed out again only after the CUDA event recorded for its last
//! copy has completed. A ring of our own would need those events too, which `tch` does not expose;
//! reusing a block before its copy finished would silently corrupt a batch. Without CUDA (pinning
//! fails there) tensors are plain CPU tensors.

use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use crate::batch::Batch;
use crate::blocking::BlockingLoader;
use crate::config::Layout;
use crate::error::LoaderError;
use crate::state::LoaderState;

impl Batch {
    /// The shape of [`Batch::images`] as a tensor shape.
    pub fn images_shape(&self) -> [i64; 4] {
        let (n, h, w) = (self.n as i64, i64::from(self.height), i64::from(self.width));
        match self.layout {
            Layout::Nchw => [n, 3, h, w],
            Layout::Nhwc => [n, h, w, 3],
        }
    }

    /// The images as a `u8` CPU tensor (one copy).
    pub fn images_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.images).view(self.images_shape())
    }

    /// Identity labels, `i64 [n]`.
    pub fn identities_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.identities)
    }

    /// Attribute labels (+1/−1/0), `i8 [n, A]`.
    pub fn attributes_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.attributes).view([self.n as i64, self.num_attributes as i64])
    }

    /// Factors, `f32 [n, F]`.
    pub fn factors_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.factors).view([self.n as i64, self.num_factors as i64])
    }
}

/// A batch on the device.
pub struct DeviceBatch {
    /// `u8`, shaped by the layout; normalise on the device.
    pub images: Tensor,
    /// `i64 [n]`
    pub identities: Tensor,
    /// `i8 [n, A]`
    pub attributes: Tensor,
    /// `f32 [n, F]`
    pub factors: Tensor,
    /// Everything else (keys, sources, epoch, ...); its `images` buffer is emptied.
    pub meta: Batch,
    /// The loader state right after this batch: store this one in a checkpoint, not the
    /// loader's own (which is ahead by the batches in flight).
    pub state: LoaderState,
}

/// Moves batches from a [`BlockingLoader`] to a device, `depth` batches ahead of the consumer.
pub struct DeviceFeeder {
    loader: BlockingLoader,
    device: Device,
    pin: bool,
    depth: usize,
    queue: VecDeque<Result<DeviceBatch, LoaderError>>,
    finished: bool,
}

impl DeviceFeeder {
    /// Feed `device` with at least one batch (`depth ≥ 1`) in flight beyond the one in use.
    pub fn new(loader: BlockingLoader, device: Device, depth: usize) -> Self {
        let pin = device.is_cuda() && tch::Cuda::is_available();
        DeviceFeeder {
            loader,
            device,
            pin,
            depth: depth.max(1),
            queue: VecDeque::new(),
            finished: false,
        }
    }

    /// Whether host buffers are pinned (CUDA only).
    pub fn pinned(&self) -> bool {
        self.pin
    }

    /// The loader (metrics; its `state()` is ahead of the consumer, see [`DeviceBatch::state`]).
    pub fn loader(&self) -> &BlockingLoader {
        &self.loader
    }

    fn upload(&self, mut batch: Batch) -> DeviceBatch {
        let to_device = |t: Tensor| {
            if self.device == Device::Cpu {
                t
            } else if self.pin {
                t.pin_memory(self.device)
                    .to_device_(self.device, t.kind(), true, false)
            } else {
                t.to_device_(self.device, t.kind(), false, false)
            }
        };
        let images = if self.pin {
            // SAFETY: `batch.images` outlives the blob tensor, which `pin_memory` copies from
            // synchronously before the blob is dropped at the end of this block.
            let blob = unsafe {
                Tensor::from_blob(
                    batch.images.as_ptr(),
                    &batch.images_shape(),
                    &[],
                    Kind::Uint8,
                    Device::Cpu,
                )
            };
            let pinned = blob.pin_memory(self.device);
            drop(blob);
            pinned.to_device_(self.device, Kind::Uint8, true, false)
        } else {
            to_device(batch.images_tensor())
        };
        let identities = to_device(batch.identities_tensor());
        let attributes = to_device(batch.attributes_tensor());
        let factors = to_device(batch.factors_tensor());
        self.loader.recycle(std::mem::take(&mut batch.images));
        DeviceBatch {
            images,
            identities,
            attributes,
            factors,
            state: self.loader.state(),
            meta: batch,
        }
    }
}

impl Iterator for DeviceFeeder {
    type Item = Result<DeviceBatch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished && self.queue.len() <= self.depth {
            match self.loader.next() {
                Some(Ok(batch)) => {
                    let uploaded = self.upload(batch);
                    self.queue.push_back(Ok(uploaded));
                }
                Some(Err(e)) => {
                    self.queue.push_back(Err(e));
                    self.finished = true;
                }
                None => self.finished = true,
            }
        }
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::synthetic_dataset;
    use crate::LoaderConfig;

    #[test]
    fn batches_become_tensors_with_the_right_shapes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        synthetic_dataset(dir.path(), 20, 10, 32).unwrap();
        let config = LoaderConfig::eval("train", 8);
        let loader =
            BlockingLoader::open(dir.path().to_str().unwrap(), config.clone(), None).unwrap();
        let reference: Vec<Batch> =
            BlockingLoader::open(dir.path().to_str().unwrap(), config, None)
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
        let feeder = DeviceFeeder::new(loader, Device::Cpu, 2);
        assert!(!feeder.pinned());
        let got: Vec<DeviceBatch> = feeder.map(|b| b.unwrap()).collect();
        assert_eq!(got.len(), 3);
        for (d, r) in got.iter().zip(&reference) {
            assert_eq!(d.images.size(), vec![r.n as i64, 3, 32, 32]);
            assert_eq!(d.images.kind(), Kind::Uint8);
            let mut bytes = vec![0u8; r.images.len()];
            d.images.copy_data_u8(&mut bytes, r.images.len());
            assert_eq!(bytes, r.images);
            assert_eq!(Vec::<i64>::try_from(&d.identities).unwrap(), r.identities);
            assert_eq!(d.attributes.size(), vec![r.n as i64, 2]);
            assert_eq!(d.meta.keys, r.keys);
            assert!(d.meta.images.is_empty());
        }
        assert_eq!(
            (got[1].state.epoch, got[1].state.batches_done_in_epoch),
            (0, 2)
        );
        assert_eq!(got[2].state.epoch, 1);
    }
}
