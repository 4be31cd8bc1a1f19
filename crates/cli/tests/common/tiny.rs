//! A tiny training run for the `dino` binary's end-to-end tests: a few synthetic images and a
//! config small enough to train in seconds on one CPU thread.

use std::path::{Path, PathBuf};

/// 48 small images in 2 class folders, different enough to give real gradients.
pub fn make_images(root: &Path) {
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

/// Writes `tiny.toml` for `data`; `runtime_extra` lines go into its `[runtime]` section.
pub fn write_config(dir: &Path, data: &Path, runtime_extra: &str) -> PathBuf {
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
{}
"#,
        data.display(),
        runtime_extra
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// A temporary folder holding the images of [`make_images`] (in `data/`) and their `tiny.toml`
/// (see [`write_config`]); returns the folder (kept alive by the caller) and the config path.
pub fn tiny_run(runtime_extra: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data, runtime_extra);
    (tmp, cfg)
}

/// `train --config CFG --output OUT --max-steps N`: the arguments of a short `dino train`.
pub fn train_args<'a>(cfg: &'a str, out: &'a str, max_steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--config",
        cfg,
        "--output",
        out,
        "--max-steps",
        max_steps,
    ]
}

/// The checkpoint's tensors by name (the save id left out).
pub fn tensors(run: &Path) -> Vec<(String, tch::Tensor)> {
    let mut t = tch::Tensor::read_safetensors(run.join("checkpoint.safetensors")).unwrap();
    t.retain(|(n, _)| n != "checkpoint.save_id");
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}
