//! The momentum teacher (paper Sec. 3.1): initialised as a copy of the student, never trained by
//! gradients, updated after each optimizer step by an exponential moving average of the
//! student's parameters (`train_one_epoch` in `main_dino.py`).

use crate::optim::flat::Layout;
use std::collections::HashSet;
use tch::nn::VarStore;
use tch::{TchError, Tensor};

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
        ema_pair(tv, sv, m)?;
    }
    Ok(())
}

/// The EMA of [`ema_update`] over flat buffers: the teacher's copies of the student's optimized
/// parameters moved into buffers of the student's group layouts
/// ([`crate::optim::Optimizer::flat_groups`]), so the update is one pass per group on the CPU
/// (fp32) or three ops per group elsewhere (`t *= m; t += (1 − m)·s`), the official arithmetic
/// either way, equal bit for bit to the per-parameter loop, plus the same per tensor for the
/// parameters outside the optimizer (a frozen `last_layer.weight_g`).
///
/// Skipping part of the network (e.g. the backbone while it is frozen) is
/// [`FlatEma::update_except`] with a predicate on parameter names: a group it covers entirely
/// is skipped as a whole, a group it covers in part is updated tensor by tensor.
#[derive(Debug)]
pub struct FlatEma {
    groups: Vec<EmaGroup>,
    /// (name, teacher, student) of the parameters outside the flat groups.
    loose: Vec<(String, Tensor, Tensor)>,
}

#[derive(Debug)]
struct EmaGroup {
    layout: Layout,
    teacher: Tensor,
    student: Tensor,
    /// `(1 − m)·s` of one chunk (CPU buffers other than fp32:
    /// [`crate::optim::flat::CPU_CHUNK`] elements), written in place of a fresh tensor each step.
    scratch: Option<Tensor>,
}

impl FlatEma {
    /// Moves the teacher's parameters matching the student's flat `groups` (layout and student
    /// buffer, by name) into buffers of the same layouts (the teacher's variables become views,
    /// keeping their values); every other **parameter** of the student (see
    /// [`parameter_names`]) is paired by name with the teacher's.
    ///
    /// # Errors
    /// A student parameter the teacher lacks or holds in another shape, libtorch errors.
    pub fn new<'a>(
        teacher: &VarStore,
        student: &VarStore,
        groups: impl IntoIterator<Item = (&'a Layout, &'a Tensor)>,
    ) -> Result<Self, TeacherError> {
        let t = teacher.variables();
        let s = student.variables();
        let teacher_var = |name: &str, shape: &[i64]| -> Result<Tensor, TeacherError> {
            let tv = t
                .get(name)
                .ok_or_else(|| TeacherError::Missing(name.to_string()))?;
            if tv.size() != shape {
                return Err(TeacherError::Shape {
                    name: name.to_string(),
                    student: shape.to_vec(),
                    teacher: tv.size(),
                });
            }
            Ok(tv.shallow_clone())
        };
        let mut flat_names = HashSet::new();
        let mut out = Vec::new();
        for (layout, student_buf) in groups {
            let mut vars = layout
                .segments
                .iter()
                .map(|seg| teacher_var(&seg.name, &seg.shape))
                .collect::<Result<Vec<_>, _>>()?;
            let teacher_buf = layout.adopt(&mut vars)?;
            flat_names.extend(layout.segments.iter().map(|seg| seg.name.clone()));
            let longest = layout.chunks().iter().map(|c| c.1).max().unwrap_or(0);
            // fp32 CPU groups take the one-pass loop (`ema_cpu_f32`) and need no scratch.
            let scratch = if layout.chunked() && layout.kind != tch::Kind::Float {
                Some(Tensor::f_empty([longest], (layout.kind, layout.device))?)
            } else {
                None
            };
            out.push(EmaGroup {
                layout: layout.clone(),
                teacher: teacher_buf,
                student: student_buf.shallow_clone(),
                scratch,
            });
        }
        let mut names: Vec<String> = parameter_names(student)
            .into_iter()
            .filter(|n| !flat_names.contains(n))
            .collect();
        names.sort();
        let loose = names
            .into_iter()
            .map(|n| {
                let sv = s[&n].shallow_clone();
                let tv = teacher_var(&n, &sv.size())?;
                Ok((n, tv, sv))
            })
            .collect::<Result<Vec<_>, TeacherError>>()?;
        Ok(Self { groups: out, loose })
    }

    /// `t ← m·t + (1 − m)·s` for every parameter (official `train_one_epoch`'s loop).
    ///
    /// # Errors
    /// A momentum outside [0, 1], libtorch errors.
    pub fn update(&self, m: f64) -> Result<(), TeacherError> {
        self.update_except(m, |_| false)
    }

    /// [`FlatEma::update`] leaving the parameters named by `skip` untouched.
    ///
    /// # Errors
    /// A momentum outside [0, 1], libtorch errors.
    pub fn update_except(&self, m: f64, skip: impl Fn(&str) -> bool) -> Result<(), TeacherError> {
        if !(0.0..=1.0).contains(&m) {
            return Err(TeacherError::Momentum(m));
        }
        let _guard = tch::no_grad_guard();
        for g in &self.groups {
            let skipped: Vec<bool> = g.layout.segments.iter().map(|s| skip(&s.name)).collect();
            if skipped.iter().all(|&s| s) {
                continue;
            }
            if !skipped.iter().any(|&s| s) {
                g.update(m)?;
                continue;
            }
            for (i, _) in skipped.iter().enumerate().filter(|(_, &s)| !s) {
                ema_pair(
                    &g.layout.view(&g.teacher, i)?,
                    &g.layout.view(&g.student, i)?,
                    m,
                )?;
            }
        }
        for (name, tv, sv) in &self.loose {
            if !skip(name) {
                ema_pair(tv, sv, m)?;
            }
        }
        Ok(())
    }
}

