//! The typed multi-crop batch the loader sends to the trainer.
//!
//! Pixels stay `u8` in CHW order: a quarter of the bytes of `f32`, and the normalization
//! `(x / 255 - mean) / std` of the official `ToTensor + Normalize` is one fused op on the
//! device. Crops are stored **view-major**: all images' first global crop, then all images'
//! second one (and likewise for the locals), which is the order of the official
//! `MultiCropWrapper` input after `torch.cat` of the per-view batches, so each view is one
//! contiguous `[B, 3, H, W]` block.

use image::RgbImage;

/// One batch of multi-crop views.
///
/// Shapes (all `u8`, C = 3 RGB channels, row-major):
/// - `globals`: `[2, B, 3, Hg, Wg]`, `Hg = Wg = global_size`;
/// - `locals`: `[n_local, B, 3, Hl, Wl]`, `Hl = Wl = local_size` (empty when `n_local = 0`);
/// - `labels`: `[B]` class indices (0 for unlabeled data);
/// - `indices`: `[B]` dataset indices actually used (a replacement's index when a sample
///   failed to load);
/// - `masks`: `[2, B, gh · gw]` iBOT patch masks of the global crops, view-major like
///   `globals`, each row-major over the `mask_grid = [gh, gw]` patch grid (`true` = masked,
///   the student sees its `mask_token` there); empty, with `mask_grid = [0, 0]`, when iBOT is
///   off ([`crate::masking`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiCropBatch {
    /// Epoch this batch belongs to.
    pub epoch: u64,
    /// Position of the batch within its epoch (0-based).
    pub step: u64,
    /// Images in this batch (B); smaller than the configured size only for a last partial
    /// batch with `drop_last = false`.
    pub batch_size: usize,
    /// Side of the global crops in pixels.
    pub global_size: u32,
    /// Side of the local crops in pixels.
    pub local_size: u32,
    /// Number of local crops per image.
    pub n_local: usize,
    /// `[2, B, 3, Hg, Wg]` global crops, view-major.
    pub globals: Vec<u8>,
    /// `[n_local, B, 3, Hl, Wl]` local crops, view-major.
    pub locals: Vec<u8>,
    /// `[B]` labels.
    pub labels: Vec<i64>,
    /// `[B]` dataset indices.
    pub indices: Vec<u64>,
    /// `[gh, gw]`: the patch grid of the global crops' masks (`[0, 0]` without masks).
    pub mask_grid: [usize; 2],
    /// `[2, B, gh · gw]` iBOT masks of the global crops, view-major (empty without masks).
    pub masks: Vec<bool>,
}

impl MultiCropBatch {
    /// An all-zero batch with buffers of the right sizes.
    pub fn zeroed(
        epoch: u64,
        step: u64,
        batch_size: usize,
        global_size: u32,
        local_size: u32,
        n_local: usize,
    ) -> Self {
        Self {
            epoch,
            step,
            batch_size,
            global_size,
            local_size,
            n_local,
            globals: vec![0; 2 * batch_size * crop_len(global_size)],
            locals: vec![0; n_local * batch_size * crop_len(local_size)],
            labels: vec![0; batch_size],
            indices: vec![0; batch_size],
            mask_grid: [0, 0],
            masks: Vec::new(),
        }
    }

    /// Whether the batch carries iBOT masks.
    pub fn has_masks(&self) -> bool {
        !self.masks.is_empty()
    }

    /// Patches per global crop of the masks (`gh · gw`; 0 without masks).
    pub fn mask_patches(&self) -> usize {
        self.mask_grid[0] * self.mask_grid[1]
    }

    /// Bytes of one global crop, `3 * Hg * Wg`.
    pub fn global_crop_len(&self) -> usize {
        crop_len(self.global_size)
    }

    /// Bytes of one local crop, `3 * Hl * Wl`.
    pub fn local_crop_len(&self) -> usize {
        crop_len(self.local_size)
    }

    /// Shape of `globals`: `[2, B, 3, Hg, Wg]`.
    pub fn globals_shape(&self) -> [usize; 5] {
        let g = self.global_size as usize;
        [2, self.batch_size, 3, g, g]
    }

    /// Shape of `locals`: `[n_local, B, 3, Hl, Wl]`.
    pub fn locals_shape(&self) -> [usize; 5] {
        let l = self.local_size as usize;
        [self.n_local, self.batch_size, 3, l, l]
    }

    /// Total number of views per image, `2 + n_local`.
    pub fn n_crops(&self) -> usize {
        2 + self.n_local
    }

    /// CHW bytes of crop `view` (0, 1 = globals; 2.. = locals, as in `DataAugmentationDino::apply`) of
    /// image `b`; `None` when out of range.
    pub fn crop(&self, view: usize, b: usize) -> Option<&[u8]> {
        if b >= self.batch_size {
            return None;
        }
        let (buf, len, v) = if view < 2 {
            (&self.globals, self.global_crop_len(), view)
        } else if view < self.n_crops() {
            (&self.locals, self.local_crop_len(), view - 2)
        } else {
            return None;
        };
        let start = (v * self.batch_size + b) * len;
        buf.get(start..start + len)
    }

    /// Crop `view` of image `b` as an HWC image (for previews and tests).
    pub fn crop_image(&self, view: usize, b: usize) -> Option<RgbImage> {
        let chw = self.crop(view, b)?;
        let side = if view < 2 {
            self.global_size
        } else {
            self.local_size
        };
        Some(chw_to_image(chw, side, side))
    }
}

fn crop_len(side: u32) -> usize {
    3 * side as usize * side as usize
}

/// Writes an RGB8 HWC image into `dst` as CHW (`dst.len() == 3 * h * w`).
pub fn write_chw(img: &RgbImage, dst: &mut [u8]) {
    let plane = img.width() as usize * img.height() as usize;
    assert_eq!(dst.len(), 3 * plane, "destination is not 3 x H x W bytes");
    let (r, rest) = dst.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
}

/// The inverse of [`write_chw`]: CHW bytes of an `h × w` image back to HWC.
pub fn chw_to_image(chw: &[u8], width: u32, height: u32) -> RgbImage {
    let plane = width as usize * height as usize;
    let mut hwc = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        hwc.extend_from_slice(&[chw[i], chw[plane + i], chw[2 * plane + i]]);
    }
    RgbImage::from_raw(width, height, hwc).expect("3 * w * h bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_round_trip_and_view_major_slicing() {
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8, y as u8, 100 + x as u8]));
        let mut chw = vec![0; 36];
        write_chw(&img, &mut chw);
        assert_eq!(&chw[..4], &[0, 1, 2, 3]);
        assert_eq!(&chw[12..16], &[0, 0, 0, 0]);
        assert_eq!(chw[24], 100);
        assert_eq!(chw_to_image(&chw, 4, 3), img);

        let mut b = MultiCropBatch::zeroed(0, 0, 3, 2, 1, 2);
        assert_eq!(b.globals.len(), 2 * 3 * 12);
        assert_eq!(b.locals.len(), 2 * 3 * 3);
        // view 1 of image 2 starts after view 0 of all 3 images and view 1 of images 0, 1.
        b.globals[(3 + 2) * 12] = 7;
        assert_eq!(b.crop(1, 2).unwrap()[0], 7);
        b.locals[(3 + 1) * 3] = 9;
        assert_eq!(b.crop(3, 1).unwrap()[0], 9);
        assert!(b.crop(4, 0).is_none() && b.crop(0, 3).is_none());
        assert_eq!(b.globals_shape(), [2, 3, 3, 2, 2]);
        assert_eq!(b.locals_shape(), [2, 3, 3, 1, 1]);
    }
}
