//! `dino train`: the self-distillation loop, or the supervised baseline (`--objective
//! supervised`).

use crate::args::{toml_str, ConfigArgs};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Training images (overrides data.path).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run folder for checkpoints and metrics (overrides checkpoint.output_dir).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// What to train (overrides method.objective): `dino` self-distillation, or `supervised`,
    /// the baseline with the same backbone, augmentation and optimizer, a linear classifier on
    /// the CLS feature and cross-entropy on the dataset's labels.
    #[arg(long, value_parser = ["dino", "supervised"])]
    objective: Option<String>,
    /// Continue the run in DIR from its latest checkpoint, with the configuration stored there
    /// (the run's checkpoint.safetensors is taken as its folder).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Start student and teacher from FILE: a `dino import` file (official weights) or one of
    /// our runs (a run folder or its checkpoint.safetensors; the teacher is used). The backbone
    /// must match the configured model (a `dino import` file brings its own model keys, over
    /// the preset's and under --set); the head is loaded when its shapes match, else it starts
    /// fresh (see schedule.freeze_backbone_epochs). Optimizer, schedules and center start fresh.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Epochs (shortcut for `--set optim.epochs=N`; official `--epochs`).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step and process (shortcut for `--set optim.batch_size=N`; official
    /// `--batch_size_per_gpu`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Backbone (shortcut for `--set model.arch=NAME`: vit_tiny, vit_small, vit_base, custom,
    /// resnet18, resnet34, resnet50; official `--arch`).
    #[arg(long)]
    arch: Option<String>,
    /// Stop after this many iterations of this session (smoke tests; counted from the resume
    /// point with --resume); the schedules still span the epochs.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Print plain log lines instead of a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let mut sets = Vec::new();
    if let Some(d) = &a.data {
        sets.push(format!("data.path={}", toml_str(d)));
    }
    if let Some(o) = &a.objective {
        sets.push(format!("method.objective={o}"));
    }
    // The shortcuts go in as the --set they stand for, so an error names them.
    let mut user_sets = Vec::new();
    if let Some(e) = a.epochs {
        user_sets.push(format!("optim.epochs={e}"));
    }
    if let Some(b) = a.batch_size {
        user_sets.push(format!("optim.batch_size={b}"));
    }
    if let Some(arch) = &a.arch {
        user_sets.push(format!("model.arch={}", toml::Value::String(arch.clone())));
    }
    let mut a = a;
    user_sets.append(&mut a.config.set);
    // The run folder of a new run: --output (after the user's sets, so it wins), else a --set
    // of checkpoint.output_dir, else with --data `runs/<data folder>` (a preset's output_dir
    // names the preset's own data set, not the photos it is pointed at), else the config's.
    // A resumed run stays in its folder.
    if a.resume.is_none() {
        let set_by_user = user_sets
            .iter()
            .any(|s| s.split('=').next().map(str::trim) == Some("checkpoint.output_dir"));
        if let Some(o) = &a.output {
            user_sets.push(format!("checkpoint.output_dir={}", toml_str(o)));
        } else if let (Some(d), false) = (&a.data, set_by_user) {
            // The config crate's rule for an unset output_dir (`runs/<data folder>`), applied
            // to --data alone.
            let data = format!("data.path={}", toml_str(d));
            if let Ok(named) = dino_config::Config::from_toml_str("", &[&data]) {
                let dir = named.checkpoint.output_dir;
                tracing::info!(
                    "checkpoint.output_dir = \"{dir}\" (named after --data; --output DIR to choose)"
                );
                sets.push(format!(
                    "checkpoint.output_dir={}",
                    toml::Value::String(dir)
                ));
            }
        }
    }
    a.config.set = user_sets;
    if let Some(path) = a.resume.take() {
        a.resume = Some(resume_folder(&path)?);
    }
    let cfg = if let Some(dir) = &a.resume {
        anyhow::ensure!(
            a.config.config.is_none() && a.data.is_none(),
            "--resume takes the configuration stored in the run folder; drop --config/--data"
        );
        let text = std::fs::read_to_string(dir.join("config.toml")).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (not a dino run folder?)",
                dir.join("config.toml").display()
            )
        })?;
        sets.push(format!("checkpoint.output_dir={}", toml_str(dir)));
        let own: Vec<&str> = sets.iter().map(String::as_str).collect();
        let stored = dino_config::Config::from_toml_str(&text, &own).map_err(|e| {
            anyhow::anyhow!(
                "the stored configuration {}: {e}",
                dir.join("config.toml").display()
            )
        })?;
        let all: Vec<&str> = sets
            .iter()
            .chain(a.config.set.iter())
            .map(String::as_str)
            .collect();
        // The stored configuration was valid: an error now comes from the --set on top.
        let cfg = dino_config::Config::from_toml_str(&text, &all).map_err(|e| {
            let given: Vec<String> = a.config.set.iter().map(|s| format!("--set {s}")).collect();
            anyhow::anyhow!(
                "{e} (from {} on the stored configuration)",
                given.join(", ")
            )
        })?;
        for change in changed_keys(&stored, &cfg) {
            tracing::warn!("resumed with a change to the stored configuration: {change}");
        }
        cfg
    } else {
        // A `dino import` file carries its model keys: over the preset's, under --set.
        let file_model = match &a.init_from {
            Some(f) => crate::stored_model::FileModel::read(f)?,
            None => None,
        };
        match &file_model {
            Some(fm) => {
                sets.extend(fm.sets());
                let cfg = a.config.load(&sets).with_context(|| {
                    format!(
                        "with the model keys stored in {}",
                        a.init_from.as_deref().unwrap_or(Path::new("")).display()
                    )
                })?;
                fm.report(&cfg, &a.config.set);
                cfg
            }
            None => a.config.load(&sets)?,
        }
    };
    if a.config.config.is_none() && a.resume.is_none() && !tch::Cuda::is_available() {
        tracing::warn!(
            "no --config: the official recipe ({} at {} px, {} epochs) runs for many hours on a \
             CPU. For a CPU start from a preset: configs/cifar10_cpu.toml (32-px images), \
             configs/imagenette_cpu.toml (photos at 48 px), e.g. dino train --config \
             configs/imagenette_cpu.toml --data {}",
            cfg.model.arch.name(),
            cfg.augmentation.global_crops_size,
            cfg.optim.epochs,
            crate::train::shell_word(&cfg.data.path)
        );
    }
    if let Some(note) = split_folders_note(&cfg.data) {
        tracing::warn!("{note}");
    }
    // One process only: under a launcher every rank would have to agree on the stopping step,
    // so there a signal keeps its default action.
    let single = std::env::var("WORLD_SIZE").map_or(true, |w| w.trim() == "1");
    let stop = if single {
        crate::signals::install()?;
        Some(&crate::signals::STOP)
    } else {
        None
    };
    let opts = dino_train::trainer::TrainOptions {
        resume: a.resume.is_some(),
        max_steps: a.max_steps,
        progress: !a.no_progress,
        init_from: a.init_from,
        stop,
    };
    let summary = dino_train::trainer::train(&cfg, &opts)?;
    if summary.rank != 0 {
        // Rank 0 reports for the whole job.
        return Ok(());
    }
    if summary.interrupted {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        let (name, number) = crate::signals::received().unwrap_or(("SIGINT", libc::SIGINT));
        let dir = &summary.output_dir;
        let (e, st) = last_step_done(
            summary.epoch,
            summary.step_in_epoch,
            summary.steps_per_epoch,
        );
        eprintln!(
            "{name}: stopped at epoch {e}/{}, step {st}/{} (global step {} of {}) after {} steps \
             this session; checkpoint written to {}\nresume with:\n  dino train --resume {}",
            cfg.optim.epochs,
            summary.steps_per_epoch,
            summary.epoch * summary.steps_per_epoch + summary.step_in_epoch,
            cfg.optim.epochs * summary.steps_per_epoch,
            summary.steps,
            dir.join("checkpoint.safetensors").display(),
            shell_word(&dir.display().to_string())
        );
        // The shell's convention for a process ended by a signal (130 for SIGINT).
        std::process::exit(128 + number);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if summary.steps == 0 {
        // A resumed run that had already finished: no loss to report.
        eprintln!(
            "nothing left to train: run folder {} has finished its schedule",
            summary.output_dir.display()
        );
    } else {
        let niter = summary.steps_per_epoch;
        let done = summary.epoch * niter + summary.step_in_epoch;
        let (e, st) = last_step_done(summary.epoch, summary.step_in_epoch, niter);
        let last = if st == niter {
            format!("mean of epoch {e}")
        } else {
            format!("mean of epoch {e}'s {st} steps so far")
        };
        eprintln!(
            "trained {} this session; run {done} of {} steps (epoch {e}/{}, step {st}/{niter}); \
             on {} in {}{}: loss {:.4} (this session's first step) → {:.4} ({last}), {:.1} \
             images/s this session{}, data wait {:.1}%, run folder {}",
            match summary.steps {
                1 => "1 step".to_string(),
                n => format!("{n} steps"),
            },
            cfg.optim.epochs * niter,
            cfg.optim.epochs,
            summary.device,
            summary.precision,
            if summary.world_size > 1 {
                format!(" × {} processes", summary.world_size)
            } else {
                String::new()
            },
            summary.first_loss,
            summary.last_loss,
            summary.images_per_s,
            if summary.world_size > 1 {
                " per process"
            } else {
                ""
            },
            100.0 * summary.data_wait_fraction,
            summary.output_dir.display()
        );
    }
    Ok(())
}

