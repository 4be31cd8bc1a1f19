//! The loss as a list of named terms (issue #29 item 1): each term's statistics by name, the
//! total their sum, the readers (collapse monitor, epoch summary, accumulation window, curves)
//! reading the DINO term by name, and `metrics.jsonl` lines of the format before the terms had
//! names (written by main's binary at efb2e85, 30-step CIFAR-10 runs) still read on resume.

use dino_config::LossConfig;
use dino_train::collapse::{CollapseConfig, CollapseKind, CollapseMonitor};
use dino_train::curves::draw_curves;
use dino_train::loss::stats::{
    dino_term, CENTER_NORM, DINO, KL, KOLEO, LOSS, TEACHER_ENTROPY, TEACHER_MEAN_ENTROPY,
    TEACHER_TEMP,
};
use dino_train::loss::{DinoLoss, LossStats, TermStats};
use dino_train::metrics::{read_jsonl, step_records, truncate_past, EpochRecord, Record};
use dino_train::objective::StepStats;
use tch::{Device, Kind, Tensor};

/// Two step lines of main's 30-step CIFAR-10 run with `loss.koleo_weight=0.1` (efb2e85,
/// release build), as written, and an epoch line of the same format (a 30-step run ends before
/// its first epoch does): the fixture of the format before the terms had names.
const OLD_LINES: [&str; 3] = [
    r#"{"kind":"step","epoch":0,"step":0,"global_step":0,"loss":7.644147604703903,"teacher_entropy":5.452897071838379,"kl":1.9232087135314941,"teacher_mean_entropy":7.021636009216309,"center_norm":0.0,"teacher_temp":0.04,"koleo":0.26804181933403015,"lr":0.0,"wd":0.03999999999999998,"momentum":0.99,"images_per_s":171.31491201483607,"data_wait_fraction":0.029602147416361333}"#,
    r#"{"kind":"step","epoch":0,"step":10,"global_step":10,"loss":7.71175479888916,"teacher_entropy":5.819448471069336,"kl":1.696484088897705,"teacher_mean_entropy":7.3782830238342285,"center_norm":1.1689409017562866,"teacher_temp":0.04,"koleo":0.19582223892211914,"lr":0.00005141388174807198,"wd":0.04000720983162659,"momentum":0.9900001001365504,"images_per_s":179.79473635598671,"data_wait_fraction":0.015947911105071755}"#,
    r#"{"kind":"epoch","epoch":0,"steps":2,"loss":7.6779512,"lr_last":0.00005141388174807198,"lr":0.00002570694087403599,"wd":0.04,"momentum":0.99,"teacher_temp":0.04,"teacher_entropy":5.6,"teacher_mean_entropy":7.2,"kl":1.8,"center_norm":1.1689409017562866,"images_per_s":175.0,"data_wait_fraction":0.02,"elapsed_s":3.5}"#,
];

#[test]
fn a_run_folder_of_the_old_format_reads_truncates_and_draws() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, OLD_LINES.join("\n") + "\n").unwrap();
    let records = read_jsonl(&path).unwrap();
    assert_eq!(records.len(), 3);
    let steps = step_records(records.clone());
    // The old total was DINO's loss plus KoLeo's: the DINO term is the difference, its
    // statistics are the old top-level ones.
    // Within an ulp: serde_json's default float parser (no `float_roundtrip` feature) may read
    // the last digit of a 17-digit number one ulp off, as it always did for these files.
    let near = |got: Option<f64>, want: f64| {
        let g = got.expect("statistic present");
        assert!(
            (g - want).abs() <= 2.0 * f64::EPSILON * want.abs(),
            "{g} vs {want}"
        );
    };
    let s = &steps[0].stats;
    near(Some(s.loss), 7.644147604703903);
    near(s.get(KOLEO, LOSS), 0.26804181933403015);
    near(s.get(DINO, LOSS), 7.644147604703903 - 0.26804181933403015);
    near(s.get(DINO, KL), 1.9232087135314941);
    near(s.get(DINO, TEACHER_ENTROPY), 5.452897071838379);
    near(steps[1].stats.get(DINO, CENTER_NORM), 1.1689409017562866);
    assert_eq!(s.terms.len(), 2);
    let Record::Epoch(e) = &records[2] else {
        panic!("not an epoch record")
    };
    assert_eq!(
        (e.stats.loss, e.stats.get(DINO, KL)),
        (7.6779512, Some(1.8))
    );
    // Resume truncates by position, old lines included; the curves draw them.
    assert_eq!(truncate_past(&path, 10, 0).unwrap(), 2);
    assert_eq!(read_jsonl(&path).unwrap().len(), 1);
    draw_curves(
        &dir.path().join("curves.png"),
        &steps,
        Some(2048f64.ln()),
        (200, 160),
        false,
    )
    .unwrap();
}

