//! The student's optimizer: DINO's two parameter groups, per-parameter gradient clipping and
//! last-layer freezing around one of three update rules (`optim.optimizer`), with its state as
//! named tensors for checkpoints. The rules live one per module: [`adamw`] (`torch.optim.AdamW`),
//! [`sgd`] (`torch.optim.SGD` with momentum) and [`lars`] (the official `utils.LARS`).
//!
//! tch's optimizer cannot save its state (tch-rs #360), clips the global norm, and cannot skip
//! a parameter entirely; the official trainer needs all three (`utils.get_params_groups`,
//! `utils.clip_gradients`, `utils.cancel_gradients_last_layer` + the torch optimizer).

pub mod adamw;
pub mod flat;
pub mod lars;
pub mod sgd;

use crate::grad_scaler::GradScaler;
use dino_config::{OptimConfig, OptimizerKind};
use flat::Layout;
use std::collections::{BTreeMap, HashSet};
use tch::nn::VarStore;
use tch::{Device, Kind, TchError, Tensor};
/// Errors of the optimizer: bad parameter lists, mismatching saved state, libtorch.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// Two parameters share a name.
    #[error("parameter `{0}` given twice")]
    DuplicateName(String),
    /// Saved state does not fit the parameters.
    #[error("optimizer state does not match the parameters: {0}")]
    StateMismatch(String),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] TchError),
    /// libtorch's fused AdamW kernel refused its inputs.
    #[error("fused AdamW: {0}")]
    Fused(String),
}

/// What [`Optimizer::clip_and_step`] did, for the step's record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepOutcome {
    /// The loss scale this step's backward used (fp16 only).
    pub loss_scale: Option<f64>,
    /// Whether the optimizer step was skipped because a gradient was inf or NaN (fp16 only;
    /// the scale was halved).
    pub skipped: bool,
}

/// What a rule needs to update one parameter in place.
#[derive(Debug)]
pub struct Update<'a> {
    /// The parameter (updated in place, under `no_grad`).
    pub param: &'a mut Tensor,
    /// Its gradient, after clipping (and unscaling under fp16).
    pub grad: &'a Tensor,
    /// The parameter's update count including this one (1 on its first update).
    pub step: i64,
    /// Learning rate of this iteration.
    pub lr: f64,
    /// Weight decay of the parameter's group (0 for the not-regularized group).
    pub decay: f64,
}

/// An update rule with its hyper-parameters.
#[derive(Debug, Clone, Copy)]
enum Rule {
    AdamW(adamw::AdamW),
    Sgd(sgd::Sgd),
    Lars(lars::Lars),
}

impl Rule {
    fn from_config(cfg: &OptimConfig) -> Self {
        match cfg.optimizer {
            OptimizerKind::Adamw => Self::AdamW(adamw::AdamW {
                beta1: cfg.betas[0],
                beta2: cfg.betas[1],
                eps: cfg.eps,
            }),
            OptimizerKind::Sgd => Self::Sgd(sgd::Sgd {
                momentum: cfg.momentum,
            }),
            OptimizerKind::Lars => Self::Lars(lars::Lars {
                momentum: cfg.momentum,
                eta: cfg.lars_eta,
            }),
        }
    }

    fn kind(&self) -> OptimizerKind {
        match self {
            Self::AdamW(_) => OptimizerKind::Adamw,
            Self::Sgd(_) => OptimizerKind::Sgd,
            Self::Lars(_) => OptimizerKind::Lars,
        }
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        match self {
            Self::AdamW(_) => &adamw::BUFFERS,
            Self::Sgd(_) => &sgd::BUFFERS,
            Self::Lars(_) => &lars::BUFFERS,
        }
    }
}

/// The parameter groups live with the model (official `utils.get_params_groups`); re-exported
/// here, where the optimizer applies them.
pub use dino_model::{is_last_layer, is_regularized};

/// Names among `names` that the official `cancel_gradients_last_layer` drops in `epoch`: every
/// name containing `last_layer` while `epoch < freeze_last_layer` (official `--freeze_last_layer
/// 1`), else none.
pub fn frozen_last_layer<'a>(
    names: impl IntoIterator<Item = &'a str>,
    epoch: usize,
    freeze_last_layer: usize,
) -> HashSet<String> {
    if epoch >= freeze_last_layer {
        return HashSet::new();
    }
    names
        .into_iter()
        .filter(|n| is_last_layer(n))
        .map(str::to_string)
        .collect()
}

