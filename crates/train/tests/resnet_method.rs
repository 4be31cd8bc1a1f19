//! DINO with a ResNet backbone, one step of the method, checking what the official
//! `main_dino.py` does with BatchNorm (facebookresearch/dino @ 7c446df):
//! - the teacher starts as the student's full state dict, buffers included
//!   (`teacher_without_ddp.load_state_dict(student.module.state_dict())`);
//! - the teacher runs in training mode (it is never put in `eval()`), so its BatchNorm layers
//!   normalise with the batch statistics of the 2 global crops and update their *own* running
//!   statistics; the student's are updated by its own forward, once per crop resolution;
//! - the EMA loops over `student.parameters()` only, so the teacher's running statistics are
//!   never averaged from the student's;
//! - weight decay follows `utils.get_params_groups`: none for biases and 1-D parameters (every
//!   BatchNorm weight and bias), decay for conv weights; buffers are not parameters at all;
//! - checkpoints hold the buffers of both networks.
//!
//! One process: the official SyncBatchNorm equals plain BatchNorm there. Under several
//! processes each rank normalises with its own batch statistics (no SyncBatchNorm here).

use dino_config::Config;
use dino_data::batch::MultiCropBatch;
use dino_model::ComputePrecision;
use dino_train::checkpoint::{load_latest, save_checkpoint, CheckpointMeta};
use dino_train::distributed::Dist;
use dino_train::method::DinoMethod;
use tch::{Device, Tensor};

fn config() -> Config {
    Config::with_overrides(&[
        "model.arch=resnet18",
        "model.cifar_stem=true",
        "head.out_dim=64",
        "head.hidden_dim=32",
        "head.bottleneck_dim=16",
        "head.use_bn=true",
        "augmentation.global_crops_size=16",
        "augmentation.local_crops_size=8",
        "augmentation.local_crops_number=2",
        "optim.optimizer=sgd",
        "optim.batch_size=4",
        "optim.epochs=2",
        "schedule.warmup_epochs=0",
        "schedule.freeze_last_layer=0",
    ])
    .unwrap()
}

/// A batch of 4 images with pseudo-random pixels (fixed, so the test is deterministic).
fn batch() -> MultiCropBatch {
    let mut b = MultiCropBatch::zeroed(0, 0, 4, 16, 8, 2);
    let mut state = 12345u32;
    for v in b.globals.iter_mut().chain(b.locals.iter_mut()) {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *v = (state >> 16) as u8;
    }
    b
}

fn var(vs: &tch::nn::VarStore, name: &str) -> Tensor {
    vs.variables()[name].copy()
}

#[test]
fn teacher_batchnorm_keeps_its_own_statistics() {
    let cfg = config();
    let dist = Dist::single();
    let mut m = DinoMethod::new(&cfg, 4, Device::Cpu, ComputePrecision::Fp32, &dist).unwrap();
    assert_eq!(m.student.backbone.embed_dim(), 512);

    // The teacher starts as the whole student, buffers included.
    let (s, t) = (m.student_vs.variables(), m.teacher_vs.variables());
    assert_eq!(s.len(), t.len());
    for (n, v) in &s {
        assert!(v.equal(&t[n]), "{n} differs after init");
    }
    assert!(s.contains_key("backbone.layer4.1.bn2.running_var"));
    assert!(!s.keys().any(|n| n.contains("fc.")), "fc is identity");

    // Parameter groups: conv weights decayed; BatchNorm weights and biases not; buffers are
    // not parameters.
    let names: Vec<&str> = m.optimizer.param_names().collect();
    let reg: Vec<&str> = m.optimizer.regularized_names().collect();
    for n in [
        "backbone.conv1.weight",
        "backbone.layer2.0.downsample.0.weight",
    ] {
        assert!(reg.contains(&n), "{n} should be decayed");
    }
    for n in [
        "backbone.bn1.weight",
        "backbone.bn1.bias",
        "backbone.layer3.1.bn2.weight",
        "head.mlp.1.weight",
    ] {
        assert!(names.contains(&n) && !reg.contains(&n), "{n}: no decay");
    }
    assert!(!names
        .iter()
        .any(|n| n.contains("running_") || n.contains("num_batches")));

    let key = "backbone.layer1.0.bn1.running_mean";
    let nbt = "backbone.layer1.0.bn1.num_batches_tracked";
    let before = var(&m.teacher_vs, key);
    m.forward_backward(&batch(), 0, dino_train::accumulation::Window::SINGLE, &dist)
        .unwrap();
    // Each network updated its own statistics by its own train-mode forward: the teacher once
    // (the 2 global crops), the student twice (globals, then the locals: one pass per size).
    let (t_after, s_after) = (var(&m.teacher_vs, key), var(&m.student_vs, key));
    assert!(
        !t_after.equal(&before),
        "the teacher's forward updates its statistics"
    );
    assert!(
        !t_after.equal(&s_after),
        "the two networks' statistics are their own"
    );
    assert_eq!(var(&m.teacher_vs, nbt).int64_value(&[]), 1);
    assert_eq!(var(&m.student_vs, nbt).int64_value(&[]), 2);

    m.optimizer_step(0.1, 1e-4, 0).unwrap();
    let t_w = var(&m.teacher_vs, "backbone.layer1.0.conv1.weight");
    let s_w = var(&m.student_vs, "backbone.layer1.0.conv1.weight");
    assert!(!t_w.equal(&s_w), "the optimizer moved the student");
    m.update_teacher(0.75).unwrap();
    // Parameters: EMA. Buffers: left as the teacher's forward set them.
    let expect = &t_w * 0.75 + &s_w * 0.25;
    let got = var(&m.teacher_vs, "backbone.layer1.0.conv1.weight");
    assert!(got.allclose(&expect, 1e-6, 1e-7, false));
    assert!(
        var(&m.teacher_vs, key).equal(&t_after),
        "EMA leaves the buffers alone"
    );
    assert_eq!(var(&m.teacher_vs, nbt).int64_value(&[]), 1);

    // Checkpoints hold both networks' buffers, and restore them.
    let dir = tempfile::tempdir().unwrap();
    let meta = CheckpointMeta::new(&cfg, 0, 1, 1);
    save_checkpoint(dir.path(), &m.checkpoint_tensors().unwrap(), &meta, None).unwrap();
    let ck = load_latest(dir.path()).unwrap();
    let mut fresh = DinoMethod::new(&cfg, 4, Device::Cpu, ComputePrecision::Fp32, &dist).unwrap();
    fresh.restore(&ck).unwrap();
    for (which, a, b) in [
        ("teacher", &m.teacher_vs, &fresh.teacher_vs),
        ("student", &m.student_vs, &fresh.student_vs),
    ] {
        for n in [
            key,
            nbt,
            "backbone.layer4.1.bn2.running_var",
            "head.mlp.1.running_mean",
        ] {
            assert!(var(a, n).equal(&var(b, n)), "{which}.{n} not restored");
        }
    }
}

