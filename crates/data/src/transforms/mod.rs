//! Image transforms of the DINO augmentation (`DataAugmentationDINO` in facebookresearch/dino
//! `main_dino.py`), each a port of what torchvision 0.28's PIL backend does with Pillow, so that
//! our crops match the official pipeline to within a couple of 8-bit levels.
//!
//! Every op exists as a deterministic function with explicit parameters (used by the parity
//! tests); the random parameter draws live next to them (`sample_*`) and take the caller's RNG.
//! Images are `image::RgbImage` (RGB8, HWC, row-major); ops work in place where Pillow's result
//! has the input's size.

pub mod blur;
pub mod color;
pub mod crop;
pub mod eval;
pub mod flip;
pub mod normalize;
pub mod resize;
mod simd;

pub use blur::{gaussian_blur, gaussian_blur_with, pillow_box_radius, BlurScratch};
pub use color::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, apply_jitter, luma,
    sample_jitter, solarize, to_grayscale, ColorJitterParams, JitterOp,
};
pub use crop::{center_crop_fallback, round_half_even, sample_resized_crop, CropBox};
pub use eval::EvalTransform;
pub use flip::hflip;
pub use normalize::{normalize_chw_into, normalize_u8_chw_into};
pub use resize::{resize, resized_crop, CropResizer};

/// A transform that cannot be built from its configuration, or an op given impossible input.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A parameter out of range.
    #[error("augmentation parameter `{name}`: {reason}")]
    BadParameter {
        /// The config key.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// An `[augmentation]` section that breaks a rule of [`dino_config::check_augmentation`].
    #[error(transparent)]
    Config(#[from] dino_config::ConfigError),
    /// A crop box that is empty or reaches outside the image.
    #[error("crop box {crop:?} does not fit inside a {width}x{height} image")]
    BadCrop {
        /// The offending box.
        crop: CropBox,
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
    },
    /// The resampler refused the images (should not happen for valid boxes).
    #[error("resize failed: {0}")]
    Resize(String),
}