/// One flat group of the optimizer: the parameters as views of one buffer ([`flat`]), their
/// gradients and the rule's buffers as buffers of the same layout, and the update count of each
/// parameter (PyTorch counts per parameter).
#[derive(Debug)]
struct Group {
    layout: Layout,
    /// The parameter tensors (autograd leaves, views of `params`), in segment order.
    vars: Vec<Tensor>,
    params: Tensor,
    /// The gradients, written by [`Optimizer::backward`] (allocated at the first one).
    grad: Option<Tensor>,
    /// Which segments of `grad` hold a gradient since the last [`Optimizer::zero_grad`] (the
    /// others are "None", as in PyTorch: zeros in the buffer, and no update).
    has_grad: Vec<bool>,
    buffers: Vec<Tensor>,
    steps: Vec<i64>,
    /// [`Layout::counts`], kept for spreading one factor per parameter over the buffer.
    counts: Tensor,
    /// Preallocated temporaries of the rule (allocated at the first whole-group update): on the
    /// CPU one chunk long ([`flat::CPU_CHUNK`]), for LARS the group's length.
    scratch: Vec<Tensor>,
}

impl Group {
    fn name(&self, i: usize) -> &str {
        &self.layout.segments[i].name
    }

    /// Takes the gradients of one backward (one per segment, `None` where the parameter got
    /// none): written into the buffer where the segment holds no gradient yet, added where it
    /// does (accumulation over micro-batches or crop groups). One copy for the whole group when
    /// every segment is new and every gradient contiguous.
    fn take_grads(&mut self, grads: Vec<Option<Tensor>>) -> Result<(), TchError> {
        if grads.iter().all(Option::is_none) {
            return Ok(());
        }
        if self.grad.is_none() {
            self.grad = Some(self.layout.zeros()?);
        }
        let flat = self.grad.as_ref().expect("allocated above");
        let fresh = !self.has_grad.iter().any(|&h| h);
        let whole = grads
            .iter()
            .all(|g| g.as_ref().is_some_and(Tensor::is_contiguous));
        if fresh && whole {
            let parts = grads
                .iter()
                .map(|g| g.as_ref().expect("checked above").f_view([-1]))
                .collect::<Result<Vec<_>, _>>()?;
            let _ = Tensor::f_cat_out(flat, &parts, 0)?;
        } else {
            for (i, g) in grads.iter().enumerate() {
                let mut view = self.layout.view(flat, i)?;
                match (g, self.has_grad[i]) {
                    (Some(g), true) => {
                        let _ = view.f_add_(g)?;
                    }
                    (Some(g), false) => view.f_copy_(g)?,
                    // No gradient yet: the slice must read as zeros (clipping norms, a cross-rank
                    // average of the whole buffer).
                    (None, false) => {
                        let _ = view.f_zero_()?;
                    }
                    (None, true) => {}
                }
            }
        }
        for (h, g) in self.has_grad.iter_mut().zip(&grads) {
            *h |= g.is_some();
        }
        Ok(())
    }

