//! `model.cls_only_last_block` in the training methods (issue #27 item 2): the DINO step (student
//! and teacher) and the supervised step give, with the CLS-only last block, the loss, gradients
//! and center of the full last block to 1e-5 (scaled by the tensor's largest element where that
//! exceeds 1), with stochastic depth on; and the switch reaches both networks (their float
//! rounding changes, which a run with the switch off would not show).

use crate::common::{compare, grads, serial, tiny_dino_config, two_dino_steps};
use dino_config::Config;
use dino_data::batch::MultiCropBatch;
use dino_model::ComputePrecision;
use dino_train::distributed::Dist;
use dino_train::supervised::SupervisedMethod;
use tch::{Device, Tensor};

/// Issue #27 item 2's tolerance, as in `crates/model/tests/cls_only_block.rs`.
const TOL: f64 = 1e-5;

fn config(cls_only: bool) -> Config {
    tiny_dino_config(&[&format!("model.cls_only_last_block={cls_only}")])
}

/// Two DINO forward/backward passes (the second centres with the first's teacher mean): the
/// second loss, the student's gradients and the center.
fn dino_step(cls_only: bool) -> (f64, Vec<(String, Tensor)>, Tensor) {
    let (losses, grads, center) = two_dino_steps(&config(cls_only));
    (losses[1], grads, center)
}

#[test]
fn dino_step_with_the_cls_only_block_matches_the_full_block() {
    alone!();
    let _serial = serial();
    let (loss_full, g_full, c_full) = dino_step(false);
    let (loss_cls, g_cls, c_cls) = dino_step(true);
    let (worst, name, student_changed) = compare(&g_full, &g_cls);
    let center = (&c_full - &c_cls).abs().max().double_value(&[]);
    eprintln!(
        "DINO: loss {loss_full} vs {loss_cls}, worst scaled gradient difference {worst:e} \
         ({name}), center {center:e}"
    );
    assert!((loss_full - loss_cls).abs() <= TOL * loss_full.abs().max(1.0));
    assert!(
        worst <= TOL,
        "{name}: gradients differ by {worst:e} (scaled)"
    );
    assert!(center <= TOL, "center differs by {center:e}");
    // The switch reaches the student (its gradients round differently) and the teacher (the
    // center is the mean of the teacher's logits alone, whose weights no step has moved here).
    assert!(student_changed, "the student ran the same path both times");
    assert!(
        !c_full.equal(&c_cls),
        "the teacher ran the same path both times"
    );
}

/// One supervised forward/backward on a batch of 5 images of 3 classes (10 global crops).
fn supervised_step(cls_only: bool) -> (f64, Vec<(String, Tensor)>) {
    let cfg = config(cls_only);
    let dist = Dist::single();
    let mut m = SupervisedMethod::new(&cfg, 3, Device::Cpu, ComputePrecision::Fp32, &dist).unwrap();
    let mut batch = MultiCropBatch::zeroed(0, 0, 5, 16, 8, 0);
    for (i, px) in batch.globals.iter_mut().enumerate() {
        *px = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
    }
    batch.labels = vec![0, 1, 2, 1, 0];
    let stats = m.forward_backward(&batch, 3, &dist).unwrap();
    (stats.loss, grads(&m.vs, &m.optimizer))
}

#[test]
fn supervised_step_with_the_cls_only_block_matches_the_full_block() {
    alone!();
    let _serial = serial();
    let (loss_full, g_full) = supervised_step(false);
    let (loss_cls, g_cls) = supervised_step(true);
    let (worst, name, changed) = compare(&g_full, &g_cls);
    eprintln!(
        "supervised: loss {loss_full} vs {loss_cls}, worst scaled gradient difference {worst:e} \
         ({name})"
    );
    assert!((loss_full - loss_cls).abs() <= TOL * loss_full.abs().max(1.0));
    assert!(
        worst <= TOL,
        "{name}: gradients differ by {worst:e} (scaled)"
    );
    assert!(changed, "the backbone ran the same path both times");
}
