//! The student's optimizer: DINO's two parameter groups, per-parameter gradient clipping and
//! last-layer freezing around one of three update rules (`optim.optimizer`), with its state as
//! named tensors for checkpoints. The rules live one per module: [`adamw`] (`torch.optim.AdamW`),
//! [`sgd`] (`torch.optim.SGD` with momentum) and [`lars`] (the official `utils.LARS`).
//!
//! tch's optimizer cannot save its state (tch-rs #360), clips the global norm, and cannot skip
//! a parameter entirely; the official trainer needs all three (`utils.get_params_groups`,
//! `utils.clip_gradients`, `utils.cancel_gradients_last_layer` + the torch optimizer).

pub mod adamw;
pub mod lars;
pub mod sgd;

use crate::grad_scaler::GradScaler;
use dino_config::{OptimConfig, OptimizerKind};
use std::collections::{BTreeMap, HashSet};
use tch::nn::VarStore;
use tch::{Kind, TchError, Tensor};
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
}

/// One optimized parameter and its state: the rule's buffers (e.g. PyTorch's `exp_avg`,
/// `exp_avg_sq` for AdamW, shaped like the parameter) and the number of updates it received
/// (PyTorch counts per parameter; a frozen or gradient-less parameter does not advance).
#[derive(Debug)]
struct ParamState {
    name: String,
    param: Tensor,
    regularized: bool,
    buffers: Vec<Tensor>,
    step: i64,
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

/// The student's optimizer over named parameters, in DINO's two groups: regularized (weight
/// decay from the schedule) and not regularized (weight decay 0), updated by the rule of
/// `optim.optimizer` ([`adamw`], [`sgd`] or [`lars`]).
#[derive(Debug)]
pub struct Optimizer {
    params: Vec<ParamState>,
    rule: Rule,
}

impl Optimizer {
    /// Builds the optimizer of `cfg.optimizer` over `named` parameters, keeping only those that
    /// require grad (official `get_params_groups` skips `requires_grad=False`, e.g. the frozen
    /// weight-norm gain `last_layer.weight_g`). The rule's buffers start as zeros like each
    /// parameter (same device and kind).
    ///
    /// # Errors
    /// [`OptimError::DuplicateName`], libtorch errors.
    pub fn new(named: Vec<(String, Tensor)>, cfg: &OptimConfig) -> Result<Self, OptimError> {
        let rule = Rule::from_config(cfg);
        let mut seen = HashSet::new();
        let mut params = Vec::new();
        for (name, param) in named {
            if !seen.insert(name.clone()) {
                return Err(OptimError::DuplicateName(name));
            }
            if !param.requires_grad() {
                continue;
            }
            let regularized = is_regularized(&name, &param.size());
            let buffers = rule
                .buffer_names()
                .iter()
                .map(|_| param.f_zeros_like())
                .collect::<Result<Vec<_>, _>>()?;
            params.push(ParamState {
                name,
                param,
                regularized,
                buffers,
                step: 0,
            });
        }
        Ok(Self { params, rule })
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

    /// Names of the optimized parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Names of the regularized (weight-decayed) group.
    pub fn regularized_names(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|p| p.regularized)
            .map(|p| p.name.as_str())
    }

    /// Number of update steps taken by parameter `name` (PyTorch counts per parameter; a frozen
    /// or gradient-less parameter does not advance, nor does any parameter in a step skipped by
    /// the fp16 loss scaler).
    pub fn step_count(&self, name: &str) -> Option<i64> {
        self.params.iter().find(|p| p.name == name).map(|p| p.step)
    }

