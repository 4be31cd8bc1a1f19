//! Self-attention maps of the CLS token (DINO paper §4.2.1 and Fig. 1/3, official
//! `visualize_attention.py`).
//!
//! From the last block's attention of one image, the CLS row over the patch columns gives one
//! `h × w` map per head. Each map is drawn as a heat map over the image (nearest upsampling by the
//! patch size, as the official `interpolate(..., mode="nearest")`), and as a mask that keeps the
//! smallest set of most-attended patches holding a given share of the attention mass.
//!
//! The image is fitted to the patch grid by
//! [`AttentionImage::prepare`](crate::attention::AttentionImage::prepare). By default
//! ([`KeepAspect`](crate::attention::AttentionResize::KeepAspect)) it is resized as the official
//! script does with `--image_size N` (one number: torchvision `Resize(N)` sets the shorter side
//! and keeps the aspect ratio), then each side is cropped down to a multiple of the patch size,
//! keeping the top-left corner. The grid is then not square (a 4:3 photo at 480 px and patch
//! 16: 30 × 40 patches) and the ViT resizes its position table to it. This is for attention maps
//! only: features for k-NN, the linear probe and `embed` keep the official square evaluation
//! transform (`Resize(256)` then `CenterCrop(224)`, [`dino_data::transforms::EvalTransform`]).
//!
//! Differences from the official script: heat maps are blended over the image instead of saved
//! bare (`plt.imsave`), and a map of the mean over heads is written too. Colours: VIRIDIS, the
//! matplotlib default the official `plt.imsave` uses, min-max scaled per map. The resize
//! resamples with Pillow's bicubic filter (the crate's one resampler), where the official
//! `Resize` defaults to bilinear.

use std::path::{Path, PathBuf};

use dino_data::transforms::TransformError;
use dino_model::{cls_attention_over_patches, ModelError, VisionTransformer};
use image::{Rgb, RgbImage};
use tch::{Device, Kind, TchError, Tensor};

/// Attention mass the masks keep (the paper's figures use 0.6; the official `--threshold`
/// has no default and draws no mask without it).
pub const DEFAULT_THRESHOLD: f64 = 0.6;

/// Weight of the heat-map colour when blended over the image.
const HEAT_ALPHA: f32 = 0.6;

/// Weight of the mask colour inside the mask (official `apply_mask` alpha 0.5).
const MASK_ALPHA: f32 = 0.5;

/// Bad input to the attention-map tools, or a failure writing the PNGs.
#[derive(Debug, thiserror::Error)]
pub enum AttentionError {
    /// The attention tensor has the wrong shape for the image.
    #[error("attention: {0}")]
    Shape(String),
    /// The image side is not a positive multiple of the patch size.
    #[error("image {width}×{height} is not a positive multiple of the patch size {patch}")]
    ImageSize {
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
        /// Patch side in pixels.
        patch: u32,
    },
    /// The size asked of the resize cannot hold one patch.
    #[error("resize to {size} px cannot hold one {patch}-px patch")]
    ResizeTarget {
        /// The size asked (shorter side for [`AttentionResize::KeepAspect`]).
        size: u32,
        /// Patch side in pixels.
        patch: u32,
    },
    /// The resampler failed.
    #[error(transparent)]
    Resize(#[from] TransformError),
    /// The mask threshold is outside (0, 1).
    #[error("threshold must lie in (0, 1), got {0}")]
    Threshold(f64),
    /// The output folder could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PNG could not be written.
    #[error("cannot write {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// A box file ([`crate::attention::score::read_boxes`]) cannot be read or holds something
    /// other than boxes.
    #[error("{}: {message}", .path.display())]
    BoxFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key of the entry at fault.
        message: String,
    },
    /// The backbone failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// CLS-to-patch attention of every head, row-major `h × w` maps.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMaps {
    /// Patch rows.
    pub h: usize,
    /// Patch columns.
    pub w: usize,
    /// One map of `h · w` weights per head (CLS row, patch columns; not renormalised).
    pub heads: Vec<Vec<f32>>,
}

