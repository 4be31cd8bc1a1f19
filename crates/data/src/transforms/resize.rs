//! Crop + resize with Pillow's BICUBIC filter, as torchvision's `F.resized_crop` on PIL images
//! (`img.crop(box).resize(size, Image.BICUBIC)`).
//!
//! Pillow's BICUBIC is the a = -0.5 (Catmull-Rom) kernel with its support scaled by the
//! downscale factor (antialiasing), separable, rounded to u8 between the two passes;
//! `fast_image_resize`'s `Convolution(CatmullRom)` is a port of that algorithm. The crop is
//! given to it as an integer sub-view (not as a fractional crop option) so the kernel clamps
//! at the crop's edges, like resizing Pillow's cropped image, instead of reading pixels outside
//! the box; and it is run as two single-direction passes in the order Pillow picks.
//! Remaining difference: 16-bit instead of 22-bit fixed-point weights (a level at most,
//! measured by the parity test).

use super::{CropBox, TransformError};
use fast_image_resize as fir;
use fir::images::{TypedCroppedImage, TypedImage, TypedImageRef};
use fir::pixels::U8x3;
use fir::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// A reusable crop-and-resize engine (keeps `fast_image_resize`'s scratch buffers between
/// calls; make one per worker thread).
#[derive(Debug, Default, Clone)]
pub struct CropResizer {
    resizer: Resizer,
    tmp: Vec<u8>,
}

impl CropResizer {
    /// A new engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resamples `crop` of `src` to `dst`'s size (`dst` keeps its dimensions; its pixels are
    /// overwritten). Errors: [`TransformError::BadCrop`] if the box is empty or outside `src`,
    /// or `dst` is empty.
    pub fn resized_crop_into(
        &mut self,
        src: &RgbImage,
        crop: CropBox,
        dst: &mut RgbImage,
    ) -> Result<(), TransformError> {
        let (w, h) = src.dimensions();
        if !crop.fits(w, h) || dst.width() == 0 || dst.height() == 0 {
            return Err(TransformError::BadCrop {
                crop,
                width: w,
                height: h,
            });
        }
        let err = |e: &dyn std::fmt::Display| TransformError::Resize(e.to_string());
        // The typed API for RGB u8 only: `Resizer::resize` dispatches at run time over all 13
        // pixel types, and every one of them was compiled into this crate (three quarters of its
        // LLVM IR and of its build time, `cargo llvm-lines`); for U8x3 it calls this same
        // `resize_typed`, so the pixels are the same.
        let src_ref =
            TypedImageRef::<U8x3>::from_buffer(w, h, src.as_raw()).map_err(|e| err(&e))?;
        let view =
            TypedCroppedImage::from_ref(&src_ref, crop.left, crop.top, crop.width, crop.height)
                .map_err(|e| err(&e))?;
        let (dw, dh) = dst.dimensions();
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
        if crop.width == dw || crop.height == dh {
            // At most one pass: no intermediate rounding to order.
            let mut dst_img =
                TypedImage::<U8x3>::from_buffer(dw, dh, &mut *dst).map_err(|e| err(&e))?;
            return self
                .resizer
                .resize_typed(&view, &mut dst_img, &opts)
                .map_err(|e| err(&e));
        }
        // Pillow (>= 11, `ImagingResampleInner`) runs the vertical pass first iff the height
        // shrinks by more than twice as many pixels as the width, else horizontal first, and
        // rounds/clips to u8 in between. fast_image_resize always goes vertical first for u8,
        // which moves the clipping of bicubic overshoot (up to ~15 levels at hard edges), so
        // we run two single-direction passes in Pillow's order.
        let (cw, ch) = (i64::from(crop.width), i64::from(crop.height));
        let vertical_first =
            ch - i64::from(dh) > 0 && ch - i64::from(dh) > (cw - i64::from(dw)) * 2;
        let (tw, th) = if vertical_first {
            (crop.width, dh)
        } else {
            (dw, crop.height)
        };
        self.tmp.resize(3 * tw as usize * th as usize, 0);
        let mut tmp_img =
            TypedImage::<U8x3>::from_buffer(tw, th, &mut self.tmp).map_err(|e| err(&e))?;
        self.resizer
            .resize_typed(&view, &mut tmp_img, &opts)
            .map_err(|e| err(&e))?;
        let tmp_ref = TypedImageRef::<U8x3>::from_buffer(tw, th, &self.tmp).map_err(|e| err(&e))?;
        let mut dst_img =
            TypedImage::<U8x3>::from_buffer(dw, dh, &mut *dst).map_err(|e| err(&e))?;
        self.resizer
            .resize_typed(&tmp_ref, &mut dst_img, &opts)
            .map_err(|e| err(&e))
    }
}

/// `F.resized_crop(img, top, left, h, w, [out_h, out_w], BICUBIC)` on a PIL image: a new
/// `out_w`x`out_h` image. Errors as [`CropResizer::resized_crop_into`].
pub fn resized_crop(
    src: &RgbImage,
    crop: CropBox,
    out_w: u32,
    out_h: u32,
) -> Result<RgbImage, TransformError> {
    let mut dst = RgbImage::new(out_w, out_h);
    CropResizer::new().resized_crop_into(src, crop, &mut dst)?;
    Ok(dst)
}

/// PIL `img.resize((out_w, out_h), BICUBIC)` of the whole image.
pub fn resize(src: &RgbImage, out_w: u32, out_h: u32) -> Result<RgbImage, TransformError> {
    resized_crop(src, CropBox::full(src.width(), src.height()), out_w, out_h)
}
