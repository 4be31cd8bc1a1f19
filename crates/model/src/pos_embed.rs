//! Resizing the learned absolute position embedding to another patch grid
//! (official `VisionTransformer.interpolate_pos_encoding`).
//!
//! The table is learned for the `img_size / patch` square grid (14×14 for 224 px at patch 16).
//! Any other grid, square or not, gets the patch part of the table resized with bicubic
//! interpolation (libtorch `upsample_bicubic2d`, a = −0.75, `align_corners = false`, no
//! antialias); the CLS entry is kept as is. Gradients flow through the resize into the table,
//! as in the official code (local 96-px crops train the 14×14 table through a 6×6 resize).
//!
//! **Exact size (default, [`PosInterp::ExactSize`]).** The output grid is passed explicitly and
//! libtorch maps output to input coordinates with the ratio in/out. This is what DINOv2 switched
//! to (facebookresearch/dinov2 PR #378).
//!
//! **Official v1 ([`PosInterp::OfficialScaleFactor`]).** DINO v1 passes *scale factors*
//! ((h/p + 0.1)/g₀, (w/p + 0.1)/g₀) instead of a size: the output size is
//! ⌊g₀ · factor⌋, and the kernel maps coordinates with 1/factor, not in/out. The +0.1 keeps the
//! floor from rounding one patch short (dino issue #8), but it also shifts the sampling
//! positions slightly, so the two modes give different tables (≈1e-2 relative at 96 px), and
//! the scale factor still mis-rounds for some sizes (dinov2 issues #333/#378); there this crate
//! returns [`ModelError::PosEmbedRounding`] where the official code fails an assertion. Use it
//! only to reproduce official checkpoints' numbers bit for bit.

use crate::error::ModelError;
use tch::Tensor;

/// How the position table is resized to a grid other than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PosInterp {
    /// Bicubic to the explicit output size (DINOv2 behaviour; default).
    #[default]
    ExactSize,
    /// Bicubic with the official v1 scale factors (g + 0.1)/g₀ (also DINOv2's plain models,
    /// `interpolate_offset: 0.1`).
    OfficialScaleFactor,
    /// Antialiased bicubic to the explicit output size (DINOv2's register models:
    /// `interpolate_antialias=True, interpolate_offset=0.0`, dinov2 `hub/backbones.py`).
    Antialias,
}

impl PosInterp {
    /// The mode `model.pos_interpolation` names.
    pub fn from_config(p: dino_config::PosInterpolation) -> Self {
        match p {
            dino_config::PosInterpolation::ExactSize => Self::ExactSize,
            dino_config::PosInterpolation::ScaleFactor => Self::OfficialScaleFactor,
            dino_config::PosInterpolation::Antialias => Self::Antialias,
        }
    }
}

/// The position embedding `[1, 1 + gh·gw, D]` for a `gh × gw` patch grid, from the stored
/// table `pos` `[1, 1 + g0², D]`. Returns `pos` itself (shallow clone) when the grids match.
///
/// # Errors
/// [`ModelError::Config`] if the stored table is not square;
/// [`ModelError::PosEmbedRounding`] in `OfficialScaleFactor` mode when the official formula
/// yields another grid; [`ModelError::Torch`] from libtorch.
pub fn interpolate_pos_embed(
    pos: &Tensor,
    gh: i64,
    gw: i64,
    mode: PosInterp,
) -> Result<Tensor, ModelError> {
    let (_, n1, dim) = pos.size3()?;
    let n0 = n1 - 1;
    let g0 = (n0 as f64).sqrt().round() as i64;
    if g0 * g0 != n0 {
        return Err(ModelError::Config(format!(
            "position table has {n0} patch entries, not a square grid"
        )));
    }
    if gh == g0 && gw == g0 {
        return Ok(pos.shallow_clone());
    }
    let class_pos = pos.f_narrow(1, 0, 1)?;
    let grid = pos
        .f_narrow(1, 1, n0)?
        .f_reshape([1, g0, g0, dim])?
        .f_permute([0, 3, 1, 2])?;
    let resized = match mode {
        PosInterp::ExactSize => grid.f_upsample_bicubic2d([gh, gw], false, None, None)?,
        PosInterp::Antialias => {
            grid.f_internal_upsample_bicubic2d_aa([gh, gw], false, None, None)?
        }
        PosInterp::OfficialScaleFactor => {
            let (fh, fw) = ((gh as f64 + 0.1) / g0 as f64, (gw as f64 + 0.1) / g0 as f64);
            // torch.nn.functional.interpolate: size = floor(in * factor), kernel gets the factor.
            let (oh, ow) = (
                (g0 as f64 * fh).floor() as i64,
                (g0 as f64 * fw).floor() as i64,
            );
            if (oh, ow) != (gh, gw) {
                return Err(ModelError::PosEmbedRounding {
                    want_h: gh,
                    want_w: gw,
                    got_h: oh,
                    got_w: ow,
                });
            }
            grid.f_upsample_bicubic2d([oh, ow], false, fh, fw)?
        }
    };
    let patch_pos = resized
        .f_permute([0, 2, 3, 1])?
        .f_reshape([1, gh * gw, dim])?;
    Ok(Tensor::f_cat(&[class_pos, patch_pos], 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn table(g0: i64, d: i64) -> Tensor {
        Tensor::arange((1 + g0 * g0) * d, (Kind::Float, Device::Cpu)).reshape([1, 1 + g0 * g0, d])
            / 100.0
    }

    #[test]
    fn same_grid_is_returned_unchanged() {
        let t = table(14, 4);
        let out = interpolate_pos_embed(&t, 14, 14, PosInterp::ExactSize).unwrap();
        assert!(out.equal(&t));
    }

    #[test]
    fn non_square_grid_has_the_right_shape_and_keeps_cls() {
        let t = table(14, 4);
        let out = interpolate_pos_embed(&t, 14, 10, PosInterp::ExactSize).unwrap();
        assert_eq!(out.size(), [1, 1 + 140, 4]);
        assert!(out.narrow(1, 0, 1).equal(&t.narrow(1, 0, 1)));
        // A constant table stays constant under bicubic resampling (weights sum to 1).
        let c = Tensor::ones([1, 1 + 196, 3], (Kind::Float, Device::Cpu));
        let out = interpolate_pos_embed(&c, 6, 9, PosInterp::ExactSize).unwrap();
        let err = (out - 1.0).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn official_mode_differs_from_exact_size_but_keeps_the_grid() {
        let t = Tensor::randn([1, 197, 8], (Kind::Float, Device::Cpu));
        let a = interpolate_pos_embed(&t, 6, 6, PosInterp::ExactSize).unwrap();
        let b = interpolate_pos_embed(&t, 6, 6, PosInterp::OfficialScaleFactor).unwrap();
        assert_eq!(a.size(), b.size());
        let d = (a - b).abs().max().double_value(&[]);
        assert!(d > 1e-3, "the +0.1 factor moves the sampling points: {d}");
    }

    #[test]
    fn gradient_flows_into_the_table() {
        let t = Tensor::randn([1, 197, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let out = interpolate_pos_embed(&t, 6, 4, PosInterp::ExactSize).unwrap();
        out.sum(Kind::Float).backward();
        let g = t.grad();
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
