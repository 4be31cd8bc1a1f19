//! Checkpoints: one safetensors file with every tensor of the run plus a JSON file with
//! everything else, written atomically, the latest kept as `checkpoint.*` and a numbered copy
//! `checkpoint{epoch:04}.*` every `saveckp_freq` epochs (official `main_dino.py` layout with
//! `.pth` replaced by a portable format and exact mid-epoch resume information added).
//!
//! Layout of `<dir>`:
//! - `checkpoint.safetensors`: `student.<name>`, `teacher.<name>` (VarStore names, which mirror
//!   the PyTorch state dict), `optim.<state name>` ([`crate::optim::Optimizer::state_tensors`]),
//!   `scaler.scale` and `scaler.growth_tracker` under fp16 ([`crate::grad_scaler::GradScaler`]),
//!   each centering state of the loss under its own name (DINO's `center`, `[1, K]`; none for
//!   the supervised objective), and `checkpoint.save_id` (`[1]` Int64) tying it to its JSON;
//! - `checkpoint.json`: [`CheckpointMeta`].
//!
//! Save order: both files are written to `*.tmp` and fsynced, then the tensors are renamed into
//! place, then the JSON. A crash leaves either the previous pair, or new tensors with the
//! previous JSON (detected by the save id; [`load_latest`] then finishes the interrupted save
//! from `checkpoint.json.tmp`). Leftover temporary files are otherwise ignored.

use dino_config::{Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, TchError, Tensor};

/// Base name of the latest checkpoint.
pub const LATEST: &str = "checkpoint";
/// Current value of [`CheckpointMeta::format_version`].
pub const FORMAT_VERSION: u32 = 1;
const SAVE_ID: &str = "checkpoint.save_id";

/// Errors while writing or reading checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// No checkpoint in the folder.
    #[error("no checkpoint in {dir} (expected {LATEST}.json and {LATEST}.safetensors)")]
    NotFound {
        /// The folder searched.
        dir: PathBuf,
    },
    /// A file exists but cannot be used.
    #[error("checkpoint file {path} is unreadable or corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint does not fit the model / optimizer it is restored into.
    #[error("checkpoint does not match: {0}")]
    Mismatch(String),
    /// File system error.
    #[error("{op} {path}: {cause}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error (in the message only, so an error chain prints it once).
        cause: std::io::Error,
    },
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] TchError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |cause| CheckpointError::Io { op, path, cause }
}

/// Everything of a checkpoint that is not a tensor (`checkpoint.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Random id shared with the tensor file's `checkpoint.save_id`; set by [`save_checkpoint`].
    pub save_id: u64,
    /// The resolved run configuration as TOML (`Config::to_toml_string`; read back with
    /// `Config::from_toml_str`). TOML text keeps every float exact, which JSON parsing by
    /// `serde_json` without `float_roundtrip` does not guarantee.
    pub config_toml: String,
    /// Epoch to resume in (0-based). After a completed epoch `e` this is `e + 1`, as the
    /// official `epoch + 1` in `checkpoint.pth`.
    pub epoch: usize,
    /// Optimizer steps already done within `epoch` (0 at an epoch boundary); with
    /// `optim.accum_steps` = N each is N micro-batches, and checkpoints are written at step
    /// boundaries only.
    pub step_in_epoch: usize,
    /// Global iteration to resume at, `epoch * niter_per_epoch + step_in_epoch` (schedule index).
    pub global_iter: usize,
    /// Samples of `epoch` already consumed by the data loader over all ranks (its resume
    /// position): `step_in_epoch · batch_size · accum_steps · world_size`.
    pub data_position: u64,
    /// Processes that trained the run (1 for checkpoints written before multi-process runs).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Run seed.
    pub seed: u64,
    /// Software versions (e.g. `dino`, `libtorch`), free-form.
    pub versions: BTreeMap<String, String>,
    /// Summary metrics (e.g. the last epoch's means), free-form.
    pub metrics: serde_json::Value,
    /// Forward precision of the invocation that wrote this checkpoint, `fp32` or `bf16`
    /// (`runtime.precision` with `auto` resolved on its machine; `config_toml` keeps `auto`).
    /// Empty in checkpoints written before it was recorded.
    #[serde(default)]
    pub precision: String,
    /// Written inside an epoch (`step_in_epoch` > 0): the running sums of that epoch's summary
    /// over its `step_in_epoch` steps done, so that a resumed run's epoch summary covers the
    /// whole epoch ([`crate::epoch_sums`]). Absent at epoch boundaries and in checkpoints
    /// written before it was recorded (their resumed epoch is summarised over the steps after
    /// the resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_sums: Option<crate::epoch_sums::EpochSums>,
}