/// The last step done before resume position (`epoch`, `step`) (0-based, `step` steps of
/// `epoch` done; `niter` steps an epoch) as the progress lines number it, 1-based
/// `(epoch, step)`: position (3, 0) is step `niter` of epoch 3, not step 0 of epoch 4.
fn last_step_done(epoch: usize, step: usize, niter: usize) -> (usize, usize) {
    if step == 0 && epoch > 0 {
        (epoch, niter)
    } else {
        (epoch + 1, step)
    }
}

/// The run folder `dino train --resume PATH` continues: PATH itself when it is not a file; for
/// a weights file inside a run folder (`runs/X/checkpoint.safetensors`, as `--checkpoint`
/// takes it for the evaluations) that folder, said in one log line.
///
/// # Errors
/// A file outside any run folder, and a folder that does not exist (naming the run folders
/// beside it), each in one line saying what to pass.
fn resume_folder(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let shown = shell_word(&path.display().to_string());
    if path.is_file() {
        let dir = crate::run_weights::run_folder_of(path)
            .filter(|d| d.join("config.toml").is_file())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--resume takes a run folder (the folder of `dino train` holding config.toml \
                     and checkpoint.safetensors), and {shown} is a file outside any: pass the \
                     run folder it came from, or start a new run from its weights with \
                     --init-from {shown}"
                )
            })?;
        let folder = shell_word(&dir.display().to_string());
        if path.file_name() == Some(std::ffi::OsStr::new("checkpoint.safetensors")) {
            tracing::info!(
                "{shown} is the latest checkpoint of run folder {folder}: resuming that run"
            );
        } else {
            tracing::warn!(
                "{shown} is in run folder {folder}: resuming that run from its latest checkpoint \
                 ({folder}/checkpoint.safetensors), not from this file (--init-from {shown} \
                 starts a new run from its weights)"
            );
        }
        return Ok(dir);
    }
    if !path.exists() {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut runs: Vec<String> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().join("config.toml").is_file())
            .map(|e| shell_word(&e.path().display().to_string()))
            .collect();
        runs.sort();
        anyhow::ensure!(
            runs.is_empty(),
            "--resume {shown}: no such run folder; the run folders in {} are {} (the first line \
             of `dino train` names the one it writes)",
            parent.display(),
            runs.join(", ")
        );
    }
    Ok(path.to_path_buf())
}