/// A real DINO loss evaluation with a second term: named, weighted, summed, and the DINO
/// term's KL untouched by it.
#[test]
fn the_dino_loss_reads_back_named_terms_in_one_tensor() {
    tch::manual_seed(3);
    let (k, b, n_crops) = (16i64, 4i64, 4usize);
    let loss = DinoLoss::new(k as usize, n_crops, &LossConfig::default(), 2).unwrap();
    let student = Tensor::randn([n_crops as i64 * b, k], (Kind::Float, Device::Cpu));
    let teacher = Tensor::randn([2 * b, k], (Kind::Float, Device::Cpu));
    let (dino, targets) = loss.loss_and_targets(&student, &teacher, 0).unwrap();
    let koleo = Tensor::from(-0.375f32);
    let alone = loss
        .read_stats(&loss.stats_tensor(&dino, &targets).unwrap(), &targets)
        .unwrap();
    let values = loss.stats_tensor_with(&dino, &[&koleo], &targets).unwrap();
    assert_eq!(values.size(), [5], "one tensor, one host read");
    let both = loss
        .read_stats_with(&values, &targets, &[(KOLEO, 0.1)])
        .unwrap();
    let names: Vec<&str> = both.terms.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [DINO, KOLEO]);
    assert_eq!(both.term(KOLEO).unwrap().weight, 0.1);
    assert_eq!(both.get(KOLEO, LOSS), Some(-0.375));
    assert_eq!(both.loss, alone.loss + -0.375);
    assert_eq!(
        both.term(DINO),
        alone.term(DINO),
        "the DINO term is its own"
    );
    let d = both.term(DINO).unwrap();
    assert_eq!(d.get(KL), Some(d.loss() - d.get(TEACHER_ENTROPY).unwrap()));
    assert_eq!(d.get(TEACHER_TEMP), Some(0.04));
    for stat in [TEACHER_MEAN_ENTROPY, CENTER_NORM] {
        assert!(d.get(stat).is_some_and(f64::is_finite), "{stat}");
    }
    // Values and names that do not match are refused.
    assert!(loss.read_stats_with(&values, &targets, &[]).is_err());
}

/// A collapsed DINO term is judged on its own statistics whatever the other terms add: the
/// total is far from ln K and the monitor still fires; a healthy DINO term with a large KoLeo
/// term does not.
#[test]
fn the_collapse_monitor_reads_the_dino_term_by_name() {
    let k = 4096usize;
    let ln_k = (k as f64).ln();
    let with_koleo =
        |dino: TermStats| LossStats::from_terms(vec![dino, TermStats::new(KOLEO, 0.1, -3.0)]);
    // Uniform student: the DINO cross-entropy pinned at ln K, the teacher entropy mid-range.
    let pinned = with_koleo(dino_term(ln_k, 0.5 * ln_k, 0.9 * ln_k, 1.0, 0.04));
    assert!(
        (pinned.loss - ln_k).abs() > 0.01 * ln_k,
        "the total is not at ln K"
    );
    let mut m = CollapseMonitor::new(k, CollapseConfig::default());
    let fired: Vec<CollapseKind> = (0..200)
        .filter_map(|i| m.observe(i, &pinned).map(|w| w.kind))
        .collect();
    assert_eq!(fired.first(), Some(&CollapseKind::UniformLoss));
    let healthy = with_koleo(dino_term(0.6 * ln_k, 0.4 * ln_k, 0.9 * ln_k, 1.0, 0.04));
    let mut m = CollapseMonitor::new(k, CollapseConfig::default());
    assert!((0..400).all(|i| m.observe(i, &healthy).is_none()));
    // Without a DINO term (the supervised objective) nothing is judged.
    let supervised = LossStats::from_terms(vec![TermStats::new("cross_entropy", 1.0, ln_k)]);
    let mut m = CollapseMonitor::new(k, CollapseConfig::default());
    assert!((0..400).all(|i| m.observe(i, &supervised).is_none()));
}

/// The epoch summary and the accumulation window average every term's statistics by name;
/// the temperature and the center norm of an epoch are its last step's.
#[test]
fn summaries_average_each_term_by_name() {
    let step = |i: f64| {
        LossStats::from_terms(vec![
            dino_term(8.0 + i, 6.0 + i, 7.0, 0.5 * i, 0.04 + 0.01 * i),
            TermStats::new(KOLEO, 0.1, -0.25 * i),
        ])
    };
    let steps: Vec<LossStats> = (0..4).map(|i| step(i as f64)).collect();
    let e = LossStats::epoch_summary(&steps);
    assert_eq!(e.loss, (0.0 + 8.0 + 8.75 + 9.5 + 10.25) / 4.0);
    assert_eq!(e.get(DINO, LOSS), Some(9.5));
    assert_eq!(e.get(DINO, KL), Some(2.0));
    assert_eq!(e.get(DINO, TEACHER_ENTROPY), Some(7.5));
    assert_eq!(e.get(DINO, CENTER_NORM), Some(1.5), "last value");
    assert_eq!(
        e.get(DINO, TEACHER_TEMP),
        Some(0.04 + 0.01 * 3.0),
        "last value"
    );
    assert_eq!(e.get(KOLEO, LOSS), Some(-0.375));
    assert_eq!(e.term(KOLEO).unwrap().weight, 0.1);

    let micro: Vec<StepStats> = steps[..2]
        .iter()
        .map(|s| StepStats {
            loss: s.clone(),
            train_top1: None,
        })
        .collect();
    let w = StepStats::window_mean(&micro).loss;
    assert_eq!(
        w.get(DINO, TEACHER_TEMP),
        Some((0.04 + (0.04 + 0.01 * 1.0)) / 2.0),
        "a mean in a window"
    );
    assert_eq!(w.get(KOLEO, LOSS), Some(-0.125));
    // One micro-batch comes back unchanged, bit for bit.
    assert_eq!(StepStats::window_mean(&micro[1..2]).loss, steps[1]);

    // The epoch record carries the same summary under the step lines' keys.
    let record = |i: usize| dino_train::metrics::StepRecord {
        global_step: i,
        stats: steps[i].clone(),
        ..Default::default()
    };
    let records: Vec<_> = (0..4).map(record).collect();
    let line =
        serde_json::to_string(&Record::Epoch(EpochRecord::from_steps(0, &records, 1.0))).unwrap();
    for key in [
        "\"dino/kl\":2.0",
        "\"koleo/loss\":-0.375",
        "\"koleo/weight\":0.1",
    ] {
        assert!(line.contains(key), "{key} in {line}");
    }
}
