//! The epoch summary as running sums (`dino_train::epoch_sums`): equal bit for bit to the
//! summary computed from all the step records (`LossStats::epoch_summary` and plain means), and
//! unchanged when the sums are cut at any step, written to JSON as a checkpoint holds them, read
//! back and continued (a run resumed inside an epoch).

use dino_train::epoch_sums::EpochSums;
use dino_train::loss::stats::{dino_term, KL, KOLEO};
use dino_train::loss::{LossStats, TermStats};
use dino_train::metrics::StepRecord;

/// Steps with values that do not add exactly in floating point (so an order change shows), a
/// KoLeo term from step 3 on (a term appearing mid-epoch), and a train top-1 on some steps.
fn steps(n: usize) -> Vec<StepRecord> {
    (0..n)
        .map(|i| {
            let x = i as f64;
            let mut terms = vec![dino_term(
                7.0 + 0.1 / (x + 3.0),
                6.1 - x / 7.0,
                6.9,
                0.3 + x / 11.0,
                0.04 + x * 1e-3,
            )
            .with(KL, 0.9 + 1.0 / (x + 1.7))];
            if i >= 3 {
                terms.push(TermStats::new(KOLEO, 0.1, -0.03 - x / 130.0));
            }
            StepRecord {
                epoch: 4,
                step: i,
                global_step: 40 + i,
                stats: LossStats::from_terms(terms),
                lr: 1e-4 / (x + 1.3),
                wd: 0.04 + x / 3e3,
                momentum: 0.996 + x / 7e4,
                images_per_s: 100.0 / (x + 0.7),
                data_wait_fraction: 0.1 + x / 9.0,
                loss_scale: None,
                skipped_step: None,
                train_top1: (i % 2 == 0).then(|| 50.0 + x / 3.0),
            }
        })
        .collect()
}

fn bits(v: f64) -> u64 {
    v.to_bits()
}

#[test]
fn running_sums_give_the_summary_of_all_the_steps() {
    let all = steps(9);
    let mut sums = EpochSums::new(4);
    all.iter().for_each(|r| sums.add(r));
    let rec = sums.record(2.5);
    // The older, independent computation of the loss statistics.
    let expected = LossStats::epoch_summary(all.iter().map(|r| &r.stats));
    assert_eq!(rec.stats, expected);
    let mean = |f: fn(&StepRecord) -> f64| all.iter().fold(0.0, |s, r| s + f(r)) / 9.0;
    assert_eq!(bits(rec.lr), bits(mean(|r| r.lr)));
    assert_eq!(bits(rec.wd), bits(mean(|r| r.wd)));
    assert_eq!(bits(rec.momentum), bits(mean(|r| r.momentum)));
    assert_eq!(bits(rec.images_per_s), bits(mean(|r| r.images_per_s)));
    assert_eq!(bits(rec.lr_last), bits(all[8].lr));
    let top1: Vec<f64> = all.iter().filter_map(|r| r.train_top1).collect();
    let top1_mean = top1.iter().fold(0.0, |s, v| s + v) / top1.len() as f64;
    assert_eq!(bits(rec.extra["train_top1"]), bits(top1_mean));
    assert_eq!((rec.epoch, rec.steps, rec.elapsed_s), (4, 9, 2.5));
}

#[test]
fn sums_cut_saved_and_continued_are_bitwise_the_same() {
    let all = steps(9);
    let mut whole = EpochSums::new(4);
    all.iter().for_each(|r| whole.add(r));
    for cut in 1..9 {
        let mut first = EpochSums::new(4);
        all[..cut].iter().for_each(|r| first.add(r));
        first.elapsed_s.0 = 1.25;
        let text = serde_json::to_string(&first).unwrap();
        let mut resumed: EpochSums = serde_json::from_str(&text).unwrap();
        assert_eq!(resumed, first, "cut {cut}: {text}");
        all[cut..].iter().for_each(|r| resumed.add(r));
        let (a, b) = (whole.record(1.0), resumed.record(1.0));
        assert_eq!(b.elapsed_s, 2.25);
        assert_eq!(
            serde_json::to_string(&a.stats).unwrap(),
            serde_json::to_string(&b.stats).unwrap(),
            "cut {cut}"
        );
        assert_eq!(a.stats, b.stats, "cut {cut}");
        for (x, y) in [
            (a.lr, b.lr),
            (a.wd, b.wd),
            (a.momentum, b.momentum),
            (a.lr_last, b.lr_last),
        ] {
            assert_eq!(bits(x), bits(y), "cut {cut}");
        }
        assert_eq!(a.extra, b.extra);
    }
    // A number JSON could read back one ulp off travels as exact text.
    let mut tricky = EpochSums::new(0);
    tricky.loss.0 = 0.1 + 0.2;
    tricky.lr.0 = f64::MIN_POSITIVE / 3.0;
    let back: EpochSums = serde_json::from_str(&serde_json::to_string(&tricky).unwrap()).unwrap();
    assert_eq!(bits(back.loss.0), bits(0.1 + 0.2));
    assert_eq!(bits(back.lr.0), bits(f64::MIN_POSITIVE / 3.0));
}
