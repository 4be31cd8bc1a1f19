//! A DINOv2 torch.hub backbone file (issue #29 item 5; made here by the project's reference
//! `tests/reference/dinov2_ref.py` in the official layout: `register_tokens`, `ls1.gamma`,
//! SwiGLU `mlp.w12`/`w3`, `mask_token`, no head) goes through `dino import`, which recognises
//! its shape and options, prints them as `model.*` keys and stores them in the file; `dino train
//! --init-from` then starts from it with no `--set` (the file's keys are read over the preset's)
//! with a fresh head, and `schedule.freeze_backbone_epochs` trains the head alone first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use common::dino;
use common::tiny::{make_images, tensors};
use tch::Tensor;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `dino import`'s sentence lists the recognised keys as `model.k=v`: those words.
fn recognised_sets(log: &str) -> Vec<String> {
    log.split_whitespace()
        .filter(|w| w.starts_with("model."))
        .map(|w| w.trim_end_matches('.').to_string())
        .collect()
}

#[test]
fn a_dinov2_hub_file_is_imported_recognised_and_continued_with_a_fresh_head() {
    let python = repo().join(".venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "skipped: {} is missing (run scripts/setup.sh)",
            python.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(repo().join("tests/reference/dinov2_ref.py"))
        .args([
            "--dim",
            "64",
            "--heads",
            "1",
            "--depth",
            "2",
            "--patch",
            "4",
            "--img-size",
            "16",
            "--registers",
            "2",
            "--layerscale",
            "1e-5",
            "--ffn",
            "swiglu",
            "--offset",
            "0",
            "--antialias",
            "--sizes",
            "16x16",
            "--out",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = tmp.path().join("hub.safetensors");
    let out = Command::new(common::DINO)
        .args(["import", "--from"])
        .arg(tmp.path().join("hub.pth"))
        .arg("--out")
        .arg(&file)
        .env("DINO_PYTHON", &python)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("mask_token"),
        "the iBOT token is reported as left out: {log}"
    );
    let sets = recognised_sets(&log);
    for want in [
        "model.num_register_tokens=2",
        "model.ffn=\"swiglu\"",
        "model.pos_interpolation=\"antialias\"",
        "model.patch_size=4",
        "model.embed_dim=64",
        "model.depth=2",
        "model.img_size=16",
    ] {
        assert!(
            sets.iter().any(|s| s == want),
            "{want} not in {sets:?} ({log})"
        );
    }
    let ls = sets
        .iter()
        .find_map(|s| s.strip_prefix("model.layerscale_init="))
        .expect("LayerScale recognised");
    assert_eq!(ls.parse::<f64>().unwrap(), 1e-5);

    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = tmp.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\npath = \"{}\"\nformat = \"image_folder\"\n[augmentation]\n\
             global_crops_size = 16\nlocal_crops_number = 2\nlocal_crops_size = 8\n\
             [head]\nout_dim = 64\nhidden_dim = 32\nbottleneck_dim = 16\n\
             [optim]\nbatch_size = 8\nepochs = 3\n[schedule]\nwarmup_epochs = 1\n\
             freeze_last_layer = 0\nfreeze_backbone_epochs = 1\n[checkpoint]\nsaveckp_freq = 0\n\
             [runtime]\nseed = 7\ntorch_threads = 1\ndata_threads = 2\n",
            data.display()
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let mut args: Vec<String> = ["train", "--config", cfg.to_str().unwrap(), "--output"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(run.to_str().unwrap().to_string());
    args.extend(["--init-from".into(), file.to_str().unwrap().into()]);
    args.extend(["--no-progress".into(), "--max-steps".into(), "2".into()]);
    // No --set: the imported file carries the model keys it was recognised with.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = dino(&args);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("carries the model it was imported with")
            && sets.iter().all(|s| log.contains(s.as_str())),
        "the file's keys {sets:?} are used and named: {log}"
    );
    assert!(
        log.contains("the head starts fresh") || log.contains("head starts"),
        "{log}"
    );
    // The backbone was frozen for the first epoch: student and teacher still hold the file's
    // backbone, every DINOv2 variable included, while the fresh head trained.
    let weights: HashMap<String, Tensor> = Tensor::read_safetensors(&file)
        .unwrap()
        .into_iter()
        .collect();
    let ck: HashMap<String, Tensor> = tensors(&run).into_iter().collect();
    assert!(weights.contains_key("backbone.register_tokens"));
    assert!(weights.contains_key("backbone.blocks.1.ls2.gamma"));
    assert!(weights.contains_key("backbone.blocks.0.mlp.w12.weight"));
    for (name, t) in weights.iter().filter(|(n, _)| n.starts_with("backbone.")) {
        for which in ["student", "teacher"] {
            let c = &ck[&format!("{which}.{name}")];
            assert!(
                (c - t).abs().max().double_value(&[]) <= 1e-6,
                "{which}.{name} moved"
            );
        }
    }
}
