//! The official ViT linear-probe feature (`eval_linear.py`, `get_intermediate_layers` with
//! `n_last_blocks` and `avgpool_patchtokens`): the CLS tokens of the last blocks, concatenated,
//! optionally with the mean patch token of the last block. [`crate::features::embed`] builds it
//! for [`crate::features::embed::FeatureKind::LastBlocks`]; the probe itself ([`crate::linear`])
//! only sees the resulting `[N, F]` rows.

use crate::features::FeaturesError;
use dino_model::Tokens;
use tch::{Kind, Tensor};

/// The official ViT linear-probe feature from the tokens of the last `n` blocks.
///
/// `tokens`: `n` blocks' tokens by name (each already through the final LayerNorm, as
/// [`dino_model::VisionTransformer::intermediate_features`] returns them; registers are not
/// read), oldest block first. Returns `[B, n·D]`: the CLS tokens concatenated in block order.
/// With `avgpool`, the mean patch token of the last block is added, giving `[B, (n + 1)·D]`:
/// - for `n = 1` in the official interleaved layout `[cls₀, mean₀, cls₁, mean₁, …]` (the official
///   code stacks the two on a new last axis and flattens), so released ViT-B linear heads apply;
/// - for `n > 1`, where the official code fails with a shape error, appended after the CLS
///   tokens (the DINOv2 `eval/linear.py` layout).
///
/// # Errors
/// [`FeaturesError::Tokens`] when `tokens` is empty or shapes disagree, or when `avgpool` is set and
/// the last block has no patch tokens.
pub fn concat_last_blocks(tokens: &[Tokens], avgpool: bool) -> Result<Tensor, FeaturesError> {
    let last = tokens
        .last()
        .ok_or_else(|| FeaturesError::Tokens("no blocks given".into()))?;
    let shape = last.cls.size();
    if shape.len() != 2 {
        return Err(FeaturesError::Tokens(format!(
            "expected a [B, D] CLS token, got {shape:?}"
        )));
    }
    let (b, d) = (shape[0], shape[1]);
    let mut parts = Vec::with_capacity(tokens.len() + 1);
    for t in tokens {
        let s = t.cls.size();
        if s != shape {
            return Err(FeaturesError::Tokens(format!(
                "block tokens disagree: CLS {s:?} vs {shape:?}"
            )));
        }
        parts.push(t.cls.shallow_clone());
    }
    let cls = Tensor::f_cat(&parts, 1)?;
    if !avgpool {
        return Ok(cls);
    }
    let p = last.patches.size();
    if p.len() != 3 || p[1] < 1 {
        return Err(FeaturesError::Tokens("avgpool needs patch tokens".into()));
    }
    let mean = last.patches.f_mean_dim(1, false, None::<Kind>)?;
    if tokens.len() == 1 {
        Ok(Tensor::f_stack(&[cls, mean], 2)?.f_reshape([b, 2 * d])?)
    } else {
        Ok(Tensor::f_cat(&[cls, mean], 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn concat_layouts() {
        // Two blocks, B = 1, 1 + 2 tokens, D = 2; values encode (block, token, channel).
        let block = |b: f32| {
            let seq = Tensor::from_slice(&[b, b + 0.1, b + 1.0, b + 1.1, b + 3.0, b + 3.1])
                .view([1, 3, 2]);
            Tokens {
                cls: seq.select(1, 0),
                registers: seq.narrow(1, 1, 0),
                patches: seq.narrow(1, 1, 2),
            }
        };
        let (b0, b1) = (block(10.0), block(20.0));
        let plain = concat_last_blocks(&[block(10.0), block(20.0)], false).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(plain.view([-1])).unwrap(),
            [10.0, 10.1, 20.0, 20.1]
        );
        // n > 1 with avgpool: mean patch of the last block appended (22, 22.1).
        let appended = concat_last_blocks(&[b0, block(20.0)], true).unwrap();
        let v = Vec::<f32>::try_from(appended.view([-1])).unwrap();
        let expected = [10.0, 10.1, 20.0, 20.1, 22.0, 22.1];
        assert!(
            v.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-5),
            "{v:?}"
        );
        // n = 1 with avgpool: official interleaved [cls0, mean0, cls1, mean1].
        let inter = concat_last_blocks(&[b1], true).unwrap();
        let v = Vec::<f32>::try_from(inter.view([-1])).unwrap();
        let expected = [20.0, 22.0, 20.1, 22.1];
        assert!(
            v.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-5),
            "{v:?}"
        );
        assert!(concat_last_blocks(&[], false).is_err());
        let other = Tensor::zeros([1, 3, 4], (Kind::Float, Device::Cpu));
        let other = Tokens {
            cls: other.select(1, 0),
            registers: other.narrow(1, 1, 0),
            patches: other.narrow(1, 1, 2),
        };
        assert!(concat_last_blocks(&[block(0.0), other], false).is_err());
    }
}
