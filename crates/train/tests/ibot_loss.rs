//! iBOT's patch loss (`crates/train/src/loss/ibot.rs`) against `tests/reference/ibot_loss_reference.py`
//! (written from reading dinov2's `ibot_patch_loss.py`, `collate.py` and `ssl_meta_arch.py`):
//! value and gradient within 1e-6 with the EMA center and with Sinkhorn-Knopp, the targets, the
//! center update exact; and the term in the training step (`DinoMethod` with `ibot.loss_weight`):
//! named `ibot`, summed into the total, its center saved by name, the CLS-only last block off,
//! the student's `mask_token` trained, a separate head, and accumulation exact.

use crate::common;

use common::{assert_close, npy, run_reference, values};
use dino_config::{Config, LossConfig};
use dino_model::{ComputePrecision, TokenScope};
use dino_train::accumulation::Window;
use dino_train::distributed::Dist;
use dino_train::loss::ibot::{IbotPatchLoss, MaskedPatches};
use dino_train::loss::stats::{DINO, IBOT, LOSS};
use dino_train::loss::IBOT_CENTER;
use dino_train::method::DinoMethod;
use tch::{Device, Kind, Tensor};

const WEIGHT: f64 = 1.0;
const TEMP: f64 = 0.07;

#[test]
fn matches_reference_value_gradient_targets_and_center() {
    let dir = run_reference(
        "ibot_loss_reference.py",
        &["{out}", &WEIGHT.to_string(), &TEMP.to_string()],
    );
    let dir = dir.path();
    let masks = npy(dir, "masks").to_kind(Kind::Bool);
    let masked = MaskedPatches::from_masks(&masks).unwrap();
    assert_eq!(masked.n_crops, 6);
    // Crop 2 has no masked patch, crop 4 one (weight 1).
    let center = npy(dir, "center");
    let t_all = npy(dir, "t_all");
    let t_sel = masked.select(&t_all).unwrap();
    for (mode, centering) in [("center", "center"), ("sk", "sinkhorn_knopp")] {
        let cfg = LossConfig {
            centering: serde_json::from_str(&format!("\"{centering}\"")).unwrap(),
            ..LossConfig::default()
        };
        let mut term = IbotPatchLoss::new(32, WEIGHT, &cfg).unwrap();
        term.set_center(&center).unwrap();
        let targets = term
            .targets(&t_sel, TEMP, masked.count as f64, &|_| Ok(()))
            .unwrap();
        assert_close(
            &format!("iBOT targets ({mode})"),
            &values(&targets),
            &values(&npy(dir, &format!("targets_{mode}"))),
            1e-6,
            0.0,
        );
        let s_all = npy(dir, "s_all").set_requires_grad(true);
        let s_sel = masked.select(&s_all).unwrap();
        let loss = term.term(&s_sel, &targets, &masked).unwrap();
        loss.backward();
        assert_close(
            &format!("iBOT loss ({mode})"),
            &values(&loss),
            &values(&npy(dir, &format!("loss_{mode}"))),
            1e-6,
            0.0,
        );
        assert_close(
            &format!("iBOT gradient ({mode})"),
            &values(&s_all.grad()),
            &values(&npy(dir, &format!("grad_{mode}"))),
            1e-6,
            0.0,
        );
        // Unmasked patches get no gradient.
        let unmasked = masks.logical_not().unsqueeze(-1).expand_as(&s_all);
        assert_eq!(
            s_all
                .grad()
                .masked_select(&unmasked)
                .abs()
                .max()
                .double_value(&[]),
            0.0
        );
    }
    // The center update, bit for bit.
    let mut term = IbotPatchLoss::new(32, WEIGHT, &LossConfig::default()).unwrap();
    term.set_center(&center).unwrap();
    let (sum, m) = IbotPatchLoss::patch_sum(&t_sel).unwrap().unwrap();
    term.update_center(&(sum / m as f64)).unwrap();
    let expected = npy(dir, "new_center");
    let diff = (term.center() - &expected).abs().max().double_value(&[]);
    eprintln!("iBOT center update max |Δ| {diff:e}");
    assert!(diff <= 1e-7, "center update differs by {diff}");
    // Nothing masked: no batch center (the official mean over nothing would be NaN).
    let empty = Tensor::zeros([0, 32], (Kind::Float, Device::Cpu));
    assert!(IbotPatchLoss::patch_sum(&empty).unwrap().is_none());
}

