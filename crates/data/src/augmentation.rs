//! DINO multi-crop augmentation (`DataAugmentationDINO` in facebookresearch/dino `main_dino.py`).
//!
//! Per image: 2 global views (`global_crops_size`, RRC scale `global_crops_scale`) and
//! `local_crops_number` local views (`local_crops_size`, `local_crops_scale`). Each view:
//! RandomResizedCrop (bicubic) → horizontal flip (p `flip_p`) → ColorJitter (applied w.p.
//! `color_jitter_p`, random op order) → grayscale (p `grayscale_p`) → Gaussian blur
//! (p 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, sigma ~ U(`blur_sigma`)) → solarize
//! (global 2 only, p `solarize_p`). Normalisation is left to the consumer
//! ([`crate::transforms::normalize_chw_into`] on CPU).
//!
//! All randomness comes from the RNG passed in (unlike the official code, whose blur and
//! solarize coins use Python's unseeded `random`): same RNG state → identical crops, on any
//! thread. Parameters of a view are drawn in the op order above, before any pixel work.

use crate::rng::ChaCha8Rng;
use crate::transforms::{
    apply_jitter, gaussian_blur_with, hflip, sample_jitter, sample_resized_crop, solarize,
    to_grayscale, BlurScratch, ColorJitterParams, CropBox, CropResizer, TransformError,
};
use dino_config::{check_augmentation, AugmentationConfig};
use image::RgbImage;
use rand::Rng;
use std::cell::RefCell;

/// Which view of the multi-crop a parameter draw is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// First global view: blur always (official p 1.0), never solarized.
    Global1,
    /// Second global view: blur p 0.1, solarize p 0.2.
    Global2,
    /// A local view: blur p 0.5, never solarized.
    Local,
}

/// Every random choice for one view (what [`DataAugmentationDino::render_view`] applies).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewParams {
    /// Crop box in the source image.
    pub crop: CropBox,
    /// Output side in pixels.
    pub size: u32,
    /// Horizontal flip.
    pub flip: bool,
    /// ColorJitter parameters when it fires.
    pub jitter: Option<ColorJitterParams>,
    /// Convert to grayscale (replicated to 3 channels).
    pub grayscale: bool,
    /// Blur sigma (Pillow radius) in pixels when the blur fires.
    pub blur_sigma: Option<f64>,
    /// Solarize (global view 2 only).
    pub solarize: bool,
}

/// The DINO multi-crop transform: per image `[global_1, global_2, local_1 .. local_n]`.
#[derive(Debug, Clone)]
pub struct DataAugmentationDino {
    cfg: AugmentationConfig,
}

thread_local! {
    static WORK: RefCell<(CropResizer, BlurScratch)> = RefCell::new(Default::default());
}

impl DataAugmentationDino {
    /// Builds the transform from the `[augmentation]` config section.
    ///
    /// # Errors
    /// [`TransformError::Config`] when `cfg` breaks a rule of [`dino_config::check_augmentation`]
    /// (the one home of the multi-crop rules, which `Config::validate` also applies).
    pub fn new(cfg: &AugmentationConfig) -> Result<Self, TransformError> {
        check_augmentation(cfg)?;
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
    /// The configuration it was built from.
    pub fn config(&self) -> &AugmentationConfig {
        &self.cfg
    }

    /// Draws every random choice of one view of a `width`x`height` image, in op order:
    /// RRC box, flip coin, jitter coin (+ permutation and factors), grayscale coin, blur coin
    /// (+ sigma), solarize coin (global 2 only). Coins fire when `U[0,1) < p`.
    pub fn sample_view<R: Rng + ?Sized>(
        &self,
        kind: ViewKind,
        width: u32,
        height: u32,
        rng: &mut R,
    ) -> ViewParams {
        let c = &self.cfg;
        let (size, scale, blur_p) = match kind {
            ViewKind::Global1 => (c.global_crops_size, c.global_crops_scale, c.blur_global1_p),
            ViewKind::Global2 => (c.global_crops_size, c.global_crops_scale, c.blur_global2_p),
            ViewKind::Local => (c.local_crops_size, c.local_crops_scale, c.blur_local_p),
        };
        let crop = sample_resized_crop(width, height, scale, c.crop_ratio, rng);
        let flip = rng.random::<f64>() < c.flip_p;
        let jitter = (rng.random::<f64>() < c.color_jitter_p).then(|| sample_jitter(c, rng));
        let grayscale = rng.random::<f64>() < c.grayscale_p;
        let blur_sigma = (rng.random::<f64>() < blur_p)
            .then(|| c.blur_sigma[0] + (c.blur_sigma[1] - c.blur_sigma[0]) * rng.random::<f64>());
        let solarize = kind == ViewKind::Global2 && rng.random::<f64>() < c.solarize_p;
        ViewParams {
            crop,
            size,
            flip,
            jitter,
            grayscale,
            blur_sigma,
            solarize,
        }
    }

    /// Draws the parameters of all views, in output order `[g1, g2, l1..ln]`.
    pub fn sample_all<R: Rng + ?Sized>(
        &self,
        width: u32,
        height: u32,
        rng: &mut R,
    ) -> Vec<ViewParams> {
        let mut v = Vec::with_capacity(self.n_crops());
        v.push(self.sample_view(ViewKind::Global1, width, height, rng));
        v.push(self.sample_view(ViewKind::Global2, width, height, rng));
        for _ in 0..self.cfg.local_crops_number {
            v.push(self.sample_view(ViewKind::Local, width, height, rng));
        }
        v
    }

    /// Renders one view with fixed parameters: a `size`x`size` RGB8 image. A crop box that
    /// does not fit `img` (or an empty image) gives a black image instead of a panic.
    pub fn render_view(&self, img: &RgbImage, p: &ViewParams) -> RgbImage {
        let mut out = RgbImage::new(p.size, p.size);
        WORK.with(|w| {
            let (resizer, blur) = &mut *w.borrow_mut();
            if resizer.resized_crop_into(img, p.crop, &mut out).is_err() {
                return;
            }
            let (ow, oh) = out.dimensions();
            let buf: &mut [u8] = &mut out;
            if p.flip {
                hflip(buf, ow);
            }
            if let Some(j) = &p.jitter {
                apply_jitter(buf, j);
            }
            if p.grayscale {
                to_grayscale(buf);
            }
            if let Some(s) = p.blur_sigma {
                gaussian_blur_with(buf, ow, oh, s, blur);
            }
            if p.solarize {
                solarize(buf, self.cfg.solarize_threshold);
            }
        });
        out
    }

    /// All crops of one image, in order `[g1, g2, l1..ln]`, RGB8 HWC
    /// (globals `global_size()`², locals `local_size()`²).
    pub fn apply(&self, img: &RgbImage, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
        self.apply_with_params(img, rng).0
    }

    /// [`DataAugmentationDino::apply`] that also returns the parameters drawn for each view.
    pub fn apply_with_params(
        &self,
        img: &RgbImage,
        rng: &mut ChaCha8Rng,
    ) -> (Vec<RgbImage>, Vec<ViewParams>) {
        let params = self.sample_all(img.width(), img.height(), rng);
        let crops = params.iter().map(|p| self.render_view(img, p)).collect();
        (crops, params)
    }
}
