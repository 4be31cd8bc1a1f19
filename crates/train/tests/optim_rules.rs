//! SGD (`torch.optim.SGD`, momentum 0.9) and LARS (the official `utils.LARS`) with DINO's
//! parameter groups, per-parameter clipping and a frozen last layer, and the fp16 loss scaler
//! (`torch.amp.GradScaler`) with gradients holding inf and NaN, step by step against
//! `tests/reference/optim_reference.py` over 20 iterations.

use crate::common;

use common::{npy, run_reference, values};
use dino_config::{OptimConfig, OptimizerKind};
use dino_train::grad_scaler::{GradScaler, ScalerOptions};
use dino_train::optim::{frozen_last_layer, Optimizer};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The reference run's parameters (initial values, `weight_g` not trainable) and its meta.
struct Reference {
    dir: tempfile::TempDir,
    names: Vec<String>,
    params: Vec<(String, Tensor)>,
    niter: usize,
    epochs: usize,
    clip: f64,
    freeze: usize,
}

impl Reference {
    fn run(mode: &str) -> Self {
        let dir = run_reference("optim_reference.py", &[mode, "{out}"]);
        let p = dir.path();
        let names: Vec<String> = std::fs::read_to_string(p.join("names.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let meta: Vec<f64> = std::fs::read_to_string(p.join("meta.txt"))
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let params = names
            .iter()
            .map(|n| {
                let t = npy(p, &format!("init.{n}"));
                (n.clone(), t.set_requires_grad(!n.ends_with("weight_g")))
            })
            .collect();
        Self {
            dir,
            names,
            params,
            niter: meta[0] as usize,
            epochs: meta[1] as usize,
            clip: meta[2],
            freeze: meta[3] as usize,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn optimizer(&self, kind: OptimizerKind) -> Optimizer {
        // The references are torch's single-tensor optimizers: the official arithmetic.
        let cfg = OptimConfig {
            optimizer: kind,
            fused: false,
            ..OptimConfig::default()
        };
        let named = self
            .params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        Optimizer::new(named, &cfg).unwrap()
    }

    /// `Σ sum(p · G)` over the trainable parameters, G read from `grad_<it>.<name>.npy`: its
    /// gradient with respect to each p is G exactly.
    fn loss(&self, it: usize) -> Tensor {
        let mut loss: Option<Tensor> = None;
        for (n, p) in self.params.iter().filter(|(n, _)| !n.ends_with("weight_g")) {
            let g = npy(self.path(), &format!("grad_{it}.{n}"));
            let term = (p * g).sum(Kind::Float);
            loss = Some(match loss {
                None => term,
                Some(l) => l + term,
            });
        }
        loss.unwrap()
    }

    /// Asserts every parameter equals the reference after iteration `it`, bitwise.
    fn assert_params(&self, it: usize) {
        for (n, p) in &self.params {
            let want = npy(self.path(), &format!("param_{it}.{n}"));
            assert_bitwise(&format!("{n} after iteration {it}"), p, &want);
        }
    }
}

/// Bitwise equality, with the largest difference in the message when it fails.
fn assert_bitwise(what: &str, got: &Tensor, want: &Tensor) {
    let same = got.size() == want.size() && got.detach().equal(want);
    if !same {
        let diff = values(&(got.detach() - want).abs())
            .into_iter()
            .fold(0f64, f64::max);
        panic!("{what}: differs from the reference, max |diff| {diff:e}");
    }
}

fn momentum_rule_matches_reference(kind: OptimizerKind, mode: &str, buffer: &str) {
    let r = Reference::run(mode);
    let mut opt = r.optimizer(kind);
    assert_eq!(opt.kind(), kind);
    let lr = values(&npy(r.path(), "lr"));
    let wd = values(&npy(r.path(), "wd"));
    for it in 0..r.epochs * r.niter {
        opt.zero_grad();
        opt.backward(&r.loss(it)).unwrap();
        let frozen = frozen_last_layer(opt.param_names(), it / r.niter, r.freeze);
        let outcome = opt
            .clip_and_step(r.clip, lr[it], wd[it], &frozen, None)
            .unwrap();
        assert_eq!(outcome.loss_scale, None);
        r.assert_params(it);
    }
    // The momentum buffers, saved under the rule's state names; the last layer, frozen in
    // epoch 0, took one epoch of steps fewer.
    let state: Vec<(String, Tensor)> = opt.state_tensors().unwrap();
    let total = (r.epochs * r.niter) as i64;
    for n in r.names.iter().filter(|n| !n.ends_with("weight_g")) {
        let (_, buf) = state
            .iter()
            .find(|(k, _)| *k == format!("{buffer}.{n}"))
            .unwrap_or_else(|| panic!("no `{buffer}.{n}` in the state"));
        assert_bitwise(
            &format!("{buffer} of {n}"),
            buf,
            &npy(r.path(), &format!("buf.{n}")),
        );
        let frozen_steps = if n.contains("last_layer") {
            (r.freeze * r.niter) as i64
        } else {
            0
        };
        assert_eq!(opt.step_count(n), Some(total - frozen_steps), "{n}");
    }
    assert_eq!(
        state.len(),
        2 * (r.names.len() - 1),
        "a buffer and a step each"
    );
}

#[test]
fn sgd_matches_torch_sgd_with_dino_groups_clipping_and_freezing() {
    momentum_rule_matches_reference(OptimizerKind::Sgd, "sgd", "momentum_buffer");
}

#[test]
fn lars_matches_the_official_lars_with_dino_groups_clipping_and_freezing() {
    momentum_rule_matches_reference(OptimizerKind::Lars, "lars", "mu");
}

#[test]
fn grad_scaler_matches_torch_grad_scaler_through_inf_and_nan() {
    let r = Reference::run("scaler");
    let mut opt = r.optimizer(OptimizerKind::Adamw);
    let opts = ScalerOptions {
        growth_interval: 3,
        ..ScalerOptions::default()
    };
    assert_eq!(ScalerOptions::default().init_scale, 65536.0);
    let mut scaler = GradScaler::new(opts, Device::Cpu).unwrap();
    let lr = values(&npy(r.path(), "lr"));
    let wd = values(&npy(r.path(), "wd"));
    let scale = values(&npy(r.path(), "scale"));
    let scale_after = values(&npy(r.path(), "scale_after"));
    let tracker_after = values(&npy(r.path(), "tracker_after"));
    let skipped = values(&npy(r.path(), "skipped"));
    assert!(
        skipped.contains(&1.0) && scale_after.iter().zip(&scale).any(|(a, b)| a > b),
        "the reference both skips and grows"
    );
    for it in 0..r.epochs * r.niter {
        opt.zero_grad();
        opt.backward(&scaler.scale_loss(&r.loss(it)).unwrap())
            .unwrap();
        let frozen = frozen_last_layer(opt.param_names(), it / r.niter, r.freeze);
        let outcome = opt
            .clip_and_step(r.clip, lr[it], wd[it], &frozen, Some(&mut scaler))
            .unwrap();
        assert_eq!(
            outcome.loss_scale,
            Some(scale[it]),
            "scale used by iteration {it}"
        );
        assert_eq!(
            outcome.skipped,
            skipped[it] == 1.0,
            "skip at iteration {it}"
        );
        assert_eq!(scaler.scale().unwrap(), scale_after[it], "scale after {it}");
        assert_eq!(
            scaler.growth_tracker().unwrap() as f64,
            tracker_after[it],
            "growth tracker after {it}"
        );
        r.assert_params(it);
    }

    // The state round-trips into a fresh scaler, which then continues identically.
    let mut back = GradScaler::new(ScalerOptions::default(), Device::Cpu).unwrap();
    back.load_state(&scaler.state_tensors()).unwrap();
    assert_eq!(back.scale().unwrap(), scaler.scale().unwrap());
    assert_eq!(
        back.growth_tracker().unwrap(),
        scaler.growth_tracker().unwrap()
    );
    let mut bad = scaler.state_tensors();
    bad.pop();
    assert!(back
        .load_state(&bad)
        .unwrap_err()
        .contains("growth_tracker"));
    bad = scaler.state_tensors();
    bad.push(("extra".into(), Tensor::from(1.0f32)));
    assert!(back.load_state(&bad).unwrap_err().contains("extra"));
}

#[test]
fn without_clipping_the_frozen_layer_is_not_checked_for_inf() {
    // Official: with --clip_grad 0 the unscale happens inside fp16_scaler.step, after
    // cancel_gradients_last_layer dropped the last layer's gradient, so an inf there is not seen.
    let w = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let v = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let named = vec![
        ("backbone.w".to_string(), w.shallow_clone()),
        ("head.last_layer.weight_v".to_string(), v.shallow_clone()),
    ];
    let mut opt = Optimizer::new(named, &OptimConfig::default()).unwrap();
    let mut scaler = GradScaler::new(ScalerOptions::default(), Device::Cpu).unwrap();
    let inf = Tensor::from_slice(&[f32::INFINITY, 1.0, 1.0, 1.0]).view([2, 2]);
    let step = |opt: &mut Optimizer, scaler: &mut GradScaler, clip: f64| {
        opt.zero_grad();
        let loss = (&w * 1.0).sum(Kind::Float) + (&v * &inf).sum(Kind::Float);
        opt.backward(&scaler.scale_loss(&loss).unwrap()).unwrap();
        let frozen = frozen_last_layer(opt.param_names(), 0, 1);
        opt.clip_and_step(clip, 0.1, 0.0, &frozen, Some(scaler))
            .unwrap()
    };
    let out = step(&mut opt, &mut scaler, 0.0);
    assert!(!out.skipped, "frozen layer's inf ignored without clipping");
    assert_eq!(opt.step_count("backbone.w"), Some(1));
    assert_eq!(scaler.growth_tracker().unwrap(), 1);
    let out = step(&mut opt, &mut scaler, 3.0);
    assert!(out.skipped, "checked when unscale_ comes before clipping");
    assert_eq!(opt.step_count("backbone.w"), Some(1));
    assert_eq!(scaler.scale().unwrap(), 32768.0);
}

#[test]
fn state_of_another_optimizer_is_refused_by_name() {
    let r = Reference::run("sgd");
    let sgd = r.optimizer(OptimizerKind::Sgd);
    let mut lars = r.optimizer(OptimizerKind::Lars);
    let e = lars.load_state(&sgd.state_tensors().unwrap()).unwrap_err();
    assert!(
        e.to_string().contains("lars") && e.to_string().contains("mu."),
        "{e}"
    );
    let mut adamw = r.optimizer(OptimizerKind::Adamw);
    assert!(adamw.load_state(&sgd.state_tensors().unwrap()).is_err());
}
