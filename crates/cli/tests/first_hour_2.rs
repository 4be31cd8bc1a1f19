//! A new user's first hour, tried again (issue #33, acceptance "tried again as a new user"): what
//! still took two tries with only the README on a folder of photos, each pinned by the message
//! or number a user now sees.

use std::path::{Path, PathBuf};

use crate::common;
use common::tiny::{make_images, write_config};
use common::{dino, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tiny run's data and config, its `[schedule]` and `[eval]` written as a preset for a
/// longer run and a deeper model would be: warm-up 10 epochs (of 3), `n_last_blocks` 4 (of a
/// depth of 2).
fn preset_run() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("warmup_epochs = 1\n", "warmup_epochs = 10\n")
        .replace("n_last_blocks = 1\n", "n_last_blocks = 4\n");
    assert!(text.contains("warmup_epochs = 10\n") && text.contains("n_last_blocks = 4\n"));
    std::fs::write(&cfg, text).unwrap();
    (tmp, cfg, data)
}

/// `dino train` of `cfg` into `run` for `steps` steps (must succeed), with `extra` arguments.
fn train(cfg: &Path, run: &Path, steps: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--config",
        s(cfg),
        "--output",
        s(run),
        "--max-steps",
        steps,
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

/// Item 1: `--epochs 2` with a preset whose warm-up is 10 epochs trains, with the warm-up
/// scaled to 2 and a log line saying so (as the README says: "warmup at most --epochs"); the
/// same for `n_last_blocks` above the depth. The same values given with `--set` are refused,
/// naming the key and the `--set`.
#[test]
fn preset_values_that_block_a_short_run_are_scaled() {
    let (tmp, cfg, _) = preset_run();
    let out = train(&cfg, &tmp.path().join("run"), "1", &["--epochs", "2"]);
    let err = stderr(&out);
    assert!(
        err.contains(
            "schedule.warmup_epochs = 2 (the config file's 10 capped at optim.epochs = 2: it was \
             not set on the command line)"
        ),
        "{err}"
    );
    assert!(
        err.contains("eval.n_last_blocks = 2 (the config file's 4 capped at the model depth 2"),
        "{err}"
    );
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(tmp.path().join("run/config.toml")).unwrap())
            .unwrap();
    assert_eq!(config["schedule"]["warmup_epochs"].as_integer(), Some(2));
    assert_eq!(config["eval"]["n_last_blocks"].as_integer(), Some(2));

    for set in [
        "schedule.warmup_epochs=10",
        "loss.warmup_teacher_temp_epochs=5",
        "schedule.freeze_last_layer=5",
        "schedule.freeze_backbone_epochs=5",
        "eval.n_last_blocks=4",
    ] {
        let out = dino(&["config", "show", "--config", s(&cfg), "--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        let err = stderr(&out);
        let key = set.split('=').next().unwrap();
        assert!(
            err.contains(&format!("config key `{key}`")) && err.contains(&format!("--set {set}")),
            "{err}"
        );
    }
}

/// Item 2: `--resume runs/X/checkpoint.safetensors` resumes run X, saying so in one line; a
/// weights file outside any run folder, and a run folder that does not exist, are refused in
/// one line saying what to pass.
#[test]
fn resume_takes_a_runs_weights_file_as_its_folder() {
    let (tmp, cfg, _) = preset_run();
    let run = tmp.path().join("run");
    train(&cfg, &run, "1", &[]);
    let weights = run.join("checkpoint.safetensors");
    let out = ok(&[
        "train",
        "--resume",
        s(&weights),
        "--max-steps",
        "2",
        "--no-progress",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{} is the latest checkpoint of run folder {}: resuming that run",
            weights.display(),
            run.display()
        )),
        "{err}"
    );
    assert!(!err.contains("Not a directory"), "{err}");
    // The resumed session trained (its summary line: "trained N steps on ..."); the tiny
    // config logs every 10th step, so metrics.jsonl would not show the one new step.
    let trained = err
        .lines()
        .find_map(|l| {
            l.split("trained ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    assert!(trained >= 1, "the resumed run trained no step: {err}");

    let lone = tmp.path().join("lone.safetensors");
    std::fs::copy(&weights, &lone).unwrap();
    let out = dino(&["train", "--resume", s(&lone), "--no-progress"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--resume takes a run folder (the folder of `dino train` holding config.toml and \
             checkpoint.safetensors), and {} is a file outside any: pass the run folder it \
             came from, or start a new run from its weights with --init-from {}",
            lone.display(),
            lone.display()
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // The README's `--resume runs/photos` where the run went elsewhere: the run folders beside.
    let missing = tmp.path().join("photos");
    let out = dino(&["train", "--resume", s(&missing), "--no-progress"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--resume {}: no such run folder; the run folders in {} are {}",
            missing.display(),
            tmp.path().display(),
            run.display()
        )),
        "{err}"
    );
}

/// Item 3: with fewer than 5 classes a top-5 says nothing (every class is in it): the k-NN text
/// report says "n/a (2 classes)", `--json` has null, and the linear probe's JSON too; with 5
/// classes the number is there.
#[test]
fn top5_with_fewer_than_5_classes_is_not_a_number() {
    let (tmp, cfg, data) = preset_run();
    let base = ["--which", "random", "--config", s(&cfg)];
    let knn = |train: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "knn"];
        args.extend_from_slice(&base);
        args.extend(["--train", s(train), "--val", s(train), "--k", "1,10"]);
        args.extend_from_slice(extra);
        ok(&args)
    };
    let text = stdout(&knn(&data, &[]));
    assert!(text.contains("top-5 n/a (2 classes)"), "{text}");
    assert!(!text.contains("top-5 100.00%"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&knn(&data, &["--json"]).stdout).unwrap();
    assert_eq!(v["num_classes"], 2);
    for score in v["scores"].as_array().unwrap() {
        assert!(score["top5"].is_null(), "{v}");
        assert!(score["top1"].as_f64().is_some(), "{v}");
    }

    let mut args = vec!["eval", "linear"];
    args.extend_from_slice(&base);
    args.extend([
        "--train",
        s(&data),
        "--val",
        s(&data),
        "--lr",
        "0.1",
        "--epochs",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    assert!(v["final_top5"].is_null() && v["best_top5"].is_null(), "{v}");
    assert!(v["final_top1"].as_f64().is_some(), "{v}");

    // Five classes: top-5 is a number again.
    let five = tmp.path().join("five");
    for (i, class) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for j in 0..3u32 {
            let dir = five.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                image::Rgb([(i as u32 * 50 + j) as u8, (x * 9) as u8, (y * 9) as u8])
            });
            img.save(dir.join(format!("{j}.png"))).unwrap();
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&knn(&five, &["--json"]).stdout).unwrap();
    assert_eq!(v["num_classes"], 5);
    assert!(v["scores"][1]["top5"].as_f64().is_some(), "{v}");
    assert!(stdout(&knn(&five, &[])).contains("top-5 100.00%"));
}

/// Item 4: the attention score's head chosen per image with the boxes is labelled as the
/// optimistic figure it is, and the best single head across the images is named.
#[test]
fn the_best_head_per_image_is_labelled_optimistic() {
    let (tmp, cfg, data) = preset_run();
    let boxes = tmp.path().join("boxes.json");
    std::fs::write(
        &boxes,
        r#"{"a/000.png": [[0.0, 0.0, 0.5, 0.5]], "b/001.png": [[0.25, 0.25, 1.0, 1.0]]}"#,
    )
    .unwrap();
    let out = ok(&[
        "attention",
        "--which",
        "random",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--boxes",
        s(&boxes),
        "--out",
        s(&tmp.path().join("attn")),
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("best head per image, chosen with the boxes: optimistic; attention in boxes"),
        "{text}"
    );
    assert!(
        text.contains("best single head across the images: head "),
        "{text}"
    );
    assert!(
        !text.contains("best head:"),
        "the old unlabelled line: {text}"
    );
    for head in ["head 0:", "head 1:", "mean map:"] {
        assert!(text.contains(head), "{text}");
    }
}

/// Items 5 and 6: the README's photo section, as a new user reads it. Its commands run from the
/// repository root (said once); every preset it names exists; the run folder of its examples is
/// `runs/<data folder name>`, the name `dino train` derives; the steps arithmetic of its example
/// holds with `drop_last`; the keys are found with `dino config show`, not in Rust source.
#[test]
fn the_readme_photo_section_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("run from the repository root"));
    assert!(!readme.contains("crates/config/src/sections.rs"));
    assert!(readme.contains("dino config show"));
    for word in readme.split(|c: char| c.is_whitespace() || "`(),".contains(c)) {
        if word.starts_with("configs/") && word.ends_with(".toml") {
            assert!(root.join(word).is_file(), "README names {word}");
        }
    }
    let start = readme.find("## Your own photos").unwrap();
    let section = &readme[start..start + readme[start..].find("\n## ").unwrap()];
    // The training line's --data folder names every run folder the section uses.
    let train = section
        .lines()
        .find(|l| l.starts_with("dino train --config"))
        .unwrap();
    let data = train
        .split_whitespace()
        .skip_while(|w| *w != "--data")
        .nth(1)
        .unwrap();
    let cfg = dino(&["config", "show", "--set", &format!("data.path=\"{data}\"")]);
    let shown: toml::Table = toml::from_str(&stdout(&cfg)).unwrap();
    let run = shown["checkpoint"]["output_dir"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(run, format!("runs/{data}"));
    let mut uses = 0;
    for w in section
        .split_whitespace()
        .filter(|w| w.starts_with("runs/"))
    {
        let w = w.trim_end_matches(|c: char| !c.is_alphanumeric());
        assert!(
            w == run || w.starts_with(&format!("{run}/")),
            "{w} against {run}"
        );
        uses += 1;
    }
    assert!(uses >= 5, "{uses}");
    // "steps = images / batch × epochs, drop_last drops the remainder": 245 photos at batch 32
    // are 7 steps (21 photos dropped), × 150 epochs = 1,050 steps.
    assert!(section.contains("drop_last"), "{section}");
    assert!(
        section.contains("--batch-size 32 --epochs 150"),
        "{section}"
    );
    assert!(section.contains("1,050 steps"), "{section}");
    assert_eq!((245 / 32) * 150, 1050);
}

/// Item 5 (a): the README's `--config configs/...` typed outside the repository root names the
/// preset's path from the root (the binary knows the root it was built in).
#[test]
fn a_preset_path_from_elsewhere_names_the_file() {
    let root = Path::new(common::DINO)
        .canonicalize()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    if !root.join("configs/imagenette_cpu.toml").is_file() {
        // A target folder outside the repository (CARGO_TARGET_DIR): nothing to find.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::DINO)
        .args(["config", "show", "--config", "configs/imagenette_cpu.toml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the presets are paths from the repository root: --config {}",
            root.join("configs/imagenette_cpu.toml").display()
        )),
        "{err}"
    );
}
