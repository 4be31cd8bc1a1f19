//! `model.cls_only_last_block` in the training methods (issue #27 item 2): the DINO step (student
//! and teacher) and the supervised step give, with the CLS-only last block, the loss, gradients
//! and center of the full last block to 1e-5 (scaled by the tensor's largest element where that
//! exceeds 1), with stochastic depth on; and the switch reaches both networks (their float
//! rounding changes, which a run with the switch off would not show).

use dino_config::Config;
use dino_data::batch::MultiCropBatch;
use dino_model::ComputePrecision;
use dino_train::accumulation::Window;
use dino_train::distributed::Dist;
use dino_train::method::DinoMethod;
use dino_train::optim::Optimizer;
use dino_train::supervised::SupervisedMethod;
use std::sync::{Mutex, MutexGuard};
use tch::{nn, Device, Kind, Tensor};

/// libtorch's generator is process-global: the seeded tests run one at a time.
static RNG: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Issue #27 item 2's tolerance, as in `crates/model/tests/cls_only_block.rs`.
const TOL: f64 = 1e-5;

fn config(cls_only: bool) -> Config {
    Config::with_overrides(&[
        "model.arch=\"custom\"",
        "model.embed_dim=32",
        "model.depth=3",
        "eval.n_last_blocks=1",
        "model.num_heads=2",
        "model.patch_size=4",
        "model.img_size=16",
        "model.drop_path_rate=0.3",
        "head.out_dim=64",
        "head.hidden_dim=48",
        "head.bottleneck_dim=16",
        "augmentation.global_crops_size=16",
        "augmentation.local_crops_size=8",
        "augmentation.local_crops_number=2",
        "optim.batch_size=5",
        "optim.epochs=2",
        "schedule.warmup_epochs=0",
        "schedule.freeze_last_layer=0",
        &format!("model.cls_only_last_block={cls_only}"),
    ])
    .unwrap()
}

/// The trainable variables' gradients, sorted by name: read from the optimizer, which
/// has backward write them into its flat group buffers (a variable's `.grad` stays undefined).
fn grads(vs: &nn::VarStore, optimizer: &Optimizer) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(n, _)| {
            let g = optimizer
                .grad(&n)
                .unwrap()
                .expect("every parameter gets a gradient");
            (n, g.copy())
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Largest `|a − b| / max(1, max |a|)` over the pairs, and whether any pair differs at all.
fn compare(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, String, bool) {
    assert_eq!(a.len(), b.len());
    let (mut worst, mut name, mut any) = (0.0f64, String::new(), false);
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.defined() && tb.defined(), "{na}: no gradient");
        any |= !ta.equal(tb);
        let scale = ta.abs().max().double_value(&[]).max(1.0);
        let d = (ta - tb).abs().max().double_value(&[]) / scale;
        if d > worst {
            (worst, name) = (d, na.clone());
        }
    }
    (worst, name, any)
}

/// Two DINO forward/backward passes (the second centres with the first's teacher mean): the
/// loss, the student's gradients and the center.
fn dino_step(cls_only: bool) -> (f64, Vec<(String, Tensor)>, Tensor) {
    let cfg = config(cls_only);
    let dist = Dist::single();
    let mut m = DinoMethod::new(&cfg, 4, Device::Cpu, ComputePrecision::Fp32, &dist).unwrap();
    tch::manual_seed(99);
    let opts = (Kind::Float, Device::Cpu);
    let crops = [
        Tensor::randn([10, 3, 16, 16], opts),
        Tensor::randn([10, 3, 8, 8], opts),
    ];
    m.forward_backward_crops(&crops, (0, 0), 0, Window::SINGLE, &dist)
        .unwrap();
    let stats = m
        .forward_backward_crops(&crops, (0, 1), 1, Window::SINGLE, &dist)
        .unwrap();
    (
        stats.loss,
        grads(&m.student_vs, &m.optimizer),
        m.loss.center().copy(),
    )
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