impl AttentionMaps {
    /// Maps from the last block's attention of one image.
    ///
    /// `attn`: `[heads, 1 + h·w, 1 + h·w]` or `[1, heads, 1 + h·w, 1 + h·w]` (the output of
    /// `get_last_selfattention` for a batch of one), any float kind and device.
    ///
    /// # Errors
    /// [`AttentionError::Shape`] when the shape does not match `h × w` patches.
    pub fn from_last_block(attn: &Tensor, h: usize, w: usize) -> Result<Self, AttentionError> {
        let attn = match attn.size()[..] {
            [1, _, _, _] => attn.f_squeeze_dim(0)?,
            [_, _, _] => attn.shallow_clone(),
            _ => {
                return Err(AttentionError::Shape(format!(
                    "expected [heads, 1+N, 1+N] or [1, heads, 1+N, 1+N], got {:?}",
                    attn.size()
                )))
            }
        };
        let size = attn.size();
        let tokens = 1 + (h * w) as i64;
        if size[1] != tokens || size[2] != tokens || size[0] < 1 {
            return Err(AttentionError::Shape(format!(
                "{h}×{w} patches need [heads, {tokens}, {tokens}], got {size:?}"
            )));
        }
        // The official layout has no registers.
        Self::from_cls_attention(&cls_attention_over_patches(&attn, 0)?, h, w)
    }

    /// Maps from the CLS query's attention over the patches of one image, `[heads, h·w]` or
    /// `[1, heads, h·w]` (what [`VisionTransformer::last_cls_attention`] returns for a batch of
    /// one: registers already left out), any float kind and device.
    ///
    /// # Errors
    /// [`AttentionError::Shape`] when the shape does not match `h × w` patches.
    pub fn from_cls_attention(attn: &Tensor, h: usize, w: usize) -> Result<Self, AttentionError> {
        let rows = match attn.size()[..] {
            [1, _, _] => attn.f_squeeze_dim(0)?,
            [_, _] => attn.shallow_clone(),
            _ => {
                return Err(AttentionError::Shape(format!(
                    "expected [heads, N] or [1, heads, N], got {:?}",
                    attn.size()
                )))
            }
        };
        let size = rows.size();
        if size[1] != (h * w) as i64 || size[0] < 1 {
            return Err(AttentionError::Shape(format!(
                "{h}×{w} patches need [heads, {}], got {size:?}",
                h * w
            )));
        }
        let rows = rows
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let flat = Vec::<f32>::try_from(&rows.f_reshape([-1])?)?;
        Ok(Self {
            h,
            w,
            heads: flat.chunks(h * w).map(<[f32]>::to_vec).collect(),
        })
    }

    /// The mean map over heads.
    pub fn mean(&self) -> Vec<f32> {
        let n = self.heads.len() as f32;
        (0..self.h * self.w)
            .map(|i| self.heads.iter().map(|m| m[i]).sum::<f32>() / n)
            .collect()
    }
}

/// How [`AttentionImage::prepare`] fits an image to the patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionResize {
    /// The shorter side to `n` pixels and the longer to `⌊n · long / short⌋` (torchvision
    /// `Resize(n)`, what the official `--image_size n` does with one number), then each side
    /// cropped down to a multiple of the patch size, keeping the top-left corner (official
    /// `img[:, :h - h % p, :w - w % p]`). The aspect ratio is kept to within one patch.
    KeepAspect(u32),
    /// Both sides to `n` rounded down to a multiple of the patch size (one patch at least): a
    /// square whatever the image's aspect ratio. The official default `--image_size 480 480`
    /// (resize to 480 × 480, then crop) gives the same grid.
    Square(u32),
}