    /// One update of the whole group at its (common) step count: on the CPU chunk by chunk
    /// with preallocated temporaries ([`Layout::chunks`]), elsewhere in one set of ops.
    /// AdamW and SGD are elementwise, so any chunking gives the same bits; LARS needs whole
    /// parameters for its trust ratio and takes the group at once.
    fn update_whole(
        &mut self,
        rule: &Rule,
        grad: &Tensor,
        lr: f64,
        decay: f64,
    ) -> Result<(), TchError> {
        let step = self.steps[0];
        let (numel, kind, device) = (self.layout.numel, self.layout.kind, self.layout.device);
        if let Rule::Lars(r) = rule {
            if self.scratch.is_empty() {
                self.scratch.push(Tensor::f_empty([numel], (kind, device))?);
            }
            let update = Update {
                param: &mut self.params,
                grad,
                step,
                lr,
                decay,
            };
            let (layout, counts) = (&self.layout, &self.counts);
            return r.update_group(
                update,
                &mut self.buffers,
                layout,
                counts,
                &mut self.scratch[0],
            );
        }
        if !self.layout.chunked() {
            let update = Update {
                param: &mut self.params,
                grad,
                step,
                lr,
                decay,
            };
            return match rule {
                Rule::AdamW(r) => r.update(update, &mut self.buffers),
                Rule::Sgd(r) => r.update(update, &mut self.buffers),
                Rule::Lars(_) => unreachable!("handled above"),
            };
        }
        let chunks = self.layout.chunks();
        let longest = chunks.iter().map(|c| c.1).max().unwrap_or(0);
        let wanted = if matches!(rule, Rule::AdamW(_)) { 2 } else { 1 };
        while self.scratch.len() < wanted {
            self.scratch
                .push(Tensor::f_empty([longest], (kind, device))?);
        }
        for (offset, len) in chunks {
            let mut param = self.params.f_narrow(0, offset, len)?;
            let grad = grad.f_narrow(0, offset, len)?;
            let mut buffers = self
                .buffers
                .iter()
                .map(|b| b.f_narrow(0, offset, len))
                .collect::<Result<Vec<_>, _>>()?;
            let mut scratch = self
                .scratch
                .iter()
                .map(|s| s.f_narrow(0, 0, len))
                .collect::<Result<Vec<_>, _>>()?;
            let update = Update {
                param: &mut param,
                grad: &grad,
                step,
                lr,
                decay,
            };
            match (rule, scratch.as_mut_slice()) {
                (Rule::AdamW(r), [s1, s2]) => r.update_with(update, &mut buffers, [s1, s2])?,
                (Rule::Sgd(r), [s1]) => r.update_with(update, &mut buffers, s1)?,
                _ => unreachable!("scratch sized for the rule above"),
            }
        }
        Ok(())
    }

    /// One AdamW update of the whole group through libtorch's fused kernel (`optim.fused`):
    /// parameter, gradient and moments read and written once.
    fn update_fused(
        &mut self,
        r: &adamw::AdamW,
        grad: &Tensor,
        lr: f64,
        decay: f64,
    ) -> Result<(), OptimError> {
        let step =
            Tensor::f_scalar_tensor(self.steps[0] as f64, (Kind::Float, self.layout.device))?;
        let [exp_avg, exp_avg_sq] = self.buffers.as_slice() else {
            unreachable!("AdamW keeps two buffers per parameter")
        };
        let h = dino_distributed::fused::AdamW {
            lr,
            beta1: r.beta1,
            beta2: r.beta2,
            weight_decay: decay,
            eps: r.eps,
        };
        dino_distributed::fused::fused_adamw(
            &[&self.params],
            &[grad],
            &[exp_avg],
            &[exp_avg_sq],
            &[&step],
            h,
        )
        .map_err(|e| OptimError::Fused(format!("{e:#}")))
    }

    /// Whether the rule can update the segments marked in `active` as one buffer: all of them
    /// at the same update count, and for LARS all of the same kind (1-D or not).
    fn uniform(&self, active: &[bool], rule: &Rule) -> bool {
        let all = active.iter().all(|&a| a);
        let same_step = self.steps.iter().all(|&s| s == self.steps[0]);
        let same_shape_rule = match rule {
            Rule::Lars(_) => {
                let one_d = |i: usize| self.layout.segments[i].shape.len() == 1;
                (0..self.layout.segments.len()).all(|i| one_d(i) == one_d(0))
            }
            _ => true,
        };
        all && same_step && same_shape_rule
    }
}

/// The per-parameter gradient norms [`Optimizer::clip_gradients`] measured, on the device.
#[derive(Debug)]
pub struct ClipNorms {
    /// The parameters that had a gradient, in [`Optimizer::param_names`] order.
    pub names: Vec<String>,
    /// `‖g‖₂` of each, before clipping, `[names.len()]` Float, on the gradients' device (no host
    /// sync until read).
    pub norms: Tensor,
}

impl ClipNorms {
    /// `(name, norm)` on the host (one device sync).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn to_host(&self) -> Result<Vec<(String, f64)>, TchError> {
        if self.names.is_empty() {
            return Ok(Vec::new());
        }
        let v = Vec::<f64>::try_from(
            &self
                .norms
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?,
        )?;
        Ok(self.names.iter().cloned().zip(v).collect())
    }
}

