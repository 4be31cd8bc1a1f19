//! Linear probe on synthetic features: learns a separable set, stays at chance on random labels,
//! and is reproducible from its seed.

use dino_eval::features::FeatureSet;
use dino_eval::linear::{train_linear_probe, train_linear_probe_with, LinearProbeConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// The tensors as the [`FeatureSet`] k-NN and the probe take.
fn fs(x: &Tensor, y: &Tensor) -> FeatureSet {
    FeatureSet::labelled(x.shallow_clone(), y.shallow_clone()).unwrap()
}

const CLASSES: i64 = 6;
const DIM: i64 = 24;

/// `n` features around one of `CLASSES` well-separated centres (unit noise per coordinate,
/// centres 4 units apart on their own axes). With `random_labels` the labels ignore the centres.
fn dataset(n: usize, seed: u64, random_labels: bool) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * DIM as usize);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..CLASSES);
        for d in 0..DIM {
            let centre = if d == class { 4.0 } else { 0.0 };
            x.push(centre + (rng.random::<f32>() - 0.5) * 2.0);
        }
        y.push(if random_labels {
            rng.random_range(0..CLASSES)
        } else {
            class
        });
    }
    (
        Tensor::from_slice(&x).view([n as i64, DIM]),
        Tensor::from_slice(&y),
    )
}

fn config() -> LinearProbeConfig {
    LinearProbeConfig {
        epochs: 15,
        base_lr: 0.5,
        batch_size: 32,
        momentum: 0.9,
        seed: 7,
    }
}

#[test]
fn separable_set_is_learned() {
    let (train_x, train_y) = dataset(600, 1, false);
    let (val_x, val_y) = dataset(300, 2, false);
    let mut seen = Vec::new();
    let (classifier, report) = train_linear_probe_with(
        &fs(&train_x, &train_y),
        &fs(&val_x, &val_y),
        &config(),
        |s| seen.push(s.epoch),
    )
    .unwrap();
    assert_eq!(seen, (0..15).collect::<Vec<_>>());
    assert!(report.final_top1 > 99.0, "{report:?}");
    assert!(report.best_top1 >= report.final_top1);
    assert_eq!(report.final_top5, Some(100.0));
    let first = &report.history[0];
    let last = report.history.last().unwrap();
    assert!(last.train_loss < first.train_loss / 5.0, "{report:?}");
    // lr = 0.5 · 32 / 256 at epoch 0, cosine-annealed afterwards.
    assert_eq!(first.lr, 0.0625);
    assert!(last.lr < first.lr * 0.02);
    assert_eq!(
        (
            report.n_train,
            report.n_val,
            report.feature_dim,
            report.num_classes
        ),
        (600, 300, 24, 6)
    );
    let predicted = classifier.predict(&val_x).unwrap();
    let agree = predicted
        .eq_tensor(&val_y)
        .sum(tch::Kind::Int64)
        .int64_value(&[]);
    assert!((agree as f64 / 3.0 - report.final_top1).abs() < 1e-9);
}

#[test]
fn random_labels_stay_near_chance() {
    let (train_x, train_y) = dataset(600, 3, true);
    let (val_x, val_y) = dataset(600, 4, true);
    let (_, report) =
        train_linear_probe(&fs(&train_x, &train_y), &fs(&val_x, &val_y), &config()).unwrap();
    // Chance is 100 / 6 = 16.7 %; with 600 samples the standard error is 1.5 points.
    assert!(report.final_top1 < 25.0, "{report:?}");
    assert!(report.final_top1 > 8.0, "{report:?}");
}

#[test]
fn the_seed_fixes_the_result() {
    let (train_x, train_y) = dataset(200, 5, false);
    let (val_x, val_y) = dataset(100, 6, false);
    let mut cfg = config();
    cfg.epochs = 3;
    cfg.base_lr = 0.01;
    let run = |cfg: &LinearProbeConfig| {
        train_linear_probe(&fs(&train_x, &train_y), &fs(&val_x, &val_y), cfg).unwrap()
    };
    let (a, report_a) = run(&cfg);
    let (b, report_b) = run(&cfg);
    assert_eq!(report_a, report_b);
    assert!(a.weight.equal(&b.weight));
    cfg.seed += 1;
    let (c, report_c) = run(&cfg);
    assert!(!a.weight.equal(&c.weight));
    assert_ne!(
        report_a.history[0].train_loss,
        report_c.history[0].train_loss
    );
}

#[test]
fn bad_settings_are_errors() {
    let (x, y) = dataset(10, 8, false);
    let mut cfg = config();
    cfg.batch_size = 0;
    assert!(train_linear_probe(&fs(&x, &y), &fs(&x, &y), &cfg).is_err());
    let narrow = x.narrow(1, 0, 3);
    assert!(train_linear_probe(&fs(&x, &y), &fs(&narrow, &y), &config()).is_err());
}