/// An image fitted to the patch grid: what the model sees, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionImage {
    /// The pixels the model sees: `w · patch` wide, `h · patch` high (RGB8).
    pub image: RgbImage,
    /// `(width, height)` of the resized image before the crop; the crop keeps its top-left
    /// `image.dimensions()`.
    pub resized: (u32, u32),
    /// Patch rows.
    pub h: usize,
    /// Patch columns.
    pub w: usize,
}

impl AttentionImage {
    /// Resizes `img` as `fit` says (Pillow bicubic, [`dino_data::transforms::resize()`]; an image
    /// already at the target size is not resampled, as torchvision's `resize`) and crops it to a
    /// multiple of `patch`.
    ///
    /// # Errors
    /// [`AttentionError::ImageSize`] for an empty image or a zero patch size;
    /// [`AttentionError::ResizeTarget`] when [`AttentionResize::KeepAspect`] asks for a shorter
    /// side below one patch; [`AttentionError::Resize`] when resampling fails.
    pub fn prepare(
        img: &RgbImage,
        fit: AttentionResize,
        patch: u32,
    ) -> Result<Self, AttentionError> {
        let (w0, h0) = img.dimensions();
        if patch == 0 || w0 == 0 || h0 == 0 {
            return Err(AttentionError::ImageSize {
                width: w0,
                height: h0,
                patch,
            });
        }
        let (rw, rh) = match fit {
            AttentionResize::Square(n) => {
                // Straight to the multiple of the patch (no crop): `dino attention`'s behaviour
                // before the aspect ratio was kept, unchanged.
                let side = n.max(patch) / patch * patch;
                (side, side)
            }
            AttentionResize::KeepAspect(n) => {
                if n < patch {
                    return Err(AttentionError::ResizeTarget { size: n, patch });
                }
                // torchvision `_compute_resized_output_size`: int(n · long / short), computed
                // here exactly in integers (the float quotient never rounds up to the next
                // integer at these sizes).
                let long = |a: u32, b: u32| {
                    u32::try_from(u64::from(n) * u64::from(a) / u64::from(b)).unwrap_or(u32::MAX)
                };
                if w0 <= h0 {
                    (n, long(h0, w0))
                } else {
                    (long(w0, h0), n)
                }
            }
        };
        let resized = if (rw, rh) == (w0, h0) {
            img.clone()
        } else {
            dino_data::transforms::resize(img, rw, rh)?
        };
        let (cw, ch) = (rw / patch * patch, rh / patch * patch);
        let image = if (cw, ch) == (rw, rh) {
            resized
        } else {
            image::imageops::crop_imm(&resized, 0, 0, cw, ch).to_image()
        };
        Ok(Self {
            image,
            resized: (rw, rh),
            h: (ch / patch) as usize,
            w: (cw / patch) as usize,
        })
    }

    /// Shares `(x, y)` of the resized image's width and height that the crop keeps, in (0, 1]:
    /// a fraction `f` of the original image's width lies at `f / x` of the cropped image's width
    /// (the resize keeps fractions; the crop cuts the right and bottom edges).
    pub fn kept_fraction(&self) -> (f64, f64) {
        let (cw, ch) = self.image.dimensions();
        (
            f64::from(cw) / f64::from(self.resized.0),
            f64::from(ch) / f64::from(self.resized.1),
        )
    }

    /// The model input `[1, 3, h · patch, w · patch]` (f32, CPU): the image scaled to [0, 1]
    /// and normalised per channel with `mean` and `std` (torchvision `ToTensor` + `Normalize`).
    ///
    /// # Errors
    /// [`AttentionError::Torch`] from libtorch.
    pub fn to_tensor(&self, mean: [f64; 3], std: [f64; 3]) -> Result<Tensor, AttentionError> {
        let (w, h) = self.image.dimensions();
        let mut chw = vec![0f32; 3 * w as usize * h as usize];
        dino_data::transforms::normalize_chw_into(&self.image, mean, std, &mut chw);
        Ok(Tensor::f_from_slice(&chw)?.f_view([1, 3, i64::from(h), i64::from(w)])?)
    }
}

