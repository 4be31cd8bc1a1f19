//! Schedules against `tests/reference/adamw_reference.py schedules` (the official
//! `utils.cosine_scheduler` and `DINOLoss.teacher_temp_schedule`) and hand-computed values.

use crate::common;

use common::{assert_close, npy, run_reference, values};
use dino_config::Config;
use dino_train::schedule::{
    cosine_scheduler, linspace, teacher_temp_schedule, ScheduleError, Schedules,
};

#[test]
fn matches_official_tables_for_default_config() {
    let dir = run_reference("adamw_reference.py", &["schedules", "{out}"]);
    let mut cfg = Config::default();
    cfg.optim.batch_size = 64;
    cfg.loss.teacher_temp = 0.07;
    cfg.loss.warmup_teacher_temp_epochs = 30;
    let s = Schedules::new(&cfg, 37, 1).unwrap();
    assert_eq!(s.total_iters(), 100 * 37);
    for (name, ours) in [
        ("lr", &s.lr),
        ("wd", &s.wd),
        ("momentum", &s.momentum),
        ("teacher_temp", &s.teacher_temp),
    ] {
        assert_close(name, ours, &values(&npy(dir.path(), name)), 1e-15, 1e-13);
    }
}

#[test]
fn hand_computed_cosine_with_warmup() {
    // 2 epochs x 5 iterations, 1 warm-up epoch: linspace(0, 1, 5) then 0.5 (1 + cos(pi i / 5)).
    let s = cosine_scheduler(1.0, 0.0, 2, 5, 1, 0.0).unwrap();
    let pi = std::f64::consts::PI;
    let want: Vec<f64> = [0.0, 0.25, 0.5, 0.75, 1.0]
        .into_iter()
        .chain((0..5).map(|i| 0.5 * (1.0 + (pi * i as f64 / 5.0).cos())))
        .collect();
    assert_close("cosine", &s, &want, 1e-15, 0.0);
    // End of warm-up reaches the base value; the cosine starts at base; the last value is
    // 0.5 (1 + cos(4 pi / 5)) = 0.0954915..., above the final value.
    assert_eq!(s[4], 1.0);
    assert_eq!(s[5], 1.0);
    assert!((s[9] - 0.095_491_502_812_526_3).abs() < 1e-12);
    assert!((s[7] - 0.654_508_497_187_473_7).abs() < 1e-12);
}

#[test]
fn default_config_pins() {
    // Official defaults (main_dino.py): lr 5e-4 x 64 / 256 = 1.25e-4 after 10 warm-up epochs,
    // min_lr 1e-6, wd 0.04 -> 0.4, momentum 0.996 -> 1, teacher temp 0.04 constant.
    let cfg = Config::default();
    let niter = 10;
    let s = Schedules::new(&cfg, niter, 1).unwrap();
    let warm = 10 * niter;
    assert_eq!(s.lr[0], 0.0);
    assert!(
        (s.lr[warm - 1] - 1.25e-4).abs() < 1e-18,
        "end of warm-up = peak"
    );
    assert!(
        (s.lr[warm] - 1.25e-4).abs() < 1e-18,
        "cosine starts at the peak"
    );
    let mid = warm + (100 * niter - warm) / 2;
    assert!((s.lr[mid] - (1e-6 + 0.5 * (1.25e-4 - 1e-6))).abs() < 1e-15);
    let last = *s.lr.last().unwrap();
    assert!(last > 1e-6 && last < 1.001e-6, "{last}");
    // final + 0.5 (base - final) * 2 rounds to 0.03999999999999998, in numpy too.
    assert!((s.wd[0] - 0.04).abs() < 1e-16);
    assert!(
        (s.wd[500] - 0.22).abs() < 1e-15,
        "wd midpoint (0.04 + 0.4) / 2"
    );
    assert!((s.momentum[0] - 0.996).abs() < 1e-15);
    assert!(*s.momentum.last().unwrap() < 1.0);
    assert!(s.teacher_temp.iter().all(|&t| t == 0.04));
    // Two processes double the global batch and the peak lr (linear scaling rule).
    let s2 = Schedules::new(&cfg, niter, 2).unwrap();
    assert!((s2.lr[warm] - 2.5e-4).abs() < 1e-18);
    // So does accumulating 2 micro-batches per optimizer step (the effective batch is 128 on
    // one process), and with two processes the effective batch is 256: the peak is lr itself.
    let mut acc = cfg.clone();
    acc.optim.accum_steps = 2;
    let a1 = Schedules::new(&acc, niter, 1).unwrap();
    assert_eq!(a1.lr, s2.lr, "batch 64 x accum 2 = batch 64 x 2 processes");
    let a2 = Schedules::new(&acc, niter, 2).unwrap();
    assert!((a2.lr[warm] - 5e-4).abs() < 1e-18);
    let v = s.at(warm + 3).unwrap();
    assert_eq!(
        (v.lr, v.wd, v.momentum),
        (s.lr[warm + 3], s.wd[warm + 3], s.momentum[warm + 3])
    );
    assert_eq!(v.teacher_temp, s.teacher_temp[10]);
    assert!(s.at(100 * niter).is_none());
}

#[test]
fn teacher_temperature_and_linspace() {
    let t = teacher_temp_schedule(0.04, 0.07, 30, 100).unwrap();
    assert_eq!(t.len(), 100);
    assert_eq!(t[0], 0.04);
    assert_eq!(
        t[29], 0.07,
        "the last warm-up epoch already uses the final temperature"
    );
    assert!((t[15] - (0.04 + 15.0 * 0.03 / 29.0)).abs() < 1e-15);
    assert!(t[30..].iter().all(|&x| x == 0.07));
    assert_eq!(
        teacher_temp_schedule(0.04, 0.07, 0, 3).unwrap(),
        vec![0.07; 3]
    );
    assert_eq!(linspace(1.0, 2.0, 1), vec![1.0]);
    assert!(linspace(1.0, 2.0, 0).is_empty());
    assert_eq!(linspace(3.0, 3.0, 3), vec![3.0; 3]);
}

#[test]
fn errors() {
    assert!(matches!(
        cosine_scheduler(1.0, 0.0, 2, 5, 3, 0.0),
        Err(ScheduleError::WarmupTooLong {
            warmup: 3,
            epochs: 2,
            ..
        })
    ));
    assert!(teacher_temp_schedule(0.04, 0.07, 5, 4).is_err());
    assert!(matches!(
        Schedules::new(&Config::default(), 0, 1),
        Err(ScheduleError::Empty { .. })
    ));
    let mut cfg = Config::default();
    cfg.optim.epochs = 5; // warm-up 10 > 5 epochs
    assert!(Schedules::new(&cfg, 3, 1).is_err());
}
