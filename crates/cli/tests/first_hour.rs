//! A new user's first hour (issue #33): the surprises and the friction met when trying the
//! product on a folder of one's own photos, each pinned by the message or number a user sees.

use std::path::{Path, PathBuf};

mod common;
use common::tiny::{make_images, write_config};
use common::{dino, ok};

/// A tiny run's folder and data, with a config whose `[schedule]` and `[eval]` sections the
/// user left out (warm-up, evaluation crop and `n_last_blocks` at their defaults) and whose
/// global crops are `global` px.
fn defaults_run(global: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "global_crops_size = 16",
            &format!("global_crops_size = {global}"),
        )
        .replace("img_size = 16", &format!("img_size = {global}"))
        .replace("[schedule]\nwarmup_epochs = 1\n", "")
        .replace("[eval]\nn_last_blocks = 1\n", "");
    assert!(!text.contains("warmup_epochs") && !text.contains("[eval]"));
    std::fs::write(&cfg, text).unwrap();
    (tmp, cfg, data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Item 1: a model trained on 48-px crops is evaluated at 48 px when the config has no
/// `eval.crop_size`, and the report (text and JSON) says so; an explicit size wins.
#[test]
fn a_48px_model_is_evaluated_at_48_by_default() {
    let (tmp, cfg, data) = defaults_run(48);
    let run = tmp.path().join("run");
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--output",
        s(&run),
        "--max-steps",
        "2",
        "--no-progress",
    ]);
    let knn = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "knn",
            "--checkpoint",
            s(&run),
            "--train",
            s(&data),
            "--val",
            s(&data),
            "--k",
            "1",
        ];
        args.extend(extra);
        ok(&args)
    };
    let out = knn(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["crop_size"], 48, "{v}");
    // The official 256/224 rule: Resize(round(48 · 256 / 224)) = 55, then CenterCrop(48).
    assert_eq!(v["resize_size"], 55, "{v}");
    assert_eq!(v["feature"], "cls", "{v}");
    assert!(!stderr(&out).contains("evaluating at"), "{}", stderr(&out));

    let text = String::from_utf8_lossy(&knn(&[]).stdout).into_owned();
    assert!(
        text.contains("48-px crops (resize 55), feature cls"),
        "{text}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&knn(&["--json", "--set", "eval.crop_size=16"]).stdout).unwrap();
    assert_eq!(v["crop_size"], 16, "{v}");

    // The same from the preset alone (a .safetensors file evaluated with --config).
    let out = ok(&["config", "show", "--config", s(&cfg)]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("crop_size = 48"), "{shown}");
    assert!(
        stderr(&out).contains("eval.crop_size = 48 (unset: follows augmentation.global_crops_size"),
        "{}",
        stderr(&out)
    );
}

/// Item 5: defaults the user never set are scaled to a small run (warm-up to the epochs,
/// `n_last_blocks` to the depth) and the value used is logged; an explicit value that
/// conflicts is still refused, naming the key.
#[test]
fn defaults_that_block_a_small_run_are_scaled_and_logged() {
    let (tmp, cfg, _) = defaults_run(16);
    let run = tmp.path().join("run");
    let out = ok(&[
        "train",
        "--config",
        s(&cfg),
        "--output",
        s(&run),
        "--max-steps",
        "1",
        "--no-progress",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains(
            "schedule.warmup_epochs = 3 (unset: the default 10 capped at optim.epochs = 3)"
        ),
        "{err}"
    );
    assert!(
        err.contains("eval.n_last_blocks = 2 (unset: the default 4 capped at the model depth 2)"),
        "{err}"
    );
    for (set, key) in [
        ("schedule.warmup_epochs=10", "schedule.warmup_epochs"),
        ("eval.n_last_blocks=4", "eval.n_last_blocks"),
    ] {
        let out = dino(&["config", "show", "--config", s(&cfg), "--set", set]);
        assert!(!out.status.success(), "{set}");
        let err = stderr(&out);
        assert!(
            err.contains(key) && err.contains(&format!("--set {set}")),
            "{err}"
        );
    }
}
