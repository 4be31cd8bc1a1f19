//! `dino train --init-from FILE`: the student (and through it the teacher) starts from earlier
//! weights — a file of `dino import` (official `.pth` converted: `backbone.…`, maybe `head.…`),
//! or one of our runs (a run folder or its `checkpoint.safetensors`: the teacher's weights, as
//! the official code evaluates the teacher). The backbone must match the configured one exactly;
//! the head is loaded when the file has one of the same shapes, else it starts fresh (continuing
//! from released weights with a fresh head is what users report wrecks k-NN accuracy, dino#80,
//! #207, dinov2#204: `schedule.freeze_backbone_epochs` trains the head alone first). Optimizer,
//! schedules, center and epoch start fresh: this is not `--resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::Tensor;

/// Errors of [`init_student`].
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The file could not be read as safetensors.
    #[error("--init-from {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file's backbone is not the configured one.
    #[error("--init-from {path}: the backbone does not match the configured model ({count} problems):\n{list}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Mismatched, missing and unexpected keys (the first ten, one per line).
        list: String,
        /// How many in all.
        count: usize,
    },
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// What [`init_student`] loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The weight file read.
    pub file: PathBuf,
    /// Whether the weights are a run's teacher (`teacher.` entries of a checkpoint).
    pub from_teacher: bool,
    /// Backbone tensors loaded.
    pub backbone: usize,
    /// Head tensors loaded (0: the head starts fresh).
    pub head: usize,
    /// Why the head starts fresh (empty when it was loaded).
    pub fresh_head_reason: String,
}

impl InitReport {
    /// One line for the log.
    pub fn describe(&self) -> String {
        let source = if self.from_teacher { "teacher of " } else { "" };
        match self.head {
            0 => format!(
                "initialised from the {source}{}: backbone ({} tensors); the head starts fresh ({})",
                self.file.display(),
                self.backbone,
                self.fresh_head_reason
            ),
            h => format!(
                "initialised from the {source}{}: backbone ({} tensors) and head ({h} tensors)",
                self.file.display(),
                self.backbone
            ),
        }
    }
}

/// The named tensors of `path` for the student: a run folder reads its `checkpoint.safetensors`;
/// a checkpoint of ours gives its `teacher.` entries with the prefix removed; any other
/// safetensors file is taken as it is (`dino import`'s layout). Returns the file and whether the
/// teacher was used.
///
/// # Errors
/// [`InitError::Read`] for a missing or unreadable file.
pub fn read_init_weights(
    path: &Path,
) -> Result<(PathBuf, bool, BTreeMap<String, Tensor>), InitError> {
    let file = if path.is_dir() {
        path.join("checkpoint.safetensors")
    } else {
        path.to_path_buf()
    };
    let read = |reason: String| InitError::Read {
        path: file.clone(),
        reason,
    };
    if !file.is_file() {
        return Err(read("no such file (give a run folder, its checkpoint.safetensors, or a file of `dino import`)".into()));
    }
    dino_model::check_safetensors(&file).map_err(|e| read(e.to_string()))?;
    let all = Tensor::read_safetensors(&file).map_err(|e| read(e.to_string()))?;
    let teacher: BTreeMap<String, Tensor> = all
        .iter()
        .filter_map(|(n, t)| {
            n.strip_prefix("teacher.")
                .map(|s| (s.to_string(), t.shallow_clone()))
        })
        .collect();
    if !teacher.is_empty() {
        return Ok((file, true, teacher));
    }
    Ok((file, false, all.into_iter().collect()))
}

/// iBOT's `mask_token` (zeros at init in dinov2): a file may lack it (a DINO v1 checkpoint, a
/// run without iBOT, a hub file converted without it) and a model may lack it (iBOT off), so it
/// is copied when both have it and otherwise left as it is.
const OPTIONAL_BACKBONE: &str = "backbone.mask_token";