impl EmaGroup {
    /// The EMA of the whole group: fp32 buffers on the CPU in one pass ([`ema_cpu_f32`]),
    /// other CPU buffers chunk by chunk through the scratch buffer (no allocation, each chunk's
    /// three passes in cache), elsewhere in one set of ops; the same elementwise arithmetic
    /// every way.
    fn update(&self, m: f64) -> Result<(), TchError> {
        if ema_cpu_f32(&self.teacher, &self.student, m) {
            return Ok(());
        }
        let Some(scratch) = &self.scratch else {
            return ema_pair(&self.teacher, &self.student, m);
        };
        for (offset, len) in self.layout.chunks() {
            let mut t = self.teacher.f_narrow(0, offset, len)?;
            let s = self.student.f_narrow(0, offset, len)?;
            let tmp = scratch.f_narrow(0, 0, len)?;
            let _ = t.f_mul_scalar_(m)?;
            let _ = s.f_mul_scalar_out(&tmp, 1.0 - m)?;
            let _ = t.f_add_(&tmp)?;
        }
        Ok(())
    }
}

/// `t.mul_(m).add_((1 − m) · s)`, the official arithmetic (two roundings: `add_(s, alpha=1 − m)`
/// fuses the multiply and would not equal it bit for bit).
fn ema_pair(t: &Tensor, s: &Tensor, m: f64) -> Result<(), TchError> {
    let mut t = t.shallow_clone();
    let _ = t.f_mul_scalar_(m)?;
    let _ = t.f_add_(&s.f_mul_scalar(1.0 - m)?)?;
    Ok(())
}

/// `t ← fl(fl(m·t) + fl((1 − m)·s))` elementwise over two fp32 CPU buffers in one pass (read t
/// and s, write t), split over libtorch's thread count; returns false, doing nothing, for
/// buffers it does not cover (another kind, device or layout, or sharing memory).
///
/// Why: the tensor ops need three passes (`t *= m`, a temporary `(1 − m)·s`, `t += tmp`), and
/// the EMA of ViT-S/16 with its 65536-way head (44 M parameters, 530 MB read and written per
/// step) is bound by memory traffic. The arithmetic is [`ema_pair`]'s bit for bit: the
/// momentum and its complement rounded to fp32 once, as libtorch casts a scalar operand to the
/// tensor's type, each product rounded, then the sum (Rust never fuses a multiply and an add).
fn ema_cpu_f32(t: &Tensor, s: &Tensor, m: f64) -> bool {
    let fits = |x: &Tensor| {
        x.device() == tch::Device::Cpu && x.kind() == tch::Kind::Float && x.is_contiguous()
    };
    let n = t.numel();
    if !fits(t) || !fits(s) || s.numel() != n || n == 0 {
        return false;
    }
    let (tp, sp) = (t.data_ptr() as *mut f32, s.data_ptr() as *const f32);
    // Disjoint, or the slices below would alias.
    if (tp as usize) < (sp as usize) + 4 * n && (sp as usize) < (tp as usize) + 4 * n {
        return false;
    }
    // SAFETY: both tensors are contiguous fp32 CPU tensors of n elements (checked above) that
    // outlive this call, and their memory does not overlap. Nothing else reads or writes them
    // meanwhile: the EMA runs on the training thread between the optimizer step and the next
    // forward, and the threads below touch disjoint chunks.
    let (teacher, student) = unsafe {
        (
            std::slice::from_raw_parts_mut(tp, n),
            std::slice::from_raw_parts(sp, n),
        )
    };
    let (mt, ms) = (m as f32, (1.0 - m) as f32);
    let blend = |t: &mut [f32], s: &[f32]| {
        for (t, s) in t.iter_mut().zip(s) {
            *t = *t * mt + *s * ms;
        }
    };
    let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
    let chunk = n.div_ceil(threads).max(1 << 16);
    std::thread::scope(|scope| {
        let mut parts = teacher.chunks_mut(chunk).zip(student.chunks(chunk));
        let first = parts.next();
        for (t, s) in parts {
            scope.spawn(move || blend(t, s));
        }
        if let Some((t, s)) = first {
            blend(t, s);
        }
    });
    true
}