/// The last block's CLS attention of `img` through `backbone` (official
/// `get_last_selfattention`): the image fitted to the backbone's patch grid as `fit` says
/// ([`AttentionImage::prepare`]), normalised with `mean` and `std`, run on `device` without
/// gradients. Returns what the model saw and its maps (one `h × w` map per head).
///
/// # Errors
/// As [`AttentionImage::prepare`]; [`AttentionError::Model`] from the backbone;
/// [`AttentionError::Torch`] from libtorch.
pub fn attention_of(
    backbone: &VisionTransformer,
    img: &RgbImage,
    fit: AttentionResize,
    mean: [f64; 3],
    std: [f64; 3],
    device: Device,
) -> Result<(AttentionImage, AttentionMaps), AttentionError> {
    let patch = u32::try_from(backbone.config().patch_size).unwrap_or(0);
    let seen = AttentionImage::prepare(img, fit, patch)?;
    let x = seen.to_tensor(mean, std)?.f_to_device(device)?;
    let attn = tch::no_grad(|| backbone.last_cls_attention(&x))?;
    let maps = AttentionMaps::from_cls_attention(&attn, seen.h, seen.w)?;
    Ok((seen, maps))
}

/// The official threshold mask of one map: sort the weights, normalise them to sum 1, and keep
/// the patches whose ascending cumulative mass exceeds `1 − threshold`; that is the smallest set
/// of most-attended patches holding at least `threshold` of the mass. `map`: `h · w` weights
/// (any non-negative scale). Returns one flag per patch, in the order of `map`. Ties in weight
/// are ordered by patch index.
///
/// # Errors
/// [`AttentionError::Threshold`] unless `0 < threshold < 1`.
pub fn threshold_mask(map: &[f32], threshold: f64) -> Result<Vec<bool>, AttentionError> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(AttentionError::Threshold(threshold));
    }
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[a].total_cmp(&map[b]));
    let total: f32 = map.iter().sum();
    // The official comparison is a float32 tensor against a Python float, done in float32.
    let floor = (1.0 - threshold) as f32;
    let mut keep = vec![false; map.len()];
    let mut cumulative = 0.0f32;
    for i in order {
        cumulative += map[i] / total;
        keep[i] = cumulative > floor;
    }
    Ok(keep)
}

/// The image with a heat map of `map` blended over it. `map`: row-major weights of the
/// `(height / patch) × (width / patch)` patch grid; each patch covers `patch × patch` pixels
/// (nearest upsampling). Colours: VIRIDIS over the map's min-max range.
///
/// # Errors
/// [`AttentionError::ImageSize`] or [`AttentionError::Shape`] when the image, the patch size and
/// the map length disagree.
pub fn heatmap_overlay(
    image: &RgbImage,
    map: &[f32],
    patch: u32,
) -> Result<RgbImage, AttentionError> {
    let (_, w) = patch_grid(image, patch, map.len())?;
    let (lo, hi) = map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let colours: Vec<Rgb<u8>> = map
        .iter()
        .map(|&v| {
            let c = colorous::VIRIDIS.eval_continuous(((v - lo) / span) as f64);
            Rgb([c.r, c.g, c.b])
        })
        .collect();
    let mut out = image.clone();
    for (x, y, px) in out.enumerate_pixels_mut() {
        let colour = colours[(y / patch) as usize * w + (x / patch) as usize];
        *px = blend(*px, colour, HEAT_ALPHA);
    }
    Ok(out)
}

