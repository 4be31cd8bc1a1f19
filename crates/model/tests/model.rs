//! Behaviour of the networks that needs no reference implementation: shapes, errors, the fused
//! vs explicit attention paths, stochastic depth, gradients, names, parameter groups, saving.

use dino_config::{Arch, HeadConfig, ModelConfig};
use dino_model::{
    is_last_layer, is_regularized, load_safetensors, safetensors_names, save_safetensors, DinoHead,
    ModelError, MultiCropWrapper, VisionTransformer, VitConfig, WeightsError,
};
use std::sync::Mutex;
use tch::{nn, Device, Kind, Tensor};

/// libtorch's generator is process-global: tests that draw from it run one at a time so the
/// seeded ones are reproducible.
static RNG: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn small(depth: i64, patch: i64) -> VitConfig {
    let mut c = VitConfig::vit_tiny(patch);
    c.depth = depth;
    c
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn config_from_model_resolves_presets_and_rejects_bad_sizes() {
    let _serial = serial();
    let m = ModelConfig::default();
    let c = VitConfig::from_model(&m).unwrap();
    // Official defaults (vision_transformer.py vit_small; main_dino.py --patch_size 16,
    // --drop_path_rate 0.1; LayerNorm eps 1e-6; img_size 224).
    assert_eq!(
        (c.embed_dim, c.depth, c.num_heads, c.patch_size),
        (384, 12, 6, 16)
    );
    assert_eq!((c.mlp_ratio, c.qkv_bias, c.img_size), (4.0, true, 224));
    assert_eq!((c.drop_path_rate, c.layer_norm_eps), (0.1, 1e-6));
    assert_eq!(c.pos_interp, dino_model::PosInterp::ExactSize);
    let t = VitConfig::from_model(&ModelConfig {
        arch: Arch::VitTiny,
        ..m.clone()
    })
    .unwrap();
    assert_eq!((t.embed_dim, t.num_heads), (192, 3));
    let b = VitConfig::vit_base(8);
    assert_eq!(
        (b.embed_dim, b.depth, b.num_heads, b.grid_size()),
        (768, 12, 12, 28)
    );
    let custom = ModelConfig {
        arch: Arch::Custom,
        embed_dim: 100,
        num_heads: 3,
        ..m.clone()
    };
    // The rule's one home is dino-config: the model's error names the config key.
    match VitConfig::from_model(&custom) {
        Err(ModelError::Config(m)) => assert!(m.contains("model.num_heads"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut tiny = VitConfig::vit_tiny(16);
    tiny.img_size = 8;
    assert!(matches!(tiny.validate(), Err(ModelError::Config(m)) if m.contains("model.img_size")));
    let rates = c.drop_path_rates();
    assert_eq!(rates.len(), 12);
    assert_eq!(rates[0], 0.0);
    assert!((rates[11] - 0.1).abs() < 1e-12 && (rates[6] - 0.1 * 6.0 / 11.0).abs() < 1e-12);
    assert!(c
        .with_drop_path(0.0)
        .drop_path_rates()
        .iter()
        .all(|&r| r == 0.0));
}

#[test]
fn outputs_have_the_documented_shapes_for_every_patch_size() {
    let _serial = serial();
    for patch in [4, 8, 14, 16] {
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = VisionTransformer::new(&vs.root(), &small(1, patch)).unwrap();
        let (h, w) = (patch * 6, patch * 4);
        let x = randn(&[2, 3, h, w]);
        let n = 1 + 24;
        assert_eq!(vit.forward_t(&x, false).unwrap().size(), [2, 192]);
        assert_eq!(vit.forward_tokens(&x, false).unwrap().size(), [2, n, 192]);
        assert_eq!(vit.last_selfattention(&x).unwrap().size(), [2, 3, n, n]);
        let inter = vit.intermediate_layers(&x, 1).unwrap();
        assert_eq!(inter.len(), 1);
        assert_eq!(inter[0].size(), [2, n, 192]);
        let grid = 224 / patch;
        assert_eq!(
            vs.variables()["pos_embed"].size(),
            [1, 1 + grid * grid, 192]
        );
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VisionTransformer::new(&vs.root(), &small(2, 16)).unwrap();
    let e = vit.forward_t(&randn(&[1, 3, 100, 96]), false).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::NotPatchMultiple {
                height: 100,
                width: 96,
                patch: 16
            }
        ),
        "{e}"
    );
    let e = vit.forward_t(&randn(&[1, 3, 8, 16]), false).unwrap_err();
    assert!(matches!(e, ModelError::NotPatchMultiple { .. }));
    let e = vit.forward_t(&randn(&[1, 1, 32, 32]), false).unwrap_err();
    assert!(matches!(e, ModelError::BadInput { .. }), "{e}");
    let e = vit.forward_t(
        &Tensor::zeros([1, 3, 32, 32], (Kind::Uint8, Device::Cpu)),
        false,
    );
    assert!(matches!(e, Err(ModelError::BadInput { .. })));
    let e = vit
        .intermediate_layers(&randn(&[1, 3, 32, 32]), 3)
        .unwrap_err();
    assert!(matches!(e, ModelError::BadLayerCount { n: 3, depth: 2 }));
    let head = HeadConfig {
        out_dim: 8,
        hidden_dim: 16,
        bottleneck_dim: 4,
        ..HeadConfig::default()
    };
    let m = MultiCropWrapper::new(&(vs.root() / "m"), small(1, 16), &head).unwrap();
    assert!(matches!(
        m.forward_t(&[], true),
        Err(ModelError::BadCrops(_))
    ));
}

#[test]
fn fused_attention_agrees_with_the_explicit_softmax_path() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VisionTransformer::new(&vs.root(), &small(3, 16)).unwrap();
    for (h, w) in [(224, 224), (96, 96), (224, 160)] {
        let x = randn(&[2, 3, h, w]);
        let fused = tch::no_grad(|| vit.forward_tokens(&x, false).unwrap());
        let explicit = tch::no_grad(|| vit.forward_tokens_explicit(&x).unwrap());
        let d = max_diff(&fused, &explicit);
        assert!(d < 1e-4, "{h}x{w}: {d}");
    }
    let attn = vit.last_selfattention(&randn(&[1, 3, 64, 48])).unwrap();
    let rows = attn.sum_dim_intlist(-1, false, Kind::Float);
    assert!(
        max_diff(&rows, &rows.ones_like()) < 1e-5,
        "attention rows sum to 1"
    );
}

#[test]
fn stochastic_depth_only_in_training_and_seeded() {
    alone!();
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = small(4, 16).with_drop_path(0.5);
    let vit = VisionTransformer::new(&vs.root(), &cfg).unwrap();
    assert_eq!(vit.drop_path_rates(), vec![0.0, 0.5 / 3.0, 1.0 / 3.0, 0.5]);
    let x = randn(&[8, 3, 32, 32]);
    let eval1 = vit.forward_t(&x, false).unwrap();
    let eval2 = vit.forward_t(&x, false).unwrap();
    assert!(eval1.equal(&eval2), "inference is deterministic");
    let train = {
        tch::manual_seed(11);
        let a = vit.forward_t(&x, true).unwrap();
        tch::manual_seed(11);
        let b = vit.forward_t(&x, true).unwrap();
        assert!(a.equal(&b), "the seed fixes the drops");
        a
    };
    assert!(
        max_diff(&train, &eval1) > 1e-3,
        "some residual branches were dropped"
    );
    let vs0 = nn::VarStore::new(Device::Cpu);
    let vit0 = VisionTransformer::new(&vs0.root(), &small(2, 16).with_drop_path(0.0)).unwrap();
    assert!(vit0
        .forward_t(&x, true)
        .unwrap()
        .equal(&vit0.forward_t(&x, false).unwrap()));
}

#[test]
fn gradients_reach_every_parameter_through_the_resized_position_table() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let head = HeadConfig {
        out_dim: 32,
        hidden_dim: 16,
        bottleneck_dim: 8,
        ..HeadConfig::default()
    };
    // No stochastic depth: a branch dropped for every sample would leave its weights without a
    // gradient by chance (p = 0.1^3 for the last block's attention), which is not what is tested.
    let m = MultiCropWrapper::new(&vs.root(), small(2, 16).with_drop_path(0.0), &head).unwrap();
    // Only local 96-px crops: the 14x14 table is trained through its bicubic resize to 6x6.
    let logits = m.forward_t(&[randn(&[3, 3, 96, 96])], true).unwrap();
    logits.square().sum(Kind::Float).backward();
    for (name, v) in vs.variables() {
        if v.requires_grad() {
            let g = v.grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }
    assert!(!vs.variables()["head.last_layer.weight_g"].requires_grad());
}

#[test]
fn same_seed_same_weights_different_seed_different_weights() {
    alone!();
    let _serial = serial();
    let build = |seed| {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let _v = VisionTransformer::new(&vs.root(), &small(1, 16)).unwrap();
        vs.variables()["blocks.0.attn.qkv.weight"].copy()
    };
    assert!(build(1).equal(&build(1)));
    assert!(!build(1).equal(&build(2)));
}

#[test]
fn initialisation_follows_the_official_recipe() {
    let _serial = serial();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let head = HeadConfig {
        out_dim: 4096,
        ..HeadConfig::default()
    };
    let _m = MultiCropWrapper::new(&vs.root(), VitConfig::vit_small(16), &head).unwrap();
    let v = vs.variables();
    let std = |k: &str| v[k].std(true).double_value(&[]);
    let absmax = |k: &str| v[k].abs().max().double_value(&[]);
    for k in [
        "backbone.blocks.3.mlp.fc1.weight",
        "backbone.pos_embed",
        "head.mlp.2.weight",
    ] {
        assert!(
            (std(k) - 0.02).abs() < 1e-3,
            "{k}: trunc-normal std 0.02, got {}",
            std(k)
        );
    }
    for k in [
        "backbone.blocks.3.mlp.fc1.bias",
        "backbone.norm.bias",
        "head.mlp.4.bias",
    ] {
        assert_eq!(absmax(k), 0.0, "{k}");
    }
    assert!(
        v["backbone.blocks.0.norm1.weight"].equal(&v["backbone.blocks.0.norm1.weight"].ones_like())
    );
    // Patch conv: PyTorch default U(±1/sqrt(3*16*16)) for weight and bias.
    let b = 1.0 / (768f64).sqrt();
    for k in [
        "backbone.patch_embed.proj.weight",
        "backbone.patch_embed.proj.bias",
    ] {
        assert!(absmax(k) <= b && absmax(k) > 0.9 * b, "{k}: {}", absmax(k));
    }
    // Last layer: v kaiming-uniform U(±1/sqrt(256)); g = 1, shape [K, 1].
    let vb = 1.0 / 16.0;
    let m = absmax("head.last_layer.weight_v");
    assert!(m <= vb && m > 0.99 * vb, "{m}");
    let g = &v["head.last_layer.weight_g"];
    assert_eq!(g.size(), [4096, 1]);
    assert!(g.equal(&g.ones_like()));
}

#[test]
fn head_logits_are_cosines_and_names_match_the_official_keys() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = HeadConfig {
        out_dim: 64,
        hidden_dim: 32,
        bottleneck_dim: 16,
        ..HeadConfig::default()
    };
    let head = DinoHead::new(&vs.root(), 24, &cfg).unwrap();
    let y = head.forward_t(&(randn(&[5, 24]) * 50.0), true).unwrap();
    assert_eq!(y.size(), [5, 64]);
    assert!(
        y.abs().max().double_value(&[]) <= 1.0 + 1e-6,
        "norm_last_layer: |cos| <= 1"
    );
    let z = head.bottleneck(&randn(&[5, 24]), false).unwrap();
    let norms = z.norm_scalaropt_dim(2, [-1], false);
    assert!(max_diff(&norms, &norms.ones_like()) < 1e-5);
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "last_layer.weight_g",
            "last_layer.weight_v",
            "mlp.0.bias",
            "mlp.0.weight",
            "mlp.2.bias",
            "mlp.2.weight",
            "mlp.4.bias",
            "mlp.4.weight"
        ]
    );
    let vs1 = nn::VarStore::new(Device::Cpu);
    let one = HeadConfig { nlayers: 1, ..cfg };
    let _h = DinoHead::new(&vs1.root(), 24, &one).unwrap();
    let mut names: Vec<String> = vs1.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "last_layer.weight_g",
            "last_layer.weight_v",
            "mlp.bias",
            "mlp.weight"
        ]
    );
}

