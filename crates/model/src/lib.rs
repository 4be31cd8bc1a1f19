//! The networks of DINO (Caron et al. 2021) on libtorch through `tch`: the backbones (Vision
//! Transformer, torchvision ResNets), the DINO projection head, the multi-crop wrapper that runs them over crops of
//! several resolutions, and weight I/O under the official PyTorch state-dict names.
//!
//! Everything follows `facebookresearch/dino` (`vision_transformer.py`, `utils.py`): the same
//! architecture, the same initialisation (drawn in the same order, so `tch::manual_seed(s)`
//! gives PyTorch's `torch.manual_seed(s)` weights), the same variable names. Parity with a
//! PyTorch reference (`tests/reference/vit_reference.py`) is checked to 1e-4 in
//! `tests/parity.rs`.
//!
//! ```
//! use dino_config::{HeadConfig, ModelConfig};
//! use dino_model::{MultiCropWrapper, VitConfig};
//! use tch::{nn, Device, Kind, Tensor};
//!
//! tch::manual_seed(0);
//! let vs = nn::VarStore::new(Device::Cpu);
//! // A 2-block ViT-tiny/16 and a small head, to keep the example fast.
//! let mut vit = VitConfig::from_model(&ModelConfig::default())?;
//! (vit.embed_dim, vit.depth, vit.num_heads) = (192, 2, 3);
//! let head = HeadConfig { out_dim: 1024, ..HeadConfig::default() };
//! let student = MultiCropWrapper::new(&vs.root(), &vit, &head)?;
//! assert!(vs.variables().contains_key("backbone.blocks.0.attn.qkv.weight"));
//! assert!(vs.variables().contains_key("head.last_layer.weight_g"));
//!
//! // Two global 224-px crops and two local 96-px crops of a batch of 1.
//! let g = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
//! let l = Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu));
//! let logits = student.forward_t(&[g.shallow_clone(), l], true)?;
//! assert_eq!(logits.size(), [4, 1024]);
//!
//! // Features and attention maps for evaluation.
//! let cls = student.backbone.forward_t(&g, false)?;
//! assert_eq!(cls.size(), [2, 192]);
//! let attn = student.backbone.vit("attention maps")?.last_selfattention(&g)?;
//! assert_eq!(attn.size(), [2, 3, 197, 197]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules:
#![warn(missing_docs)]

/// Fused and explicit multi-head self-attention.
mod attention;
/// The backbone: a ViT or a ResNet, one enum.
pub mod backbone;
/// Pre-norm transformer block, MLP and stochastic depth.
pub mod block;
/// Device selection, bf16 autocast and the resolution of `runtime.precision = "auto"`.
pub mod device;
/// Error enums.
pub mod error;
/// A backbone exported as TorchScript or ONNX through the project's PyTorch (`dino export`).
pub mod export;
/// The DINO projection head and parameter-group rules.
pub mod head;
/// Conversion of official `.pth` checkpoints.
pub mod import;
/// PyTorch-identical initialisation.
pub mod init;
/// Linear, LayerNorm and BatchNorm with PyTorch names.
mod layers;
/// Backbone + head over multi-resolution crops.
pub mod multicrop_wrapper;
/// Position-embedding interpolation.
pub mod pos_embed;
/// Running this crate's compiled-in Python scripts with the project's Python.
pub mod python;
/// torchvision's ResNets (`fc` = identity).
pub mod resnet;
/// The ViT's output tokens by name (CLS, registers, patches).
pub mod tokens;
/// The Vision Transformer.
pub mod vit;
/// safetensors I/O under the official names.
pub mod weights;

pub use backbone::{Backbone, BackboneConfig, TokenScope};
pub use device::{
    autocast_enabled, autocast_kind, cpu_has_native_bf16, resolve_precision, select_device,
    with_precision, Bf16Support, ComputePrecision, CpuBf16Flags, PrecisionChoice,
};
pub use error::{ModelError, WeightsError};
pub use export::{export_backbone, export_backbone_with, ExportFormat, ExportReport};
pub use head::{is_last_layer, is_regularized, DinoHead};
pub use import::{import_official, stored_model, ImportReport, StoredModel, MODEL_METADATA};
pub use multicrop_wrapper::MultiCropWrapper;
pub use pos_embed::PosInterp;
pub use python::find_python;
pub use resnet::{BlockKind, ResNet, ResNetConfig};
pub use tokens::{cls_attention_over_patches, Tokens};
pub use vit::{VisionTransformer, VitConfig};
pub use weights::{
    check_safetensors, load_safetensors, load_safetensors_with_prefix, safetensors_names,
    save_safetensors, LoadReport,
};
