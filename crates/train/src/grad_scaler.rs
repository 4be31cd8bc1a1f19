//! Dynamic loss scaling for fp16 autocast: PyTorch's `torch.amp.GradScaler` with its defaults,
//! as the official `main_dino.py` uses it (`--use_fp16 True`: `fp16_scaler.scale(loss)
//! .backward()`, `unscale_` before `clip_gradients`, `step`, `update`).
//!
//! fp16 holds magnitudes from about 6e-8 (subnormal) to 65,504: small gradients of the fp16
//! activations underflow to zero unless the loss, and with it every gradient, is multiplied by a
//! large scale. Too large a scale overflows to inf; the scaler then skips the optimizer step and
//! halves the scale, and after `growth_interval` steps in a row with finite gradients it doubles
//! it. The scale and the count of finite steps are the scaler's state, saved in checkpoints.

use tch::{Device, Kind, TchError, Tensor};

/// The scaler's settings, `torch.amp.GradScaler`'s constructor arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerOptions {
    /// Scale at the start (PyTorch `init_scale=2.0**16`).
    pub init_scale: f64,
    /// Factor applied after `growth_interval` finite steps in a row (PyTorch 2.0).
    pub growth_factor: f64,
    /// Factor applied when a gradient is inf or NaN (PyTorch 0.5).
    pub backoff_factor: f64,
    /// Finite steps in a row before the scale grows (PyTorch 2000).
    pub growth_interval: i64,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// The state of the scaler: the scale (0-dim f32, PyTorch `_scale`) and the count of finite
/// steps since the last change (0-dim i32, PyTorch `_growth_tracker`), on the training device.
#[derive(Debug)]
pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    opts: ScalerOptions,
}

/// Names of the state tensors in [`GradScaler::state_tensors`].
const SCALE: &str = "scale";
const GROWTH_TRACKER: &str = "growth_tracker";

impl GradScaler {
    /// A scaler at `opts.init_scale` with no finite steps counted, its state on `device`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn new(opts: ScalerOptions, device: Device) -> Result<Self, TchError> {
        Ok(Self {
            scale: Tensor::f_full([], opts.init_scale, (Kind::Float, device))?,
            growth_tracker: Tensor::f_full([], 0, (Kind::Int, device))?,
            opts,
        })
    }

    /// The current scale.
    ///
    /// # Errors
    /// libtorch errors (one host sync).
    pub fn scale(&self) -> Result<f64, TchError> {
        self.scale.f_double_value(&[])
    }

    /// The current scale as a 0-dim f32 tensor on the device (no host sync).
    pub fn scale_tensor(&self) -> &Tensor {
        &self.scale
    }

    /// Finite steps in a row since the scale last changed.
    ///
    /// # Errors
    /// libtorch errors (one host sync).
    pub fn growth_tracker(&self) -> Result<i64, TchError> {
        self.growth_tracker.f_int64_value(&[])
    }

    /// `loss · scale` (PyTorch `scaler.scale(loss)`), to call `backward` on. `loss` is fp32.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor, TchError> {
        loss.f_mul(&self.scale.f_to_device(loss.device())?)
    }

    /// PyTorch `scaler.unscale_(optimizer)` on `grads` (the optimizer's gradients, in place):
    /// each is multiplied by `1/scale` (computed in f64, then rounded to f32, as PyTorch does),
    /// and the result says whether any value was inf or NaN before unscaling: a 1-element f32
    /// tensor, 1 for found, 0 for none (PyTorch `found_inf`), on the scale's device.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn unscale(&self, grads: &mut [Tensor]) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let inv_scale = self
            .scale
            .f_to_kind(Kind::Double)?
            .f_reciprocal()?
            .f_to_kind(Kind::Float)?;
        let mut all_finite = Tensor::f_ones([], (Kind::Bool, self.scale.device()))?;
        for g in grads.iter_mut() {
            let finite = g.f_isfinite()?.f_all()?.f_to_device(all_finite.device())?;
            all_finite = all_finite.f_logical_and(&finite)?;
            let _ = g.f_mul_(&inv_scale.f_to_device(g.device())?.f_to_kind(g.kind())?)?;
        }
        all_finite
            .f_logical_not()?
            .f_to_kind(Kind::Float)?
            .f_reshape([1])
    }

    /// PyTorch `scaler.update()` after a step whose unscaling returned `found_inf`: on inf/NaN
    /// the scale is multiplied by `backoff_factor` and the count reset; otherwise the count
    /// grows, and when it reaches `growth_interval` the scale is multiplied by `growth_factor`
    /// (if the result is finite) and the count reset. libtorch's own kernel
    /// (`_amp_update_scale_`), so the arithmetic is PyTorch's.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update(&mut self, found_inf: &Tensor) -> Result<(), TchError> {
        let _guard = tch::no_grad_guard();
        let found = found_inf.f_to_device(self.scale.device())?;
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &found,
            self.opts.growth_factor,
            self.opts.backoff_factor,
            self.opts.growth_interval,
        )?;
        Ok(())
    }

    /// The state for a checkpoint: `scale` (0-dim f32) and `growth_tracker` (0-dim i32),
    /// shallow copies.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (SCALE.to_string(), self.scale.shallow_clone()),
            (
                GROWTH_TRACKER.to_string(),
                self.growth_tracker.shallow_clone(),
            ),
        ]
    }

    /// Restores [`GradScaler::state_tensors`] output (both entries, one number each, nothing
    /// else), onto the current state's device and kind.
    ///
    /// # Errors
    /// A missing, extra or misshapen entry (message naming it), libtorch errors.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), String> {
        let get = |key: &str| -> Result<&Tensor, String> {
            let t = named
                .iter()
                .find(|(n, _)| n == key)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("missing `scaler.{key}`"))?;
            if t.numel() != 1 {
                return Err(format!(
                    "`scaler.{key}` must hold one number, has shape {:?}",
                    t.size()
                ));
            }
            Ok(t)
        };
        let (scale, tracker) = (get(SCALE)?, get(GROWTH_TRACKER)?);
        if let Some((n, _)) = named
            .iter()
            .find(|(n, _)| n != SCALE && n != GROWTH_TRACKER)
        {
            return Err(format!("unexpected entry `scaler.{n}`"));
        }
        let copy = |dst: &mut Tensor, src: &Tensor| -> Result<(), TchError> {
            dst.f_copy_(&src.f_reshape([])?)?;
            Ok(())
        };
        tch::no_grad(|| -> Result<(), TchError> {
            copy(&mut self.scale, scale)?;
            copy(&mut self.growth_tracker, tracker)
        })
        .map_err(|e| e.to_string())
    }
}
