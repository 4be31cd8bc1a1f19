//! Issue #29: two processes equal one with DINOv2's backbone options on (registers, LayerScale,
//! SwiGLU, the antialiased position resize): 2 processes of batch 4 against 1 process of batch
//! 8, the same tiny run as `distributed.rs` (which covers the plain ViT, Sinkhorn-Knopp, and
//! KoLeo, a per-process term that is not compared with one process).
//!
//! The runs differ only in float summation order (a batch mean of 8 rows against the mean of two
//! means of 4, the gradient all-reduce). Measured on the development machine (AMD EPYC Zen 4,
//! AVX512-BF16, 2 cores; `--nocapture` prints them), over the 6 steps of one epoch:
//!
//! | options | first loss | worst loss | worst checkpoint tensor |
//! |---|---|---|---|
//! | registers, LayerScale, SwiGLU, antialias | 6.0e-8 | 1.2e-7 | 6.3e-7 (an AdamW moment of the head) |
//! | Sinkhorn-Knopp centering | 0 | 7.2e-7 | 1.0e-6 (a qkv bias) |
//! | iBOT (EMA centers) | 1.5e-8 | 5.2e-7 | 6.6e-7 (a qkv bias) |
//! | iBOT + Sinkhorn-Knopp | 1.2e-7 | 7.2e-7 | 2.8e-6 (a qkv bias) |
//!
//! Every logged loss is held within 1e-6 ([`TOL`], issue #29's bound); the tensors within
//! [`TENSOR_TOL`] = 2e-6: AdamW divides each update by the gradient's running RMS, so a
//! rounding-level gradient difference moves a weight by up to its step size, and the
//! Sinkhorn-Knopp run already reaches 1.0e-6 after 6 steps. With iBOT under Sinkhorn-Knopp (two
//! normalisations over all-reduced sums, of the CLS and the masked patches) a qkv bias reaches
//! 2.8e-6, held within 5e-6 there; its losses stay within 1e-6.

use crate::common::tiny::{tensors, tiny_run};
use crate::distributed::{dino, launch_two, losses, ok};

/// Bound on every logged loss.
const TOL: f64 = 1e-6;
/// Bound on every checkpoint tensor (weights, EMA teacher, optimizer moments, center).
const TENSOR_TOL: f64 = 2e-6;

const OPTIONS: [&str; 8] = [
    "--set",
    "model.num_register_tokens=2",
    "--set",
    "model.layerscale_init=0.1",
    "--set",
    "model.ffn=\"swiglu\"",
    "--set",
    "model.pos_interpolation=\"antialias\"",
];

/// One process of batch 8 and two of batch 4 over one epoch (6 steps) with `options`: asserts
/// the first loss and every loss agree within [`TOL`], every checkpoint tensor within
/// [`TENSOR_TOL`], and that the loss moved; returns the single run's tensors.
fn one_vs_two(options: &[&str]) -> Vec<(String, tch::Tensor)> {
    one_vs_two_within(options, TENSOR_TOL)
}

