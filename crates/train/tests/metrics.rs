//! Metrics JSONL, epoch means, the PNG plot, collapse warnings and the non-finite guard.

use dino_train::loss::LossStats;
use dino_train::metrics::{
    check_finite, plot_curves, read_jsonl, CollapseConfig, CollapseKind, CollapseMonitor,
    EpochAccumulator, History, MetricsWriter, Record, StepRecord, PANEL_COLORS,
};
use std::fs;

fn step(i: usize, loss: f64) -> StepRecord {
    StepRecord {
        epoch: i / 10,
        step: i % 10,
        global_step: i,
        loss,
        lr: 1e-4 * (i as f64 + 1.0),
        wd: 0.04,
        momentum: 0.996,
        teacher_temp: 0.04,
        teacher_entropy: 3.0 - 0.01 * i as f64,
        teacher_mean_entropy: 6.0,
        kl: 1.0 + 0.125 * (i % 4) as f64,
        center_norm: 0.5,
        images_per_s: 100.0 + i as f64,
        data_wait_fraction: 0.1,
    }
}

#[test]
fn non_finite_loss_names_epoch_and_step() {
    assert!(check_finite(4.2, 0, 0).is_ok());
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = check_finite(bad, 3, 17).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epoch 3, step 17"), "{msg}");
        assert_eq!((err.epoch, err.step), (3, 17));
    }
}

#[test]
fn jsonl_round_trip_append_and_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/metrics.jsonl");
    let mut acc = EpochAccumulator::default();
    {
        let mut w = MetricsWriter::append(&path).unwrap();
        for i in 0..3 {
            let r = step(i, 10.0 - i as f64);
            acc.push(&r);
            w.write_step(&r).unwrap();
        }
    }
    let mut epoch = acc.finish(0, 12.5);
    epoch.extra.insert("knn_top1".into(), 0.42);
    {
        // A resumed run appends to the same file.
        let mut w = MetricsWriter::append(&path).unwrap();
        w.write_epoch(&epoch).unwrap();
    }
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().next().unwrap().contains("\"kind\":\"step\""));
    assert!(text.lines().last().unwrap().contains("\"kind\":\"epoch\""));
    let recs = read_jsonl(&path).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[1], Record::Step(step(1, 9.0)));
    assert_eq!(recs[3], Record::Epoch(epoch.clone()));
    // Means over the epoch.
    assert_eq!(epoch.steps, 3);
    assert!((epoch.loss - 9.0).abs() < 1e-12);
    assert!((epoch.lr - 2e-4).abs() < 1e-15);
    assert!((epoch.lr_last - 3e-4).abs() < 1e-15);
    assert!((epoch.images_per_s - 101.0).abs() < 1e-12);
    // A crash mid-line leaves a truncated last line, which is skipped; a bad line elsewhere
    // is an error naming it.
    fs::write(&path, format!("{text}{{\"kind\":\"step\",\"epo")).unwrap();
    assert_eq!(read_jsonl(&path).unwrap().len(), 4);
    fs::write(&path, format!("garbage\n{text}")).unwrap();
    let err = read_jsonl(&path).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    assert_eq!(History::from_records(&recs).len(), 3);
}

#[test]
fn plot_is_a_png_of_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plots/curves.png");
    let mut h = History::default();
    for i in 0..200 {
        h.push(&step(i, 11.0 - (i as f64 / 50.0)));
    }
    plot_curves(&path, &h, Some(11.09), 640, 480).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    for c in PANEL_COLORS {
        let n = img.pixels().filter(|p| p.0 == c).count();
        assert!(n > 500, "panel colour {c:?} drawn {n} pixels");
    }
    assert!(!dir.path().join("plots/curves.png.tmp").exists());
    // Empty history and a single point still render; a too small image is an error.
    plot_curves(&path, &History::default(), None, 100, 80).unwrap();
    let mut one = History::default();
    one.push(&step(0, 5.0));
    plot_curves(&path, &one, Some(5.0), 120, 90).unwrap();
    assert_eq!(image::open(&path).unwrap().width(), 120);
    assert!(plot_curves(&path, &h, None, 10, 10).is_err());
}

fn stats(loss: f64, entropy: f64, mean_entropy: f64) -> LossStats {
    LossStats {
        loss,
        teacher_entropy: entropy,
        kl: loss - entropy,
        teacher_mean_entropy: mean_entropy,
        center_norm: 1.0,
        teacher_temp: 0.04,
    }
}

fn feed(
    m: &mut CollapseMonitor,
    seq: impl Iterator<Item = LossStats>,
) -> Vec<(usize, CollapseKind)> {
    seq.enumerate()
        .filter_map(|(i, s)| m.observe(i, &s).map(|w| (w.step, w.kind)))
        .collect()
}

#[test]
fn collapse_monitor_fires_on_collapse_signatures_only() {
    let k = 65536;
    let ln_k = (k as f64).ln();
    let cfg = CollapseConfig::default();
    assert_eq!(cfg.window, 100);

    // Loss frozen at ln K = 11.09 (dino issue #246): fires once per window.
    let mut m = CollapseMonitor::new(k, cfg);
    assert!((m.ln_k() - 11.090354888959125).abs() < 1e-12);
    let fired = feed(
        &mut m,
        (0..250).map(|i| stats(ln_k + 1e-3 * (i % 3) as f64, ln_k - 1e-3, ln_k)),
    );
    assert_eq!(
        fired,
        [
            (99, CollapseKind::UniformLoss),
            (199, CollapseKind::UniformLoss)
        ]
    );

    // Healthy run: loss falls from 10.5 to 5, teacher entropy 2-4 nats, prototypes spread.
    let mut m = CollapseMonitor::new(k, cfg);
    let healthy = (0..1000).map(|i| {
        let x = i as f64 / 1000.0;
        stats(10.5 - 5.5 * x, 4.0 - 2.0 * x, 9.0)
    });
    assert!(feed(&mut m, healthy).is_empty());

    // Start near ln K, then learning: the window is never all within 1% of ln K.
    let mut m = CollapseMonitor::new(k, cfg);
    let dip = (0..400).map(|i| {
        if i < 60 {
            stats(ln_k - 0.01, 3.0, 9.0)
        } else {
            stats(9.0, 3.0, 9.0)
        }
    });
    assert!(feed(&mut m, dip).is_empty());

    // Uniform teacher (centering dominates): entropy at ln K, loss away from ln K.
    let mut m = CollapseMonitor::new(k, cfg);
    let fired = feed(
        &mut m,
        (0..100).map(|_| stats(ln_k + 0.6, ln_k - 0.05, ln_k)),
    );
    assert_eq!(fired, [(99, CollapseKind::UniformTeacher)]);

    // One-hot collapse (sharpening dominates): every sample on one prototype.
    let mut m = CollapseMonitor::new(k, cfg);
    let fired = feed(&mut m, (0..150).map(|_| stats(1e-4, 1e-5, 1e-4)));
    assert_eq!(fired, [(99, CollapseKind::OneHotTeacher)]);
    let msg = {
        let mut m = CollapseMonitor::new(k, cfg);
        let mut last = None;
        for i in 0..100 {
            last = m.observe(i, &stats(1e-4, 1e-5, 1e-4)).or(last);
        }
        last.unwrap().message
    };
    assert!(msg.contains("one-hot") && msg.contains("step 99"), "{msg}");

    // A sharp but healthy teacher (low per-sample entropy, large KL, spread prototypes) is fine.
    let mut m = CollapseMonitor::new(k, cfg);
    assert!(feed(&mut m, (0..300).map(|_| stats(3.0, 0.05, 8.0))).is_empty());
}
