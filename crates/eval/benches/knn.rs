//! Weighted k-NN throughput: official k list (10, 20, 100, 200) and T = 0.07 on random
//! ViT-S-sized features (D = 384), 10 000 train features, chunk size 256.
//!
//! `cargo bench -p dino-eval --bench knn`; set `KNN_BENCH_TEST` to change the test-set size
//! (default 5 000; 50 000 is the ImageNet validation set). libtorch threads: `KNN_BENCH_THREADS`
//! (default: libtorch's choice).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dino_eval::features::FeatureSet;
use dino_eval::knn::{knn_eval, KnnConfig};
use tch::{Device, Kind, Tensor};

/// The tensors as the [`FeatureSet`] k-NN and the probe take.
fn fs(x: &Tensor, y: &Tensor) -> FeatureSet {
    FeatureSet::labelled(x.shallow_clone(), y.shallow_clone()).unwrap()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_knn(c: &mut Criterion) {
    if let Some(threads) = std::env::var("KNN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tch::set_num_threads(threads);
    }
    let (n_train, n_test, dim, classes) = (
        10_000i64,
        env_usize("KNN_BENCH_TEST", 5_000) as i64,
        384,
        100,
    );
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    let train = Tensor::randn([n_train, dim], opts);
    let test = Tensor::randn([n_test, dim], opts);
    let train_labels = Tensor::randint(classes, [n_train], (Kind::Int64, Device::Cpu));
    let test_labels = Tensor::randint(classes, [n_test], (Kind::Int64, Device::Cpu));
    let (train, test) = (fs(&train, &train_labels), fs(&test, &test_labels));
    let cfg = KnnConfig::default();
    let mut group = c.benchmark_group("knn");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n_test as u64));
    group.bench_function(format!("{n_test}x{n_train}x{dim}"), |b| {
        b.iter(|| knn_eval(&train, &test, &cfg).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_knn);
criterion_main!(benches);
