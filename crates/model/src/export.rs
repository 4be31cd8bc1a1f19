//! A trained or imported ViT backbone as a TorchScript or ONNX file, for serving without this
//! project (libtorch's JIT loader, onnxruntime, TensorRT).
//!
//! libtorch cannot trace a graph built from Rust calls, so the export goes through the project's
//! PyTorch: the backbone's weights are written with the official names, `python/dino_vit.py`
//! (the same PyTorch ViT the parity tests hold ours to) is built from them, and
//! `python/export_backbone.py` traces it with the batch, height and width dynamic. The exported
//! graph maps normalised images `[B, 3, H, W]` (H, W multiples of the patch size) to the
//! final-norm CLS token `[B, D]`, what [`crate::VisionTransformer::forward_t`] returns in eval
//! mode. The position table is resized to the image's grid by exact-size bicubic
//! ([`PosInterp::ExactSize`], the default), in the graph, for every size; the v1 scale-factor
//! mode is not exported (it leaves the table unchanged at the stored grid, a branch a traced
//! graph cannot keep).

use crate::error::WeightsError;
use crate::pos_embed::PosInterp;
use crate::python::{run_script, Script};
use crate::vit::VitConfig;
use dino_config::Ffn;
use std::path::{Path, PathBuf};
use tch::nn;

const SCRIPTS: [Script; 2] = [
    (
        "export_backbone.py",
        include_str!("../python/export_backbone.py"),
    ),
    ("dino_vit.py", include_str!("../python/dino_vit.py")),
];

/// The file format of [`export_backbone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// ONNX (opset 17), for onnxruntime or TensorRT.
    Onnx,
    /// TorchScript, for `torch.jit.load` or libtorch's `torch::jit::load` (`tch::CModule`).
    TorchScript,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    /// `onnx` or `torchscript`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "onnx" => Ok(Self::Onnx),
            "torchscript" => Ok(Self::TorchScript),
            other => Err(format!(
                "unknown export format {other:?}: expected onnx or torchscript"
            )),
        }
    }
}

impl ExportFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Onnx => "onnx",
            Self::TorchScript => "torchscript",
        }
    }
}

/// What [`export_backbone`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The exported file.
    pub out: PathBuf,
    /// Its format.
    pub format: ExportFormat,
    /// Parameters in the exported backbone.
    pub parameters: u64,
    /// The Python interpreter that ran the export.
    pub python: PathBuf,
}

/// Exports the backbone whose variables `vs` holds (at the root, official names, as
/// [`crate::VisionTransformer::new`] on `vs.root()` creates them) with the shape `vit` to `out`.
///
/// # Errors
/// [`WeightsError::Export`] when the weights cannot be written, Python cannot start (set
/// `DINO_PYTHON` or run `scripts/setup.sh`), the weights do not fit the PyTorch ViT, or the
/// exporter fails (e.g. ONNX without the `onnx` package: `scripts/setup.sh` installs it).
pub fn export_backbone(
    vs: &nn::VarStore,
    vit: &VitConfig,
    format: ExportFormat,
    out: &Path,
) -> Result<ExportReport, WeightsError> {
    export_backbone_with(vs, vit, format, out, &[])
}

/// As [`export_backbone`], with `metadata` (key, value) stored in the file: ONNX
/// `metadata_props`, and for TorchScript the extra file `metadata.json` (read with
/// `torch.jit.load(f, _extra_files={"metadata.json": ""})`). `dino export` stores the
/// preprocessing there (resize, crop, mean, std).
///
/// # Errors
/// As [`export_backbone`].
pub fn export_backbone_with(
    vs: &nn::VarStore,
    vit: &VitConfig,
    format: ExportFormat,
    out: &Path,
    metadata: &[(String, String)],
) -> Result<ExportReport, WeightsError> {
    let err = |reason: String| WeightsError::Export {
        out: out.display().to_string(),
        reason,
    };
    if vit.pos_interp != PosInterp::ExactSize {
        return Err(err(
            "only the exact-size position interpolation (the default) can be exported".into(),
        ));
    }
    if vit.num_register_tokens != 0 || vit.layerscale_init != 0.0 || vit.ffn != Ffn::Mlp {
        return Err(err(
            "the DINOv2 backbone options (model.num_register_tokens, model.layerscale_init, \
             model.ffn) cannot be exported yet: the exported graph is the DINO v1 ViT"
                .into(),
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| err(format!("temporary folder: {e}")))?;
    let weights = dir.path().join("backbone.safetensors");
    vs.save(&weights)
        .map_err(|e| err(format!("writing the weights: {e}")))?;
    let shape = serde_json::json!({
        "patch_size": vit.patch_size,
        "embed_dim": vit.embed_dim,
        "depth": vit.depth,
        "num_heads": vit.num_heads,
        "mlp_ratio": vit.mlp_ratio,
        "qkv_bias": vit.qkv_bias,
        "layer_norm_eps": vit.layer_norm_eps,
        "img_size": vit.img_size,
        "official_interp": false,
        "metadata": metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>(),
    });
    let config = dir.path().join("shape.json");
    std::fs::write(&config, shape.to_string())
        .map_err(|e| err(format!("writing {}: {e}", config.display())))?;
    let args: [&std::ffi::OsStr; 8] = [
        "--weights".as_ref(),
        weights.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--format".as_ref(),
        format.name().as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    let (report, python) = run_script(&SCRIPTS, &args).map_err(err)?;
    Ok(ExportReport {
        out: out.to_path_buf(),
        format,
        parameters: report["parameters"].as_u64().unwrap_or(0),
        python,
    })
}
