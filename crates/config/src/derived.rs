//! Defaults that follow other keys when the user leaves them unset, so that a small run is not
//! refused for a default it never chose, and an evaluation runs at the size the model trained
//! at. A key the user set (preset file or `--set`) is never changed: the validation then
//! refuses a conflicting value with its key and the reason.

use crate::Config;

/// Whether `section.key` is present in the parsed TOML (preset and overrides applied).
fn is_set(table: &toml::Table, section: &str, key: &str) -> bool {
    table
        .get(section)
        .and_then(toml::Value::as_table)
        .is_some_and(|t| t.contains_key(key))
}

/// The run folder name for data at `path`: its last component, or for a split folder
/// (`train`, `training`) the dataset's name before it (`photos/train` → `photos`). `None` for
/// an empty path or one without a usable name.
/// `name` with every character other than a letter, a digit, `-`, `_` or `.` replaced by `_`:
/// the rule for folder names the product makes from user paths (the run folder named after the
/// data folder, `dino attention`'s folder per image).
pub fn file_safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn run_name(path: &str) -> Option<String> {
    let p = std::path::Path::new(path.trim());
    let mut parts = p.components().rev().filter_map(|c| match c {
        std::path::Component::Normal(s) => s.to_str(),
        _ => None,
    });
    let last = parts.next()?;
    let name = if ["train", "training"].contains(&last.to_ascii_lowercase().as_str()) {
        parts.next().unwrap_or(last)
    } else {
        last
    };
    let name = file_safe_name(name);
    (!name.is_empty()).then_some(name)
}

/// Fills the keys of `cfg` that follow others when `table` (the user's document) leaves them
/// unset, and returns one note per value that differs from its fixed default, in the words a
/// log line shows:
///
/// - `eval.crop_size` follows `augmentation.global_crops_size` (a model trained on 48-px
///   crops is evaluated at 48, not at the official 224; `eval.resize_ratio` stays the official
///   256/224, so the resize side is crop × 256/224 as `Resize(256) + CenterCrop(224)`);
/// - `schedule.warmup_epochs` (official 10) is capped at `optim.epochs`;
/// - `eval.n_last_blocks` (official 4) is capped at the ViT's depth;
/// - `checkpoint.output_dir` is `runs/<data folder name>` when `data.path` is given.
pub(crate) fn apply(cfg: &mut Config, table: &toml::Table) -> Vec<String> {
    let mut notes = Vec::new();
    if !is_set(table, "eval", "crop_size") {
        let side = cfg.augmentation.global_crops_size;
        if cfg.eval.crop_size != side {
            notes.push(format!(
                "eval.crop_size = {side} (unset: follows augmentation.global_crops_size; set \
                 eval.crop_size to evaluate at another size)"
            ));
        }
        cfg.eval.crop_size = side;
    }
    if !is_set(table, "schedule", "warmup_epochs") && cfg.schedule.warmup_epochs > cfg.optim.epochs
    {
        notes.push(format!(
            "schedule.warmup_epochs = {} (unset: the default {} capped at optim.epochs = {})",
            cfg.optim.epochs, cfg.schedule.warmup_epochs, cfg.optim.epochs
        ));
        cfg.schedule.warmup_epochs = cfg.optim.epochs;
    }
    if !is_set(table, "checkpoint", "output_dir") {
        if let Some(name) = run_name(&cfg.data.path) {
            let dir = format!("runs/{name}");
            notes.push(format!(
                "checkpoint.output_dir = \"{dir}\" (unset: named after the data folder)"
            ));
            cfg.checkpoint.output_dir = dir;
        }
    }
    let depth = cfg.model.dims().1;
    if !cfg.model.arch.is_resnet()
        && !is_set(table, "eval", "n_last_blocks")
        && cfg.eval.n_last_blocks > depth
        && depth > 0
    {
        notes.push(format!(
            "eval.n_last_blocks = {depth} (unset: the default {} capped at the model depth {depth})",
            cfg.eval.n_last_blocks
        ));
        cfg.eval.n_last_blocks = depth;
    }
    notes
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn unset_keys_follow_and_set_keys_stay() {
        // Official defaults stay the official values: 224 crops, warm-up 10 of 100 epochs,
        // n_last_blocks 4 of ViT-S's 12 blocks (eval_linear.py).
        let (c, notes) = Config::from_toml_str_noted("", &[]).unwrap();
        assert_eq!(
            (
                c.eval.crop_size,
                c.schedule.warmup_epochs,
                c.eval.n_last_blocks
            ),
            (224, 10, 4)
        );
        assert!(notes.is_empty(), "{notes:?}");
        let small = "[augmentation]\nglobal_crops_size = 48\n[optim]\nepochs = 2\n\
                     [model]\narch = \"custom\"\ndepth = 2\nembed_dim = 32\nnum_heads = 2\n\
                     patch_size = 8\nimg_size = 48\n";
        let (c, notes) = Config::from_toml_str_noted(small, &[]).unwrap();
        assert_eq!(
            (
                c.eval.crop_size,
                c.schedule.warmup_epochs,
                c.eval.n_last_blocks
            ),
            (48, 2, 2)
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        let c = Config::from_toml_str("", &["data.path=\"/x/my photos/train/\""]).unwrap();
        assert_eq!(c.checkpoint.output_dir, "runs/my_photos");
        let c = Config::from_toml_str("", &["data.path=\"ants\"", "checkpoint.output_dir=\"r\""])
            .unwrap();
        assert_eq!(c.checkpoint.output_dir, "r");
        let c = Config::from_toml_str(small, &["eval.crop_size=64"]).unwrap();
        assert_eq!(c.eval.crop_size, 64);
        let err = Config::from_toml_str(small, &["schedule.warmup_epochs=10"]).unwrap_err();
        assert_eq!(err.key(), "schedule.warmup_epochs");
        let err = Config::from_toml_str(small, &["eval.n_last_blocks=4"]).unwrap_err();
        assert_eq!(err.key(), "eval.n_last_blocks");
    }

    /// Issue #33 item 10: a list as a shell user types it, and errors without Rust type names.
    #[test]
    fn lists_from_the_shell_and_plain_type_words() {
        let c = Config::from_toml_str("", &["augmentation.global_crops_scale=0.3,1.0"]).unwrap();
        assert_eq!(c.augmentation.global_crops_scale, [0.3, 1.0]);
        let err = Config::from_toml_str("", &["optim.epochs=2.5"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("expected a whole number (0 or more)"),
            "{text}"
        );
        assert!(!text.contains("usize"), "{text}");
        let err = Config::from_toml_str("", &["augmentation.global_crops_scale=0.3"]).unwrap_err();
        assert!(err.to_string().contains("[0.4, 1.0]"), "{err}");
    }
}
