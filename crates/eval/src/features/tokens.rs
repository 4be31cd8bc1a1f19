//! Every token out: the CLS and/or patch tokens of the last L blocks of a ViT, each through the
//! final LayerNorm (official `get_intermediate_layers` in `vision_transformer.py`; requested in
//! dino#35, dino#250, dinov2#396), for a whole dataset, streamed to disk batch by batch.
//!
//! The array is `[N, L, T, D]` f32: N images (index order, images that fail to decode skipped),
//! L blocks (oldest first: blocks `depth-L .. depth-1`), T tokens (1 for [`TokenKind::Cls`],
//! P = h·w for [`TokenKind::Patch`] in row-major grid order, 1 + P for [`TokenKind::All`] with
//! the CLS token first), D the embedding width. The evaluation transform resizes and centre-crops
//! every image to one square crop, so one run has one patch grid (h = w = crop / patch): images
//! of different sizes cannot give different token counts.
//!
//! Sinks ([`TokenSink`]) receive the rows of one batch at a time, so memory stays bounded by a
//! batch (plus the labels and paths, 8 bytes and one string per image):
//! - [`NpyTokenWriter`]: `<stem>.npy` (the array, NumPy v1.0 format, the header written before
//!   the first row with room reserved so that it can be rewritten with the final count), plus
//!   `<stem>.labels.npy` `[N]` i64, `<stem>.paths.json`, `<stem>.classes.json` (when the set has
//!   classes) and `<stem>.tokens.json` ([`TokenLayout`]);
//! - [`SafetensorsTokenWriter`]: one `.safetensors` file with tensors `tokens` `[N, L, T, D]` f32
//!   (streamed, first in the data section) and `labels` `[N]` i64 (appended at the end), the
//!   layout in the header's `__metadata__` (every [`TokenLayout`] field as a string, and the
//!   whole layout as JSON under `layout`), plus `<stem>.paths.json` / `<stem>.classes.json`. All
//!   shapes are known in advance, so the header is written first, with padding (the format allows
//!   trailing spaces) reserved for the final count;
//! - [`PerImageWriter`]: one `.npy` `[L, T, D]` per image in a folder (named after the image, see
//!   [`per_image_names`]), plus `index.json` (the layout and, per image, file, path and label);
//! - [`MemorySink`]: the whole array in memory (tests, small sets).
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`TokenKind::Cls`]: crate::features::tokens::TokenKind::Cls
//! [`TokenKind::Patch`]: crate::features::tokens::TokenKind::Patch
//! [`TokenKind::All`]: crate::features::tokens::TokenKind::All
//! [`TokenSink`]: crate::features::tokens::TokenSink
//! [`NpyTokenWriter`]: crate::features::tokens::NpyTokenWriter
//! [`TokenLayout`]: crate::features::tokens::TokenLayout
//! [`SafetensorsTokenWriter`]: crate::features::tokens::SafetensorsTokenWriter
//! [`PerImageWriter`]: crate::features::tokens::PerImageWriter
//! [`per_image_names`]: crate::features::tokens::per_image_names
//! [`MemorySink`]: crate::features::tokens::MemorySink

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dino_data::dataset::Dataset;
use dino_model::Backbone;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::features::embed::{for_each_batch, EmbedError, EmbedOptions};
use crate::features::set::sidecar;

/// Which tokens of each block are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// The CLS token alone (T = 1); a ResNet's pooled feature.
    Cls,
    /// The P patch tokens, row-major over the grid (T = P).
    Patch,
    /// The CLS token then the P patch tokens (T = 1 + P).
    All,
}

impl TokenKind {
    /// The name used on the command line and in the files (`cls`, `patch`, `all`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Patch => "patch",
            Self::All => "all",
        }
    }
}

/// How many of the last blocks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// The last `n` blocks (`Last(1)`: the final block only).
    Last(usize),
    /// Every block.
    All,
}

impl std::str::FromStr for Layers {
    type Err = String;

    /// `last` (= 1), `all`, or a positive count N.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "last" => Ok(Self::Last(1)),
            "all" => Ok(Self::All),
            n => match n.parse::<usize>() {
                Ok(0) => Err("--layers must be at least 1 (or last, all)".into()),
                Ok(n) => Ok(Self::Last(n)),
                Err(_) => Err(format!(
                    "--layers takes last, all or a block count N >= 1, not {n:?}"
                )),
            },
        }
    }
}