fn one() -> usize {
    1
}

impl CheckpointMeta {
    /// Metadata for a save at (`epoch`, `step_in_epoch`) of the run configured by `config`
    /// (stored as TOML; `seed` taken from `runtime.seed`); the other fields empty / zero.
    pub fn new(config: &Config, epoch: usize, step_in_epoch: usize, global_iter: usize) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            save_id: 0,
            config_toml: config.to_toml_string(),
            epoch,
            step_in_epoch,
            global_iter,
            data_position: 0,
            world_size: 1,
            seed: config.runtime.seed,
            versions: BTreeMap::new(),
            metrics: serde_json::Value::Null,
            precision: String::new(),
            epoch_sums: None,
        }
    }

    /// The saved configuration, parsed and validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::from_toml_str(&self.config_toml, &[])
    }
}

/// The tensors of a checkpoint, borrowed from the trainer.
#[derive(Debug)]
pub struct CheckpointTensors<'a> {
    /// Student variables (saved as `student.<name>`).
    pub student: &'a VarStore,
    /// Teacher variables (`teacher.<name>`).
    pub teacher: &'a VarStore,
    /// Optimizer state, `Optimizer::state_tensors()` (`optim.<name>`).
    pub optim: Vec<(String, Tensor)>,
    /// fp16 loss-scaler state, `GradScaler::state_tensors()` (`scaler.<name>`); empty in other
    /// precisions.
    pub scaler: Vec<(String, Tensor)>,
    /// The loss's centering states, each saved under its name (DINO's center `[1, K]` as
    /// `center`, the name of every checkpoint before them; iBOT's patch center will be one
    /// more); empty for the supervised objective, which has none.
    pub centers: Vec<(&'static str, &'a Tensor)>,
}

/// Base name of the numbered copy kept for a finished (0-based) `epoch`:
/// `Some("checkpoint0020")` when `saveckp_freq > 0` and `epoch % saveckp_freq == 0` (the
/// official rule, which also keeps epoch 0), else `None`.
pub fn numbered_name(epoch: usize, saveckp_freq: usize) -> Option<String> {
    (saveckp_freq > 0 && epoch % saveckp_freq == 0).then(|| format!("{LATEST}{epoch:04}"))
}

fn fresh_save_id(global_iter: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 finaliser: distinct ids even for saves within one clock tick.
    let mut z = nanos ^ (global_iter as u64).rotate_left(32) ^ u64::from(std::process::id());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn fsync_file(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", path))
}

fn fsync_dir(dir: &Path) {
    // Directory fsync makes the renames durable; not supported everywhere, so best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn cpu_contiguous(t: &Tensor) -> Result<Tensor, TchError> {
    tch::no_grad(|| t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous())
}

fn collect_tensors(
    parts: &CheckpointTensors<'_>,
    save_id: u64,
) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let mut out = Vec::new();
    for (prefix, vs) in [("student", parts.student), ("teacher", parts.teacher)] {
        let sorted: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        for (name, t) in sorted {
            out.push((format!("{prefix}.{name}"), cpu_contiguous(&t)?));
        }
    }
    for (name, t) in &parts.optim {
        out.push((format!("optim.{name}"), cpu_contiguous(t)?));
    }
    for (name, t) in &parts.scaler {
        out.push((format!("scaler.{name}"), cpu_contiguous(t)?));
    }
    for (name, center) in &parts.centers {
        out.push(((*name).into(), cpu_contiguous(center)?));
    }
    out.push((
        SAVE_ID.into(),
        Tensor::from_slice(&[save_id as i64]).f_to_kind(Kind::Int64)?,
    ));
    let mut seen = HashSet::new();
    for (n, _) in &out {
        if !seen.insert(n.as_str()) {
            return Err(CheckpointError::Mismatch(format!(
                "two tensors would be saved as `{n}`"
            )));
        }
    }
    Ok(out)
}

