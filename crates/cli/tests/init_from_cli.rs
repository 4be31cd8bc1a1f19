//! `dino train --init-from`: a run starts from an official-layout checkpoint (made here by the
//! project's Python reference, converted by `dino import`), student = teacher = file; a file of
//! another architecture is refused naming the keys; `schedule.freeze_backbone_epochs` leaves the
//! backbone untouched while the head trains.

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

/// vit_tiny / patch 16 / depth 2 with a 64-dim head (hidden 32, bottleneck 16): the architecture
/// of `vit_reference.py checkpoints` (its position table is for 224 px, interpolated to the 32-px
/// crops as the official code does); `model_extra` lines go into `[model]`.
fn config(dir: &Path, data: &Path, model_extra: &str, head_out: usize) -> PathBuf {
    let cfg = format!(
        r#"
[data]
path = "{}"
format = "image_folder"
[augmentation]
global_crops_size = 32
local_crops_number = 2
local_crops_size = 16
[model]
arch = "custom"
embed_dim = 192
depth = 2
num_heads = 3
patch_size = 16
img_size = 224
{model_extra}
[head]
out_dim = {head_out}
hidden_dim = 32
bottleneck_dim = 16
[optim]
batch_size = 8
epochs = 3
[schedule]
warmup_epochs = 1
freeze_last_layer = 0
[checkpoint]
every_steps = 2
saveckp_freq = 0
[eval]
n_last_blocks = 1
[runtime]
seed = 7
torch_threads = 1
data_threads = 2
"#,
        data.display()
    );
    let path = dir.join(format!("cfg_{head_out}_{}.toml", model_extra.len()));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// The official-layout checkpoint converted by `dino import` (teacher entry), or `None` (with a
/// note) when the project's virtualenv is missing.
fn imported(dir: &Path) -> Option<PathBuf> {
    let python = repo().join(".venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "skipped: {} is missing (run scripts/setup.sh)",
            python.display()
        );
        return None;
    }
    let out = Command::new(&python)
        .arg(repo().join("tests/reference/vit_reference.py"))
        .args(["checkpoints", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("teacher.safetensors");
    let (from, to) = (
        dir.join("checkpoint.pth"),
        file.to_str().unwrap().to_string(),
    );
    // The binary may live outside the repository (CARGO_TARGET_DIR): name the interpreter.
    let out = Command::new(common::DINO)
        .args(["import", "--from", from.to_str().unwrap(), "--out", &to])
        .env("DINO_PYTHON", &python)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(file)
}

fn by_name(v: Vec<(String, Tensor)>) -> HashMap<String, Tensor> {
    v.into_iter().collect()
}

/// Whether every `prefix` entry of the checkpoint's `which` network equals the file's: bitwise
/// for the student; within 1e-6 for the teacher, whose EMA `m·t + (1-m)·s` of `t = s` rounds.
fn same(
    ck: &HashMap<String, Tensor>,
    file: &HashMap<String, Tensor>,
    which: &str,
    prefix: &str,
) -> bool {
    let mut n = 0;
    for (name, t) in file.iter().filter(|(n, _)| n.starts_with(prefix)) {
        n += 1;
        let c = &ck[&format!("{which}.{name}")];
        let equal = match which {
            "teacher" => (c - t).abs().max().double_value(&[]) <= 1e-6,
            _ => c.equal(t),
        };
        if !equal {
            return false;
        }
    }
    assert!(n > 0, "no {prefix} entries");
    true
}

fn train(cfg: &Path, run: &Path, init: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
        "--init-from",
        init.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend(extra);
    if !extra.contains(&"--max-steps") {
        args.extend(["--max-steps", "2"]);
    }
    dino(&args)
}

#[test]
fn init_from_an_imported_checkpoint_then_freeze_the_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(file) = imported(tmp.path()) else {
        return;
    };
    let data = tmp.path().join("data");
    make_images(&data);
    let weights = by_name(Tensor::read_safetensors(&file).unwrap());
    let cfg = config(tmp.path(), &data, "", 64);

    // The first step runs at learning rate 0 (linear warm-up from 0), so its checkpoint shows
    // the start: student = teacher = file, backbone and head.
    let run = tmp.path().join("run0");
    let one = ["--max-steps", "1", "--set", "checkpoint.every_steps=1"];
    let out = train(&cfg, &run, &file, &one);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("backbone (") && log.contains("and head ("),
        "{log}"
    );
    let ck = by_name(tensors(&run));
    for which in ["student", "teacher"] {
        assert!(same(&ck, &weights, which, "backbone."), "{which} backbone");
        assert!(same(&ck, &weights, which, "head."), "{which} head");
    }

    // Head warm-up: with the backbone frozen for the first epoch, two steps (the second at a
    // learning rate > 0) change the head but not the backbone, in student and teacher.
    let frozen = tmp.path().join("frozen");
    let out = train(
        &cfg,
        &frozen,
        &file,
        &["--set", "schedule.freeze_backbone_epochs=1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck = by_name(tensors(&frozen));
    assert!(same(&ck, &weights, "student", "backbone."));
    assert!(same(&ck, &weights, "teacher", "backbone."));
    assert!(!same(&ck, &weights, "student", "head."), "the head trained");
    // ... while without the freeze the same two steps move the backbone.
    let free = tmp.path().join("free");
    let out = train(&cfg, &free, &file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!same(
        &by_name(tensors(&free)),
        &weights,
        "student",
        "backbone."
    ));

    // A run folder of ours works as a source too (its teacher), and a head of another size
    // starts fresh, said in the log.
    let cfg32 = config(tmp.path(), &data, "", 32);
    let out = train(&cfg32, &tmp.path().join("fresh"), &free, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("teacher of") && log.contains("the head starts fresh"),
        "{log}"
    );
}

#[test]
fn another_architecture_and_resume_are_refused_before_any_training() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(file) = imported(tmp.path()) else {
        return;
    };
    let data = tmp.path().join("data");
    make_images(&data);
    // depth 3 and a 4-layer MLP ratio: missing keys and mismatched shapes, all named. The
    // imported file carries its own model keys, which replace a preset's [model]; an explicit
    // --set wins over them, said in one line, and then the weights do not fit.
    let cfg_path = config(tmp.path(), &data, "", 64);
    let run = tmp.path().join("never");
    let out = train(
        &cfg_path,
        &run,
        &file,
        &["--set", "model.depth=3", "--set", "model.mlp_ratio=2.0"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("--set overrides the model stored in"))
        .collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(
        warned[0].contains("model.mlp_ratio: the file says 4.0, --set gives 2.0")
            && warned[0].contains("model.depth: the file says custom (width 192, depth 2")
            && warned[0].contains("--set gives custom (width 192, depth 3"),
        "{}",
        warned[0]
    );
    assert!(
        err.contains("backbone.blocks.0.mlp.fc1.weight: file [768, 192] vs model [384, 192]"),
        "{err}"
    );
    assert!(
        err.contains("backbone.blocks.2.attn.qkv.weight: missing from the file"),
        "{err}"
    );
    assert!(err.contains("more") && err.contains("problems"), "{err}");
    assert!(!run.exists(), "nothing written");

    let cfg = config(tmp.path(), &data, "", 64);
    let out = train(&cfg, &run, &file, &["--resume", run.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = train(&cfg, &run, &tmp.path().join("nope.safetensors"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    assert!(!run.exists(), "nothing written");
}