/// Errors of token export.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// More blocks (or none) asked for than the backbone has.
    #[error("--layers {n}: the backbone has {depth} blocks (ask for 1..={depth}, or all)")]
    BadLayers {
        /// Blocks requested.
        n: usize,
        /// Blocks of the backbone.
        depth: usize,
    },
    /// Patch tokens or several layers from a backbone without tokens.
    #[error("{what} needs a ViT: {arch} has no tokens (use --tokens cls --layers last for its pooled feature)")]
    NoTokens {
        /// What was asked for.
        what: String,
        /// The backbone.
        arch: String,
    },
    /// The evaluation crop is not a whole number of patches.
    #[error("the evaluation crop of {crop} px is not a multiple of the patch size {patch}")]
    Grid {
        /// Crop side in pixels.
        crop: i64,
        /// Patch side in pixels.
        patch: i64,
    },
    /// Two images would be written to the same per-image file.
    #[error("images {first} and {second} would both be written to {file}")]
    NameClash {
        /// The first image.
        first: String,
        /// The second image.
        second: String,
        /// The shared file name.
        file: String,
    },
    /// A batch's tokens hold NaN or infinite values (the stream stops there).
    #[error(
        "the tokens of {count} image(s) hold NaN or infinite values (the first: {first}); the \
         network that made them is broken, so the output stops here, incomplete"
    )]
    NonFinite {
        /// Images of the batch with a non-finite token.
        count: usize,
        /// The first one's path.
        first: String,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A token file is not what this module writes.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Embedding failed (decoding, the model, libtorch).
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TokensError + '_ {
    move |source| TokensError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What is written: checked against the backbone by [`plan_tokens`] before any image is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLayout {
    /// Always `"dino-tokens"` (tells the file apart from a features file).
    pub format: String,
    /// Images N (rows written; the planned count until the writer finishes).
    pub images: usize,
    /// Blocks L.
    pub layers: usize,
    /// The blocks' 0-based indices, oldest first (`depth-L .. depth-1`).
    pub blocks: Vec<usize>,
    /// Which tokens.
    pub token_kind: TokenKind,
    /// Tokens per block T.
    pub tokens: usize,
    /// Embedding width D.
    pub dim: usize,
    /// Patch grid height h in patches (0 for a ResNet).
    pub grid_h: usize,
    /// Patch grid width w in patches (0 for a ResNet).
    pub grid_w: usize,
    /// Patch side in pixels (0 for a ResNet).
    pub patch_size: usize,
    /// Evaluation crop side in pixels.
    pub crop_size: usize,
    /// Whether token 0 is the CLS token (kinds cls and all).
    pub cls_first: bool,
}

impl TokenLayout {
    /// The array shape `[N, L, T, D]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.images, self.layers, self.tokens, self.dim]
    }

    /// f32 values of one image `L·T·D`.
    pub fn row_len(&self) -> usize {
        self.layers * self.tokens * self.dim
    }
}

/// Checks `kind` and `layers` against `backbone` and the evaluation crop, and returns the layout
/// of `images` rows; call it before creating any output.
///
/// # Errors
/// [`TokensError::BadLayers`] for 0 or more blocks than the depth; [`TokensError::NoTokens`] for
/// patch tokens or more than one layer of a ResNet; [`TokensError::Grid`] when the crop is not a
/// multiple of the patch size.
pub fn plan_tokens(
    backbone: &Backbone,
    kind: TokenKind,
    layers: Layers,
    crop_size: usize,
    images: usize,
) -> Result<TokenLayout, TokensError> {
    let vit = match backbone {
        Backbone::Vit(v) => v,
        other => {
            let what = match (kind, layers) {
                (TokenKind::Patch | TokenKind::All, _) => Some(format!("--tokens {}", kind.name())),
                (_, Layers::Last(1)) => None,
                (_, Layers::Last(n)) => Some(format!("--layers {n}")),
                (_, Layers::All) => Some("--layers all".to_string()),
            };
            if let Some(what) = what {
                return Err(TokensError::NoTokens {
                    what,
                    arch: other.describe(),
                });
            }
            return Ok(TokenLayout {
                format: "dino-tokens".into(),
                images,
                layers: 1,
                blocks: vec![0],
                token_kind: TokenKind::Cls,
                tokens: 1,
                dim: other.embed_dim() as usize,
                grid_h: 0,
                grid_w: 0,
                patch_size: 0,
                crop_size,
                cls_first: true,
            });
        }
    };
    let cfg = vit.config();
    let depth = cfg.depth as usize;
    let n = match layers {
        Layers::All => depth,
        Layers::Last(n) if n == 0 || n > depth => return Err(TokensError::BadLayers { n, depth }),
        Layers::Last(n) => n,
    };
    let (crop, patch) = (crop_size as i64, cfg.patch_size);
    if crop % patch != 0 {
        return Err(TokensError::Grid { crop, patch });
    }
    let g = (crop / patch) as usize;
    let tokens = match kind {
        TokenKind::Cls => 1,
        TokenKind::Patch => g * g,
        TokenKind::All => 1 + g * g,
    };
    Ok(TokenLayout {
        format: "dino-tokens".into(),
        images,
        layers: n,
        blocks: (depth - n..depth).collect(),
        token_kind: kind,
        tokens,
        dim: cfg.embed_dim as usize,
        grid_h: g,
        grid_w: g,
        patch_size: patch as usize,
        crop_size,
        cls_first: kind != TokenKind::Patch,
    })
}