/// `word` as one shell word: unchanged when it holds only safe characters, else single-quoted.
pub fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A warning when the data folder holds split folders (`train/` with `val/`, `valid/`,
/// `validation/` or `test/`) that a class-folder layout would take as classes: the usual
/// mistake of pointing `--data` at a dataset's root instead of its training split.
pub fn split_folders_note(data: &dino_config::DataConfig) -> Option<String> {
    use dino_config::DataFormat;
    if !matches!(data.format, DataFormat::Auto | DataFormat::ImageFolder) {
        return None;
    }
    let root = std::path::Path::new(&data.path);
    let dirs: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let find = |names: &[&str]| {
        dirs.iter()
            .find(|d| names.contains(&d.to_ascii_lowercase().as_str()))
            .cloned()
    };
    let train = find(&["train", "training"])?;
    let held = find(&["val", "valid", "validation", "test"])?;
    Some(format!(
        "{} holds the split folders {train}/ and {held}/: they are taken as classes (and \
         {held}/ trained on). Pass --data {} to train on the training split, and evaluate with \
         --train {} --val {}",
        root.display(),
        root.join(&train).display(),
        root.join(&train).display(),
        root.join(&held).display()
    ))
}

/// `key: old → new` for every key whose value differs between two resolved configurations
/// (a resume with `--set` or shortcut flags on top of the stored one).
fn changed_keys(before: &dino_config::Config, after: &dino_config::Config) -> Vec<String> {
    let flat = |c: &dino_config::Config| -> Vec<(String, String)> {
        let table: toml::Table = toml::from_str(&c.to_toml_string()).unwrap_or_default();
        let mut out = Vec::new();
        for (section, v) in &table {
            if let Some(t) = v.as_table() {
                for (k, v) in t {
                    out.push((format!("{section}.{k}"), v.to_string()));
                }
            }
        }
        out
    };
    let old = flat(before);
    flat(after)
        .into_iter()
        .filter_map(|(k, v)| {
            let was = old
                .iter()
                .find(|(ok, _)| *ok == k)
                .map(|(_, ov)| ov.clone())?;
            (was != v).then(|| format!("{k}: {was} → {v}"))
        })
        .collect()
}