/// The image with `mask` (row-major flags of the patch grid, as [`heatmap_overlay`]) tinted in
/// `colour` (alpha 0.5, as the official `apply_mask`) and its outline drawn solid (the official
/// script draws the mask contour).
///
/// # Errors
/// As [`heatmap_overlay`].
pub fn mask_overlay(
    image: &RgbImage,
    mask: &[bool],
    patch: u32,
    colour: Rgb<u8>,
) -> Result<RgbImage, AttentionError> {
    let (_, w) = patch_grid(image, patch, mask.len())?;
    let (width, height) = image.dimensions();
    let inside = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < width as i64
            && y < height as i64
            && mask[(y as u32 / patch) as usize * w + (x as u32 / patch) as usize]
    };
    let mut out = image.clone();
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (xi, yi) = (x as i64, y as i64);
        if !inside(xi, yi) {
            continue;
        }
        let edge =
            !(inside(xi - 1, yi) && inside(xi + 1, yi) && inside(xi, yi - 1) && inside(xi, yi + 1));
        *px = if edge {
            colour
        } else {
            blend(*px, colour, MASK_ALPHA)
        };
    }
    Ok(out)
}

/// The patch grid `(h, w)` of an image whose sides must be multiples of `patch`.
fn grid(image: &RgbImage, patch: u32) -> Result<(usize, usize), AttentionError> {
    let (width, height) = image.dimensions();
    if patch == 0 || width == 0 || height == 0 || width % patch != 0 || height % patch != 0 {
        return Err(AttentionError::ImageSize {
            width,
            height,
            patch,
        });
    }
    Ok(((height / patch) as usize, (width / patch) as usize))
}

/// [`grid`], checked against the number of map entries.
fn patch_grid(image: &RgbImage, patch: u32, len: usize) -> Result<(usize, usize), AttentionError> {
    let (h, w) = grid(image, patch)?;
    if h * w != len {
        return Err(AttentionError::Shape(format!(
            "a {h}×{w} patch grid needs {} map entries, got {len}",
            h * w
        )));
    }
    Ok((h, w))
}

/// Writes the attention figures of one image into `out_dir` and returns their paths:
/// `img.png` (the input), `attn.npy` (the maps, `[heads, h, w]` f32, the CLS row of the last
/// block's attention over the patches), `attn-head{i}.png` per head and `attn-mean.png` (heat maps),
/// `mask_th{threshold}_head{i}.png` per head and `mask_th{threshold}_mean.png` (masks keeping
/// `threshold` of the mass; official file names).
///
/// `image`: already fitted to `w·patch × h·patch` pixels (what the model saw,
/// [`AttentionImage::image`]; the grid need not be square); `attn`: the last
/// block's attention `[heads, 1 + h·w, 1 + h·w]` (or with a leading batch axis of 1);
/// `threshold`: share of the attention mass the masks keep ([`DEFAULT_THRESHOLD`] in the paper).
///
/// # Errors
/// [`AttentionError`] when the image is not a multiple of `patch`, the attention shape does not
/// match it, the threshold is outside (0, 1), or a file cannot be written.
pub fn write_attention_maps(
    out_dir: &Path,
    image: &RgbImage,
    attn: &Tensor,
    patch: u32,
    threshold: f64,
) -> Result<Vec<PathBuf>, AttentionError> {
    let (h, w) = grid(image, patch)?;
    write_maps(
        out_dir,
        image,
        &AttentionMaps::from_last_block(attn, h, w)?,
        patch,
        threshold,
    )
}

