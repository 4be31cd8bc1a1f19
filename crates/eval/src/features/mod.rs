//! Room `features`: where features come from and what they are. A [`FeatureSet`] (features
//! `[N, D]`, labels `[N]`, optional patch tokens and image paths) is the one input every
//! evaluation takes, and [`FeatureSet::new`] (with its variants) the one place their shapes,
//! label kind and finiteness are checked.
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`FeatureSet`]: crate::features::FeatureSet
//! [`FeatureSet::new`]: crate::features::FeatureSet::new

/// Features of a whole dataset through a frozen backbone (the official `extract_features`).
pub mod embed;
/// A training bank and the sets scored against it, labelled by the bank's class names.
pub mod labelled;
/// The linear probe's feature (`eval_linear.py`): the CLS tokens of the last blocks,
/// concatenated, optionally with the average-pooled patch tokens.
pub mod probe;
mod set;
/// Where features come from: a run folder's teacher or student, a `.safetensors` backbone, the
/// architecture at random initialisation, or raw pixels; [`source::Embedder`] embeds with one.
pub mod source;
/// Every token out: CLS and patch tokens of the last L blocks, `[N, L, T, D]`, streamed to
/// `.npy`, `.safetensors` or one file per image.
pub mod tokens;

pub use set::*;