fn file_pair(dir: &Path, base: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{base}.safetensors")),
        dir.join(format!("{base}.json")),
    )
}

fn tmp_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes the latest checkpoint into `dir` (created if needed), atomically as described in the
/// module doc, and, when `numbered` is `Some(base)` (see [`numbered_name`]), a copy as
/// `<base>.safetensors` / `<base>.json` (hard link when possible). `meta.save_id` is filled in.
/// Returns the metadata written.
pub fn save_checkpoint(
    dir: &Path,
    parts: &CheckpointTensors<'_>,
    meta: &CheckpointMeta,
    numbered: Option<&str>,
) -> Result<CheckpointMeta, CheckpointError> {
    fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
    let mut meta = meta.clone();
    meta.format_version = FORMAT_VERSION;
    meta.save_id = fresh_save_id(meta.global_iter);
    let tensors = collect_tensors(parts, meta.save_id)?;
    let (st, js) = file_pair(dir, LATEST);
    let (st_tmp, js_tmp) = (tmp_of(&st), tmp_of(&js));

    Tensor::write_safetensors(&tensors, &st_tmp)?;
    fsync_file(&st_tmp)?;
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| CheckpointError::Corrupt {
        path: js_tmp.clone(),
        reason: format!("cannot serialise metadata: {e}"),
    })?;
    {
        let mut f = File::create(&js_tmp).map_err(io_err("create", &js_tmp))?;
        f.write_all(&json).map_err(io_err("write", &js_tmp))?;
        f.sync_all().map_err(io_err("fsync", &js_tmp))?;
    }
    fs::rename(&st_tmp, &st).map_err(io_err("rename", &st_tmp))?;
    fs::rename(&js_tmp, &js).map_err(io_err("rename", &js_tmp))?;
    fsync_dir(dir);

    if let Some(base) = numbered {
        let (nst, njs) = file_pair(dir, base);
        for (src, dst) in [(&st, &nst), (&js, &njs)] {
            let tmp = tmp_of(dst);
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(src, &tmp).is_err() {
                fs::copy(src, &tmp).map_err(io_err("copy", src))?;
                fsync_file(&tmp)?;
            }
            fs::rename(&tmp, dst).map_err(io_err("rename", &tmp))?;
        }
        fsync_dir(dir);
    }
    Ok(meta)
}

/// A checkpoint read back: metadata and every tensor (on the CPU), by full name.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// `checkpoint.json`.
    pub meta: CheckpointMeta,
    /// Every tensor of the safetensors file except the save id.
    pub tensors: BTreeMap<String, Tensor>,
}

fn read_meta(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn read_tensors(path: &Path) -> Result<(u64, BTreeMap<String, Tensor>), CheckpointError> {
    dino_model::check_safetensors(path).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let list = Tensor::read_safetensors(path).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut map: BTreeMap<String, Tensor> = list.into_iter().collect();
    let id = map
        .remove(SAVE_ID)
        .ok_or_else(|| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("no `{SAVE_ID}` entry (not a dino checkpoint?)"),
        })?
        .f_view([-1])?
        .f_int64_value(&[0])? as u64;
    Ok((id, map))
}

