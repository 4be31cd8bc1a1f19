//! Image transforms of the DINO augmentation (PLACEHOLDER: being written; the signatures of
//! `TransformError` and `crate::multicrop::MultiCrop` are the contract other modules build on).

/// A transform that cannot be built from its configuration.
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
}