fn config(extra: &[&str]) -> Config {
    let mut sets = vec![
        "model.depth=2",
        "model.drop_path_rate=0.0",
        "optim.batch_size=4",
    ];
    sets.extend(extra);
    common::tiny_dino_config(&sets)
}

/// Crops `[2·4, 3, 16, 16]`, `[2·4, 3, 8, 8]` and masks `[8, 16]` (crops 0, 3, 5, 6 masked).
fn inputs(seed: i64) -> (Vec<Tensor>, Tensor) {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    let crops = vec![
        Tensor::randn([8, 3, 16, 16], opts),
        Tensor::randn([8, 3, 8, 8], opts),
    ];
    let rows = Tensor::from_slice(&[1i64, 0, 0, 1, 0, 1, 1, 0]).reshape([8, 1]);
    let masks = Tensor::rand([8, 16], opts)
        .lt(0.4)
        .logical_and(&rows.to_kind(Kind::Bool));
    (crops, masks)
}

fn method(cfg: &Config) -> DinoMethod {
    DinoMethod::new(cfg, 4, Device::Cpu, ComputePrecision::Fp32, &Dist::single()).unwrap()
}

fn grad(m: &DinoMethod, name: &str) -> Tensor {
    m.optimizer.grad(name).unwrap().expect("a gradient").copy()
}

#[test]
fn the_ibot_term_joins_the_step_with_its_own_center() {
    dino_test_support::alone!();
    let cfg = config(&["ibot.loss_weight=0.5"]);
    let mut m = method(&cfg);
    assert!(m.uses_masks());
    let dist = Dist::single();
    let (crops, masks) = inputs(5);
    // iBOT needs the masks.
    assert!(m
        .forward_backward_crops(&crops, (0, 0), 0, Window::SINGLE, &dist)
        .is_err());
    let names: Vec<_> = m.loss.centering_state_names();
    assert_eq!(names, ["center", IBOT_CENTER]);
    let before = m.loss.ibot().unwrap().center().copy();
    let stats = m
        .forward_backward_masked(&crops, Some(&masks), (0, 0), 0, Window::SINGLE, &dist)
        .unwrap();
    let term_names: Vec<_> = stats.terms.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(term_names, [DINO, IBOT]);
    let ibot = stats.get(IBOT, LOSS).unwrap();
    assert!(ibot.is_finite() && ibot > 0.0, "{ibot}");
    assert_eq!(stats.term(IBOT).unwrap().weight, 0.5);
    assert_eq!(stats.loss, stats.get(DINO, LOSS).unwrap() + ibot);
    // Its center moved (toward the teacher's masked-patch outputs), DINO's too.
    let after = m.loss.ibot().unwrap().center().copy();
    assert!((&after - &before).abs().max().double_value(&[]) > 0.0);
    // The student's mask_token is trained; the teacher's is a copy and never used.
    let g = grad(&m, "backbone.mask_token");
    assert!(g.abs().max().double_value(&[]) > 0.0);
    assert!(m.teacher_vs.variables().contains_key("backbone.mask_token"));
    // Saved by name.
    let states: Vec<_> = m
        .loss
        .centering_states()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(states, ["center", IBOT_CENTER]);
}

/// `model.cls_only_last_block` (on by default) is not used under iBOT: the patch loss needs
/// the last block's patch tokens, so both networks run the full block.
#[test]
fn ibot_turns_the_cls_only_last_block_off() {
    let on = config(&["ibot.loss_weight=1.0", "model.cls_only_last_block=true"]);
    assert!(on.model.cls_only_last_block);
    assert_eq!(method(&on).token_scope(), TokenScope::AllTokens);
    let off = config(&["model.cls_only_last_block=true"]);
    assert_eq!(method(&off).token_scope(), TokenScope::ClsOnly);
}