/// The tokens `[B, L, T, D]` of `x` `[B, 3, S, S]` (normalized crops) for `layout`: the ViT's
/// [`dino_model::VisionTransformer::intermediate_features`] cut to the kind (registers left
/// out; `all` is CLS then the patches) and stacked on dim 1;
/// a ResNet's pooled feature as `[B, 1, 1, D]`.
///
/// # Errors
/// Model and libtorch errors.
pub fn batch_tokens(
    backbone: &Backbone,
    x: &Tensor,
    layout: &TokenLayout,
) -> Result<Tensor, EmbedError> {
    let vit = match backbone {
        Backbone::Vit(v) => v,
        other => {
            let f = other.forward_t(x, false)?;
            let b = f.size()[0];
            return Ok(f.f_view([b, 1, 1, -1])?);
        }
    };
    // Registers are left out of every kind: `all` is CLS then the patches.
    let layers = vit
        .intermediate_features(x, layout.layers)?
        .iter()
        .map(|t| match layout.token_kind {
            TokenKind::Cls => t.cls.f_unsqueeze(1),
            TokenKind::Patch => Ok(t.patches.shallow_clone()),
            TokenKind::All => t.cls_and_patches(),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::f_stack(&layers, 1)?)
}

/// Where the rows go, batch by batch.
pub trait TokenSink {
    /// Rows of one batch: `tokens` `[B, L, T, D]` f32 on the CPU, contiguous; `indices` the
    /// dataset indices, `labels` and `paths` one per row. The first call comes with the layout
    /// (planned images = the dataset's length or limit).
    ///
    /// # Errors
    /// I/O failures.
    fn write(
        &mut self,
        layout: &TokenLayout,
        tokens: &Tensor,
        indices: &[usize],
        labels: &[i64],
        paths: &[String],
    ) -> Result<(), TokensError>;

    /// Called once after the last batch with the final layout (images = rows written) and the
    /// dataset's class names; returns every file written.
    ///
    /// # Errors
    /// I/O failures.
    fn finish(
        &mut self,
        layout: &TokenLayout,
        classes: &[String],
    ) -> Result<Vec<PathBuf>, TokensError>;
}

/// What [`embed_tokens`] did.
#[derive(Debug, Clone)]
pub struct TokenReport {
    /// The final layout (images = rows written).
    pub layout: TokenLayout,
    /// Images skipped because they failed to decode.
    pub failed: usize,
    /// Every file written.
    pub files: Vec<PathBuf>,
}

/// Embeds `dataset` (the first `opts.limit` images) through `backbone` and streams the tokens of
/// `layout` (from [`plan_tokens`]) to `sink`, one batch at a time (`opts.kind` and
/// `opts.patch_tokens` are not used). Images that fail to decode are skipped with a warning.
///
/// # Errors
/// [`TokensError::Embed`] when no image decodes or the model fails;
/// [`TokensError::NonFinite`] at the first batch whose tokens hold NaN or an infinity; the
/// sink's errors.
pub fn embed_tokens(
    backbone: &Backbone,
    dataset: &dyn Dataset,
    opts: &EmbedOptions,
    layout: &TokenLayout,
    device: Device,
    sink: &mut dyn TokenSink,
) -> Result<TokenReport, TokensError> {
    let mut layout = layout.clone();
    layout.images = opts.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
    let mut rows = 0usize;
    let failed = for_each_batch(dataset, opts, device, |batch| {
        let t = batch_tokens(backbone, &batch.x, &layout)?
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let paths: Vec<String> = batch.indices.iter().map(|&i| dataset.describe(i)).collect();
        // The check every feature reader shares (crate::features::non_finite_rows), per batch.
        let bad = crate::features::non_finite_rows(&t.f_flatten(1, -1)?)?;
        if let Some((count, first)) = crate::features::count_and_first(&bad)? {
            return Err(TokensError::NonFinite {
                count,
                first: paths[first].clone(),
            });
        }
        sink.write(&layout, &t, &batch.indices, &batch.labels, &paths)?;
        rows += batch.indices.len();
        Ok::<(), TokensError>(())
    })?;
    if failed > 0 {
        tracing::warn!("{failed} image(s) failed to decode and were skipped");
    }
    layout.images = rows;
    let files = sink.finish(&layout, dataset.classes())?;
    Ok(TokenReport {
        layout,
        failed,
        files,
    })
}

/// The values of a contiguous f32 tensor as little-endian bytes.
fn le_bytes(t: &Tensor) -> Result<Vec<u8>, TokensError> {
    let v = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// A NumPy v1.0 header for `descr` (e.g. `<f4`) and `shape`, padded with spaces to `len` bytes
/// (0: the smallest multiple of 64 that fits), ending in a newline.
fn npy_header(descr: &str, shape: &[usize], len: usize) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let fixed = 10 + dict.len() + 1;
    let total = if len == 0 {
        fixed.div_ceil(64) * 64
    } else {
        len
    };
    assert!(total >= fixed, "reserved npy header too short");
    let hlen = (total - 10) as u16;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes a whole small `.npy` file (labels, per-image arrays).
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<(), TokensError> {
    let mut bytes = npy_header(descr, shape, 0);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).map_err(io(path))
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), TokensError> {
    let json = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, json).map_err(io(path))
}

