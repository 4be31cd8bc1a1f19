//! DINO loss against `tests/reference/dino_loss.py` (the official `DINOLoss` semantics) and a
//! hand-computed case.

use crate::common;

use common::{assert_close, npy, run_reference, values};
use dino_config::LossConfig;
use dino_train::loss::stats::{
    CENTER_NORM, DINO, KL, TEACHER_ENTROPY, TEACHER_MEAN_ENTROPY, TEACHER_TEMP,
};
use dino_train::loss::{DinoLoss, LossError};
use tch::{Kind, Tensor};

fn warmup_cfg() -> LossConfig {
    // Warm-up 0.04 -> 0.07 over 3 epochs, as the reference script.
    LossConfig {
        warmup_teacher_temp: 0.04,
        teacher_temp: 0.07,
        warmup_teacher_temp_epochs: 3,
        ..LossConfig::default()
    }
}

fn parity(k: usize, b: usize, n_crops: usize, steps: usize) {
    let dir = run_reference(
        "dino_loss.py",
        &[
            "{out}",
            &k.to_string(),
            &b.to_string(),
            &n_crops.to_string(),
            &steps.to_string(),
        ],
    );
    let dir = dir.path();
    let mut loss_fn = DinoLoss::new(k, n_crops, &warmup_cfg(), 5).unwrap();
    assert_eq!(loss_fn.n_loss_terms(), 2 * (n_crops - 1));
    for i in 0..steps {
        let student = npy(dir, &format!("student_{i}")).set_requires_grad(true);
        let teacher = npy(dir, &format!("teacher_{i}"));
        let epoch = npy(dir, &format!("epoch_{i}")).int64_value(&[0]) as usize;
        let out = loss_fn.step(&student, &teacher, epoch).unwrap();
        let want = |name: &str| values(&npy(dir, &format!("{name}_{i}")));
        assert_close(
            &format!("loss step {i}"),
            &[out.stats.loss],
            &want("loss"),
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("loss tensor step {i}"),
            &values(&out.loss),
            &want("loss"),
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("center step {i}"),
            &values(loss_fn.center()),
            &want("center"),
            1e-5,
            1e-5,
        );
        out.loss.backward();
        assert_close(
            &format!("grad step {i}"),
            &values(&student.grad()),
            &want("grad"),
            1e-6,
            1e-4,
        );
        let s = out.stats;
        assert_close(
            "entropy",
            &[s.get(DINO, TEACHER_ENTROPY).unwrap()],
            &want("entropy"),
            1e-5,
            1e-5,
        );
        // KL = loss − H in f32: cancellation costs a few ulps of the loss.
        assert_close("kl", &[s.get(DINO, KL).unwrap()], &want("kl"), 1e-4, 1e-4);
        assert_close(
            "mean entropy",
            &[s.get(DINO, TEACHER_MEAN_ENTROPY).unwrap()],
            &want("mean_entropy"),
            1e-5,
            1e-5,
        );
        assert_close(
            "center norm",
            &[s.get(DINO, CENTER_NORM).unwrap()],
            &want("center_norm"),
            1e-6,
            1e-5,
        );
        assert_eq!(
            s.get(DINO, TEACHER_TEMP).unwrap(),
            loss_fn.teacher_temp(epoch).unwrap()
        );
    }
}

#[test]
fn matches_reference_over_steps_with_warmup() {
    parity(96, 4, 6, 5);
}

#[test]
fn matches_reference_with_ten_crops() {
    // 2 global + 8 local crops: 18 loss terms (the official default).
    parity(64, 2, 10, 2);
}

#[test]
fn hand_computed_two_views() {
    // K = 2, B = 1, two global crops only, center 0, τ_s = 0.1, τ_t = 0.04.
    // Teacher rows [0, 0] -> (1/2, 1/2) and [0.04 ln 3, 0] -> (3/4, 1/4);
    // student rows [0, 0] -> (1/2, 1/2) and [0.1 ln 4, 0] -> (4/5, 1/5).
    // Pairs: (t0, s1): −(½ ln ⅘ + ½ ln ⅕) = −½ ln 0.16; (t1, s0): ln 2.
    let cfg = LossConfig::default();
    let mut loss_fn = DinoLoss::new(2, 2, &cfg, 1).unwrap();
    let student = Tensor::from_slice(&[0.0f32, 0.0, (0.1 * 4f64.ln()) as f32, 0.0]).view([2, 2]);
    let teacher = Tensor::from_slice(&[0.0f32, 0.0, (0.04 * 3f64.ln()) as f32, 0.0]).view([2, 2]);
    let out = loss_fn.step(&student, &teacher, 0).unwrap();
    let expected = 0.5 * (-0.5 * 0.16f64.ln() + 2f64.ln());
    assert!(
        (out.stats.loss - expected).abs() < 1e-6,
        "{} vs {expected}",
        out.stats.loss
    );
    let h = 0.5 * (2f64.ln() - (0.75 * 0.75f64.ln() + 0.25 * 0.25f64.ln()));
    assert!((out.stats.get(DINO, TEACHER_ENTROPY).unwrap() - h).abs() < 1e-6);
    let kl = 0.5 * (0.5 * (0.25f64 / 0.16).ln() + (2f64.ln() - (h * 2.0 - 2f64.ln())));
    assert!(
        (out.stats.get(DINO, KL).unwrap() - kl).abs() < 1e-6,
        "{} vs {kl}",
        out.stats.get(DINO, KL).unwrap()
    );
    assert_eq!(
        out.stats.get(DINO, CENTER_NORM).unwrap(),
        0.0,
        "the step uses the previous (zero) center"
    );
    // c = 0.9·0 + 0.1·mean(teacher rows) = [0.1 · 0.02 ln 3, 0].
    let c = values(loss_fn.center());
    assert!(
        (c[0] - 0.1 * 0.02 * 3f64.ln()).abs() < 1e-8 && c[1] == 0.0,
        "{c:?}"
    );
}

