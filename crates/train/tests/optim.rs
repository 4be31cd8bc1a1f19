//! AdamW, parameter groups, per-parameter clipping and last-layer freezing against
//! `tests/reference/adamw_reference.py optim` (torch.optim.AdamW with the official recipe).

use crate::common;

use common::{assert_close, npy, run_reference, values};
use dino_config::OptimConfig;
use dino_train::optim::{frozen_last_layer, is_regularized, OptimError, Optimizer};
use std::collections::HashSet;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn set_grads(opt: &mut Optimizer, params: &[(String, Tensor)], grads: &[(String, Tensor)]) {
    // d/dp sum(p * G) = G exactly.
    let mut loss: Option<Tensor> = None;
    for ((_, p), (_, g)) in params.iter().zip(grads) {
        let term = (p * g).sum(Kind::Float);
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    opt.backward(&loss.unwrap()).unwrap();
}

#[test]
fn matches_torch_adamw_with_dino_groups_clipping_and_freezing() {
    let dir = run_reference("adamw_reference.py", &["optim", "{out}"]);
    let dir = dir.path();
    let names: Vec<String> = std::fs::read_to_string(dir.join("names.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let meta: Vec<f64> = std::fs::read_to_string(dir.join("meta.txt"))
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (niter, epochs, clip, freeze) = (
        meta[0] as usize,
        meta[1] as usize,
        meta[2],
        meta[3] as usize,
    );
    let params: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| {
            let t = npy(dir, &format!("init.{n}"));
            // weight_g is the frozen weight-norm gain: not trainable.
            (n.clone(), t.set_requires_grad(!n.ends_with("weight_g")))
        })
        .collect();
    // torch.optim.AdamW's single-tensor arithmetic (the official one), not the fused kernel.
    let official = OptimConfig {
        fused: false,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(
        params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        &official,
    )
    .unwrap();
    let trainable: Vec<(String, Tensor)> = params
        .iter()
        .filter(|(n, _)| !n.ends_with("weight_g"))
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    assert_eq!(opt.param_names().count(), trainable.len());
    let reg: Vec<&str> = opt.regularized_names().collect();
    assert_eq!(
        reg,
        [
            "backbone.cls_token",
            "backbone.pos_embed",
            "backbone.blocks.0.mlp.fc1.weight",
            "head.mlp.0.weight",
            "head.last_layer.weight_v"
        ]
    );
    let lr = values(&npy(dir, "lr"));
    let wd = values(&npy(dir, "wd"));
    for it in 0..epochs * niter {
        let epoch = it / niter;
        opt.zero_grad();
        let grads: Vec<(String, Tensor)> = trainable
            .iter()
            .map(|(n, _)| (n.clone(), npy(dir, &format!("grad_{it}.{n}"))))
            .collect();
        set_grads(&mut opt, &trainable, &grads);
        let norms = opt.clip_gradients(clip).unwrap().to_host().unwrap();
        let frozen = frozen_last_layer(opt.param_names(), epoch, freeze);
        assert_eq!(frozen.len(), if epoch < freeze { 1 } else { 0 });
        opt.step(lr[it], wd[it], &frozen).unwrap();
        let got: Vec<f64> = norms.iter().map(|(_, v)| *v).collect();
        assert_close(
            &format!("norms {it}"),
            &got,
            &values(&npy(dir, &format!("norms_{it}"))),
            1e-6,
            1e-6,
        );
        for (n, p) in &params {
            assert_close(
                &format!("{n} after step {it}"),
                &values(p),
                &values(&npy(dir, &format!("param_{it}.{n}"))),
                1e-6,
                1e-6,
            );
        }
    }
    for n in &names {
        let want = dir.join(format!("step.{n}.npy"));
        let got = opt.step_count(n);
        if want.exists() {
            assert_eq!(
                got,
                Some(npy(dir, &format!("step.{n}")).int64_value(&[0])),
                "{n}"
            );
        } else {
            assert_eq!(got, None, "{n} is not optimized");
        }
    }
    assert_eq!(
        opt.step_count("head.last_layer.weight_v"),
        Some(((epochs - freeze) * niter) as i64)
    );
}

#[test]
fn group_rule_is_official() {
    // utils.get_params_groups: no decay for `.bias` and 1-D params; cls_token / pos_embed decayed.
    assert!(is_regularized("backbone.cls_token", &[1, 1, 384]));
    assert!(is_regularized("backbone.pos_embed", &[1, 197, 384]));
    assert!(is_regularized(
        "backbone.blocks.0.attn.qkv.weight",
        &[1152, 384]
    ));
    assert!(is_regularized(
        "backbone.patch_embed.proj.weight",
        &[384, 3, 16, 16]
    ));
    assert!(!is_regularized("backbone.blocks.0.attn.qkv.bias", &[1152]));
    assert!(!is_regularized("backbone.norm.weight", &[384]));
    assert!(!is_regularized("head.some.bias", &[2, 2]));
    let names = [
        "head.last_layer.weight_v",
        "head.mlp.0.weight",
        "head.last_layer.weight_g",
    ];
    let f = frozen_last_layer(names, 0, 1);
    assert_eq!(f.len(), 2);
    assert!(frozen_last_layer(names, 1, 1).is_empty());
    assert!(frozen_last_layer(names, 0, 0).is_empty());
}

fn small_store() -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let a = &root / "a";
    let _ = a.randn("weight", &[3, 4], 0.0, 1.0);
    let _ = a.randn("bias", &[3], 0.0, 1.0);
    let last = &root / "head" / "last_layer";
    let _ = last.randn("weight_v", &[2, 3], 0.0, 1.0);
    let _ = last.ones_no_train("weight_g", &[2, 1]);
    let _ = (&root / "bn").zeros_no_train("running_mean", &[3]);
    vs
}

fn backward_on(opt: &mut Optimizer, vs: &VarStore, seed: i64) {
    tch::manual_seed(seed);
    let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for t in vs.trainable_variables() {
        loss += (&t * Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 4.0).sum(Kind::Float);
    }
    opt.backward(&loss).unwrap();
}

#[test]
fn var_store_groups_and_state_round_trip() {
    tch::manual_seed(0);
    let vs = small_store();
    let cfg = OptimConfig::default();
    let mut opt = Optimizer::from_var_store(&vs, &cfg).unwrap();
    let names: Vec<&str> = opt.param_names().collect();
    assert_eq!(
        names,
        ["a.bias", "a.weight", "head.last_layer.weight_v"],
        "sorted, trainable only"
    );
    for s in 0..3 {
        opt.zero_grad();
        backward_on(&mut opt, &vs, s);
        opt.clip_gradients(3.0).unwrap();
        opt.step(1e-2, 0.1, &HashSet::new()).unwrap();
    }
    let state = opt.state_tensors().unwrap();
    assert_eq!(state.len(), 9);
    // A second optimizer over a copy of the weights, restored from the state, takes the
    // same next step bit for bit.
    let vs2 = small_store();
    let mut vs2m = vs2;
    vs2m.copy(&vs).unwrap();
    let mut opt2 = Optimizer::from_var_store(&vs2m, &cfg).unwrap();
    opt2.load_state(&state).unwrap();
    assert_eq!(opt2.step_count("a.weight"), Some(3));
    for (o, v) in [(&mut opt, &vs), (&mut opt2, &vs2m)] {
        o.zero_grad();
        backward_on(o, v, 7);
        o.clip_gradients(3.0).unwrap();
        o.step(1e-2, 0.1, &HashSet::new()).unwrap();
    }
    let a = vs.variables();
    let b = vs2m.variables();
    for (n, t) in &a {
        assert!(t.equal(&b[n]), "{n} differs after restored step");
    }
}

#[test]
fn frozen_params_get_no_update_and_clip_zero_disables() {
    tch::manual_seed(1);
    let vs = small_store();
    let mut opt = Optimizer::from_var_store(&vs, &OptimConfig::default()).unwrap();
    let before = vs.variables()["head.last_layer.weight_v"].copy();
    backward_on(&mut opt, &vs, 3);
    let grad = |opt: &Optimizer, n: &str| opt.grad(n).unwrap().expect("has a gradient");
    let g_before = grad(&opt, "a.weight").copy();
    let norms = opt.clip_gradients(0.0).unwrap().to_host().unwrap();
    assert_eq!(norms.len(), 3);
    assert!(
        grad(&opt, "a.weight").equal(&g_before),
        "clip 0 leaves grads alone"
    );
    assert!(
        !vs.variables()["a.weight"].grad().defined(),
        "the gradients live in the optimizer's buffers, never in .grad"
    );
    let want_norm = f64::try_from(g_before.norm()).unwrap();
    let got = norms.iter().find(|(n, _)| n == "a.weight").unwrap().1;
    assert!((got - want_norm).abs() < 1e-6);
    let frozen: HashSet<String> = ["head.last_layer.weight_v".to_string()].into();
    opt.step(0.1, 0.5, &frozen).unwrap();
    assert!(
        vs.variables()["head.last_layer.weight_v"].equal(&before),
        "no decay, no step"
    );
    assert_eq!(opt.step_count("head.last_layer.weight_v"), Some(0));
    assert_eq!(opt.step_count("a.weight"), Some(1));
    // Clipping scales a large gradient to norm `clip` (up to the 1e-6 guard).
    opt.zero_grad();
    backward_on(&mut opt, &vs, 4);
    opt.clip_gradients(0.5).unwrap();
    let n = f64::try_from(grad(&opt, "a.weight").norm()).unwrap();
    assert!((n - 0.5).abs() < 1e-5, "{n}");
}

#[test]
fn load_state_rejects_mismatches() {
    let vs = small_store();
    let mut opt = Optimizer::from_var_store(&vs, &OptimConfig::default()).unwrap();
    let state = opt.state_tensors().unwrap();
    let missing: Vec<_> = state[1..]
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    assert!(matches!(
        opt.load_state(&missing),
        Err(OptimError::StateMismatch(_))
    ));
    let mut wrong: Vec<_> = state
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    wrong[0].1 = Tensor::zeros([7], (Kind::Float, Device::Cpu));
    assert!(matches!(
        opt.load_state(&wrong),
        Err(OptimError::StateMismatch(_))
    ));
    let mut extra: Vec<_> = state
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    extra.push((
        "exp_avg.other".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    let err = opt.load_state(&extra).unwrap_err();
    assert!(err.to_string().contains("exp_avg.other"), "{err}");
    let dup = vec![
        (
            "x".to_string(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true),
        ),
        (
            "x".to_string(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true),
        ),
    ];
    assert!(matches!(
        Optimizer::new(dup, &OptimConfig::default()),
        Err(OptimError::DuplicateName(_))
    ));
}