/// Labels, paths and classes, written beside the array by the file writers.
#[derive(Default)]
struct Sidecars {
    labels: Vec<i64>,
    paths: Vec<String>,
}

impl Sidecars {
    fn push(&mut self, labels: &[i64], paths: &[String]) {
        self.labels.extend_from_slice(labels);
        self.paths.extend_from_slice(paths);
    }

    /// Writes `<stem>.paths.json` and, when there are classes, `<stem>.classes.json`.
    fn finish(&self, path: &Path, classes: &[String]) -> Result<Vec<PathBuf>, TokensError> {
        let paths = sidecar(path, "paths.json");
        write_json(&paths, &self.paths)?;
        let mut files = vec![paths];
        if !classes.is_empty() {
            let c = sidecar(path, "classes.json");
            write_json(&c, classes)?;
            files.push(c);
        }
        Ok(files)
    }

    fn label_bytes(&self) -> Vec<u8> {
        self.labels.iter().flat_map(|l| l.to_le_bytes()).collect()
    }
}

/// Streams the array to a `.npy` file (see the module doc).
pub struct NpyTokenWriter {
    path: PathBuf,
    file: Option<(BufWriter<File>, usize)>,
    side: Sidecars,
}

impl NpyTokenWriter {
    /// A writer of `path` (`<stem>.npy`); nothing is created until the first batch.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            side: Sidecars::default(),
        }
    }
}

impl TokenSink for NpyTokenWriter {
    fn write(
        &mut self,
        layout: &TokenLayout,
        tokens: &Tensor,
        _indices: &[usize],
        labels: &[i64],
        paths: &[String],
    ) -> Result<(), TokensError> {
        if self.file.is_none() {
            // The planned count has the most digits any final count can have: its header's
            // length is kept for the rewrite in `finish`.
            let header = npy_header("<f4", &layout.shape(), 0);
            let mut f = BufWriter::new(File::create(&self.path).map_err(io(&self.path))?);
            f.write_all(&header).map_err(io(&self.path))?;
            self.file = Some((f, header.len()));
        }
        let (f, _) = self.file.as_mut().expect("opened above");
        f.write_all(&le_bytes(tokens)?).map_err(io(&self.path))?;
        self.side.push(labels, paths);
        Ok(())
    }