#[test]
fn temperature_schedule_is_per_epoch_linspace() {
    let loss_fn = DinoLoss::new(8, 4, &warmup_cfg(), 5).unwrap();
    let t: Vec<f64> = (0..5).map(|e| loss_fn.teacher_temp(e).unwrap()).collect();
    assert_close(
        "teacher temp",
        &t,
        &[0.04, 0.055, 0.07, 0.07, 0.07],
        1e-15,
        0.0,
    );
    assert!(matches!(
        loss_fn.teacher_temp(5),
        Err(LossError::EpochOutOfRange {
            epoch: 5,
            epochs: 5
        })
    ));
    // Official defaults: no warm-up, constant 0.04.
    let d = DinoLoss::new(8, 4, &LossConfig::default(), 3).unwrap();
    assert_eq!(d.teacher_temp(0).unwrap(), 0.04);
    assert_eq!(d.teacher_temp(2).unwrap(), 0.04);
}

#[test]
fn rejects_bad_shapes_and_settings() {
    let loss_fn = DinoLoss::new(8, 4, &LossConfig::default(), 2).unwrap();
    let t = Tensor::zeros([6, 8], (Kind::Float, tch::Device::Cpu));
    let s = Tensor::zeros([12, 8], (Kind::Float, tch::Device::Cpu));
    // 2B = 6 -> B = 3 -> student must be [12, 8]: OK.
    assert!(loss_fn.forward(&s, &t, 0).is_ok());
    let bad_s = Tensor::zeros([10, 8], (Kind::Float, tch::Device::Cpu));
    let err = loss_fn.forward(&bad_s, &t, 0).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::Shape {
                what: "student logits",
                ..
            }
        ),
        "{err}"
    );
    let bad_t = Tensor::zeros([5, 8], (Kind::Float, tch::Device::Cpu));
    assert!(matches!(
        loss_fn.forward(&s, &bad_t, 0),
        Err(LossError::Shape { .. })
    ));
    let bad_k = Tensor::zeros([6, 7], (Kind::Float, tch::Device::Cpu));
    assert!(matches!(
        loss_fn.forward(&s, &bad_k, 0),
        Err(LossError::Shape { .. })
    ));
    assert!(DinoLoss::new(8, 1, &LossConfig::default(), 2).is_err());
    let long_warmup = LossConfig {
        warmup_teacher_temp_epochs: 3,
        ..LossConfig::default()
    };
    assert!(matches!(
        DinoLoss::new(8, 4, &long_warmup, 2),
        Err(LossError::Schedule(_))
    ));
}

#[test]
fn center_restore_and_uniform_loss_is_ln_k() {
    let k = 16;
    let mut loss_fn = DinoLoss::new(k, 3, &LossConfig::default(), 1).unwrap();
    assert!(loss_fn
        .set_center(&Tensor::zeros(
            [2, k as i64],
            (Kind::Float, tch::Device::Cpu)
        ))
        .is_err());
    let c = Tensor::ones([1, k as i64], (Kind::Float, tch::Device::Cpu));
    loss_fn.set_center(&c).unwrap();
    // Constant logits: teacher and student uniform whatever the center -> loss = H = ln K, KL = 0.
    let s = Tensor::full([6, k as i64], 0.3, (Kind::Float, tch::Device::Cpu));
    let t = Tensor::full([4, k as i64], -0.2, (Kind::Float, tch::Device::Cpu));
    let out = loss_fn.forward(&s, &t, 0).unwrap();
    let ln_k = (k as f64).ln();
    assert!((out.stats.loss - ln_k).abs() < 1e-5);
    assert!((out.stats.get(DINO, TEACHER_ENTROPY).unwrap() - ln_k).abs() < 1e-5);
    assert!((out.stats.get(DINO, TEACHER_MEAN_ENTROPY).unwrap() - ln_k).abs() < 1e-5);
    assert!(out.stats.get(DINO, KL).unwrap().abs() < 1e-5);
    assert!((out.stats.get(DINO, CENTER_NORM).unwrap() - (k as f64).sqrt()).abs() < 1e-5);
    // forward leaves the center alone; batch_center + update_center moves it.
    assert_eq!(values(loss_fn.center()), vec![1.0; k]);
    let bc = DinoLoss::batch_center(&t).unwrap();
    loss_fn.update_center(&bc).unwrap();
    let want = 0.9 * 1.0 + 0.1 * -0.2;
    assert_close(
        "center",
        &values(loss_fn.center()),
        &vec![want; k],
        1e-6,
        0.0,
    );
}