#[test]
fn multicrop_groups_same_resolution_crops_like_separate_runs() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let head = HeadConfig {
        out_dim: 16,
        hidden_dim: 16,
        bottleneck_dim: 8,
        ..HeadConfig::default()
    };
    let m = MultiCropWrapper::new(&vs.root(), small(2, 16).with_drop_path(0.0), &head).unwrap();
    let crops = [
        randn(&[2, 3, 64, 64]),
        randn(&[2, 3, 64, 64]),
        randn(&[2, 3, 32, 32]),
        randn(&[2, 3, 32, 48]),
    ];
    let all = m.forward_t(&crops, false).unwrap();
    assert_eq!(all.size(), [8, 16]);
    let each: Vec<Tensor> = crops
        .iter()
        .map(|c| m.forward_t(&[c.shallow_clone()], false).unwrap())
        .collect();
    assert!(max_diff(&all, &Tensor::cat(&each, 0)) < 1e-5);
}

#[test]
fn parameter_group_rules_follow_the_official_code() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let head = HeadConfig {
        out_dim: 16,
        hidden_dim: 16,
        bottleneck_dim: 8,
        norm_last_layer: false,
        ..HeadConfig::default()
    };
    let _m = MultiCropWrapper::new(&vs.root(), small(1, 16), &head).unwrap();
    let v = vs.variables();
    let reg = |k: &str| is_regularized(k, &v[k].size());
    assert!(
        reg("backbone.blocks.0.attn.qkv.weight")
            && reg("backbone.pos_embed")
            && reg("backbone.cls_token")
    );
    assert!(reg("head.last_layer.weight_v") && reg("head.last_layer.weight_g"));
    assert!(
        !reg("backbone.blocks.0.attn.qkv.bias")
            && !reg("backbone.norm.weight")
            && !reg("backbone.blocks.0.norm1.weight")
    );
    let last: Vec<&String> = v.keys().filter(|k| is_last_layer(k)).collect();
    assert_eq!(last.len(), 2);
    assert_eq!(vs.trainable_variables().len(), v.len());
}

