//! Parity with the PyTorch reference `tests/reference/vit_reference.py` (run at test time with
//! the project virtualenv's torch): initialisation bit for bit, forward outputs to 1e-4, the
//! official state-dict layout, BatchNorm heads, and the `.pth` importer.

use crate::common::read;
use dino_config::HeadConfig;
use dino_model::{
    import_official, load_safetensors, load_safetensors_with_prefix, DinoHead, MultiCropWrapper,
    PosInterp, VisionTransformer, VitConfig, WeightsError,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use tch::{nn, Device, Kind, Tensor};

/// Runs `tests/reference/vit_reference.py` with `args` into a fresh folder.
fn reference(args: &[&str]) -> tempfile::TempDir {
    crate::common::reference("vit_reference.py", args)
}

/// Seeding and building share libtorch's global generator: one test at a time.
static RNG: Mutex<()> = Mutex::new(());

/// Runs a model constructor while holding [`RNG`].
fn build<T>(f: impl FnOnce() -> T) -> T {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

const TOL: f64 = 1e-4;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn vit_config(arch: &str, patch: i64) -> VitConfig {
    let cfg = match arch {
        "vit_tiny" => VitConfig::vit_tiny(patch),
        "vit_small" => VitConfig::vit_small(patch),
        _ => unreachable!(),
    };
    cfg.with_drop_path(0.0)
}

/// Checks `arch` at `patch` against the reference on inputs of `sizes` (`HxW`) and returns the
/// model (reference weights loaded) and the reference's inputs and outputs, for more checks.
fn parity(arch: &str, patch: i64, sizes: &[&str]) -> (MultiCropWrapper, HashMap<String, Tensor>) {
    let p = patch.to_string();
    let joined = sizes.join(",");
    // Batch 2 at patch 16; batch 1 at patch 8 (4x the tokens) keeps the suite fast.
    let batch = if patch >= 16 { "2" } else { "1" };
    let dir = reference(&[
        "parity", "--arch", arch, "--patch", &p, "--sizes", &joined, "--batch", batch,
    ]);
    let head = HeadConfig {
        out_dim: 256,
        ..HeadConfig::default()
    };
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut model = build(|| {
        tch::manual_seed(0);
        MultiCropWrapper::new(&vs.root(), vit_config(arch, patch), &head).unwrap()
    });

    // Initialisation: same seed, same weights as PyTorch, bit for bit.
    let init = read(&dir.path().join("init.safetensors"));
    let vars = vs.variables();
    assert_eq!(init.len(), vars.len(), "same number of state-dict entries");
    for (name, v) in &vars {
        let r = init
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in the PyTorch state dict"));
        assert!(
            v.equal(r),
            "{arch}/{patch}: init of {name} differs by {}",
            max_diff(v, r)
        );
    }

    // Official layout: the PyTorch state dict loads strictly, with nothing missing or extra.
    let report = load_safetensors(&mut vs, &dir.path().join("weights.safetensors"), true).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.loaded, vars.len());

    let io = read(&dir.path().join("io.safetensors"));
    tch::no_grad(|| {
        for s in sizes {
            let x = &io[&format!("input.{s}")];
            let cls = model.backbone.forward_t(x, false).unwrap();
            let attn = model
                .backbone
                .as_vit()
                .unwrap()
                .last_selfattention(x)
                .unwrap();
            // The head on the backbone's features is what the wrapper computes for one crop
            // group (its grouping is tested in tests/model.rs); one backbone pass less.
            let logits = model.head.forward_t(&cls, false).unwrap();
            let inter = Tensor::stack(
                &model
                    .backbone
                    .as_vit()
                    .unwrap()
                    .intermediate_layers(x, 2)
                    .unwrap(),
                0,
            );
            let d = [
                max_diff(&cls, &io[&format!("cls.{s}")]),
                max_diff(&attn, &io[&format!("attn.{s}")]),
                max_diff(&logits, &io[&format!("logits.{s}")]),
                max_diff(&inter, &io[&format!("inter.{s}")]),
            ];
            eprintln!(
                "{arch}/{patch} {s}: max|Δ| cls {:.2e} attn {:.2e} logits {:.2e} inter {:.2e}",
                d[0], d[1], d[2], d[3]
            );
            assert!(d.iter().all(|&d| d <= TOL), "{arch}/{patch} {s}: {d:?}");
            if let Some(r) = io.get(&format!("cls_official.{s}")) {
                let vit = model.backbone.as_vit_mut().unwrap();
                vit.set_pos_interp(PosInterp::OfficialScaleFactor);
                let off = model.backbone.forward_t(x, false).unwrap();
                let vit = model.backbone.as_vit_mut().unwrap();
                vit.set_pos_interp(PosInterp::ExactSize);
                let d_off = max_diff(&off, r);
                let gap = max_diff(&off, &cls);
                eprintln!("{arch}/{patch} {s}: official scale-factor mode Δ {d_off:.2e} (vs exact size {gap:.2e})");
                assert!(d_off <= TOL, "official interpolation mode: {d_off}");
            }
        }
    });
    (model, io)
}

#[test]
fn vit_tiny_patch16_matches_pytorch() {
    alone!();
    parity("vit_tiny", 16, &["224x224", "96x96", "224x160"]);
}

#[test]
fn vit_tiny_patch8_matches_pytorch() {
    alone!();
    parity("vit_tiny", 8, &["224x224", "96x96", "224x160"]);
}

#[test]
fn vit_small_patch16_matches_pytorch() {
    alone!();
    parity("vit_small", 16, &["224x224", "96x96", "224x160"]);
}

#[test]
fn vit_small_patch8_matches_pytorch() {
    alone!();
    parity("vit_small", 8, &["224x224", "96x96", "224x160"]);
}

#[test]
fn non_square_grid_wider_than_tall_matches_pytorch() {
    alone!();
    // 48 × 80 px at patch 8: a 6 × 10 grid, wider than tall (the 224×160 cases above are taller
    // than wide), so a swap of rows and columns anywhere (patch order, position-table resize)
    // shows. The 28 × 28 position table is resized to 6 × 10 in both modes.
    let (model, io) = parity("vit_tiny", 8, &["48x80"]);
    let x = &io["input.48x80"];
    let (attn, cls) = tch::no_grad(|| {
        (
            model
                .backbone
                .as_vit()
                .unwrap()
                .last_selfattention(x)
                .unwrap(),
            model.backbone.forward_t(x, false).unwrap(),
        )
    });
    assert_eq!(attn.size(), [1, 3, 1 + 6 * 10, 1 + 6 * 10]);
    // The attention maps `dino attention` draws: the CLS row over the patches, row-major 6 × 10
    // (dino_eval::attention::AttentionMaps reads the same row), against the reference's reshape.
    let maps = attn.select(2, 0).narrow(2, 1, 60).reshape([1, 3, 6, 10]);
    let d_map = max_diff(&maps, &io["cls_map.48x80"]);
    let d_cls = max_diff(&cls, &io["cls.48x80"]);
    eprintln!("48x80: CLS attention map Δ {d_map:.2e}, CLS output Δ {d_cls:.2e}");
    assert!(d_map <= 1e-5 && d_cls <= 1e-5, "{d_map} {d_cls}");
    // Each head's row is a distribution over 1 + 60 tokens.
    let sums = attn.select(2, 0).sum_dim_intlist(-1, false, Kind::Float);
    assert!(max_diff(&sums, &Tensor::ones([1, 3], (Kind::Float, Device::Cpu))) < 1e-5);
}

#[test]
fn batchnorm_head_matches_pytorch_in_train_and_eval() {
    let dir = reference(&["head_bn"]);
    let f = read(&dir.path().join("head_bn.safetensors"));
    let cfg = HeadConfig {
        out_dim: 16,
        hidden_dim: 32,
        bottleneck_dim: 8,
        nlayers: 3,
        use_bn: true,
        norm_last_layer: false,
    };
    let mut vs = nn::VarStore::new(Device::Cpu);
    let head = build(|| DinoHead::new(&vs.root(), 48, &cfg).unwrap());
    // Write the reference weights into a file with the plain names and load it strictly.
    let w: Vec<(String, Tensor)> = f
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("w.")
                .map(|k| (k.to_string(), v.shallow_clone()))
        })
        .collect();
    let tmp = dir.path().join("w.safetensors");
    Tensor::write_safetensors(&w, &tmp).unwrap();
    let r = load_safetensors(&mut vs, &tmp, true).unwrap();
    assert_eq!(r.loaded, w.len());
    for k in [
        "mlp.1.running_mean",
        "mlp.1.running_var",
        "mlp.1.num_batches_tracked",
        "mlp.6.weight",
    ] {
        assert!(vs.variables().contains_key(k), "{k}");
    }
    let x = &f["x"];
    let train = tch::no_grad(|| head.forward_t(x, true).unwrap());
    let eval = tch::no_grad(|| head.forward_t(x, false).unwrap());
    let (dt, de) = (
        max_diff(&train, &f["train_out"]),
        max_diff(&eval, &f["eval_out"]),
    );
    eprintln!("BN head: train Δ {dt:.2e}, eval Δ {de:.2e}");
    assert!(dt <= TOL && de <= TOL, "{dt} {de}");
    // Running statistics and the batch counter were updated like PyTorch's.
    for (k, v) in vs.variables() {
        let r = &f[&format!("after.{k}")];
        assert!(
            max_diff(&v.to_kind(Kind::Double), &r.to_kind(Kind::Double)) <= TOL,
            "{k}"
        );
    }
    // norm_last_layer = false: g is trainable.
    assert_eq!(vs.trainable_variables().len(), 3 * 2 + 2 * 2 + 2);
}

