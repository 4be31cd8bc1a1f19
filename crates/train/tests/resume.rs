//! Exact resume: a run killed with SIGKILL mid-training and resumed with `--resume` ends with
//! bitwise-identical student, teacher, optimizer state and center to an uninterrupted run
//! (CPU, fixed seed; issue "trainer": checkpoints and resume).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DINO: &str = env!("CARGO_BIN_EXE_dino");

/// 48 small images in 2 class folders, different enough to give real gradients.
fn make_images(root: &Path) {
    for i in 0..48u32 {
        let class = if i % 2 == 0 { "a" } else { "b" };
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let img = image::RgbImage::from_fn(24, 20, |x, y| {
            let v = (x * 7 + y * 13 + i * 31) % 256;
            image::Rgb([
                v as u8,
                ((x * y + i) % 256) as u8,
                if class == "a" { 200 } else { 30 },
            ])
        });
        img.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
}

fn write_config(dir: &Path, data: &Path) -> PathBuf {
    let cfg = format!(
        r#"
[data]
path = "{}"
format = "image_folder"
[augmentation]
global_crops_size = 16
local_crops_number = 2
local_crops_size = 8
[model]
arch = "custom"
embed_dim = 32
depth = 2
num_heads = 2
patch_size = 4
img_size = 16
[head]
out_dim = 64
hidden_dim = 64
bottleneck_dim = 16
[optim]
batch_size = 8
epochs = 3
[schedule]
warmup_epochs = 1
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
    let path = dir.join("tiny.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn tensors(run: &Path) -> Vec<(String, tch::Tensor)> {
    let mut t = tch::Tensor::read_safetensors(run.join("checkpoint.safetensors")).unwrap();
    t.retain(|(n, _)| n != "checkpoint.save_id");
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn position(run: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(run.join("checkpoint.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["epoch"].as_u64()?, v["step_in_epoch"].as_u64()?))
}

fn train(args: &[&str]) {
    let out = Command::new(DINO)
        .args(args)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dino {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killed_and_resumed_run_matches_uninterrupted_run_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data);
    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));

    train(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        full.to_str().unwrap(),
    ]);
    assert_eq!(
        position(&full),
        Some((3, 0)),
        "the uninterrupted run ends after 3 epochs"
    );

    let mut child = Command::new(DINO)
        .args([
            "train",
            "--no-progress",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
        ])
        .arg(&killed)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while position(&killed).is_none_or(|p| p == (0, 0)) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = position(&killed).unwrap();
    assert!(
        at_kill < (3, 0),
        "the run finished before it could be killed: {at_kill:?}"
    );

    train(&["train", "--resume", killed.to_str().unwrap()]);
    assert_eq!(position(&killed), Some((3, 0)));

    let (a, b) = (tensors(&full), tensors(&killed));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().any(|(n, _)| n.starts_with("teacher."))
            && a.iter().any(|(n, _)| n.starts_with("optim."))
    );
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs after kill -9 at {at_kill:?} and resume"
        );
    }
}

#[test]
fn a_second_run_into_a_used_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data);
    let run = tmp.path().join("run");
    train(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
        "--max-steps",
        "2",
    ]);
    let out = Command::new(DINO)
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}
