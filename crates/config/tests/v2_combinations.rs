//! Issue #29's bad combinations that the DINOv2 options add, refused by the config before any
//! work with the key and the reason (the others are pinned in `dinov2_options.rs` and the
//! crate's unit tests: ViT options on a ResNet, KoLeo or Sinkhorn-Knopp with gradient
//! accumulation, with the per-crop-group backward or with the supervised objective). Each
//! refusal sits beside the nearest accepted config, so the rule is not wider than its reason.

use dino_config::Config;

fn refused(text: &str, key: &str, reason: &str) {
    let e = Config::from_toml_str(text, &[]).unwrap_err().to_string();
    assert!(e.contains(key) && e.contains(reason), "{text}: {e}");
}

fn accepted(text: &str) {
    if let Err(e) = Config::from_toml_str(text, &[]) {
        panic!("{text}: {e}");
    }
}

/// dinov2 `SwiGLUFFNFused`: hidden = (int(int(D · r) · 2/3) + 7) // 8 · 8 is 0 when
/// int(D · r) = 1 (a network without a hidden unit); 2 gives 8.
#[test]
fn swiglu_without_a_hidden_unit_is_refused() {
    let custom = "[model]\narch = \"custom\"\nembed_dim = 2\nnum_heads = 1\ndepth = 1\n";
    refused(
        &format!("{custom}ffn = \"swiglu\"\nmlp_ratio = 0.5\n"),
        "model.mlp_ratio",
        "no hidden unit with model.ffn = \"swiglu\"",
    );
    // The same width as an MLP has its one hidden unit; SwiGLU at D · r = 2 has 8.
    accepted(&format!("{custom}mlp_ratio = 0.5\n"));
    accepted(&format!("{custom}ffn = \"swiglu\"\nmlp_ratio = 1.0\n"));
}

/// KoLeo's nearest neighbour is another image of the process's batch: none at batch 1.
#[test]
fn koleo_at_batch_1_is_refused() {
    refused(
        "[loss]\nkoleo_weight = 0.1\n[optim]\nbatch_size = 1\n",
        "optim.batch_size",
        "at least 2 with loss.koleo_weight > 0",
    );
    accepted("[loss]\nkoleo_weight = 0.1\n[optim]\nbatch_size = 2\n");
    accepted("[optim]\nbatch_size = 1\n");
}
