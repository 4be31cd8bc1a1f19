//! Weighted k-NN on a case small enough to check by hand.
//!
//! Every feature has unit norm and the test features are mostly basis vectors, so a cosine
//! similarity is just a coordinate or a short dot product.

use dino_eval::features::FeatureSet;
use dino_eval::knn::{knn_eval, knn_predict, KnnConfig, KnnError};
use tch::Tensor;

/// The tensors as the [`FeatureSet`] k-NN and the probe take.
fn fs(x: &Tensor, y: &Tensor) -> FeatureSet {
    FeatureSet::labelled(x.shallow_clone(), y.shallow_clone()).unwrap()
}

/// Queries without labels (-1: k-NN prediction does not read them).
fn queries(x: &Tensor) -> FeatureSet {
    let unknown = Tensor::full([x.size()[0]], -1, (tch::Kind::Int64, tch::Device::Cpu));
    FeatureSet::labelled(x.shallow_clone(), unknown).unwrap()
}

/// Train features r0..r6 and their classes.
fn train() -> (Tensor, Tensor) {
    let rows: [[f32; 3]; 7] = [
        [1.0, 0.0, 0.0],   // r0 class 0
        [0.8, 0.6, 0.0],   // r1 class 1
        [0.6, 0.0, 0.8],   // r2 class 1
        [0.28, 0.96, 0.0], // r3 class 1
        [0.0, 0.8, 0.6],   // r4 class 2
        [0.0, 0.0, 1.0],   // r5 class 2
        [0.96, 0.0, 0.28], // r6 class 2
    ];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    (
        Tensor::from_slice(&flat).view([7, 3]),
        Tensor::from_slice(&[0i64, 1, 1, 1, 2, 2, 2]),
    )
}

/// Seven validation features t0..t6 (fewer than 100: the official chunking crashes here).
fn test() -> (Tensor, Tensor) {
    let rows: [[f32; 3]; 7] = [
        [1.0, 0.0, 0.0], // t0 label 1
        [0.0, 1.0, 0.0], // t1 label 1
        [0.0, 0.0, 1.0], // t2 label 2
        [0.6, 0.8, 0.0], // t3 label 2
        [0.0, 0.6, 0.8], // t4 label 1
        [0.8, 0.0, 0.6], // t5 label 2
        [0.6, 0.0, 0.8], // t6 label 2
    ];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    (
        Tensor::from_slice(&flat).view([7, 3]),
        Tensor::from_slice(&[1i64, 1, 2, 2, 1, 2, 2]),
    )
}

// Similarities, most similar first (neighbour: sim, class):
// t0: r0 1 c0, r6 .96 c2, r1 .8 c1, r2 .6 c1, r3 .28 c1, r4/r5 0
// t1: r3 .96 c1, r4 .8 c2, r1 .6 c1, then r0/r2/r5/r6 at 0
// t2: r5 1 c2, r2 .8 c1, r4 .6 c2, r6 .28 c2, then 0
// t3: r1 .96 c1, r3 .936 c1, r4 .64 c2, r0 .6 c0, r6 .576 c2, r2 .36 c1, r5 0
// t4: r4 .96 c2, r5 .8 c2, r2 .64 c1, r3 .576 c1, r1 .36 c1, r6 .224 c2, r0 0
// t5: r2 .96 c1, r6 .936 c2, r0 .8 c0, r1 .64 c1, r5 .6 c2, r4 .36 c2, r3 .224 c1
// t6: r2 1 c1, r5 .8 c2, r6 .8 c2, r0 .6 c0, r1/r4 .48
//
// k = 1: predictions = class of the nearest: 0, 1, 2, 1, 2, 1, 1 → right for t1, t2 only: 2/7.
// k = 3, T = 1 (votes e^s per neighbour, summed per class; e^1 = 2.7183, e^.96 = 2.6117,
// e^.936 = 2.5498, e^.8 = 2.2255, e^.64 = 1.8965, e^.6 = 1.8221):
//   t0: c0 2.7183 > c2 2.6117 > c1 2.2255 → 0 (wrong)
//   t1: c1 2.6117 + 1.8221 = 4.4338 > c2 2.2255 → 1 (right)
//   t2: c2 2.7183 + 1.8221 = 4.5404 > c1 2.2255 → 2 (right)
//   t3: c1 2.6117 + 2.5498 = 5.1615 > c2 1.8965 → 1 (wrong)
//   t4: c2 2.6117 + 2.2255 = 4.8372 > c1 1.8965 → 2 (wrong)
//   t5: c1 2.6117 > c2 2.5498 > c0 2.2255 → 1 (wrong)
//   t6: c2 2 · 2.2255 = 4.4511 > c1 2.7183 → 2 (right: two weaker votes beat the nearest)
//   → 3/7.
// Top-5: the official code looks at the first min(5, k) ranks. k = 1: same as top-1, 2/7;
// k = 3: with 3 classes every class is within the first 3 ranks, 7/7.

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn hand_computed_accuracies() {
    let (train_x, train_y) = train();
    let (test_x, test_y) = test();
    for chunk_size in [1, 3, 256] {
        let cfg = KnnConfig {
            ks: vec![3, 1],
            temperature: 1.0,
            chunk_size,
        };
        let report = knn_eval(&fs(&train_x, &train_y), &fs(&test_x, &test_y), &cfg).unwrap();
        assert_eq!(
            (report.n_train, report.n_test, report.num_classes),
            (7, 7, 3)
        );
        assert_eq!(report.scores[0].k, 3, "scores keep the order of the k list");
        let k1 = report.score(1).unwrap();
        assert!(close(k1.top1, 200.0 / 7.0), "{report:?}");
        assert!(close(k1.top5, 200.0 / 7.0), "{report:?}");
        let k3 = report.score(3).unwrap();
        assert!(close(k3.top1, 300.0 / 7.0), "{report:?}");
        assert!(close(k3.top5, 100.0), "{report:?}");
    }
}

