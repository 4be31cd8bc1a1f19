//! The ViT's output tokens by name (DINOv2 `forward_features`: `x_norm_clstoken`,
//! `x_norm_regtokens`, `x_norm_patchtokens`). The token order inside the network is
//! `[CLS, registers…, patches…]` (DINOv2 `prepare_tokens_with_masks`: the register tokens go
//! right after CLS); this module is the one place outside the network that knows it, so no
//! caller indexes tokens by position.

use tch::{TchError, Tensor};

/// The normalized tokens of one block's output, split by role.
#[derive(Debug)]
pub struct Tokens {
    /// The CLS token `[B, D]` (DINO's feature).
    pub cls: Tensor,
    /// The register tokens `[B, R, D]` (`R = model.num_register_tokens`, 0 for DINO v1: then
    /// `[B, 0, D]`). Never part of attention maps, patch features or video segmentation.
    pub registers: Tensor,
    /// The patch tokens `[B, N, D]`, row by row over the `gh × gw` patch grid (N = gh · gw).
    pub patches: Tensor,
}

impl Tokens {
    /// Splits a token sequence `[B, 1 + R + N, D]` laid out as the network lays it out.
    ///
    /// # Errors
    /// libtorch errors (a sequence shorter than `1 + num_registers`).
    pub(crate) fn split(seq: &Tensor, num_registers: i64) -> Result<Self, TchError> {
        let t = seq.size()[1];
        let first = 1 + num_registers;
        Ok(Self {
            cls: seq.f_select(1, 0)?,
            registers: seq.f_narrow(1, 1, num_registers)?,
            patches: seq.f_narrow(1, first, t - first)?,
        })
    }

    /// CLS followed by the patches, `[B, 1 + N, D]` (registers left out): the official v1
    /// `get_intermediate_layers` layout, which the token export writes as its `all` kind.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn cls_and_patches(&self) -> Result<Tensor, TchError> {
        Tensor::f_cat(&[self.cls.f_unsqueeze(1)?, self.patches.shallow_clone()], 1)
    }
}

/// The CLS query's attention over the patch keys only, `[.., heads, N]`, from attention
/// probabilities `[.., heads, 1 + R + N, 1 + R + N]` laid out as the network lays out its
/// tokens (row/column 0 CLS, then `num_registers` registers, then the patches). Not
/// renormalised: the registers' share is simply left out (Darcet et al. 2024 show the artifacts
/// move into the registers, which is why a map leaves them out).
///
/// # Errors
/// libtorch errors (a tensor with fewer than 2 dimensions or too few tokens).
pub fn cls_attention_over_patches(attn: &Tensor, num_registers: i64) -> Result<Tensor, TchError> {
    let size = attn.size();
    let t = size[size.len() - 1];
    let first = 1 + num_registers;
    let row = size.len() as i64 - 2;
    attn.f_select(row, 0)?.f_narrow(row, first, t - first)
}
