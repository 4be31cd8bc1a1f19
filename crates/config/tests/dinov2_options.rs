//! DINOv2's backbone options in `[model]` (issue #29 item 4): each off by default (= DINO v1),
//! each switched by config alone, and refused with its key and the reason where it cannot apply.

use dino_config::{Config, Ffn, ModelConfig, PosInterpolation};

#[test]
fn dinov2_options_default_to_dino_v1() {
    let m = ModelConfig::default();
    // dinov2 ssl_default_config.yaml `student.num_register_tokens: 0` (the `_reg` hub models:
    // 4, hub/backbones.py); DINO v1 has no registers.
    assert_eq!(m.num_register_tokens, 0);
    // 0 = no LayerScale (dinov2 models/vision_transformer.py: "init_values=None or 0 => no
    // layerscale"); DINO v1's Block has none. DINOv2's 1e-5 lives in configs/dinov2_vits14.toml.
    assert_eq!(m.layerscale_init, 0.0);
    // dinov2 ssl_default_config.yaml `student.ffn_layer: "mlp"`, DINO v1's Mlp.
    assert_eq!(m.ffn, Ffn::Mlp);
    // Bicubic to the grid's size, as this project resized before the key existed.
    assert_eq!(m.pos_interpolation, PosInterpolation::ExactSize);
    // A default config passes and writes the keys out with their defaults.
    let c = Config::from_toml_str("", &[]).unwrap();
    let text = c.to_toml_string();
    for line in [
        "num_register_tokens = 0",
        "layerscale_init = 0.0",
        "ffn = \"mlp\"",
        "pos_interpolation = \"exact_size\"",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[test]
fn each_option_is_switched_by_config_alone() {
    let c = Config::from_toml_str(
        "[model]\nnum_register_tokens = 4\nlayerscale_init = 1e-5\nffn = \"swiglu\"\n\
         pos_interpolation = \"antialias\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        (
            c.model.num_register_tokens,
            c.model.layerscale_init,
            c.model.ffn,
            c.model.pos_interpolation
        ),
        (4, 1e-5, Ffn::Swiglu, PosInterpolation::Antialias)
    );
    let c = Config::from_toml_str("", &["model.pos_interpolation=scale_factor"]).unwrap();
    assert_eq!(c.model.pos_interpolation, PosInterpolation::ScaleFactor);
}

#[test]
fn bad_combinations_are_refused_with_the_key_and_the_reason() {
    for (text, key, reason) in [
        (
            "[model]\narch = \"resnet50\"\nnum_register_tokens = 4\n",
            "model.num_register_tokens",
            "Vision Transformer option",
        ),
        (
            "[model]\narch = \"resnet18\"\nlayerscale_init = 1e-5\n",
            "model.layerscale_init",
            "Vision Transformer option",
        ),
        (
            "[model]\narch = \"resnet34\"\nffn = \"swiglu\"\n",
            "model.ffn",
            "Vision Transformer option",
        ),
        (
            "[model]\narch = \"resnet18\"\npos_interpolation = \"antialias\"\n",
            "model.pos_interpolation",
            "Vision Transformer option",
        ),
        (
            "[model]\nlayerscale_init = -1e-5\n",
            "model.layerscale_init",
            ">= 0",
        ),
        ("[model]\nffn = \"geglu\"\n", "model.ffn", "unknown variant"),
        (
            "[model]\npos_interpolation = \"nearest\"\n",
            "model.pos_interpolation",
            "unknown variant",
        ),
    ] {
        let e = Config::from_toml_str(text, &[]).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(reason), "{text}: {e}");
    }
}
