//! AdamW with DINO's two parameter groups, per-parameter gradient clipping and last-layer
//! freezing, with its state as named tensors for checkpoints.
//!
//! tch's optimizer cannot save its state (tch-rs #360), clips the global norm, and cannot skip
//! a parameter entirely; the official trainer needs all three (`utils.get_params_groups`,
//! `utils.clip_gradients`, `utils.cancel_gradients_last_layer` + `torch.optim.AdamW`).

use dino_config::OptimConfig;
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

/// Per-parameter state (PyTorch's `state[p]` = `step`, `exp_avg`, `exp_avg_sq`).
#[derive(Debug)]
struct ParamState {
    name: String,
    param: Tensor,
    regularized: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: i64,
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

/// AdamW (`torch.optim.AdamW`, decoupled weight decay, no amsgrad) over named parameters, in two
/// groups: regularized (weight decay from the schedule) and not regularized (weight decay 0).
///
/// Update per parameter with a gradient and not frozen, PyTorch's single-tensor order:
/// `step += 1; p *= 1 − lr·wd; m = lerp(m, g, 1 − β1); v = β2·v + (1 − β2)·g²;
/// p −= lr/(1 − β1^step) · m / (√v / √(1 − β2^step) + ε)`.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<ParamState>,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl AdamW {
    /// Builds the optimizer over `named` parameters, keeping only those that require grad
    /// (official `get_params_groups` skips `requires_grad=False`, e.g. the frozen weight-norm
    /// gain `last_layer.weight_g`). Betas and eps from `cfg` (PyTorch defaults 0.9, 0.999, 1e-8).
    /// Moments start as zeros like each parameter (same device and kind).
    pub fn new(named: Vec<(String, Tensor)>, cfg: &OptimConfig) -> Result<Self, OptimError> {
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
            let exp_avg = param.f_zeros_like()?;
            let exp_avg_sq = param.f_zeros_like()?;
            params.push(ParamState {
                name,
                param,
                regularized,
                exp_avg,
                exp_avg_sq,
                step: 0,
            });
        }
        Ok(Self {
            params,
            beta1: cfg.betas[0],
            beta2: cfg.betas[1],
            eps: cfg.eps,
        })
    }

    /// [`AdamW::new`] over every variable of `vs` that requires grad, sorted by name.
    pub fn from_var_store(vs: &VarStore, cfg: &OptimConfig) -> Result<Self, OptimError> {
        let sorted: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        Self::new(sorted.into_iter().collect(), cfg)
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
    /// or gradient-less parameter does not advance).
    pub fn step_count(&self, name: &str) -> Option<i64> {
        self.params.iter().find(|p| p.name == name).map(|p| p.step)
    }

    /// The defined gradients of the optimized parameters, in [`AdamW::param_names`] order,
    /// sharing storage with them (an in-place change, e.g. a cross-rank average, is what the next
    /// [`AdamW::clip_gradients`] and [`AdamW::step`] see).
    pub fn grads(&self) -> Result<Vec<Tensor>, OptimError> {
        let mut out = Vec::with_capacity(self.params.len());
        for p in &self.params {
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

    /// One AdamW step with learning rate `lr` for every parameter and weight decay `wd` for the
    /// regularized group only (official: `param_groups[0]["weight_decay"] = wd_schedule[it]`,
    /// group 1 keeps 0). Parameters in `frozen` or without a gradient get no update at all: no
    /// weight decay, no moment update, no step count (the official code sets their gradients to
    /// `None`).
    pub fn step(&mut self, lr: f64, wd: f64, frozen: &HashSet<String>) -> Result<(), OptimError> {
        let _guard = tch::no_grad_guard();
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
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
            if decay != 0.0 {
                let _ = p.param.f_mul_scalar_(1.0 - lr * decay)?;
            }
            let _ = p.exp_avg.f_lerp_(&grad, 1.0 - beta1)?;
            let _ = p.exp_avg_sq.f_mul_scalar_(beta2)?;
            // torch's addcmul_(g, g, value=1-β2) evaluates (value·g)·g.
            let _ = p
                .exp_avg_sq
                .f_addcmul_(&grad.f_mul_scalar(1.0 - beta2)?, &grad)?;
            let bias_correction1 = 1.0 - beta1.powf(p.step as f64);
            let bias_correction2 = 1.0 - beta2.powf(p.step as f64);
            let step_size = lr / bias_correction1;
            let denom = p
                .exp_avg_sq
                .f_sqrt()?
                .f_div_scalar(bias_correction2.sqrt())?
                .f_add_scalar(eps)?;
            // torch's addcdiv_(m, d, value=-s) evaluates (value·m)/d.
            let _ = p
                .param
                .f_addcdiv_(&p.exp_avg.f_mul_scalar(-step_size)?, &denom)?;
        }
        Ok(())
    }

    /// The state as named tensors for a checkpoint: `exp_avg.<name>`, `exp_avg_sq.<name>`
    /// (parameter shape and kind) and `step.<name>` (0-dim Int64), shallow copies.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>, OptimError> {
        let mut out = Vec::with_capacity(3 * self.params.len());
        for p in &self.params {
            out.push((format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()));
            out.push((
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
            out.push((
                format!("step.{}", p.name),
                Tensor::f_scalar_tensor(p.step as f64, (Kind::Int64, tch::Device::Cpu))?,
            ));
        }
        Ok(out)
    }

    /// Restores [`AdamW::state_tensors`] output. Every parameter's three entries must be
    /// present with matching shapes and no other entry may appear; values are copied onto the
    /// current moments' device and kind.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), OptimError> {
        let map: BTreeMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut used = 0usize;
        // Validate everything before touching any state.
        for p in &self.params {
            for key in ["exp_avg", "exp_avg_sq"] {
                let full = format!("{key}.{}", p.name);
                let t = map
                    .get(full.as_str())
                    .ok_or_else(|| OptimError::StateMismatch(format!("missing `{full}`")))?;
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
                .flat_map(|p| ["exp_avg", "exp_avg_sq", "step"].map(|k| format!("{k}.{}", p.name)))
                .collect();
            let extra: Vec<&str> = map
                .keys()
                .filter(|k| !known.contains(**k))
                .copied()
                .take(5)
                .collect();
            return Err(OptimError::StateMismatch(format!(
                "unexpected entries {extra:?} (state of another model?)"
            )));
        }
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            p.exp_avg
                .f_copy_(map[format!("exp_avg.{}", p.name).as_str()])?;
            p.exp_avg_sq
                .f_copy_(map[format!("exp_avg_sq.{}", p.name).as_str()])?;
            p.step = map[format!("step.{}", p.name).as_str()]
                .f_reshape([1])?
                .f_int64_value(&[0])?;
        }
        Ok(())
    }
}
