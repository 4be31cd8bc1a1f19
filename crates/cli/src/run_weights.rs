//! `--checkpoint FILE` where FILE is a run's own weights file, and the one-line message for
//! weights that do not fit the configured architecture.

use dino_config::Config;
use dino_eval::features::source::SourceError;
use std::path::{Path, PathBuf};

/// The run folder `file` sits in: its parent when `file` is a file and the parent holds the
/// run's `checkpoint.json` (so `runs/X/checkpoint.safetensors` is read with the run's own
/// configuration, as official users pass `--pretrained_weights checkpoint.pth`).
pub fn run_folder_of(file: &Path) -> Option<PathBuf> {
    if !file.is_file() {
        return None;
    }
    let dir = file.parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    dir.join("checkpoint.json")
        .is_file()
        .then(|| dir.to_path_buf())
}

/// The ViT a safetensors file holds under `prefix`: (depth, width, patch), from the tensor
/// shapes (`cls_token` [1, 1, D], `patch_embed.proj.weight` [D, 3, p, p], `blocks.N.`).
fn vit_in_file(file: &Path, prefix: &str) -> Option<(usize, i64, i64)> {
    let tensors = tch::Tensor::read_safetensors(file).ok()?;
    let mut depth = 0usize;
    let (mut width, mut patch) = (None, None);
    for (name, t) in &tensors {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        if rest == "cls_token" {
            width = t.size().last().copied();
        } else if rest == "patch_embed.proj.weight" {
            patch = t.size().last().copied();
        } else if let Some(n) = rest
            .strip_prefix("blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            depth = depth.max(n + 1);
        }
    }
    Some((depth, width?, patch?))
}

/// One line for a [`SourceError::Load`] (weights that do not fit the architecture): what the
/// file holds against what the configuration asks, and what to pass instead. `None` for any
/// other error, or a file whose ViT cannot be read off its shapes.
pub fn explain_mismatch(err: &SourceError, cfg: &Config) -> Option<String> {
    let SourceError::Load { file, prefix, .. } = err else {
        return None;
    };
    let (depth, width, patch) = vit_in_file(file, prefix)?;
    let (want_w, want_d, _) = cfg.model.dims();
    // Same depth, width and patch: the shapes are not the difference; the load error's own
    // list of missing and unexpected keys says what is.
    if (depth, width, patch) == (want_d, want_w as i64, cfg.model.patch_size as i64) {
        return None;
    }
    let hint = match run_folder_of(file) {
        Some(dir) => format!("pass --checkpoint {} (the run folder)", dir.display()),
        None => format!(
            "pass the configuration it was trained with (--config, or --set model.arch=custom \
             --set model.depth={depth} --set model.embed_dim={width} --set model.patch_size={patch} \
             and its model.num_heads)"
        ),
    };
    Some(format!(
        "{} holds a ViT of depth {depth}, width {width}, patch {patch}, but the configuration \
         asks for {} (depth {want_d}, width {want_w}, patch {}): {hint}",
        file.display(),
        cfg.model.arch.name(),
        cfg.model.patch_size
    ))
}