/// Loads the checkpoint `<dir>/<base>.{json,safetensors}` (e.g. `checkpoint0020`).
pub fn load_named(dir: &Path, base: &str) -> Result<LoadedCheckpoint, CheckpointError> {
    let (st, js) = file_pair(dir, base);
    if !st.exists() {
        return Err(CheckpointError::NotFound {
            dir: dir.to_path_buf(),
        });
    }
    let (id, tensors) = read_tensors(&st)?;
    let js_tmp = tmp_of(&js);
    let meta = match js.exists().then(|| read_meta(&js)).transpose() {
        Ok(Some(m)) if m.save_id == id => m,
        found => {
            // Interrupted between the two renames: the finished JSON is still in `.tmp`.
            if let Ok(m) = read_meta(&js_tmp) {
                if m.save_id == id {
                    fs::rename(&js_tmp, &js).map_err(io_err("rename", &js_tmp))?;
                    return Ok(LoadedCheckpoint { meta: m, tensors });
                }
            }
            return Err(match found {
                Err(e) => e,
                Ok(None) => CheckpointError::Corrupt {
                    path: js,
                    reason: "missing while the tensor file exists".into(),
                },
                Ok(Some(m)) => CheckpointError::Corrupt {
                    path: st,
                    reason: format!(
                        "save id {id:#x} does not match {base}.json ({:#x}); the files come \
                         from different saves",
                        m.save_id
                    ),
                },
            });
        }
    };
    if meta.format_version > FORMAT_VERSION {
        return Err(CheckpointError::Corrupt {
            path: js,
            reason: format!(
                "format version {} is newer than this program's {FORMAT_VERSION}",
                meta.format_version
            ),
        });
    }
    Ok(LoadedCheckpoint { meta, tensors })
}

/// Loads the latest checkpoint of `dir`. Errors: [`CheckpointError::NotFound`] when there is
/// none, [`CheckpointError::Corrupt`] naming the bad file otherwise.
pub fn load_latest(dir: &Path) -> Result<LoadedCheckpoint, CheckpointError> {
    load_named(dir, LATEST)
}

impl LoadedCheckpoint {
    /// Entries under `prefix.` with the prefix removed.
    pub fn group(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(&p)
                    .map(|s| (s.to_string(), t.shallow_clone()))
            })
            .collect()
    }

    fn restore(&self, prefix: &str, vs: &VarStore) -> Result<(), CheckpointError> {
        let saved: BTreeMap<String, Tensor> = self.group(prefix).into_iter().collect();
        let vars = vs.variables();
        let missing: Vec<&String> = vars.keys().filter(|n| !saved.contains_key(*n)).collect();
        let extra: Vec<&String> = saved.keys().filter(|n| !vars.contains_key(*n)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(CheckpointError::Mismatch(format!(
                "{prefix}: {} variables missing from the checkpoint (e.g. {:?}), {} unexpected \
                 (e.g. {:?})",
                missing.len(),
                missing.iter().take(3).collect::<Vec<_>>(),
                extra.len(),
                extra.iter().take(3).collect::<Vec<_>>()
            )));
        }
        for (name, var) in &vars {
            let src = &saved[name];
            if src.size() != var.size() {
                return Err(CheckpointError::Mismatch(format!(
                    "{prefix}.{name}: saved shape {:?}, model shape {:?}",
                    src.size(),
                    var.size()
                )));
            }
        }
        tch::no_grad(|| -> Result<(), TchError> {
            for (name, var) in &vars {
                var.shallow_clone().f_copy_(&saved[name])?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Copies `student.*` into `vs` (same names and shapes required, both ways).
    pub fn restore_student(&self, vs: &VarStore) -> Result<(), CheckpointError> {
        self.restore("student", vs)
    }

    /// Copies `teacher.*` into `vs` (same names and shapes required, both ways).
    pub fn restore_teacher(&self, vs: &VarStore) -> Result<(), CheckpointError> {
        self.restore("teacher", vs)
    }

    /// The optimizer state with the `optim.` prefix removed, for `Optimizer::load_state`.
    pub fn optim_state(&self) -> Vec<(String, Tensor)> {
        self.group("optim")
    }

    /// The fp16 loss-scaler state with the `scaler.` prefix removed, for
    /// `GradScaler::load_state`; empty when the run was not trained in fp16.
    pub fn scaler_state(&self) -> Vec<(String, Tensor)> {
        self.group("scaler")
    }

    /// The DINO loss center `[1, K]` (`center`).
    pub fn center(&self) -> Result<&Tensor, CheckpointError> {
        self.center_state("center")
    }

    /// The centering state saved under `name` (see [`CheckpointTensors::centers`]).
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] naming the missing state.
    pub fn center_state(&self, name: &str) -> Result<&Tensor, CheckpointError> {
        self.tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Mismatch(format!("no `{name}` tensor")))
    }
}