    fn finish(
        &mut self,
        layout: &TokenLayout,
        classes: &[String],
    ) -> Result<Vec<PathBuf>, TokensError> {
        let Some((f, header_len)) = self.file.take() else {
            return Ok(Vec::new());
        };
        let path = &self.path;
        let mut f = f.into_inner().map_err(|e| io(path)(e.into_error()))?;
        f.seek(SeekFrom::Start(0)).map_err(io(path))?;
        f.write_all(&npy_header("<f4", &layout.shape(), header_len))
            .map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        let labels = sidecar(path, "labels.npy");
        write_npy(&labels, "<i8", &[layout.images], &self.side.label_bytes())?;
        let meta = sidecar(path, "tokens.json");
        write_json(&meta, layout)?;
        let mut files = vec![path.clone(), labels, meta];
        files.extend(self.side.finish(path, classes)?);
        Ok(files)
    }
}

/// Streams the array to a `.safetensors` file (see the module doc).
pub struct SafetensorsTokenWriter {
    path: PathBuf,
    file: Option<(BufWriter<File>, usize)>,
    side: Sidecars,
}

impl SafetensorsTokenWriter {
    /// A writer of `path` (`<stem>.safetensors`); nothing is created until the first batch.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            side: Sidecars::default(),
        }
    }
}

