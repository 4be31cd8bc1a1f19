//! Crops as the networks take them: the loader's u8 bytes, normalized on the device (official
//! `ToTensor + Normalize`). Shared by the DINO method and the supervised baseline, which must
//! see identical inputs for their comparison to mean anything.

use tch::{Device, Kind, Tensor};

/// Per-channel normalization on one device.
#[derive(Debug)]
pub struct Normalizer {
    mean: Tensor,
    std: Tensor,
    device: Device,
}

impl Normalizer {
    /// `mean` and `std` per RGB channel in [0, 1] units (`augmentation.mean` / `.std`).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn new(mean: [f64; 3], std: [f64; 3], device: Device) -> anyhow::Result<Self> {
        let channel = |v: [f64; 3]| -> anyhow::Result<Tensor> {
            Ok(Tensor::f_from_slice(&v.map(|x| x as f32))?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)?)
        };
        Ok(Self {
            mean: channel(mean)?,
            std: channel(std)?,
            device,
        })
    }

    /// u8 crops `[V·B, 3, H, W]` (`shape`) → `(x / 255 − mean) / std`, float on the device.
    /// On a CUDA device the bytes go up from pinned memory without blocking, so the upload
    /// waits for nothing queued before it (a copy from pageable memory would wait for the
    /// device: a host sync per batch).
    ///
    /// # Errors
    /// `bytes` not holding `shape`'s element count; libtorch errors.
    pub fn to_input(&self, bytes: &[u8], shape: [i64; 4]) -> anyhow::Result<Tensor> {
        let host = Tensor::f_from_slice(bytes)?.f_view(shape)?;
        let t = match self.device {
            Device::Cuda(_) => host.f_pin_memory(self.device)?.f_to_device_(
                self.device,
                Kind::Uint8,
                true,
                false,
            )?,
            _ => host.f_to_device(self.device)?,
        };
        Ok(t.f_to_kind(Kind::Float)?
            .f_div_scalar(255.0)?
            .f_sub(&self.mean)?
            .f_div(&self.std)?)
    }
}
