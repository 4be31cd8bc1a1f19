//! Metrics JSONL, epoch means, the PNG curves and the non-finite guard. What a run stopped by a
//! non-finite loss says about its checkpoint: crates/cli/tests/non_finite_cli.rs. Collapse
//! warnings: `collapse.rs`.

use dino_train::curves::{plot_curves, text_available, PANEL_COLORS};
use dino_train::loss::stats::{dino_term, KL};
use dino_train::loss::LossStats;
use dino_train::metrics::{
    check_finite, read_jsonl, step_records, EpochRecord, MetricsWriter, Record, StepRecord,
    TRAIN_TOP1,
};
use std::fs;

fn step(i: usize, loss: f64) -> StepRecord {
    StepRecord {
        epoch: i / 10,
        step: i % 10,
        global_step: i,
        stats: LossStats::from_terms(vec![dino_term(loss, 3.0 - 0.01 * i as f64, 6.0, 0.5, 0.04)
            .with(KL, 1.0 + 0.125 * (i % 4) as f64)]),
        lr: 1e-4 * (i as f64 + 1.0),
        wd: 0.04,
        momentum: 0.996,
        images_per_s: 100.0 + i as f64,
        data_wait_fraction: 0.1,
        loss_scale: None,
        skipped_step: None,
        train_top1: None,
    }
}

#[test]
fn supervised_train_accuracy_is_logged_and_averaged_only_where_it_exists() {
    // DINO steps: no `train_top1` key in the line, nothing in the epoch's extras.
    let dino: Vec<StepRecord> = (0..4).map(|i| step(i, 5.0)).collect();
    let line = serde_json::to_string(&Record::Step(dino[0].clone())).unwrap();
    assert!(!line.contains("train_top1"), "{line}");
    assert!(EpochRecord::from_steps(0, &dino, 1.0).extra.is_empty());
    // Supervised steps: logged per step, the epoch's mean among the extras.
    let sup: Vec<StepRecord> = [50.0, 75.0, 100.0]
        .iter()
        .enumerate()
        .map(|(i, a)| StepRecord {
            train_top1: Some(*a),
            ..step(i, 1.0)
        })
        .collect();
    let line = serde_json::to_string(&Record::Step(sup[1].clone())).unwrap();
    assert!(line.contains("\"train_top1\":75.0"), "{line}");
    let back: Record = serde_json::from_str(&line).unwrap();
    assert_eq!(back, Record::Step(sup[1].clone()));
    let epoch = EpochRecord::from_steps(0, &sup, 1.0);
    assert_eq!(epoch.extra.get(TRAIN_TOP1), Some(&75.0));
}

#[test]
fn non_finite_loss_names_epoch_and_step() {
    assert!(check_finite(4.2, 0, 0).is_ok());
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = check_finite(bad, 3, 17).unwrap_err();
        let msg = err.to_string();
        // 1-based in the message, as the progress lines; 0-based in the fields.
        assert!(msg.contains("epoch 4, step 18"), "{msg}");
        assert_eq!((err.epoch, err.step), (3, 17));
    }
}

#[test]
fn jsonl_round_trip_append_and_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/metrics.jsonl");
    let steps: Vec<StepRecord> = (0..3).map(|i| step(i, 10.0 - i as f64)).collect();
    {
        let mut w = MetricsWriter::append(&path).unwrap();
        for r in &steps {
            w.write_step(r).unwrap();
        }
    }
    let mut epoch = EpochRecord::from_steps(0, &steps, 12.5);
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
    assert!((epoch.stats.loss - 9.0).abs() < 1e-12);
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
    assert_eq!(step_records(recs), steps);
}

#[test]
fn plot_is_a_png_of_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plots/curves.png");
    let h: Vec<StepRecord> = (0..200)
        .map(|i| step(i, 11.0 - (i as f64 / 50.0)))
        .collect();
    plot_curves(&path, &h, Some(11.09), 640, 480).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    for c in PANEL_COLORS {
        let n = img.pixels().filter(|p| p.0 == c).count();
        assert!(n > 500, "panel colour {c:?} drawn {n} pixels");
    }
    if text_available() {
        // Titles, tick labels and legends: black text (antialiased, so count the dark pixels).
        let dark = img.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count();
        assert!(dark > 1000, "only {dark} dark pixels: no text drawn");
    }
    assert!(!dir.path().join("plots/curves.png.tmp").exists());
    // Empty history and a single point still render; a too small image is an error.
    plot_curves(&path, &[], None, 100, 80).unwrap();
    plot_curves(&path, &[step(0, 5.0)], Some(5.0), 120, 90).unwrap();
    assert_eq!(image::open(&path).unwrap().width(), 120);
    assert!(plot_curves(&path, &h, None, 10, 10).is_err());
}