/// The safetensors header (8-byte length + JSON) of `tokens` then `labels` for `layout`, padded
/// with spaces to `len` bytes in all (0: the smallest multiple of 8 that fits).
fn safetensors_header(layout: &TokenLayout, len: usize) -> Vec<u8> {
    let tokens_bytes = layout.images * layout.row_len() * 4;
    let mut meta = serde_json::Map::new();
    let value = serde_json::to_value(layout).expect("serialisable");
    for (k, v) in value.as_object().expect("a struct") {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        meta.insert(k.clone(), s.into());
    }
    meta.insert("layout".into(), value.to_string().into());
    let json = serde_json::json!({
        "__metadata__": meta,
        "tokens": {"dtype": "F32", "shape": layout.shape(),
                   "data_offsets": [0, tokens_bytes]},
        "labels": {"dtype": "I64", "shape": [layout.images],
                   "data_offsets": [tokens_bytes, tokens_bytes + 8 * layout.images]},
    })
    .to_string();
    let fixed = 8 + json.len();
    let total = if len == 0 { fixed.div_ceil(8) * 8 } else { len };
    assert!(total >= fixed, "reserved safetensors header too short");
    let mut out = ((total - 8) as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.resize(total, b' ');
    out
}

impl TokenSink for SafetensorsTokenWriter {
    fn write(
        &mut self,
        layout: &TokenLayout,
        tokens: &Tensor,
        _indices: &[usize],
        labels: &[i64],
        paths: &[String],
    ) -> Result<(), TokensError> {
        if self.file.is_none() {
            // Room for the planned count; a smaller final count pads with more spaces.
            let mut header = safetensors_header(layout, 0);
            // Digits of offsets can only shrink with the count, but keep a margin anyway.
            header.extend_from_slice(&[b' '; 8]);
            let len = header.len();
            header[..8].copy_from_slice(&((len - 8) as u64).to_le_bytes());
            let mut f = BufWriter::new(File::create(&self.path).map_err(io(&self.path))?);
            f.write_all(&header).map_err(io(&self.path))?;
            self.file = Some((f, len));
        }
        let (f, _) = self.file.as_mut().expect("opened above");
        f.write_all(&le_bytes(tokens)?).map_err(io(&self.path))?;
        self.side.push(labels, paths);
        Ok(())
    }

    fn finish(
        &mut self,
        layout: &TokenLayout,
        classes: &[String],
    ) -> Result<Vec<PathBuf>, TokensError> {
        let Some((mut f, header_len)) = self.file.take() else {
            return Ok(Vec::new());
        };
        let path = &self.path;
        f.write_all(&self.side.label_bytes()).map_err(io(path))?;
        let mut f = f.into_inner().map_err(|e| io(path)(e.into_error()))?;
        f.seek(SeekFrom::Start(0)).map_err(io(path))?;
        f.write_all(&safetensors_header(layout, header_len))
            .map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        let mut files = vec![path.clone()];
        files.extend(self.side.finish(path, classes)?);
        Ok(files)
    }
}

/// The per-image file names under the output folder: the image's path relative to `root`
/// (the `--data` folder) with the extension replaced by `.npy` (class folders kept), or, for an
/// image not under `root` (e.g. a record of a CIFAR-10 batch file), its index as `000123.npy`.
///
/// # Errors
/// [`TokensError::NameClash`] when two images map to one file (e.g. `a.jpg` and `a.png`).
pub fn per_image_names(
    dataset: &dyn Dataset,
    root: &Path,
    n: usize,
) -> Result<Vec<PathBuf>, TokensError> {
    let width = n.max(1).to_string().len().max(6);
    let mut names = Vec::with_capacity(n);
    let mut seen = std::collections::HashMap::new();
    for i in 0..n {
        let described = dataset.describe(i);
        let name = match Path::new(&described).strip_prefix(root) {
            Ok(rel) if rel.file_name().is_some() => rel.with_extension("npy"),
            _ => PathBuf::from(format!("{i:0width$}.npy")),
        };
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(TokensError::NameClash {
                first: dataset.describe(first),
                second: described,
                file: name.display().to_string(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// One entry of a per-image folder's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerImageEntry {
    /// The `.npy` file, relative to the folder.
    pub file: String,
    /// The image.
    pub path: String,
    /// Its label.
    pub label: i64,
}

/// The `index.json` of a per-image folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerImageIndex {
    /// The layout; each file holds one `[L, T, D]` row.
    pub layout: TokenLayout,
    /// Class names (label i is classes\[i\]).
    pub classes: Vec<String>,
    /// The images written, in index order.
    pub images: Vec<PerImageEntry>,
}

/// Writes one `.npy` `[L, T, D]` per image into a folder (see the module doc).
pub struct PerImageWriter {
    dir: PathBuf,
    names: Vec<PathBuf>,
    entries: Vec<PerImageEntry>,
}

impl PerImageWriter {
    /// A writer into `dir` with the file names of [`per_image_names`] (indexed by dataset index).
    pub fn new(dir: &Path, names: Vec<PathBuf>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            names,
            entries: Vec::new(),
        }
    }
}

impl TokenSink for PerImageWriter {
    fn write(
        &mut self,
        layout: &TokenLayout,
        tokens: &Tensor,
        indices: &[usize],
        labels: &[i64],
        paths: &[String],
    ) -> Result<(), TokensError> {
        for (row, &i) in indices.iter().enumerate() {
            let name = self.names.get(i).ok_or_else(|| TokensError::Format {
                path: self.dir.clone(),
                reason: format!("no file name for image {i}"),
            })?;
            let file = self.dir.join(name);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let shape = [layout.layers, layout.tokens, layout.dim];
            write_npy(&file, "<f4", &shape, &le_bytes(&tokens.f_get(row as i64)?)?)?;
            self.entries.push(PerImageEntry {
                file: name.to_string_lossy().into_owned(),
                path: paths[row].clone(),
                label: labels[row],
            });
        }
        Ok(())
    }

    fn finish(
        &mut self,
        layout: &TokenLayout,
        classes: &[String],
    ) -> Result<Vec<PathBuf>, TokensError> {
        let index = self.dir.join("index.json");
        write_json(
            &index,
            &PerImageIndex {
                layout: layout.clone(),
                classes: classes.to_vec(),
                images: std::mem::take(&mut self.entries),
            },
        )?;
        Ok(vec![index])
    }
}

/// Keeps the whole array in memory: `tokens()` gives `[N, L, T, D]`.
#[derive(Default)]
pub struct MemorySink {
    rows: Vec<Tensor>,
    /// Labels of the rows.
    pub labels: Vec<i64>,
    /// Paths of the rows.
    pub paths: Vec<String>,
}

impl MemorySink {
    /// The rows so far, `[N, L, T, D]`.
    ///
    /// # Errors
    /// libtorch errors (e.g. no rows).
    pub fn tokens(&self) -> Result<Tensor, TokensError> {
        Ok(Tensor::f_cat(&self.rows, 0)?)
    }
}

impl TokenSink for MemorySink {
    fn write(
        &mut self,
        _layout: &TokenLayout,
        tokens: &Tensor,
        _indices: &[usize],
        labels: &[i64],
        paths: &[String],
    ) -> Result<(), TokensError> {
        self.rows.push(tokens.shallow_clone());
        self.labels.extend_from_slice(labels);
        self.paths.extend_from_slice(paths);
        Ok(())
    }

    fn finish(&mut self, _: &TokenLayout, _: &[String]) -> Result<Vec<PathBuf>, TokensError> {
        Ok(Vec::new())
    }
}

/// A token file read back: the array `[N, L, T, D]` f32, labels `[N]` i64, paths and layout.
#[derive(Debug)]
pub struct TokenSet {
    /// `[N, L, T, D]` f32.
    pub tokens: Tensor,
    /// `[N]` i64.
    pub labels: Tensor,
    /// One per row (empty when the sidecar is missing).
    pub paths: Vec<String>,
    /// The layout recorded with the file.
    pub layout: TokenLayout,
}

/// Reads a `.npy` (with its sidecars) or `.safetensors` token file written by [`NpyTokenWriter`]
/// or [`SafetensorsTokenWriter`].
///
/// # Errors
/// [`TokensError::Format`] for another extension, a missing layout or a shape that disagrees
/// with it; I/O and libtorch errors.
pub fn read_tokens(path: &Path) -> Result<TokenSet, TokensError> {
    let bad = |reason: String| TokensError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let (tokens, labels, layout) = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let meta = sidecar(path, "tokens.json");
            let text = std::fs::read_to_string(&meta).map_err(io(&meta))?;
            let layout: TokenLayout =
                serde_json::from_str(&text).map_err(|e| bad(format!("tokens.json: {e}")))?;
            (
                Tensor::read_npy(path)?,
                Tensor::read_npy(sidecar(path, "labels.npy"))?,
                layout,
            )
        }
        Some("safetensors") => {
            let mut f = File::open(path).map_err(io(path))?;
            let mut len = [0u8; 8];
            std::io::Read::read_exact(&mut f, &mut len).map_err(io(path))?;
            let mut json = vec![0u8; u64::from_le_bytes(len) as usize];
            std::io::Read::read_exact(&mut f, &mut json).map_err(io(path))?;
            let header: serde_json::Value =
                serde_json::from_slice(&json).map_err(|e| bad(format!("header: {e}")))?;
            let layout = header["__metadata__"]["layout"]
                .as_str()
                .ok_or_else(|| bad("no token layout in the metadata".into()))?;
            let layout: TokenLayout =
                serde_json::from_str(layout).map_err(|e| bad(format!("layout: {e}")))?;
            let mut named = Tensor::read_safetensors(path)?;
            let mut take = |name: &str| {
                named
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|i| named.swap_remove(i).1)
                    .ok_or_else(|| bad(format!("no tensor named {name:?}")))
            };
            (take("tokens")?, take("labels")?, layout)
        }
        _ => return Err(bad("token files end in .npy or .safetensors".into())),
    };
    let want: Vec<i64> = layout.shape().iter().map(|&d| d as i64).collect();
    if tokens.size() != want || labels.size() != [layout.images as i64] {
        return Err(bad(format!(
            "array {:?} and labels {:?} disagree with the layout {:?}",
            tokens.size(),
            labels.size(),
            layout.shape()
        )));
    }
    let paths_file = sidecar(path, "paths.json");
    let paths = match paths_file.exists() {
        true => {
            let text = std::fs::read_to_string(&paths_file).map_err(io(&paths_file))?;
            serde_json::from_str(&text).map_err(|e| bad(format!("paths.json: {e}")))?
        }
        false => Vec::new(),
    };
    Ok(TokenSet {
        tokens,
        labels,
        paths,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_are_aligned_and_rewritable_with_a_smaller_count() {
        let h = npy_header("<f4", &[1000, 4, 65, 192], 0);
        assert_eq!(h.len() % 64, 0);
        let h2 = npy_header("<f4", &[7, 4, 65, 192], h.len());
        assert_eq!(h2.len(), h.len());
        assert!(String::from_utf8_lossy(&h2).contains("'shape': (7, 4, 65, 192)"));
        assert!(String::from_utf8_lossy(&npy_header("<i8", &[3], 0)).contains("(3,)"));
    }

    #[test]
    fn layers_parse_last_all_and_counts_and_refuse_zero() {
        assert_eq!("last".parse::<Layers>(), Ok(Layers::Last(1)));
        assert_eq!("all".parse::<Layers>(), Ok(Layers::All));
        assert_eq!("4".parse::<Layers>(), Ok(Layers::Last(4)));
        assert!("0".parse::<Layers>().unwrap_err().contains("at least 1"));
        assert!("x".parse::<Layers>().is_err());
    }
}