/// Copies the weights of `path` (see [`read_init_weights`]) into the student's variables
/// `student` (names `backbone.…`, `head.…`): every backbone variable must be in the file with
/// its shape, and the file must have no other backbone entry (iBOT's `backbone.mask_token`
/// excepted: copied when both have it, else left as initialised); the head is copied when every
/// head variable is there with its shape, else left as initialised. The caller copies the
/// student into the teacher.
///
/// # Errors
/// [`InitError::Mismatch`] naming (at most ten) mismatched shapes (`name: file [..] vs model
/// [..]`), missing and unexpected keys, with the count, before any variable is changed;
/// [`InitError::Read`].
pub fn init_student(path: &Path, student: &VarStore) -> Result<InitReport, InitError> {
    let (file, from_teacher, weights) = read_init_weights(path)?;
    let vars: BTreeMap<String, Tensor> = student.variables().into_iter().collect();
    let part = |prefix: &str| -> Vec<String> {
        vars.keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect()
    };
    let mut problems = Vec::new();
    for name in part("backbone.") {
        match weights.get(&name) {
            None if name == OPTIONAL_BACKBONE => {}
            None => problems.push(format!("{name}: missing from the file")),
            Some(t) if t.size() != vars[&name].size() => problems.push(format!(
                "{name}: file {:?} vs model {:?}",
                t.size(),
                vars[&name].size()
            )),
            Some(_) => {}
        }
    }
    for name in weights.keys() {
        let known = name.starts_with("backbone.") || name.starts_with("head.");
        if !vars.contains_key(name)
            && name != OPTIONAL_BACKBONE
            && (name.starts_with("backbone.") || !known)
        {
            problems.push(format!("{name}: unexpected (not in the model)"));
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        let mut list: Vec<String> = problems
            .into_iter()
            .take(10)
            .map(|p| format!("  {p}"))
            .collect();
        if count > 10 {
            list.push(format!("  … and {} more", count - 10));
        }
        return Err(InitError::Mismatch {
            path: file,
            list: list.join("\n"),
            count,
        });
    }
    let head = part("head.");
    let head_problem = head.iter().find_map(|name| match weights.get(name) {
        None => Some(format!("the file has no {name}")),
        Some(t) if t.size() != vars[name].size() => Some(format!(
            "{name}: file {:?} vs model {:?}",
            t.size(),
            vars[name].size()
        )),
        Some(_) => None,
    });
    let mut load: Vec<String> = part("backbone.")
        .into_iter()
        .filter(|n| weights.contains_key(n))
        .collect();
    if head_problem.is_none() {
        load.extend(head.iter().cloned());
    }
    tch::no_grad(|| -> Result<(), InitError> {
        for name in &load {
            vars[name].shallow_clone().f_copy_(&weights[name])?;
        }
        Ok(())
    })?;
    let backbone = load.iter().filter(|n| n.starts_with("backbone.")).count();
    Ok(InitReport {
        file,
        from_teacher,
        backbone,
        head: if head_problem.is_none() {
            head.len()
        } else {
            0
        },
        fresh_head_reason: head_problem.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::init_student;
    use tch::nn::VarStore;
    use tch::{Device, Kind, Tensor};

    fn model(mask_token: bool) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root();
        let _ = p.sub("backbone").zeros("w", &[2, 3]);
        if mask_token {
            let _ = p.sub("backbone").zeros("mask_token", &[1, 3]);
        }
        let _ = p.sub("head").zeros("b", &[4]);
        vs
    }

    fn file(dir: &std::path::Path, name: &str, mask_token: bool) -> std::path::PathBuf {
        let path = dir.join(name);
        let w = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
        let mut entries = vec![("backbone.w", w)];
        if mask_token {
            entries.push((
                "backbone.mask_token",
                Tensor::ones([1, 3], (Kind::Float, Device::Cpu)),
            ));
        }
        Tensor::write_safetensors(&entries, &path).unwrap();
        path
    }

    /// iBOT's mask_token is optional on either side: a file without it initialises an iBOT
    /// model (its token stays zeros, as dinov2 initialises it), a file with it initialises a
    /// model without iBOT; every other backbone weight is still required and copied.
    #[test]
    fn the_mask_token_is_optional_on_either_side() {
        let dir = tempfile::tempdir().unwrap();
        let without = file(dir.path(), "without.safetensors", false);
        let with = file(dir.path(), "with.safetensors", true);
        let ibot = model(true);
        let r = init_student(&without, &ibot).unwrap();
        assert_eq!(r.backbone, 1);
        let vars = ibot.variables();
        assert_eq!(vars["backbone.w"].sum(Kind::Float).double_value(&[]), 15.0);
        assert_eq!(
            vars["backbone.mask_token"]
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        let r = init_student(&with, &ibot).unwrap();
        assert_eq!(r.backbone, 2);
        assert_eq!(
            ibot.variables()["backbone.mask_token"]
                .sum(Kind::Float)
                .double_value(&[]),
            3.0
        );
        let plain = model(false);
        let r = init_student(&with, &plain).unwrap();
        assert_eq!(r.backbone, 1);
        // Any other backbone name is still checked.
        let bad = dir.path().join("bad.safetensors");
        Tensor::write_safetensors(
            &[(
                "backbone.v",
                Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
            )],
            &bad,
        )
        .unwrap();
        let err = init_student(&bad, &plain).unwrap_err().to_string();
        assert!(err.contains("backbone.w: missing from the file"), "{err}");
        assert!(err.contains("backbone.v: unexpected"), "{err}");
    }
}
