//! Values that follow other keys, so that a small run is not refused for a default or a
//! preset value it never chose, and an evaluation runs at the size the model trained at. A key
//! set on the command line (`--set`) is never changed: the validation then refuses a
//! conflicting value with its key and the reason.

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

/// Fills the keys of `cfg` that follow others when the user leaves them unset, and returns one
/// note per value that differs from what the defaults and the config file gave, in the words a
/// log line shows. `table` is the whole document (config file and overrides), `cli` the
/// overrides alone (`--set` and the flags that stand for one):
///
/// - `eval.crop_size` follows `augmentation.global_crops_size` when `table` leaves it unset (a
///   model trained on 48-px crops is evaluated at 48, not at the official 224;
///   `eval.resize_ratio` stays the official 256/224, so the resize side is crop × 256/224 as
///   `Resize(256) + CenterCrop(224)`);
/// - the keys bounded by the run ([`BOUNDED`]: warm-up and freezing epochs at most
///   `optim.epochs`, `eval.n_last_blocks` at most the ViT's depth) are scaled down to the bound
///   when their value came from the defaults or the config file (a preset written for 100
///   epochs run with `--epochs 2`); a value given on the command line is left for the
///   validation to refuse, with its key and the reason;
/// - `checkpoint.output_dir` is `runs/<data folder name>` when `data.path` is given.
pub(crate) fn apply(cfg: &mut Config, table: &toml::Table, cli: &toml::Table) -> Vec<String> {
    let mut notes = Vec::new();
    round_crops_to_patch(cfg, table, &mut notes);
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
    for b in BOUNDED {
        let Some(limit) = (b.limit)(cfg) else {
            continue;
        };
        let value = (b.get)(cfg);
        if value <= limit || is_set(cli, b.section, b.key) {
            continue;
        }
        let key = format!("{}.{}", b.section, b.key);
        let bound = b.bound.replace("{}", &limit.to_string());
        notes.push(if is_set(table, b.section, b.key) {
            format!(
                "{key} = {limit} (the config file's {value} capped at {bound}: it was not set \
                 on the command line)"
            )
        } else {
            format!("{key} = {limit} (unset: the default {value} capped at {bound})")
        });
        (b.set)(cfg, limit);
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
    notes
}

/// Crop sizes left unset that the ViT's patch does not divide (the official 96-px local crops
/// under DINOv2's patch 14, a file of `dino import`) round up to the next multiple of the patch
/// (96 → 98, DINOv2's own local crop size), with a note; a size the config file or `--set` gives
/// is left for the validation to refuse with its key.
fn round_crops_to_patch(cfg: &mut Config, table: &toml::Table, notes: &mut Vec<String>) {
    let patch = cfg.model.patch_size as u32;
    if cfg.model.arch.is_resnet() || patch == 0 {
        return;
    }
    let a = &mut cfg.augmentation;
    for (key, size) in [
        ("global_crops_size", &mut a.global_crops_size),
        ("local_crops_size", &mut a.local_crops_size),
    ] {
        if *size % patch == 0 || is_set(table, "augmentation", key) {
            continue;
        }
        let rounded = size.div_ceil(patch) * patch;
        notes.push(format!(
            "augmentation.{key} = {rounded} (unset: the default {size} rounded up to a multiple \
             of model.patch_size = {patch})"
        ));
        *size = rounded;
    }
}

/// A key whose value must not exceed a bound the run sets (`validate` refuses it above).
struct Bounded {
    section: &'static str,
    key: &'static str,
    /// The bound in a log line's words, `{}` standing for its value.
    bound: &'static str,
    /// The bound, `None` where the key does not apply (`n_last_blocks` on a ResNet).
    limit: fn(&Config) -> Option<usize>,
    get: fn(&Config) -> usize,
    set: fn(&mut Config, usize),
}

/// Every key bounded by the run's length or the model's depth: the warm-ups and freezes (in
/// epochs, at most `optim.epochs`; the official schedules assert the same) and the blocks the
/// linear probe concatenates (at most the ViT's depth).
const BOUNDED: [Bounded; 5] = [
    Bounded {
        section: "schedule",
        key: "warmup_epochs",
        bound: "optim.epochs = {}",
        limit: |c| Some(c.optim.epochs),
        get: |c| c.schedule.warmup_epochs,
        set: |c, v| c.schedule.warmup_epochs = v,
    },
    Bounded {
        section: "loss",
        key: "warmup_teacher_temp_epochs",
        bound: "optim.epochs = {}",
        limit: |c| Some(c.optim.epochs),
        get: |c| c.loss.warmup_teacher_temp_epochs,
        set: |c, v| c.loss.warmup_teacher_temp_epochs = v,
    },
    Bounded {
        section: "schedule",
        key: "freeze_last_layer",
        bound: "optim.epochs = {}",
        limit: |c| Some(c.optim.epochs),
        get: |c| c.schedule.freeze_last_layer,
        set: |c, v| c.schedule.freeze_last_layer = v,
    },
    Bounded {
        section: "schedule",
        key: "freeze_backbone_epochs",
        bound: "optim.epochs = {}",
        limit: |c| Some(c.optim.epochs),
        get: |c| c.schedule.freeze_backbone_epochs,
        set: |c, v| c.schedule.freeze_backbone_epochs = v,
    },
    Bounded {
        section: "eval",
        key: "n_last_blocks",
        bound: "the model depth {}",
        limit: |c| {
            let depth = c.model.dims().1;
            (!c.model.arch.is_resnet() && depth > 0).then_some(depth)
        },
        get: |c| c.eval.n_last_blocks,
        set: |c, v| c.eval.n_last_blocks = v,
    },
];

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

    /// A preset written for a long run, run short (`--epochs 2`) or shallow: every bounded key
    /// that came from the file is scaled with a note naming the file's value; the same value
    /// given with `--set` is refused with its key.
    #[test]
    fn preset_values_are_scaled_and_set_values_refused() {
        let preset = "[optim]\nepochs = 100\n[schedule]\nwarmup_epochs = 10\n\
                      freeze_last_layer = 5\nfreeze_backbone_epochs = 4\n\
                      [loss]\nwarmup_teacher_temp_epochs = 30\n[eval]\nn_last_blocks = 4\n";
        let (c, notes) = Config::from_toml_str_noted(preset, &[]).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(c.loss.warmup_teacher_temp_epochs, 30);
        let (c, notes) = Config::from_toml_str_noted(
            preset,
            &["optim.epochs=2", "model.arch=custom", "model.depth=3"],
        )
        .unwrap();
        assert_eq!(
            (
                c.schedule.warmup_epochs,
                c.loss.warmup_teacher_temp_epochs,
                c.schedule.freeze_last_layer,
                c.schedule.freeze_backbone_epochs,
                c.eval.n_last_blocks
            ),
            (2, 2, 2, 2, 3)
        );
        assert!(
            notes.contains(
                &"schedule.warmup_epochs = 2 (the config file's 10 capped at optim.epochs = 2: \
                  it was not set on the command line)"
                    .to_string()
            ),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.starts_with(
                "eval.n_last_blocks = 3 (the config file's 4 capped at the model depth 3"
            )),
            "{notes:?}"
        );
        assert_eq!(notes.len(), 5, "{notes:?}");
        for set in [
            "schedule.warmup_epochs=3",
            "loss.warmup_teacher_temp_epochs=3",
            "schedule.freeze_last_layer=3",
            "schedule.freeze_backbone_epochs=3",
        ] {
            let err = Config::from_toml_str(preset, &["optim.epochs=2", set]).unwrap_err();
            assert_eq!(Some(err.key()), set.split('=').next(), "{err}");
            assert!(
                err.to_string().contains("must not exceed optim.epochs (2)"),
                "{err}"
            );
        }
        // A value that fits is the user's, scaled or not.
        let c =
            Config::from_toml_str(preset, &["optim.epochs=2", "schedule.warmup_epochs=1"]).unwrap();
        assert_eq!(
            (c.schedule.warmup_epochs, c.schedule.freeze_last_layer),
            (1, 2)
        );
    }

    /// DINOv2's patch 14 with the official crop sizes: the unset local size becomes 98 (DINOv2's
    /// `local_crops_size`), the global 224 already fits; a size the user gave is refused.
    #[test]
    fn unset_crop_sizes_round_up_to_the_patch() {
        let (c, notes) = Config::from_toml_str_noted("", &["model.patch_size=14"]).unwrap();
        assert_eq!(
            (
                c.augmentation.global_crops_size,
                c.augmentation.local_crops_size
            ),
            (224, 98)
        );
        assert_eq!(
            notes,
            vec![
                "augmentation.local_crops_size = 98 (unset: the default 96 rounded up to a \
                  multiple of model.patch_size = 14)"
                    .to_string()
            ]
        );
        let (c, notes) = Config::from_toml_str_noted("", &[]).unwrap();
        assert_eq!(c.augmentation.local_crops_size, 96);
        assert!(notes.is_empty(), "{notes:?}");
        let err = Config::from_toml_str(
            "",
            &["model.patch_size=14", "augmentation.local_crops_size=96"],
        )
        .unwrap_err();
        assert_eq!(err.key(), "augmentation.local_crops_size");
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