/// [`one_vs_two`] with the tensors held within `tensor_tol`.
fn one_vs_two_within(options: &[&str], tensor_tol: f64) -> Vec<(String, tch::Tensor)> {
    let (tmp, cfg) = tiny_run("log_every = 1");
    let cfg = cfg.to_str().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let epoch = [
        "--set",
        "optim.epochs=1",
        "--set",
        "schedule.warmup_epochs=0",
    ];
    let mut args = vec!["train", "--config", cfg, "--output", one.to_str().unwrap()];
    args.extend(["--no-progress", "--set", "model.drop_path_rate=0.0"]);
    args.extend(["--set", "optim.batch_size=8"]);
    args.extend(epoch);
    args.extend(options);
    ok(dino(&args), "single process, batch 8");
    let mut extra = epoch.to_vec();
    extra.extend(options);
    ok(launch_two(cfg, &two, &extra), "2 processes of batch 4");

    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), 6, "48 images / 8 = 6 steps");
    assert_eq!(
        l1.iter().map(|x| x.0).collect::<Vec<_>>(),
        l2.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    let first = (l1[0].1 - l2[0].1).abs();
    let worst_loss = l1
        .iter()
        .zip(&l2)
        .map(|(a, b)| (a.1 - b.1).abs())
        .fold(0.0, f64::max);
    let (t1, t2) = (tensors(&one), tensors(&two));
    assert_eq!(
        t1.iter().map(|t| &t.0).collect::<Vec<_>>(),
        t2.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "same checkpoint layout"
    );
    let mut worst = (0.0f64, String::new());
    for ((name, a), (_, b)) in t1.iter().zip(&t2) {
        if !a.is_floating_point() {
            assert!(a.equal(b), "{name} differs");
            continue;
        }
        let d = (a - b).abs().max().double_value(&[]);
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    eprintln!(
        "{options:?}, 1 vs 2 processes: first loss |Δ| {first:e}, worst loss |Δ| \
         {worst_loss:e}, worst tensor |Δ| {:e} ({})",
        worst.0, worst.1
    );
    assert!(first <= TOL, "first loss differs by {first:e}");
    assert!(worst_loss <= TOL, "loss curves differ by {worst_loss:e}");
    assert!(
        worst.0 <= tensor_tol,
        "{} differs by {:e}",
        worst.1,
        worst.0
    );
    assert!((l1[0].1 - l1[5].1).abs() > 1e-4, "the loss moved");
    t1
}

#[test]
fn two_processes_match_one_with_registers_layerscale_swiglu() {
    let t1 = one_vs_two(&OPTIONS);
    // The options' variables are there and trained (not two copies of an untouched init).
    for name in [
        "register_tokens",
        "blocks.1.ls2.gamma",
        "blocks.0.mlp.w12.weight",
    ] {
        let key = format!("student.backbone.{name}");
        assert!(t1.iter().any(|(n, _)| *n == key), "{key} missing");
        // Its optimizer moments (`optim.<moment>.…{name}`, not the step count) moved.
        let moved = t1.iter().any(|(n, t)| {
            n.starts_with("optim.")
                && !n.starts_with("optim.step.")
                && n.ends_with(name)
                && t.abs().max().double_value(&[]) > 0.0
        });
        assert!(moved, "{name} got no gradient");
    }
}

/// Issue #29 item 3 asks Sinkhorn-Knopp's 1-vs-2 agreement within 1e-6; `distributed.rs` checks
/// it at 5e-5 over 3 epochs. Over one epoch, as above: the losses within 1e-6.
#[test]
fn two_processes_match_one_with_sinkhorn_knopp_within_1e_6() {
    one_vs_two(&["--set", "loss.centering=\"sinkhorn_knopp\""]);
}

/// Issue #31: two processes equal one with iBOT on, under the EMA center and under
/// Sinkhorn-Knopp. The masks of the two ranks together are the single process's (the plan is
/// the global batch's, `dino_data::masking::batch_masks`), the iBOT loss divides by the global
/// count of crops, and the iBOT center moves to the mean over every masked patch of all ranks.
#[test]
fn two_processes_match_one_with_ibot() {
    let t1 = one_vs_two(&["--set", "ibot.loss_weight=1.0"]);
    let center = t1
        .iter()
        .find(|(n, _)| n.contains("ibot_center"))
        .expect("the iBOT center is in the checkpoint");
    assert!(
        center.1.abs().max().double_value(&[]) > 0.0,
        "the iBOT center moved"
    );
    one_vs_two_within(
        &[
            "--set",
            "ibot.loss_weight=1.0",
            "--set",
            "loss.centering=\"sinkhorn_knopp\"",
        ],
        5e-6,
    );
}

/// The per-view backward with iBOT (issue #31): two processes still equal one. Each rank cuts
/// its views' masks from the global batch's plan and back-propagates view by view; the
/// gradients are all-reduced once after the last view, as in the joint step. (KoLeo is left
/// out: it is computed per process over its own batch, as the official code, so two processes
/// are not one with it.)
#[test]
fn two_processes_match_one_with_ibot_per_view_backward() {
    one_vs_two(&[
        "--set",
        "ibot.loss_weight=1.0",
        "--set",
        "optim.backward_per_crop_group=true",
    ]);
}

/// `model.attention = "explicit"` (the CPU presets' kernel): two processes of batch 4 equal one
/// of batch 8, as with the default kernel. (`runtime.overlap_teacher` does not apply here: each
/// process gets one libtorch thread of the two cores.)
#[test]
fn two_processes_match_one_with_explicit_attention() {
    one_vs_two(&["--set", "model.attention=explicit"]);
}

/// `runtime.pack_crop_groups`: two processes of batch 4 equal one of batch 8 with the student's
/// global and local crops packed through each block (each rank packs its own crops).
#[test]
fn two_processes_match_one_with_packed_crop_groups() {
    one_vs_two(&["--set", "runtime.pack_crop_groups=true"]);
}
