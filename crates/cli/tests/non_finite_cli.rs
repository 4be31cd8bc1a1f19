//! What `dino train` says when the loss turns non-finite: where the run folder's checkpoint
//! stands (none yet, finite, or already broken) and how to resume. The guard itself
//! (`dino_train::metrics::check_finite`) is tested in crates/train/tests/metrics.rs.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common;
use common::tiny::{tensors, tiny_run, train_args};

/// Runs a tiny `dino train` whose loss turns NaN at its second step (no lr warm-up, an lr that
/// overflows the weights at the first update), saving every `every_steps` steps (0: only at
/// epoch ends, which it never reaches). Returns the run folder's parent (kept alive), the run
/// folder and the error output.
fn diverging_run(lr: &str, every_steps: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let (tmp, cfg) = tiny_run("");
    let run = tmp.path().join("run");
    let (cfg_s, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let lr = format!("optim.lr={lr}");
    let every = format!("checkpoint.every_steps={every_steps}");
    let mut args = train_args(cfg_s, run_s, "5");
    args.extend([
        "--no-progress",
        "--set",
        "schedule.warmup_epochs=0",
        "--set",
        &lr,
    ]);
    args.extend(["--set", &every]);
    let out = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the run did not stop:\n{err}");
    assert!(
        err.contains("loss is NaN") || err.contains("loss is inf"),
        "{err}"
    );
    (tmp, run, err)
}

fn all_finite(run: &Path) -> bool {
    tensors(run)
        .iter()
        .all(|(_, t)| t.isfinite().all().int64_value(&[]) != 0)
}

#[test]
fn non_finite_loss_before_any_checkpoint_says_there_is_none() {
    let (_tmp, run, err) = diverging_run("1e35", "0");
    assert!(!run.join("checkpoint.safetensors").exists());
    assert!(!run.join("checkpoint.json").exists());
    assert!(
        err.contains(&format!(
            "No checkpoint was written yet in {}",
            run.display()
        )) && err.contains("nothing to resume from"),
        "{err}"
    );
    assert!(
        !err.contains("intact") && !err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn non_finite_loss_after_a_checkpoint_names_it_and_its_state() {
    // lr 1e35 leaves huge but finite weights in the checkpoint of step 0; 1e40 overflows them.
    for (lr, finite) in [("1e35", true), ("1e40", false)] {
        let (_tmp, run, err) = diverging_run(lr, "1");
        let files = run.join("checkpoint.safetensors");
        assert!(files.exists());
        assert!(err.contains(&files.display().to_string()), "{err}");
        assert!(
            err.contains(&run.join("checkpoint.json").display().to_string()),
            "{err}"
        );
        let meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(run.join("checkpoint.json")).unwrap())
                .unwrap();
        let position = format!(
            "resume position: epoch {}, step {}",
            meta["epoch"].as_u64().unwrap() + 1,
            meta["step_in_epoch"].as_u64().unwrap() + 1
        );
        assert!(err.contains(&position), "{position} not in {err}");
        assert!(
            !err.contains("intact") && !err.contains("No checkpoint"),
            "{err}"
        );
        // The message says what the file holds.
        assert_eq!(all_finite(&run), finite, "lr {lr}");
        if finite {
            assert!(err.contains("holds finite values"), "{err}");
            assert!(
                err.contains(&format!("dino train --resume {}", run.display())),
                "{err}"
            );
        } else {
            assert!(
                err.contains("already holds NaN or infinite values"),
                "{err}"
            );
        }
    }
}