fn tiny_import_config() -> (VitConfig, HeadConfig) {
    let mut vit = VitConfig::vit_tiny(16).with_drop_path(0.0);
    vit.depth = 2;
    let head = HeadConfig {
        out_dim: 64,
        hidden_dim: 32,
        bottleneck_dim: 16,
        ..HeadConfig::default()
    };
    (vit, head)
}

fn assert_same_file_values(a: &Path, b: &Path) {
    let (a, b) = (read(a), read(b));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert!(v.equal(&b[k]), "{k}");
    }
}

#[test]
fn import_handles_full_checkpoints_and_backbone_only_files() {
    let dir = reference(&["checkpoints"]);
    let d = dir.path();
    let (vit, head) = tiny_import_config();

    // Full checkpoint, default entry = teacher (no prefixes).
    let out = d.join("teacher.safetensors");
    let rep = import_official(&d.join("checkpoint.pth"), &out, None).unwrap();
    assert_eq!(rep.key.as_deref(), Some("teacher"));
    assert_eq!(rep.layout, "multicrop");
    assert!(rep.head_tensors > 0 && rep.backbone_tensors > 0);
    assert_same_file_values(&out, &d.join("expected_teacher.safetensors"));
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _m = build(|| MultiCropWrapper::new(&vs.root(), &vit, &head).unwrap());
    let r = load_safetensors(&mut vs, &out, true).unwrap();
    assert_eq!(r.loaded, vs.variables().len());

    // Student entry: DistributedDataParallel's `module.` prefix is removed.
    let out = d.join("student.safetensors");
    let rep = import_official(&d.join("checkpoint.pth"), &out, Some("student")).unwrap();
    assert_eq!(rep.stripped_prefixes, ["module."]);
    assert_same_file_values(&out, &d.join("expected_student.safetensors"));

    // Backbone-only release file: keys gain `backbone.`; loads into a bare ViT by prefix.
    let out = d.join("backbone.safetensors");
    let rep = import_official(&d.join("backbone_only.pth"), &out, None).unwrap();
    assert_eq!(
        (rep.key, rep.layout.as_str(), rep.head_tensors),
        (None, "backbone", 0)
    );
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _b = build(|| VisionTransformer::new(&vs.root(), &vit).unwrap());
    let r = load_safetensors_with_prefix(&mut vs, &out, "backbone.", true).unwrap();
    assert_eq!(r.loaded, vs.variables().len());
    let expected = read(&d.join("expected_teacher.safetensors"));
    for (k, v) in vs.variables() {
        assert!(v.equal(&expected[&format!("backbone.{k}")]), "{k}");
    }

    // Bad inputs are clear errors.
    let e = import_official(
        &d.join("checkpoint.pth"),
        &d.join("x.safetensors"),
        Some("ema"),
    );
    let msg = e.unwrap_err().to_string();
    assert!(msg.contains("'ema'") && msg.contains("teacher"), "{msg}");
    let e = import_official(&d.join("nope.pth"), &d.join("x.safetensors"), None).unwrap_err();
    assert!(
        matches!(e, WeightsError::Import { .. }) && e.to_string().contains("no such file"),
        "{e}"
    );
}
