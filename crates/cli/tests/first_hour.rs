//! A new user's first hour (issue #33): the surprises and the friction met when trying the
//! product on a folder of one's own photos, each pinned by the message or number a user sees.

use std::path::{Path, PathBuf};

use crate::common;
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

/// Trains `steps` steps of `cfg` into `<tmp>/run` (must succeed); returns the run folder.
fn train_run(tmp: &tempfile::TempDir, cfg: &Path, steps: u32) -> PathBuf {
    let run = tmp.path().join("run");
    let steps = steps.to_string();
    ok(&[
        "train",
        "--config",
        s(cfg),
        "--output",
        s(&run),
        "--max-steps",
        &steps,
        "--no-progress",
    ]);
    run
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
    let run = train_run(&tmp, &cfg, 2);
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

    // Every evaluation report states it: the linear probe and retrieval too.
    for cmd in [
        vec![
            "eval",
            "linear",
            "--train",
            s(&data),
            "--val",
            s(&data),
            "--epochs",
            "1",
            "--lr",
            "0.1",
        ],
        vec!["eval", "retrieval", "--data", s(&data)],
        vec!["eval", "cluster", "--data", s(&data)],
    ] {
        let mut args = cmd.clone();
        args.extend(["--checkpoint", s(&run), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
        assert_eq!(v["crop_size"], 48, "{cmd:?}: {v}");
        assert!(v["feature"].is_string(), "{cmd:?}: {v}");
    }

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

/// Item 2: `dino embed` writes L2-normalized rows by default (official `eval_knn.py
/// --dump_features`), the LayerNorm output with `--raw`, and says which in its message and in
/// `<stem>.meta.json`.
#[test]
fn embed_rows_have_norm_one_by_default() {
    let (tmp, cfg, data) = defaults_run(16);
    let run = train_run(&tmp, &cfg, 1);
    let norms = |file: &Path| {
        let x = tch::Tensor::read_npy(file).unwrap();
        assert_eq!(x.size(), [48, 32]);
        let n = x.norm_scalaropt_dim(2, [1i64].as_slice(), false);
        (n.min().double_value(&[]), n.max().double_value(&[]))
    };
    let meta = |stem: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(tmp.path().join(format!("{stem}.meta.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let l2 = tmp.path().join("l2.npy");
    let out = ok(&[
        "embed",
        "--checkpoint",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&l2),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("rows L2-normalized (norm 1; --raw for the LayerNorm output), 16-px crops"),
        "{err}"
    );
    let (lo, hi) = norms(&l2);
    assert!(
        (lo - 1.0).abs() < 1e-5 && (hi - 1.0).abs() < 1e-5,
        "{lo} {hi}"
    );
    assert_eq!(meta("l2")["l2_normalized"], true);
    assert_eq!(meta("l2")["crop_size"], 16);

    let raw = tmp.path().join("raw.npy");
    let out = ok(&[
        "embed",
        "--checkpoint",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&raw),
        "--raw",
    ]);
    assert!(stderr(&out).contains("rows raw (the CLS token after the final LayerNorm)"));
    // LayerNorm output of width 32 with its initial affine (weight 1, bias 0): norm about √32.
    let (lo, hi) = norms(&raw);
    assert!(lo > 3.0 && hi < 8.0, "{lo} {hi}");
    assert_eq!(meta("raw")["l2_normalized"], false);
    let help = String::from_utf8_lossy(&ok(&["embed", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--raw") && help.contains("L2-normalized"),
        "{help}"
    );
}

/// The step records of a run's `metrics.jsonl`, as global steps in file order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["global_step"].as_u64().unwrap())
        .collect()
}

/// The resume position stored beside the checkpoint, as a global step.
fn checkpoint_step(run: &Path, niter: u64) -> u64 {
    let text = std::fs::read_to_string(run.join("checkpoint.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["epoch"].as_u64().unwrap() * niter + v["step_in_epoch"].as_u64().unwrap()
}

/// Starts `dino args` and sends `signal` once its `metrics.jsonl` holds more than `after`
/// step records; returns its output.
fn signal_after(args: &[&str], run: &Path, after: usize, signal: i32) -> std::process::Output {
    use std::process::{Command, Stdio};
    let child = Command::new(common::DINO)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !(run.join("metrics.jsonl").exists() && logged_steps(run).len() > after) {
        assert!(start.elapsed().as_secs() < 120, "the run never got going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    child.wait_with_output().unwrap()
}

/// Item 3: SIGINT mid-epoch finishes the step, writes the checkpoint at that step, prints where
/// it stopped and the exact resume line, exits 130; a run killed hard after its last
/// checkpoint and resumed drops the records past the checkpoint, so `metrics.jsonl` never
/// repeats a step.
#[test]
fn sigint_leaves_a_checkpoint_and_a_resume_line() {
    let (tmp, cfg, _) = defaults_run(16);
    let run = tmp.path().join("run");
    // 12 steps an epoch (48 images, batch 4), the signal after the 4th: mid-epoch. Long
    // enough to be interrupted; a record per step and no periodic checkpoint, so only the
    // stop writes one.
    let sets = [
        "--set",
        "optim.epochs=200",
        "--set",
        "optim.batch_size=4",
        "--set",
        "runtime.log_every=1",
        "--set",
        "checkpoint.every_steps=0",
        "--set",
        "checkpoint.latest_every_epochs=1000",
    ];
    let mut args = vec![
        "train",
        "--config",
        s(&cfg),
        "--output",
        s(&run),
        "--no-progress",
    ];
    args.extend(sets);
    let out = signal_after(&args, &run, 3, libc::SIGINT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let steps = logged_steps(&run);
    let at = checkpoint_step(&run, 12);
    assert_eq!(
        at,
        *steps.last().unwrap() + 1,
        "checkpoint at the stop; {err}"
    );
    assert!(at % 12 != 0, "stopped mid-epoch: {at}");
    let (epoch, step) = (at / 12 + 1, at % 12);
    assert!(
        err.contains(&format!(
            "SIGINT: stopped at epoch {epoch}/200, step {step}/12 (global step {at} of 2400)"
        )),
        "{err}"
    );
    let resume_line = format!("resume with:\n  dino train --resume {}\n", run.display());
    assert!(err.contains(&resume_line), "{err}");

    // Resumed, then killed hard (SIGKILL: no checkpoint at the stop) after steps past the
    // checkpoint were logged, and resumed again: every step appears once, in order.
    let resume = ["train", "--resume", s(&run), "--no-progress"];
    let out = signal_after(&resume, &run, steps.len() + 3, libc::SIGKILL);
    assert!(!out.status.success());
    assert!(logged_steps(&run).len() > steps.len() + 3);
    ok(&[
        "train",
        "--resume",
        s(&run),
        "--no-progress",
        "--max-steps",
        "2",
    ]);
    let after = logged_steps(&run);
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1) && after[0] == 0,
        "{after:?}"
    );
}

/// Item 4: `--checkpoint runs/X/checkpoint.safetensors` is read as the run (its configuration,
/// not the default ViT-S/16); a weights file that does not fit the configuration gets one line
/// saying what it holds, what is asked, and what to pass.
#[test]
fn a_runs_weights_file_is_read_with_the_runs_configuration() {
    let (tmp, cfg, data) = defaults_run(16);
    let run = train_run(&tmp, &cfg, 1);
    let weights = run.join("checkpoint.safetensors");
    let out = ok(&[
        "eval",
        "knn",
        "--checkpoint",
        s(&weights),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--k",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["crop_size"].as_u64(), v["n_train"].as_u64()),
        (Some(16), Some(48))
    );
    assert!(
        stderr(&out).contains("evaluated with the run's configuration"),
        "{}",
        stderr(&out)
    );

    // The same file outside its run folder, with the default configuration (ViT-S/16).
    let lone = tmp.path().join("lone.safetensors");
    std::fs::copy(&weights, &lone).unwrap();
    let out = dino(&[
        "embed",
        "--checkpoint",
        s(&lone),
        "--data",
        s(&data),
        "--out",
        s(&tmp.path().join("x.npy")),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "holds a ViT of depth 2, width 32, patch 4, but the configuration asks for vit_small \
             (depth 12, width 384, patch 16)"
        ),
        "{err}"
    );
    assert!(err.contains("--set model.depth=2"), "{err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, not the key list: {err}"
    );
}

/// Item 7: folder mistakes. A flat folder read as class folders gets the exact `--set`; a
/// dataset root holding `train/` and `val/` is warned about before training.
#[test]
fn folder_mistakes_are_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    make_images(&tmp.path().join("scratch"));
    for e in std::fs::read_dir(tmp.path().join("scratch/a")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), flat.join(e.file_name())).unwrap();
    }
    let cfg = write_config(tmp.path(), &flat, "");
    let out = dino(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "data.format=\"image_folder\"",
        "--output",
        s(&tmp.path().join("r1")),
        "--max-steps",
        "1",
        "--no-progress",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pass --set data.format=\"flat\""),
        "{}",
        stderr(&out)
    );

    // A root with train/ and val/ (each holding class folders).
    let root = tmp.path().join("root");
    make_images(&root.join("train"));
    make_images(&root.join("val"));
    let out = ok(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&root),
        "--output",
        s(&tmp.path().join("r2")),
        "--max-steps",
        "1",
        "--no-progress",
    ]);
    let err = stderr(&out);
    let warn = format!(
        "{} holds the split folders train/ and val/: they are taken as classes",
        root.display()
    );
    let at = err.find(&warn).unwrap_or_else(|| panic!("{err}"));
    assert!(err[at..].contains(&format!("Pass --data {}", root.join("train").display())));
    // Before training: ahead of the summary line.
    assert!(
        at < err.find("trained 1 step this session").unwrap(),
        "{err}"
    );
}

/// Item 9: on a small set the probe sweeps the lr (DINOv2's grid) and says so, `--lr` fixes
/// it and is in `--help`, and a single probe logs one line per epoch.
#[test]
fn the_linear_probe_trains_on_a_small_set() {
    let (tmp, cfg, data) = defaults_run(16);
    let run = train_run(&tmp, &cfg, 1);
    let probe = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "linear",
            "--checkpoint",
            s(&run),
            "--train",
            s(&data),
            "--val",
            s(&data),
            "--epochs",
            "3",
        ];
        args.extend(extra);
        ok(&args)
    };
    let out = probe(&[]);
    let err = stderr(&out);
    assert!(
        err.contains("linear probe: 48 training images, so the lr is swept over the DINOv2 grid"),
        "{err}"
    );
    assert_eq!(err.matches("linear probe lr ").count(), 13, "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("best of 13 on --val"), "{text}");

    let out = probe(&["--lr", "0.1", "--json"]);
    let err = stderr(&out);
    for e in 1..=3 {
        assert!(
            err.contains(&format!("linear probe epoch {e}/3: train loss")),
            "{err}"
        );
    }
    assert_eq!(err.matches("linear probe epoch").count(), 3, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lr"], 0.1);
    let help = String::from_utf8_lossy(&ok(&["eval", "linear", "--help"]).stdout).into_owned();
    assert!(help.contains("--lr"), "{help}");
}

/// Items 6 and 10 in `dino train`: the run folder named after the data folder, the first
/// lines (images, classes, steps per epoch, epochs, run folder), `epoch e/E` in the progress,
/// the official shortcut flags, a resume that changes the schedule says so, an error of a
/// `--set` on a resume blames the `--set`, and without --config on a CPU the presets are named.
#[test]
fn train_says_what_it_does_in_the_users_words() {
    let (tmp, cfg, _) = defaults_run(16);
    // The data folder is `photos/train`: the run folder is runs/photos, under the working dir.
    let photos = tmp.path().join("photos/train");
    make_images(&photos);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("path = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(common::DINO)
        .current_dir(tmp.path())
        .args([
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&photos),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--no-progress",
            "--set",
            "runtime.log_every=1",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let run = tmp.path().join("runs/photos");
    assert!(run.join("checkpoint.safetensors").is_file(), "{err}");
    assert!(
        err.contains(&format!(
            "{}: 48 images, 2 classes; 3 steps per epoch × 2 epochs; run folder runs/photos",
            photos.display()
        )),
        "{err}"
    );
    assert!(err.contains("epoch 2/2 step 3/3 loss"), "{err}");
    assert!(
        err.contains(
            "checkpoint.output_dir = \"runs/photos\" (named after --data; --output DIR to choose)"
        ),
        "{err}"
    );

    // Resumed with more epochs: the change is said.
    let out = ok(&[
        "train",
        "--resume",
        s(&run),
        "--epochs",
        "3",
        "--max-steps",
        "1",
        "--no-progress",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("resumed with a change to the stored configuration: optim.epochs: 2 → 3"),
        "{err}"
    );
    // A bad --set on a resume is the --set's fault, in plain words.
    let out = dino(&["train", "--resume", s(&run), "--set", "optim.epochs=2.5"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("expected a whole number (0 or more)")
            && err.contains("(from --set optim.epochs=2.5 on the stored configuration)"),
        "{err}"
    );
    assert!(!err.contains("usize"), "{err}");

    if !tch::Cuda::is_available() {
        // No --config on a CPU: the presets are named before anything starts (the empty data
        // folder then stops it).
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let out = dino(&[
            "train",
            "--data",
            s(&empty),
            "--output",
            s(&tmp.path().join("x")),
        ]);
        let err = stderr(&out);
        assert!(
            err.contains("no --config: the official recipe (vit_small at 224 px, 100 epochs)")
                && err.contains("configs/cifar10_cpu.toml"),
            "{err}"
        );
    }
}

/// Item 10: `dino export` takes the format from the file name and states the preprocessing
/// (resize, crop, mean, std) the model was evaluated with.
#[test]
fn export_infers_the_format_and_states_the_preprocessing() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    let export = |out: &Path| {
        std::process::Command::new(common::DINO)
            .env("DINO_PYTHON", repo.join(".venv/bin/python"))
            .current_dir(&repo)
            .args([
                "export",
                "--which",
                "random",
                "--config",
                "configs/cifar10_cpu.toml",
            ])
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = export(&tmp.path().join("vit.txt"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pass --format onnx|torchscript"),
        "{}",
        stderr(&out)
    );
    let pt = tmp.path().join("vit.pt");
    let out = export(&pt);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("(TorchScript"), "{err}");
    assert!(
        err.contains("after the final LayerNorm, not L2-normalized"),
        "{err}"
    );
    assert!(
        err.contains(
            "preprocess as the model was evaluated: RGB, shorter side resized to 32 \
                      (bicubic), centre crop 32 x 32, values / 255, then (x - mean) / std"
        ),
        "{err}"
    );
    tch::CModule::load(&pt).unwrap();

    // ONNX from the name, the preprocessing in its metadata_props.
    let onnx = tmp.path().join("vit.onnx");
    let out = export(&onnx);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = std::process::Command::new(repo.join(".venv/bin/python"))
        .args([
            "-c",
            "import onnx, sys; m = onnx.load(sys.argv[1]); \
             print({p.key: p.value for p in m.metadata_props})",
        ])
        .arg(&onnx)
        .output()
        .unwrap();
    let props = String::from_utf8_lossy(&read.stdout);
    assert!(
        props.contains("'center_crop': '32'") && props.contains("'mean': '[0.485"),
        "{props} {}",
        String::from_utf8_lossy(&read.stderr)
    );
}

/// Item 8: attention folders are named after the images, listed in `index.json`, and the
/// default size is the run's evaluation size.
#[test]
fn attention_folders_are_named_after_the_images() {
    let (tmp, cfg, data) = defaults_run(16);
    let out_dir = tmp.path().join("attn");
    let out = ok(&[
        "attention",
        "--which",
        "random",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--count",
        "2",
        "--out",
        s(&out_dir),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("--image-size 16 (the run's evaluation size, eval.crop_size)"),
        "{err}"
    );
    for name in ["a_000", "a_002"] {
        assert!(out_dir.join(name).is_dir(), "{name}: {err}");
    }
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("index.json")).unwrap())
            .unwrap();
    assert_eq!(index["image_size"], 16);
    assert_eq!(index["images"][0]["folder"], "a_000");
    assert_eq!(index["images"][1]["grid"], serde_json::json!([4, 4]));
    assert!(!index["images"][0]["files"].as_array().unwrap().is_empty());
    // One panel per image: photo | mean | 2 heads | mask, the 16-px tiles enlarged 10 times (to
    // at least 160 px) with 4-px gaps; under them 4 px, a row of names (18 px), 4 px, each map's
    // colour scale (10 px), 4 px, a row with the scale's end values (18 px), 4 px, two legend
    // lines (18 px each).
    let panel = image::open(out_dir.join("a_000/panel.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(
        panel.dimensions(),
        (5 * 160 + 4 * 4, 160 + 4 + 18 + 4 + 10 + 4 + 18 + 4 + 2 * 18)
    );
    let photo = image::open(out_dir.join("a_000/img.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(
        panel.get_pixel(3 * 10 + 2, 5 * 10 + 3),
        photo.get_pixel(3, 5)
    );
    // The mean map's scale (x 164..324) runs from viridis' dark end to its bright end.
    let bar_y = 160 + 4 + 18 + 4 + 5;
    let (dark, bright) = (panel.get_pixel(164, bar_y), panel.get_pixel(323, bar_y));
    assert!(
        dark[2] > dark[1] && bright[0] > 200 && bright[1] > 200,
        "{dark:?} {bright:?}"
    );
    // Text in the names row under the photo and in the values row under the mean map.
    if Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file() {
        let inked = |x0: u32, y0: u32| {
            (x0..x0 + 160)
                .flat_map(|x| (y0..y0 + 18).map(move |y| (x, y)))
                .any(|(x, y)| panel.get_pixel(x, y)[0] < 128)
        };
        assert!(inked(0, 160 + 4), "the tile names");
        assert!(inked(164, 160 + 4 + 18 + 4 + 10 + 4), "the scale's values");
    }
    // The mask tile (x from 656) outlines the kept patches: white just inside a kept patch's
    // edge with a dropped neighbour, not in the dropped patch beyond it nor at a kept centre.
    let attn = tch::Tensor::read_npy(out_dir.join("a_000/attn.npy")).unwrap();
    assert_eq!(attn.size(), [2, 4, 4]);
    let heads = Vec::<f32>::try_from(&attn.reshape([-1])).unwrap();
    let mean: Vec<f32> = (0..16)
        .map(|i| [heads[i], heads[16 + i]].iter().sum::<f32>() / 2.0)
        .collect();
    let keep = dino_eval::attention::threshold_mask(&mean, 0.6).unwrap();
    let white = image::Rgb([255u8, 255, 255]);
    let mut edges = 0;
    for r in 0..4u32 {
        let y = r * 40 + 20;
        for c in 0..4u32 {
            let i = (r * 4 + c) as usize;
            if keep[i] {
                assert_ne!(*panel.get_pixel(656 + c * 40 + 20, y), white, "kept centre");
            }
            if c < 3 && keep[i] != keep[i + 1] {
                let x = 656 + (c + 1) * 40;
                let (inside, outside) = if keep[i] { (x - 1, x) } else { (x, x - 1) };
                assert_eq!(
                    *panel.get_pixel(inside, y),
                    white,
                    "outline at row {r}, col {c}"
                );
                assert_ne!(*panel.get_pixel(outside, y), white, "row {r}, col {c}");
                edges += 1;
            }
        }
    }
    assert!(edges > 0, "a mask with an edge: {keep:?}");
}

/// Item 10: a `--set` that a run's (valid) stored configuration refuses is named as the cause.
#[test]
fn a_bad_set_on_a_run_folder_is_the_sets_fault() {
    let (tmp, cfg, data) = defaults_run(16);
    let run = train_run(&tmp, &cfg, 1);
    let out = dino(&[
        "eval",
        "knn",
        "--checkpoint",
        s(&run),
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--set",
        "eval.batch_size=-1",
    ]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("(from --set eval.batch_size=-1 on the run's stored configuration"),
        "{err}"
    );
}

/// Item 6: a preset's `checkpoint.output_dir` names the preset's own data set; pointed at the
/// user's photos with `--data`, the run folder is `runs/<data folder>` and the log says so. A
/// `--set checkpoint.output_dir` chooses it, `--output` over that; without `--data` the
/// config's folder stands.
#[test]
fn the_run_folder_is_named_after_the_data_not_the_preset() {
    let (tmp, cfg, _) = defaults_run(16);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[checkpoint]\n",
        "[checkpoint]\noutput_dir = \"runs/tiny_preset\"\n",
    );
    assert!(text.contains("output_dir = \"runs/tiny_preset\""));
    std::fs::write(&cfg, text).unwrap();
    let photos = tmp.path().join("my photos");
    make_images(&photos);
    let train = |args: &[&str]| {
        let out = std::process::Command::new(common::DINO)
            .current_dir(tmp.path())
            .args([
                "train",
                "--config",
                s(&cfg),
                "--max-steps",
                "1",
                "--no-progress",
            ])
            .args(args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        err
    };
    let err = train(&["--data", s(&photos)]);
    assert!(
        err.contains(
            "checkpoint.output_dir = \"runs/my_photos\" (named after --data; --output DIR to choose)"
        ),
        "{err}"
    );
    assert!(err.contains("run folder runs/my_photos"), "{err}");
    let runs = tmp.path().join("runs");
    assert!(runs.join("my_photos/checkpoint.safetensors").is_file());
    assert!(!runs.join("tiny_preset").exists());
    let err = train(&[
        "--data",
        s(&photos),
        "--set",
        "checkpoint.output_dir=\"runs/chosen\"",
    ]);
    assert!(!err.contains("named after --data"), "{err}");
    assert!(runs.join("chosen/checkpoint.safetensors").is_file());
    let out = tmp.path().join("out");
    train(&[
        "--data",
        s(&photos),
        "--output",
        s(&out),
        "--set",
        "checkpoint.output_dir=\"runs/not_this\"",
    ]);
    assert!(out.join("checkpoint.safetensors").is_file());
    assert!(!runs.join("not_this").exists());
    train(&[]);
    assert!(runs.join("tiny_preset/checkpoint.safetensors").is_file());
}
