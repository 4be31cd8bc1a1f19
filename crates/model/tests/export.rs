//! `dino export`: the exported TorchScript (run by libtorch's JIT loader, `tch::CModule`) and
//! ONNX (run by onnxruntime in the project's virtualenv) graphs reproduce our backbone's CLS
//! features at two image sizes, one of them non-square, within 1e-4.

use dino_model::{export_backbone, ExportFormat, VisionTransformer, VitConfig};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};
// The virtualenv's Python runs onnxruntime here. `export_backbone` finds the same one itself
// (`dino_model::find_python`); the tests do not set `DINO_PYTHON`, which every test thread of the
// binary would see.
use crate::common::{python, repo};

/// A small ViT with non-trivial weights (random init) and the sizes the acceptance names.
fn model() -> (nn::VarStore, VisionTransformer, VitConfig) {
    tch::manual_seed(7);
    let mut cfg = VitConfig::vit_tiny(16).with_drop_path(0.0);
    cfg.depth = 2;
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VisionTransformer::new(&vs.root(), &cfg).unwrap();
    (vs, vit, cfg)
}

const SIZES: [(i64, i64); 2] = [(224, 224), (160, 256)];

fn inputs() -> Vec<Tensor> {
    tch::manual_seed(11);
    SIZES
        .iter()
        .map(|&(h, w)| Tensor::randn([2, 3, h, w], (Kind::Float, Device::Cpu)))
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn torchscript_reproduces_our_features() {
    let (vs, vit, cfg) = model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit.pt");
    let report = export_backbone(&vs, &cfg, ExportFormat::TorchScript, &out).unwrap();
    assert!(report.parameters > 0);
    let module = tch::CModule::load(&out).unwrap();
    for x in inputs() {
        let ours = tch::no_grad(|| vit.forward_t(&x, false)).unwrap();
        let theirs = tch::no_grad(|| module.forward_ts(&[&x])).unwrap();
        let d = max_diff(&ours, &theirs);
        assert!(d <= 1e-4, "{:?}: max |diff| {d}", x.size());
    }
}

#[test]
fn onnx_reproduces_our_features() {
    let (vs, vit, cfg) = model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit.onnx");
    export_backbone(&vs, &cfg, ExportFormat::Onnx, &out).unwrap();
    let xs = inputs();
    let mut paths = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        let p = dir.path().join(format!("x{i}.npy"));
        x.write_npy(&p).unwrap();
        paths.push(p);
    }
    let status = Command::new(python())
        .arg(repo().join("tests/reference/onnx_run.py"))
        .arg(&out)
        .args(&paths)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "onnxruntime failed (scripts/setup.sh installs it)"
    );
    for (x, p) in xs.iter().zip(&paths) {
        let ours = tch::no_grad(|| vit.forward_t(x, false)).unwrap();
        let theirs = Tensor::read_npy(p.with_extension("out.npy")).unwrap();
        let d = max_diff(&ours, &theirs);
        assert!(d <= 1e-4, "{:?}: max |diff| {d}", x.size());
    }
}

#[test]
fn unknown_format_and_v1_interpolation_are_refused() {
    let e = "tensorrt".parse::<ExportFormat>().unwrap_err();
    assert!(e.contains("onnx or torchscript"), "{e}");
    let (vs, _, mut cfg) = model();
    cfg.pos_interp = dino_model::PosInterp::OfficialScaleFactor;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit.onnx");
    let e = export_backbone(&vs, &cfg, ExportFormat::Onnx, &out).unwrap_err();
    assert!(e.to_string().contains("exact-size"), "{e}");
    assert!(!out.exists());
}