/// `ibot.separate_head`: `ibot_head.*` of its own sizes, with its own center width, gets the
/// patch tokens' gradient, and the DINO head none of it: halving `ibot.loss_weight` halves the
/// `ibot_head` gradients and leaves the DINO head's unchanged.
#[test]
fn a_separate_head_has_its_own_sizes_and_gets_the_patch_gradients() {
    dino_test_support::alone!();
    let cfg = |weight: &str| {
        config(&[
            weight,
            "ibot.separate_head=true",
            "ibot.head_out_dim=40",
            "ibot.head_hidden_dim=24",
            "ibot.head_bottleneck_dim=8",
            "ibot.head_nlayers=2",
        ])
    };
    let dist = Dist::single();
    let (crops, masks) = inputs(6);
    let run = |weight: &str| {
        let mut m = method(&cfg(weight));
        let stats = m
            .forward_backward_masked(&crops, Some(&masks), (0, 0), 0, Window::SINGLE, &dist)
            .unwrap();
        (m, stats)
    };
    let (m, stats) = run("ibot.loss_weight=1.0");
    let vars = m.student_vs.variables();
    assert_eq!(vars["ibot_head.last_layer.weight_v"].size(), [40, 8]);
    assert_eq!(m.loss.ibot().unwrap().center().size(), [1, 40]);
    assert!(stats.get(IBOT, LOSS).unwrap() > 0.0);
    let (half, half_stats) = run("ibot.loss_weight=0.5");
    let ratio = half_stats.get(IBOT, LOSS).unwrap() / stats.get(IBOT, LOSS).unwrap();
    assert!((ratio - 0.5).abs() < 1e-6, "{ratio}");
    let g = grad(&m, "ibot_head.mlp.0.weight");
    assert!(g.abs().max().double_value(&[]) > 0.0);
    let d = (grad(&half, "ibot_head.mlp.0.weight") * 2.0 - &g)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        d < 1e-6,
        "ibot_head gradient not proportional to the weight: {d}"
    );
    let d = (grad(&half, "head.mlp.0.weight") - grad(&m, "head.mlp.0.weight"))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d < 1e-7, "the DINO head got some of the iBOT gradient: {d}");
}

/// `optim.accum_steps = 2` over two micro-batches of 2 images equals one batch of 4: the iBOT
/// term is per image (its weights per crop, divided by the crops), so the window's mean of the
/// micro-batch losses has the large batch's gradient, given the same masks.
#[test]
fn accumulation_is_exact_with_ibot() {
    dino_test_support::alone!();
    let cfg = config(&["ibot.loss_weight=1.0"]);
    let dist = Dist::single();
    let (crops, masks) = inputs(7);
    let mut whole = method(&cfg);
    whole
        .forward_backward_masked(&crops, Some(&masks), (0, 0), 0, Window::SINGLE, &dist)
        .unwrap();
    let acc_cfg = config(&[
        "ibot.loss_weight=1.0",
        "optim.accum_steps=2",
        "optim.batch_size=2",
    ]);
    let mut acc = method(&acc_cfg);
    // Micro-batch i: images 2i, 2i+1 of each view (view-major rows).
    let pick = |t: &Tensor, i: i64| {
        let b = t.size()[0] / 4;
        let views: Vec<Tensor> = (0..b).map(|v| t.narrow(0, v * 4 + 2 * i, 2)).collect();
        Tensor::cat(&views, 0)
    };
    for i in 0..2 {
        let c: Vec<Tensor> = crops.iter().map(|t| pick(t, i)).collect();
        let mk = pick(&masks, i);
        let window = Window {
            index: i as usize,
            len: 2,
        };
        acc.forward_backward_masked(&c, Some(&mk), (0, 0), i as usize, window, &dist)
            .unwrap();
    }
    let mut worst: f64 = 0.0;
    for (name, v) in whole.student_vs.variables() {
        if !v.requires_grad() {
            continue;
        }
        let a = grad(&whole, &name);
        let b = grad(&acc, &name);
        let d = (&a - &b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]).max(1.0);
        worst = worst.max(d / scale);
    }
    eprintln!("accumulation with iBOT: worst gradient difference {worst:e}");
    assert!(worst < 1e-6, "{worst}");
    // The iBOT centers: the mean of the micro-batches' batch centers is not the batch's (each
    // micro-batch averages its own masked patches), so only their being finite and moved is
    // asserted here.
    let c = acc.loss.ibot().unwrap().center();
    assert!(c.isfinite().all().int64_value(&[]) == 1);
}