/// The student's optimizer over named parameters, in DINO's two groups: regularized (weight
/// decay from the schedule) and not regularized (weight decay 0), updated by the rule of
/// `optim.optimizer` ([`adamw`], [`sgd`] or [`lars`]).
///
/// The parameters, their gradients and the rule's buffers live in flat groups ([`flat`]): the
/// two weight-decay groups, further split into backbone, last layer and the rest (the parts
/// that can be frozen). Gradients come from [`Optimizer::backward`], which writes them straight
/// into the group buffers (never zeroed then accumulated, and never through the parameters'
/// `.grad`). Whole-group ops apply when every parameter of a group is updated at the same count;
/// otherwise (a parameter without gradient, a partly frozen group, a checkpoint with uneven
/// counts) the group falls back to one update per parameter, with the same arithmetic.
#[derive(Debug)]
pub struct Optimizer {
    groups: Vec<Group>,
    /// (group, segment) of each parameter, in the order given to [`Optimizer::new`].
    order: Vec<(usize, usize)>,
    rule: Rule,
    /// `optim.fused`: whole AdamW groups through libtorch's fused kernel.
    fused: bool,
}

impl Optimizer {
    /// Builds the optimizer of `cfg.optimizer` over `named` parameters, keeping only those that
    /// require grad (official `get_params_groups` skips `requires_grad=False`, e.g. the frozen
    /// weight-norm gain `last_layer.weight_g`), and moves them into flat group buffers (each
    /// parameter becomes a view of its slice, keeping its identity and value; see
    /// [`flat::Layout::adopt`]). The rule's buffers start as zeros (same device and kind).
    ///
    /// # Errors
    /// [`OptimError::DuplicateName`], libtorch errors.
    pub fn new(named: Vec<(String, Tensor)>, cfg: &OptimConfig) -> Result<Self, OptimError> {
        let rule = Rule::from_config(cfg);
        let mut seen = HashSet::new();
        let mut kept = Vec::new();
        for (name, param) in named {
            if !seen.insert(name.clone()) {
                return Err(OptimError::DuplicateName(name));
            }
            if param.requires_grad() {
                kept.push((name, param));
            }
        }
        let meta: Vec<_> = kept
            .iter()
            .map(|(n, t)| (n.clone(), t.size(), t.kind(), t.device()))
            .collect();
        let mut tensors: Vec<Option<Tensor>> = kept.into_iter().map(|(_, t)| Some(t)).collect();
        let mut order = vec![(0, 0); tensors.len()];
        let mut groups = Vec::new();
        for (gi, (layout, members)) in Layout::group(&meta).into_iter().enumerate() {
            let mut vars = Vec::with_capacity(members.len());
            for (si, &i) in members.iter().enumerate() {
                order[i] = (gi, si);
                vars.push(tensors[i].take().expect("each parameter joins one group"));
            }
            let params = layout.adopt(&mut vars)?;
            let buffers = rule
                .buffer_names()
                .iter()
                .map(|_| layout.zeros())
                .collect::<Result<Vec<_>, _>>()?;
            let n = layout.segments.len();
            groups.push(Group {
                counts: layout.counts()?,
                layout,
                vars,
                params,
                grad: None,
                has_grad: vec![false; n],
                buffers,
                steps: vec![0; n],
                scratch: Vec::new(),
            });
        }
        Ok(Self {
            groups,
            order,
            rule,
            fused: cfg.fused && matches!(rule, Rule::AdamW(_)),
        })
    }

    /// [`Optimizer::new`] over every variable of `vs` that requires grad, sorted by name.
    ///
    /// # Errors
    /// As [`Optimizer::new`].
    pub fn from_var_store(vs: &VarStore, cfg: &OptimConfig) -> Result<Self, OptimError> {
        let sorted: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        Self::new(sorted.into_iter().collect(), cfg)
    }

    /// The update rule (`optim.optimizer`).
    pub fn kind(&self) -> OptimizerKind {
        self.rule.kind()
    }

    fn segment(&self, (g, s): (usize, usize)) -> &flat::Segment {
        &self.groups[g].layout.segments[s]
    }

    fn find(&self, name: &str) -> Option<(usize, usize)> {
        self.order
            .iter()
            .copied()
            .find(|&at| self.segment(at).name == name)
    }