/// The header alone names the same tensors libtorch reads from the file; a file that is not
/// safetensors is an error, not an empty list.
#[test]
fn safetensors_names_come_from_the_header() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = MultiCropWrapper::new(&vs.root(), small(1, 16), &HeadConfig::default()).unwrap();
    save_safetensors(&vs, &path).unwrap();
    let mut names = safetensors_names(&path).unwrap();
    names.sort();
    let mut want: Vec<String> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    want.sort();
    assert!(names.iter().any(|n| n.ends_with("cls_token")), "{names:?}");
    assert_eq!(names, want);
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x05\0\0\0\0\0\0\0{nope").unwrap();
    assert!(safetensors_names(&bad).is_err());
}

#[test]
fn save_and_strict_load_round_trip_with_clear_mismatch_errors() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let head = HeadConfig {
        out_dim: 16,
        hidden_dim: 16,
        bottleneck_dim: 8,
        ..HeadConfig::default()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let a = MultiCropWrapper::new(&vs.root(), small(1, 16), &head).unwrap();
    save_safetensors(&vs, &path).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let b = MultiCropWrapper::new(&vs2.root(), small(1, 16), &head).unwrap();
    let r = load_safetensors(&mut vs2, &path, true).unwrap();
    assert_eq!(r.loaded, vs.variables().len());
    let x = randn(&[1, 3, 32, 32]);
    assert!(a
        .forward_t(&[x.shallow_clone()], false)
        .unwrap()
        .equal(&b.forward_t(&[x], false).unwrap()));

    // A deeper network misses blocks.1.*; a shallower one finds them unexpected.
    let mut vs3 = nn::VarStore::new(Device::Cpu);
    let _c = MultiCropWrapper::new(&vs3.root(), small(2, 16), &head).unwrap();
    let e = load_safetensors(&mut vs3, &path, true).unwrap_err();
    match &e {
        WeightsError::KeyMismatch {
            missing,
            unexpected,
            ..
        } => {
            assert_eq!(missing.len(), 12, "{missing:?}");
            assert!(missing.contains(&"backbone.blocks.1.attn.qkv.weight".to_string()));
            assert!(unexpected.is_empty());
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string().contains("backbone.blocks.1.mlp.fc2.bias"),
        "{e}"
    );
    let r = load_safetensors(&mut vs3, &path, false).unwrap();
    assert_eq!((r.loaded, r.missing.len()), (vs.variables().len(), 12));
    // Same names, other shapes.
    let mut vs4 = nn::VarStore::new(Device::Cpu);
    let _d = MultiCropWrapper::new(
        &vs4.root(),
        small(1, 16),
        &HeadConfig {
            out_dim: 32,
            ..head
        },
    )
    .unwrap();
    let e = load_safetensors(&mut vs4, &path, true).unwrap_err();
    assert!(matches!(e, WeightsError::Shape { .. }), "{e}");
}
