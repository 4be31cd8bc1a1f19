//! Error types of the model crate.

use tch::TchError;

/// Errors from building or running the networks.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A size in the configuration cannot describe a network.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The input is not a float tensor `[B, 3, H, W]`.
    #[error("expected a float image batch [B, 3, H, W], got {kind:?} tensor of shape {shape:?}")]
    BadInput {
        /// Shape of the tensor that was passed.
        shape: Vec<i64>,
        /// Element kind of the tensor that was passed.
        kind: tch::Kind,
    },
    /// Height or width is not a whole number of patches.
    #[error("image size {height}x{width} is not a multiple of the patch size {patch}")]
    NotPatchMultiple {
        /// Image height in pixels.
        height: i64,
        /// Image width in pixels.
        width: i64,
        /// Patch side in pixels.
        patch: i64,
    },
    /// The official scale-factor interpolation produced a grid other than the image's.
    #[error(
        "scale-factor interpolation of the position embedding gave a {got_h}x{got_w} grid for a \
         {want_h}x{want_w} patch grid (use the exact-size mode)"
    )]
    PosEmbedRounding {
        /// Rows wanted.
        want_h: i64,
        /// Columns wanted.
        want_w: i64,
        /// Rows produced.
        got_h: i64,
        /// Columns produced.
        got_w: i64,
    },
    /// `intermediate_layers` asked for more blocks than the network has.
    #[error("asked for the last {n} blocks of a {depth}-block network")]
    BadLayerCount {
        /// Blocks requested.
        n: usize,
        /// Blocks in the network.
        depth: usize,
    },
    /// `MultiCropWrapper::forward_t` got no crops, or crops with different batch layouts.
    #[error("bad crop list: {0}")]
    BadCrops(String),
    /// Something only a Vision Transformer has (attention maps, patch tokens, intermediate
    /// blocks, export) was asked of another backbone.
    #[error("{arch} has no {what}: only a Vision Transformer has them (model.arch = vit_*)")]
    NotAVit {
        /// What was asked for.
        what: String,
        /// The backbone that was given.
        arch: String,
    },
    /// A BatchNorm in training mode was given one value per channel (one image whose feature
    /// map is 1 × 1 there, or one row for the head's BatchNorm1d): its batch variance is
    /// undefined and the unbiased running variance would divide by n − 1 = 0 and become NaN for
    /// good. PyTorch refuses the same input ("Expected more than 1 value per channel when
    /// training"); libtorch's `batch_norm` does not check it, so [`crate::ResNet`] and
    /// [`crate::DinoHead`] do, before the running statistics are touched.
    #[error(
        "BatchNorm `{layer}` in training mode got an input of shape {shape:?}: one value per \
         channel, so its batch variance is undefined and its running variance would become NaN \
         (PyTorch refuses this too: \"Expected more than 1 value per channel when training\")"
    )]
    OneValuePerChannel {
        /// The layer's variable path (`backbone.layer4.0.bn1`, `head.mlp.1`).
        layer: String,
        /// The input shape `[N, C, ..]`.
        shape: Vec<i64>,
    },
    /// A device string or index that this machine cannot provide.
    #[error("device: {0}")]
    Device(String),
    /// An error raised by libtorch.
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Errors from reading, writing or importing weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file names and the network's variables differ (strict loading).
    #[error(
        "weights in {path} do not match the network: {} missing {:?}, {} unexpected {:?}",
        missing.len(), missing, unexpected.len(), unexpected
    )]
    KeyMismatch {
        /// The file.
        path: String,
        /// Network variables absent from the file.
        missing: Vec<String>,
        /// File tensors the network has no variable for.
        unexpected: Vec<String>,
    },
    /// A tensor exists under the right name with the wrong shape.
    #[error("weight {name} in {path} has shape {found:?}, the network expects {expected:?}")]
    Shape {
        /// The file.
        path: String,
        /// The variable name.
        name: String,
        /// The network's shape.
        expected: Vec<i64>,
        /// The file's shape.
        found: Vec<i64>,
    },
    /// Running the Python import script failed.
    #[error("import of {from} failed: {reason}")]
    Import {
        /// The checkpoint being imported.
        from: String,
        /// What went wrong (the script's message, or why it could not start).
        reason: String,
    },
    /// `dino export` failed.
    #[error("exporting the backbone to {out}: {reason}")]
    Export {
        /// The file being written.
        out: String,
        /// What went wrong (the exporter's message, or why it could not start).
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The cause (in the message only, so an error chain prints it once).
        cause: std::io::Error,
    },
    /// The file is not safetensors: a PyTorch checkpoint (zip or pickle), or something else.
    #[error("{path} is not a safetensors file ({what}){hint}")]
    NotSafetensors {
        /// The file.
        path: String,
        /// What it looks like instead.
        what: String,
        /// How to convert it, when it looks like a PyTorch checkpoint (may be empty).
        hint: String,
    },
    /// An error raised by libtorch (including safetensors parsing).
    #[error(transparent)]
    Torch(#[from] TchError),
}