    /// Names of the optimized parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|&at| self.segment(at).name.as_str())
    }

    /// Names of the regularized (weight-decayed) group.
    pub fn regularized_names(&self) -> impl Iterator<Item = &str> {
        self.order
            .iter()
            .filter(|&&(g, _)| self.groups[g].layout.regularized)
            .map(|&at| self.segment(at).name.as_str())
    }

    /// The flat groups: each one's layout and its parameter buffer (the parameters are views of
    /// it). The teacher's EMA mirrors these ([`crate::teacher::FlatEma`]).
    pub fn flat_groups(&self) -> impl Iterator<Item = (&Layout, &Tensor)> {
        self.groups.iter().map(|g| (&g.layout, &g.params))
    }

    /// Number of update steps taken by parameter `name` (PyTorch counts per parameter; a frozen
    /// or gradient-less parameter does not advance, nor does any parameter in a step skipped by
    /// the fp16 loss scaler).
    pub fn step_count(&self, name: &str) -> Option<i64> {
        self.find(name).map(|(g, s)| self.groups[g].steps[s])
    }

    /// Sets every gradient to "None" (PyTorch's `zero_grad(set_to_none=True)`, what the official
    /// `optimizer.zero_grad()` does): the next [`Optimizer::backward`] writes the gradients
    /// instead of adding to them, and a parameter that then gets none is not updated. No memory
    /// pass: the buffers are kept and overwritten.
    pub fn zero_grad(&mut self) {
        for g in &mut self.groups {
            g.has_grad.iter_mut().for_each(|h| *h = false);
        }
    }

    /// Back-propagates `loss` (a scalar) to the optimized parameters and puts their gradients
    /// in the flat gradient buffers: written after [`Optimizer::zero_grad`], added otherwise
    /// (gradient accumulation). The gradients go through autograd's capture of its inputs, not
    /// through the parameters' `.grad` (which stays undefined), so no buffer is zeroed first.
    /// Parameters that no longer require grad are left out, as are those `loss` does not reach.
    ///
    /// # Errors
    /// libtorch errors (e.g. `loss` not attached to a graph).
    pub fn backward(&mut self, loss: &Tensor) -> Result<(), OptimError> {
        let mut inputs = Vec::new();
        let mut at = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for (si, v) in g.vars.iter().enumerate() {
                if v.requires_grad() {
                    inputs.push(v.shallow_clone());
                    at.push((gi, si));
                }
            }
        }
        if inputs.is_empty() {
            return Ok(());
        }
        let grads = Tensor::f_run_backward(&[loss], &inputs, false, false)?;
        let mut per_group: Vec<Vec<Option<Tensor>>> = self
            .groups
            .iter()
            .map(|g| (0..g.vars.len()).map(|_| None).collect())
            .collect();
        for ((gi, si), t) in at.into_iter().zip(grads) {
            if t.defined() {
                per_group[gi][si] = Some(t);
            }
        }
        let _guard = tch::no_grad_guard();
        for (g, grads) in self.groups.iter_mut().zip(per_group) {
            g.take_grads(grads)?;
        }
        Ok(())
    }

    /// The gradient of parameter `name` (a view of its group's buffer), or `None` when it has
    /// none since the last [`Optimizer::zero_grad`] or is not optimized.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn grad(&self, name: &str) -> Result<Option<Tensor>, OptimError> {
        let Some((g, s)) = self.find(name) else {
            return Ok(None);
        };
        let group = &self.groups[g];
        match (&group.grad, group.has_grad[s]) {
            (Some(buf), true) => Ok(Some(group.layout.view(buf, s)?)),
            _ => Ok(None),
        }
    }

    /// The gradients of the optimized parameters that have one, in
    /// [`Optimizer::param_names`] order, as views of the group buffers (an in-place change is
    /// what the next [`Optimizer::clip_gradients`] and [`Optimizer::step`] see).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn grads(&self) -> Result<Vec<Tensor>, OptimError> {
        self.grads_excluding(&HashSet::new())
    }

    /// [`Optimizer::grads`] without the parameters named in `frozen` (the gradients the
    /// official code still holds after `cancel_gradients_last_layer` set the others to `None`).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn grads_excluding(&self, frozen: &HashSet<String>) -> Result<Vec<Tensor>, OptimError> {
        let mut out = Vec::with_capacity(self.order.len());
        for &at in &self.order {
            let name = &self.segment(at).name;
            if frozen.contains(name) {
                continue;
            }
            if let Some(g) = self.grad(name)? {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// The gradient memory of every parameter with a gradient, not in `frozen`, in as few
    /// tensors as the groups allow: a whole group's buffer where all its parameters qualify,
    /// else the qualifying slices. For in-place whole-memory work: the cross-rank average, the
    /// fp16 loss scaler's unscaling.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn grad_buffers(&self, frozen: &HashSet<String>) -> Result<Vec<Tensor>, OptimError> {
        let mut out = Vec::new();
        for g in &self.groups {
            let Some(buf) = &g.grad else { continue };
            let take: Vec<bool> = (0..g.vars.len())
                .map(|i| g.has_grad[i] && !frozen.contains(g.name(i)))
                .collect();
            if take.iter().all(|&t| t) {
                out.push(buf.shallow_clone());
            } else {
                for (i, _) in take.iter().enumerate().filter(|(_, &t)| t) {
                    out.push(g.layout.view(buf, i)?);
                }
            }
        }
        Ok(out)
    }

    /// The official `utils.clip_gradients(model, clip)`: for each parameter with a gradient,
    /// `coef = clip / (‖g‖₂ + 1e-6)` and `g *= coef` when `coef < 1` — each parameter separately,
    /// not the global norm. Returns every such parameter's `‖g‖₂` before clipping, on the device
    /// (no host sync; [`ClipNorms::to_host`] reads them). `clip <= 0` disables clipping
    /// (official `--clip_grad 0`) but still measures the norms.
    ///
    /// Per group: one norm per parameter (each equal bit for bit to the norm of the separate
    /// tensor), the coefficients as one vector, then on the CPU one multiply per clipped
    /// parameter, elsewhere one multiply for the whole buffer.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn clip_gradients(&mut self, clip: f64) -> Result<ClipNorms, OptimError> {
        let _guard = tch::no_grad_guard();
        let mut names = Vec::new();
        let mut norms = Vec::new();
        for g in &mut self.groups {
            let Some(buf) = g.grad.as_mut() else { continue };
            let with: Vec<usize> = (0..g.has_grad.len()).filter(|&i| g.has_grad[i]).collect();
            if with.is_empty() {
                continue;
            }
            let whole = with.len() == g.has_grad.len();
            let group_norms = if whole {
                g.layout.segment_norms(buf)?
            } else {
                let each = with
                    .iter()
                    .map(|&i| g.layout.view(buf, i)?.f_norm()?.f_to_kind(Kind::Float))
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor::f_stack(&each, 0)?
            };
            if clip > 0.0 {
                // Python's `clip / t` is `t.reciprocal() * clip`; min(coef, 1) multiplies
                // unclipped gradients by exactly 1, so no host decision is needed.
                let coefs = group_norms
                    .f_add_scalar(1e-6)?
                    .f_reciprocal()?
                    .f_mul_scalar(clip)?
                    .f_clamp_max(1.0)?;
                if whole {
                    g.layout.scale_segments(buf, &coefs, &g.counts)?;
                } else {
                    for (k, &i) in with.iter().enumerate() {
                        let c = coefs.f_select(0, k as i64)?.f_to_kind(g.layout.kind)?;
                        let _ = g.layout.view(buf, i)?.f_mul_(&c)?;
                    }
                }
            }
            names.extend(with.iter().map(|&i| g.layout.segments[i].name.clone()));
            norms.push(group_norms);
        }
        let norms = match norms.len() {
            0 => Tensor::f_zeros([0], (Kind::Float, Device::Cpu))?,
            1 => norms.pop().expect("one"),
            _ => {
                let device = norms[0].device();
                let on = norms
                    .iter()
                    .map(|n| n.f_to_device(device))
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor::f_cat(&on, 0)?
            }
        };
        // Back to the optimizer's parameter order (the groups hold them in group order).
        let position: std::collections::HashMap<&str, i64> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as i64))
            .collect();
        let perm: Vec<i64> = self
            .param_names()
            .filter_map(|n| position.get(n).copied())
            .collect();
        if perm.iter().enumerate().all(|(i, &p)| p == i as i64) {
            return Ok(ClipNorms { names, norms });
        }
        let names = perm.iter().map(|&p| names[p as usize].clone()).collect();
        let index = Tensor::f_from_slice(&perm)?.f_to_device(norms.device())?;
        Ok(ClipNorms {
            names,
            norms: norms.f_index_select(0, &index)?,
        })
    }

    /// One step of the rule with learning rate `lr` for every parameter and weight decay `wd`
    /// for the regularized group only (official: `param_groups[0]["weight_decay"] =
    /// wd_schedule[it]`, group 1 keeps 0). Parameters in `frozen` or without a gradient get no
    /// update at all: no weight decay, no buffer update, no step count (the official code sets
    /// their gradients to `None`). A group whose parameters are all updated at the same count
    /// is updated as one buffer.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn step(&mut self, lr: f64, wd: f64, frozen: &HashSet<String>) -> Result<(), OptimError> {
        let _guard = tch::no_grad_guard();
        let (rule, fused) = (self.rule, self.fused);
        for g in &mut self.groups {
            let Some(grad) = &g.grad else { continue };
            let active: Vec<bool> = (0..g.vars.len())
                .map(|i| g.has_grad[i] && !frozen.contains(g.name(i)))
                .collect();
            if !active.iter().any(|&a| a) {
                continue;
            }
            let decay = if g.layout.regularized { wd } else { 0.0 };
            if g.uniform(&active, &rule) {
                g.steps.iter_mut().for_each(|s| *s += 1);
                let grad = grad.shallow_clone();
                match rule {
                    Rule::AdamW(r) if fused => g.update_fused(&r, &grad, lr, decay)?,
                    _ => g.update_whole(&rule, &grad, lr, decay)?,
                }
                continue;
            }
            for i in (0..active.len()).filter(|&i| active[i]) {
                g.steps[i] += 1;
                let mut param = g.layout.view(&g.params, i)?;
                let grad = g.layout.view(grad, i)?;
                let mut buffers = g
                    .buffers
                    .iter()
                    .map(|b| g.layout.view(b, i))
                    .collect::<Result<Vec<_>, _>>()?;
                let update = Update {
                    param: &mut param,
                    grad: &grad,
                    step: g.steps[i],
                    lr,
                    decay,
                };
                match rule {
                    Rule::AdamW(r) => r.update(update, &mut buffers)?,
                    Rule::Sgd(r) => r.update(update, &mut buffers)?,
                    Rule::Lars(r) => r.update(update, &mut buffers)?,
                }
            }
        }
        Ok(())
    }

    /// The optimizer half of an official DINO iteration after backward: per-parameter clipping
    /// at `clip` (0 disables it), then [`Optimizer::step`] with the parameters in `frozen`
    /// (the last layer during `freeze_last_layer` epochs) left alone.
    ///
    /// With the fp16 loss `scaler`, as the official `--use_fp16` loop: the gradients are
    /// unscaled before clipping (all of them, the frozen last layer's included; without
    /// clipping, only those the optimizer steps, as `fp16_scaler.step` does after
    /// `cancel_gradients_last_layer`), the step is skipped when any of them held inf or NaN,
    /// and the scale is updated either way. Deciding the skip reads one flag from the device
    /// (a host sync, as torch's `GradScaler.step`); without a scaler there is none.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn clip_and_step(
        &mut self,
        clip: f64,
        lr: f64,
        wd: f64,
        frozen: &HashSet<String>,
        scaler: Option<&mut GradScaler>,
    ) -> Result<StepOutcome, OptimError> {
        let Some(scaler) = scaler else {
            if clip > 0.0 {
                self.clip_gradients(clip)?;
            }
            self.step(lr, wd, frozen)?;
            return Ok(StepOutcome::default());
        };
        let scale = scaler.scale_tensor().f_detach_copy()?;
        let found_inf = if clip > 0.0 {
            let found_inf = scaler.unscale(&mut self.grad_buffers(&HashSet::new())?)?;
            self.clip_gradients(clip)?;
            found_inf
        } else {
            scaler.unscale(&mut self.grad_buffers(frozen)?)?
        };
        // One read for the record's scale and the skip decision.
        let both = Tensor::f_cat(
            &[
                scale.f_reshape([1])?.f_to_kind(Kind::Double)?,
                found_inf
                    .f_to_device(scale.device())?
                    .f_to_kind(Kind::Double)?,
            ],
            0,
        )?;
        let read = Vec::<f64>::try_from(&both.f_to_device(Device::Cpu)?)?;
        let (loss_scale, skipped) = (read[0], read[1] != 0.0);
        if !skipped {
            self.step(lr, wd, frozen)?;
        }
        scaler.update(&found_inf)?;
        Ok(StepOutcome {
            loss_scale: Some(loss_scale),
            skipped,
        })
    }

    /// The state as named tensors for a checkpoint: `<buffer>.<name>` for each of the rule's
    /// buffers (AdamW `exp_avg`, `exp_avg_sq`; SGD `momentum_buffer`; LARS `mu`; parameter shape
    /// and kind, views of the flat buffers) and `step.<name>` (0-dim Int64) — the names and
    /// shapes of the per-parameter state, so checkpoints of either layout load into the other.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>, OptimError> {
        let names = self.rule.buffer_names();
        let mut out = Vec::with_capacity((names.len() + 1) * self.order.len());
        for &(gi, si) in &self.order {
            let g = &self.groups[gi];
            let name = g.name(si);
            for (key, b) in names.iter().zip(&g.buffers) {
                out.push((format!("{key}.{name}"), g.layout.view(b, si)?));
            }
            out.push((
                format!("step.{name}"),
                Tensor::f_scalar_tensor(g.steps[si] as f64, (Kind::Int64, Device::Cpu))?,
            ));
        }
        Ok(out)
    }

    /// Restores [`Optimizer::state_tensors`] output. Every parameter's entries must be present
    /// with matching shapes and no other entry may appear (the state of another optimizer is
    /// refused, naming it); values are copied onto the current buffers' device and kind.
    ///
    /// # Errors
    /// [`OptimError::StateMismatch`] naming the first missing, misshapen or unexpected entry.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), OptimError> {
        let map: BTreeMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let buffer_names = self.rule.buffer_names();
        let kind = self.rule.kind();
        let mut used = 0usize;
        // Validate everything before touching any state.
        for &at in &self.order {
            let seg = self.segment(at);
            for key in buffer_names {
                let full = format!("{key}.{}", seg.name);
                let t = map.get(full.as_str()).ok_or_else(|| {
                    OptimError::StateMismatch(format!(
                        "missing `{full}` (optim.optimizer = \"{kind}\"; saved by another \
                         optimizer?)"
                    ))
                })?;
                if t.size() != seg.shape {
                    return Err(OptimError::StateMismatch(format!(
                        "`{full}` has shape {:?}, parameter has {:?}",
                        t.size(),
                        seg.shape
                    )));
                }
                used += 1;
            }
            let full = format!("step.{}", seg.name);
            let t = map
                .get(full.as_str())
                .ok_or_else(|| OptimError::StateMismatch(format!("missing `{full}`")))?;
            if t.numel() != 1 {
                return Err(OptimError::StateMismatch(format!(
                    "`{full}` must hold one number, has shape {:?}",
                    t.size()
                )));
            }
            used += 1;
        }
        if used != map.len() {
            let known: HashSet<String> = self
                .param_names()
                .flat_map(|n| {
                    buffer_names
                        .iter()
                        .chain(&["step"])
                        .map(move |k| format!("{k}.{n}"))
                })
                .collect();
            let extra: Vec<&str> = map
                .keys()
                .filter(|k| !known.contains(**k))
                .copied()
                .take(5)
                .collect();
            return Err(OptimError::StateMismatch(format!(
                "unexpected entries {extra:?} (state of another model, or of another optimizer \
                 than optim.optimizer = \"{kind}\"?)"
            )));
        }
        let _guard = tch::no_grad_guard();
        for &(gi, si) in &self.order {
            let g = &mut self.groups[gi];
            let name = g.layout.segments[si].name.clone();
            for (key, b) in buffer_names.iter().zip(&g.buffers) {
                g.layout
                    .view(b, si)?
                    .f_copy_(map[format!("{key}.{name}").as_str()])?;
            }
            g.steps[si] = map[format!("step.{name}").as_str()]
                .f_reshape([1])?
                .f_int64_value(&[0])?;
        }
        Ok(())
    }
}

/// `value` as a 0-dim CPU tensor of `like`'s kind: the scalar operand of `addcmul`, which computes
/// `a + t·value` with the rounding of PyTorch's `a.add(t, alpha=value)` (a fused multiply-add on
/// CPU; `a + t * value` in two operations rounds twice). A 0-dim CPU tensor is a scalar to
/// libtorch's kernels on every device.
pub(crate) fn alpha(value: f64, like: &Tensor) -> Result<Tensor, TchError> {
    Tensor::f_scalar_tensor(value, (like.kind(), tch::Device::Cpu))
}
