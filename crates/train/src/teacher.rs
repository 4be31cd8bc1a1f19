//! The momentum teacher (paper Sec. 3.1): initialised as a copy of the student, never trained by
//! gradients, updated after each optimizer step by an exponential moving average of the
//! student's parameters (`train_one_epoch` in `main_dino.py`).

use std::collections::HashSet;
use tch::nn::VarStore;
use tch::TchError;

/// Errors of the teacher update: the two stores do not hold the same variables.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// A student parameter has no teacher counterpart.
    #[error("teacher has no variable `{0}` (student and teacher must be built from the same architecture)")]
    Missing(String),
    /// Shapes differ between student and teacher.
    #[error("variable `{name}`: student shape {student:?}, teacher shape {teacher:?}")]
    Shape {
        /// Variable name.
        name: String,
        /// Student shape.
        student: Vec<i64>,
        /// Teacher shape.
        teacher: Vec<i64>,
    },
    /// Momentum outside [0, 1].
    #[error("EMA momentum {0} is outside [0, 1]")]
    Momentum(f64),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Names of the *parameters* of `vs`: the variables created as trainable, whether or not they
/// currently require grad (a frozen `weight_g` is still a parameter). Non-trainable variables
/// (tch's `*_no_train`, e.g. BatchNorm running statistics) play the role of PyTorch buffers.
pub fn parameter_names(vs: &VarStore) -> HashSet<String> {
    let vars = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
    let ptrs: HashSet<usize> = vars
        .trainable_variables
        .iter()
        .filter(|v| v.tensor.numel() > 0)
        .map(|v| v.tensor.data_ptr() as usize)
        .collect();
    vars.named_variables
        .iter()
        .filter(|(_, t)| t.numel() > 0 && ptrs.contains(&(t.data_ptr() as usize)))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Initialises the teacher from the student and freezes it: copies every variable (parameters
/// and buffers, as the official `teacher.load_state_dict(student.state_dict())`) and sets
/// `requires_grad = false` on all teacher parameters (official `p.requires_grad = False`).
/// Every teacher variable must exist in the student with the same shape.
pub fn init_teacher_from_student(
    teacher: &mut VarStore,
    student: &VarStore,
) -> Result<(), TeacherError> {
    let s = student.variables();
    for (name, t) in teacher.variables() {
        let sv = s
            .get(&name)
            .ok_or_else(|| TeacherError::Missing(name.clone()))?;
        if sv.size() != t.size() {
            return Err(TeacherError::Shape {
                name,
                student: sv.size(),
                teacher: t.size(),
            });
        }
    }
    teacher.copy(student)?;
    teacher.freeze();
    Ok(())
}

/// EMA update `t ← m·t + (1 − m)·s` under `no_grad`, for every **parameter** of the student
/// (see [`parameter_names`]) matched by name in the teacher, as the official loop over
/// `student.parameters()`. Buffers (non-trainable variables) are not averaged: the official
/// code leaves the teacher's BatchNorm statistics to the teacher's own forward passes.
/// The arithmetic follows `param_k.mul_(m).add_((1 - m) * param_q)`.
pub fn ema_update(teacher: &VarStore, student: &VarStore, m: f64) -> Result<(), TeacherError> {
    ema_update_skipping(teacher, student, m, |_| false)
}

/// [`ema_update`] over every parameter except those whose name `skip` accepts, which keep
/// their teacher values bitwise (e.g. `backbone.*` while `schedule.freeze_backbone_epochs`
/// holds the student's backbone fixed).
///
/// # Errors
/// As [`ema_update`].
pub fn ema_update_skipping(
    teacher: &VarStore,
    student: &VarStore,
    m: f64,
    skip: impl Fn(&str) -> bool,
) -> Result<(), TeacherError> {
    if !(0.0..=1.0).contains(&m) {
        return Err(TeacherError::Momentum(m));
    }
    let params = parameter_names(student);
    let s = student.variables();
    let t = teacher.variables();
    let mut pairs = Vec::with_capacity(params.len());
    for name in params.iter().filter(|n| !skip(n)) {
        let sv = &s[name];
        let tv = t
            .get(name)
            .ok_or_else(|| TeacherError::Missing(name.clone()))?;
        if sv.size() != tv.size() {
            return Err(TeacherError::Shape {
                name: name.clone(),
                student: sv.size(),
                teacher: tv.size(),
            });
        }
        pairs.push((tv, sv));
    }
    let _guard = tch::no_grad_guard();
    for (tv, sv) in pairs {
        let mut tv = tv.shallow_clone();
        let _ = tv.f_mul_scalar_(m)?;
        let _ = tv.f_add_(&sv.f_mul_scalar(1.0 - m)?)?;
    }
    Ok(())
}