#[test]
fn hand_computed_predictions() {
    let (train_x, train_y) = train();
    let (test_x, _) = test();
    assert_eq!(
        knn_predict(&fs(&train_x, &train_y), &queries(&test_x), 1, 1.0).unwrap(),
        [0, 1, 2, 1, 2, 1, 1]
    );
    assert_eq!(
        knn_predict(&fs(&train_x, &train_y), &queries(&test_x), 3, 1.0).unwrap(),
        [0, 1, 2, 1, 2, 1, 2]
    );
}

#[test]
fn temperature_and_k_beyond_a_class() {
    // k = 5 exceeds every class (1, 3 and 3 train features). Only t0, t3, t4, t5 have no tie
    // at rank 5/6.
    let (train_x, train_y) = train();
    let (test_x, _) = test();
    let rows = Tensor::from_slice(&[0i64, 3, 4, 5]);
    let x = test_x.index_select(0, &rows);
    // T = 1: t0: c1 e^.8 + e^.6 + e^.28 = 2.2255 + 1.8221 + 1.3231 = 5.3707 beats c0 2.7183
    //   and c2 2.6117 → 1. t3: c1 5.1615 + e^.36 → 1. t4: c1 e^.64 + e^.576 + e^.36 =
    //   1.8965 + 1.7789 + 1.4333 = 5.1087 > c2 4.8372 → 1. t5: c1 2.6117 + 1.8965 = 4.5082 >
    //   c2 2.5498 + 1.8221 = 4.3719 → 1.
    assert_eq!(
        knn_predict(&fs(&train_x, &train_y), &queries(&x), 5, 1.0).unwrap(),
        [1, 1, 1, 1]
    );
    // T = 0.1 sharpens the weights: t0: c0 e^10 = 22026 > c2 e^9.6 = 14765 > c1 e^8 + e^6 +
    //   e^2.8 ≈ 3400 → 0. t4: c2 e^9.6 + e^8 ≈ 17746 > c1 e^6.4 + e^5.76 + e^3.6 ≈ 954 → 2.
    assert_eq!(
        knn_predict(&fs(&train_x, &train_y), &queries(&x), 5, 0.1).unwrap(),
        [0, 1, 2, 1]
    );
}

#[test]
fn k_beyond_the_train_set_is_capped_to_it() {
    let (train_x, train_y) = train();
    let (test_x, test_y) = test();
    let cfg = |ks: Vec<usize>| KnnConfig {
        ks,
        temperature: 0.07,
        chunk_size: 256,
    };
    let capped = knn_eval(
        &fs(&train_x, &train_y),
        &fs(&test_x, &test_y),
        &cfg(vec![1, 8]),
    )
    .unwrap();
    let exact = knn_eval(
        &fs(&train_x, &train_y),
        &fs(&test_x, &test_y),
        &cfg(vec![1, 7]),
    )
    .unwrap();
    assert_eq!(capped.scores[1].k, 7);
    assert_eq!(capped.scores[1].capped_from, [8]);
    assert_eq!(
        (capped.scores[1].top1, capped.scores[1].top5),
        (exact.scores[1].top1, exact.scores[1].top5)
    );
    let err = knn_eval(
        &fs(&train_x, &train_y),
        &fs(&test_x, &test_y),
        &cfg(vec![0]),
    )
    .unwrap_err();
    assert!(matches!(err, KnnError::ZeroK), "{err}");
}