/// Every variable of a store, copied.
fn snapshot(vs: &tch::nn::VarStore) -> std::collections::HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect()
}

/// The names of `prefix` variables that are not bitwise what `before` holds.
fn moved(
    vs: &tch::nn::VarStore,
    before: &std::collections::HashMap<String, Tensor>,
    prefix: &str,
) -> Vec<String> {
    let mut names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(n, t)| n.starts_with(prefix) && !t.equal(&before[n]))
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

/// shared/cases/freeze-backbone-resnet-bn-stats: while `schedule.freeze_backbone_epochs` holds,
/// a ResNet backbone is frozen for real — no weight, BatchNorm statistic or
/// `num_batches_tracked` of the student's or the teacher's backbone changes, bitwise (its
/// BatchNorm runs in eval mode, the EMA skips it) — while the head trains; after the frozen
/// epochs the backbone trains again, statistics included.
#[test]
fn a_frozen_backbone_stays_bitwise_what_it_was() {
    let mut cfg = config();
    cfg.schedule.freeze_backbone_epochs = 1;
    let dist = Dist::single();
    let mut m = DinoMethod::new(&cfg, 4, Device::Cpu, ComputePrecision::Fp32, &dist).unwrap();
    let (student, teacher) = (snapshot(&m.student_vs), snapshot(&m.teacher_vs));
    let window = dino_train::accumulation::Window::SINGLE;
    for it in 0..2 {
        m.forward_backward(&batch(), it, window, &dist).unwrap();
        m.optimizer_step(0.1, 1e-4, 0).unwrap();
        m.update_teacher(0.75).unwrap();
    }
    assert_eq!(
        moved(&m.student_vs, &student, "backbone."),
        Vec::<String>::new()
    );
    assert_eq!(
        moved(&m.teacher_vs, &teacher, "backbone."),
        Vec::<String>::new()
    );
    // The head trained: weights (student), EMA (teacher), BatchNorm statistics (both).
    for (vs, before) in [(&m.student_vs, &student), (&m.teacher_vs, &teacher)] {
        let head = moved(vs, before, "head.");
        assert!(head.contains(&"head.mlp.0.weight".to_string()), "{head:?}");
        assert!(
            head.contains(&"head.mlp.1.running_var".to_string()),
            "{head:?}"
        );
    }
    // Epoch 1: the backbone is free again.
    let mut batch1 = batch();
    batch1.epoch = 1;
    m.forward_backward(&batch1, 2, window, &dist).unwrap();
    m.optimizer_step(0.1, 1e-4, 1).unwrap();
    m.update_teacher(0.75).unwrap();
    for (vs, before) in [(&m.student_vs, &student), (&m.teacher_vs, &teacher)] {
        let backbone = moved(vs, before, "backbone.");
        for n in ["backbone.conv1.weight", "backbone.layer4.1.bn2.running_var"] {
            assert!(backbone.contains(&n.to_string()), "{n}: {backbone:?}");
        }
    }
}