/// [`write_attention_maps`] for maps already taken from the attention tensor (for a caller that
/// also scores them, [`crate::attention::score`]). Same files, same errors; `maps` must match the
/// patch grid of `image`.
pub fn write_maps(
    out_dir: &Path,
    image: &RgbImage,
    maps: &AttentionMaps,
    patch: u32,
    threshold: f64,
) -> Result<Vec<PathBuf>, AttentionError> {
    let (h, w) = patch_grid(image, patch, maps.h * maps.w)?;
    if (h, w) != (maps.h, maps.w) {
        return Err(AttentionError::Shape(format!(
            "{}×{} maps for a {h}×{w} patch grid",
            maps.h, maps.w
        )));
    }
    // Validate before writing anything.
    threshold_mask(&maps.heads[0], threshold)?;
    std::fs::create_dir_all(out_dir).map_err(|source| AttentionError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    // The raw maps, for scoring or plotting elsewhere.
    let npy = out_dir.join("attn.npy");
    Tensor::f_from_slice(&maps.heads.concat())?
        .f_view([maps.heads.len() as i64, h as i64, w as i64])?
        .write_npy(&npy)?;
    let mut written = vec![npy];
    let mut save = |name: String, img: &RgbImage| -> Result<(), AttentionError> {
        let path = out_dir.join(name);
        img.save(&path).map_err(|source| AttentionError::Image {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok(())
    };
    save("img.png".into(), image)?;
    let mean = maps.mean();
    let named: Vec<(String, &[f32])> = maps
        .heads
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("head{i}"), m.as_slice()))
        .chain(std::iter::once(("mean".to_string(), mean.as_slice())))
        .collect();
    for (name, map) in &named {
        save(
            format!("attn-{name}.png"),
            &heatmap_overlay(image, map, patch)?,
        )?;
    }
    for (i, (name, map)) in named.iter().enumerate() {
        let mask = threshold_mask(map, threshold)?;
        let c = colorous::CATEGORY10[i % colorous::CATEGORY10.len()];
        let colour = Rgb([c.r, c.g, c.b]);
        save(
            format!("mask_th{threshold}_{name}.png"),
            &mask_overlay(image, &mask, patch, colour)?,
        )?;
    }
    Ok(written)
}

fn blend(under: Rgb<u8>, over: Rgb<u8>, alpha: f32) -> Rgb<u8> {
    Rgb(std::array::from_fn(|c| {
        (under[c] as f32 * (1.0 - alpha) + over[c] as f32 * alpha).round() as u8
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threshold_is_the_papers() {
        // Paper Fig. 3 / README "--threshold 0.6": masks keep 60% of the mass.
        assert_eq!(DEFAULT_THRESHOLD, 0.6);
    }

    #[test]
    fn one_hot_patch_with_70_percent() {
        // Patch 5 holds 0.7 of the mass, the other 8 share 0.3: at 0.6 only patch 5 is kept.
        let mut map = vec![0.3 / 8.0; 9];
        map[5] = 0.7;
        let keep = threshold_mask(&map, 0.6).unwrap();
        assert_eq!(keep.iter().filter(|&&k| k).count(), 1);
        assert!(keep[5]);
        // At 0.8 it needs more patches: 0.7 + 3 · 0.0375 = 0.8125 ≥ 0.8 and 0.775 is not.
        assert_eq!(
            threshold_mask(&map, 0.8)
                .unwrap()
                .iter()
                .filter(|&&k| k)
                .count(),
            4
        );
    }

    #[test]
    fn mask_is_the_smallest_set_reaching_the_mass() {
        // Weights sum to 0.5 (the CLS column is dropped): normalisation makes them 0.4, 0.3,
        // 0.2, 0.1. Ascending cumulative 0.1, 0.3, 0.6, 1.0 > 0.4 keeps the 0.3 and 0.4 patches.
        let map = [0.05, 0.2, 0.1, 0.15];
        assert_eq!(
            threshold_mask(&map, 0.6).unwrap(),
            [false, true, false, true]
        );
        // Exactly the threshold is enough (binary-exact numbers): 0.5 alone at 0.5.
        assert_eq!(
            threshold_mask(&[0.25, 0.5, 0.25], 0.5).unwrap(),
            [false, true, false]
        );
        assert!(matches!(
            threshold_mask(&map, 1.0),
            Err(AttentionError::Threshold(_))
        ));
        assert!(matches!(
            threshold_mask(&map, 0.0),
            Err(AttentionError::Threshold(_))
        ));
    }
}