    /// The defined gradients of the optimized parameters, in [`Optimizer::param_names`] order,
    /// sharing storage with them (an in-place change, e.g. a cross-rank average or the loss
    /// scaler's unscaling, is what the next [`Optimizer::clip_gradients`] and
    /// [`Optimizer::step`] see).
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
        let mut out = Vec::with_capacity(self.params.len());
        for p in self.params.iter().filter(|p| !frozen.contains(&p.name)) {
            let g = p.param.f_grad()?;
            if g.defined() {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Sets every gradient to zero (tch cannot set a gradient to `None`; a zero gradient still
    /// gets an update, so every parameter must receive a gradient each step, as in DINO).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// The official `utils.clip_gradients(model, clip)`: for each parameter with a gradient,
    /// `coef = clip / (‖g‖₂ + 1e-6)` and `g *= coef` when `coef < 1` — each parameter separately,
    /// not the global norm. Returns `(name, ‖g‖₂ before clipping)` for every parameter with a
    /// gradient (one host sync). `clip <= 0` disables clipping (official `--clip_grad 0`) but
    /// still reports the norms.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn clip_gradients(&mut self, clip: f64) -> Result<Vec<(String, f64)>, OptimError> {
        let _guard = tch::no_grad_guard();
        let mut names = Vec::new();
        let mut grads = Vec::new();
        let mut norms = Vec::new();
        for p in &self.params {
            let g = p.param.f_grad()?;
            if !g.defined() {
                continue;
            }
            norms.push(g.f_norm()?.f_to_kind(Kind::Float)?);
            names.push(p.name.clone());
            grads.push(g);
        }
        if grads.is_empty() {
            return Ok(Vec::new());
        }
        let device = grads[0].device();
        let norms = Tensor::f_stack(
            &norms
                .iter()
                .map(|n| n.f_to_device(device))
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        if clip > 0.0 {
            // Python's `clip / t` is `t.reciprocal() * clip`; min(coef, 1) multiplies unclipped
            // gradients by exactly 1 and avoids a host sync per parameter.
            let coefs = norms
                .f_add_scalar(1e-6)?
                .f_reciprocal()?
                .f_mul_scalar(clip)?
                .f_clamp_max(1.0)?;
            for (i, g) in grads.iter_mut().enumerate() {
                let c = coefs.f_select(0, i as i64)?.f_to_kind(g.kind())?;
                let _ = g.f_mul_(&c)?;
            }
        }
        let host: Vec<f64> = Vec::<f64>::try_from(
            &norms
                .f_to_kind(Kind::Double)?
                .f_to_device(tch::Device::Cpu)?,
        )?;
        Ok(names.into_iter().zip(host).collect())
    }

    /// One step of the rule with learning rate `lr` for every parameter and weight decay `wd`
    /// for the regularized group only (official: `param_groups[0]["weight_decay"] =
    /// wd_schedule[it]`, group 1 keeps 0). Parameters in `frozen` or without a gradient get no
    /// update at all: no weight decay, no buffer update, no step count (the official code sets
    /// their gradients to `None`).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn step(&mut self, lr: f64, wd: f64, frozen: &HashSet<String>) -> Result<(), OptimError> {
        let _guard = tch::no_grad_guard();
        let rule = self.rule;
        for p in &mut self.params {
            if frozen.contains(&p.name) {
                continue;
            }
            let grad = p.param.f_grad()?;
            if !grad.defined() {
                continue;
            }
            p.step += 1;
            let decay = if p.regularized { wd } else { 0.0 };
            let update = Update {
                param: &mut p.param,
                grad: &grad,
                step: p.step,
                lr,
                decay,
            };
            match rule {
                Rule::AdamW(r) => r.update(update, &mut p.buffers)?,
                Rule::Sgd(r) => r.update(update, &mut p.buffers)?,
                Rule::Lars(r) => r.update(update, &mut p.buffers)?,
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
    /// and the scale is updated either way.
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
        let loss_scale = scaler.scale()?;
        let found_inf = if clip > 0.0 {
            let found_inf = scaler.unscale(&mut self.grads()?)?;
            self.clip_gradients(clip)?;
            found_inf
        } else {
            scaler.unscale(&mut self.grads_excluding(frozen)?)?
        };
        let skipped = found_inf.f_double_value(&[0])? != 0.0;
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
    /// and kind) and `step.<name>` (0-dim Int64), shallow copies.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>, OptimError> {
        let names = self.rule.buffer_names();
        let mut out = Vec::with_capacity((names.len() + 1) * self.params.len());
        for p in &self.params {
            for (key, b) in names.iter().zip(&p.buffers) {
                out.push((format!("{key}.{}", p.name), b.shallow_clone()));
            }
            out.push((
                format!("step.{}", p.name),
                Tensor::f_scalar_tensor(p.step as f64, (Kind::Int64, tch::Device::Cpu))?,
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
        for p in &self.params {
            for key in buffer_names {
                let full = format!("{key}.{}", p.name);
                let t = map.get(full.as_str()).ok_or_else(|| {
                    OptimError::StateMismatch(format!(
                        "missing `{full}` (optim.optimizer = \"{kind}\"; saved by another \
                         optimizer?)"
                    ))
                })?;
                if t.size() != p.param.size() {
                    return Err(OptimError::StateMismatch(format!(
                        "`{full}` has shape {:?}, parameter has {:?}",
                        t.size(),
                        p.param.size()
                    )));
                }
                used += 1;
            }
            let full = format!("step.{}", p.name);
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
                .params
                .iter()
                .flat_map(|p| {
                    buffer_names
                        .iter()
                        .chain(&["step"])
                        .map(move |k| format!("{k}.{}", p.name))
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
        for p in &mut self.params {
            for (key, b) in buffer_names.iter().zip(&mut p.buffers) {
                b.f_copy_(map[format!("{key}.{}", p.name).as_str()])?;
            }
            p.step = map[format!("step.{}", p.name).as_str()]
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
