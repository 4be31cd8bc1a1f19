//! DINO multi-crop (PLACEHOLDER implementation: nearest-neighbour centre resize, no randomness;
//! the public signatures below are the contract the loader uses and stay).

use crate::rng::ChaCha8Rng;
use crate::transforms::TransformError;
use dino_config::AugmentationConfig;
use image::RgbImage;

/// The DINO multi-crop transform: per image `[global_1, global_2, local_1 .. local_n]`.
#[derive(Debug, Clone)]
pub struct MultiCrop {
    cfg: AugmentationConfig,
}

impl MultiCrop {
    /// Builds the transform from the `[augmentation]` config section.
    pub fn new(cfg: &AugmentationConfig) -> Result<Self, TransformError> {
        Ok(Self { cfg: cfg.clone() })
    }
    /// 2 + number of local crops.
    pub fn n_crops(&self) -> usize {
        2 + self.cfg.local_crops_number
    }
    /// Number of local crops.
    pub fn n_local(&self) -> usize {
        self.cfg.local_crops_number
    }
    /// Side of the global crops in pixels.
    pub fn global_size(&self) -> u32 {
        self.cfg.global_crops_size
    }
    /// Side of the local crops in pixels.
    pub fn local_size(&self) -> u32 {
        self.cfg.local_crops_size
    }
    /// All crops of one image, in order `[g1, g2, l1..ln]`, RGB8 HWC.
    pub fn apply(&self, img: &RgbImage, _rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
        let g = self.cfg.global_crops_size;
        let l = self.cfg.local_crops_size;
        let mut v = vec![image::imageops::resize(img, g, g, image::imageops::FilterType::Nearest); 2];
        for _ in 0..self.cfg.local_crops_number {
            v.push(image::imageops::resize(img, l, l, image::imageops::FilterType::Nearest));
        }
        v
    }
}
