//! The loader on small generated PNG folders: determinism across thread counts, exact resume,
//! failure replacement, errors as messages, clean shutdown.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dino_config::{AugmentationConfig, DataConfig, DataFormat};
use dino_data::augmentation::DataAugmentationDino;
use dino_data::batch::MultiCropBatch;
use dino_data::dataset::{open_dataset, Dataset};
use dino_data::error::DataError;
use dino_data::loader::{epoch_order, Loader, LoaderOptions, Shard};
use dino_data::rng::{rng_for, Stream};

/// Small crops keep the test fast; everything else is the official augmentation.
fn aug() -> AugmentationConfig {
    AugmentationConfig {
        global_crops_size: 32,
        local_crops_size: 16,
        local_crops_number: 3,
        ..Default::default()
    }
}

fn opts(threads: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size: 6,
        seed: 7,
        epochs: 0..2,
        start_step: 0,
        threads,
        prefetch: 2,
        drop_last: false,
        shuffle: true,
        max_failed_fraction: 0.0,
        shard: Shard::WHOLE,
        masking: None,
    }
}

fn open(root: &Path) -> Arc<dyn Dataset> {
    open_dataset(root, DataFormat::Auto, "train", &DataConfig::default())
        .unwrap()
        .into()
}

fn run(ds: &Arc<dyn Dataset>, o: LoaderOptions) -> Vec<MultiCropBatch> {
    let loader = Loader::spawn(ds.clone(), DataAugmentationDino::new(&aug()).unwrap(), o).unwrap();
    loader.map(|b| b.unwrap()).collect()
}

fn folder() -> (tempfile::TempDir, Arc<dyn Dataset>) {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(common::make_png_folder(dir.path(), &["a", "b"], 8), 16);
    let ds = open(dir.path());
    (dir, ds)
}

#[test]
fn same_seed_gives_identical_batches_with_1_and_3_threads() {
    let (_dir, ds) = folder();
    let one = run(&ds, opts(1));
    let three = run(&ds, opts(3));
    // 16 images, batch 6, no drop_last: 3 batches per epoch (6, 6, 4), 2 epochs.
    assert_eq!(one.len(), 6);
    assert_eq!(
        one.iter().map(|b| b.batch_size).collect::<Vec<_>>(),
        [6, 6, 4, 6, 6, 4]
    );
    assert!(one == three, "thread count changed the bytes");
    let other_seed = run(&ds, LoaderOptions { seed: 8, ..opts(1) });
    assert_ne!(one[0].globals, other_seed[0].globals);
    // Each epoch visits every image once, in the seeded order.
    for e in 0..2u64 {
        let idx: Vec<u64> = one
            .iter()
            .filter(|b| b.epoch == e)
            .flat_map(|b| b.indices.clone())
            .collect();
        let order: Vec<u64> = epoch_order(7, e, 16)
            .into_iter()
            .map(|i| i as u64)
            .collect();
        assert_eq!(idx, order);
    }
    assert_ne!(one[0].indices, one[3].indices, "epochs are reshuffled");
}

#[test]
fn batches_hold_each_samples_own_crops_and_labels() {
    let (_dir, ds) = folder();
    let batches = run(
        &ds,
        LoaderOptions {
            epochs: 1..2,
            ..opts(2)
        },
    );
    let mc = DataAugmentationDino::new(&aug()).unwrap();
    let b = &batches[1];
    assert_eq!((b.epoch, b.step), (1, 1));
    for i in 0..b.batch_size {
        let index = b.indices[i] as usize;
        let sample = ds.load(index).unwrap();
        assert_eq!(b.labels[i], sample.label);
        assert_eq!(sample.label, (index / 8) as i64, "class a then b, 8 each");
        let crops = mc.apply(
            &sample.image,
            &mut rng_for(7, 1, index as u64, Stream::Augment),
        );
        for (v, crop) in crops.iter().enumerate() {
            assert_eq!(&b.crop_image(v, i).unwrap(), crop, "view {v} of image {i}");
        }
    }
}

#[test]
fn resuming_at_an_epoch_and_step_repeats_the_uninterrupted_run() {
    let (_dir, ds) = folder();
    let full = run(&ds, opts(2));
    let resumed = run(
        &ds,
        LoaderOptions {
            epochs: 1..2,
            start_step: 2,
            ..opts(1)
        },
    );
    assert_eq!(resumed.len(), 1);
    assert!(resumed[0] == full[5]);
    let resumed = run(
        &ds,
        LoaderOptions {
            start_step: 1,
            ..opts(2)
        },
    );
    assert!(resumed[..] == full[1..]);
}

#[test]
fn failed_samples_are_replaced_counted_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    common::make_png_folder(dir.path(), &["a", "b"], 8);
    std::fs::write(dir.path().join("a/bad_empty.jpg"), b"").unwrap();
    std::fs::write(dir.path().join("b/bad_text.png"), b"not an image at all").unwrap();
    let ds = open(dir.path());
    assert_eq!(ds.len(), 18);
    let bad: Vec<usize> = (0..18)
        .filter(|&i| ds.describe(i).contains("bad_"))
        .collect();
    assert_eq!(bad.len(), 2);
    let o = LoaderOptions {
        max_failed_fraction: 0.2,
        ..opts(1)
    };
    let loader = Loader::spawn(
        ds.clone(),
        DataAugmentationDino::new(&aug()).unwrap(),
        o.clone(),
    )
    .unwrap();
    let stats = loader.stats();
    let one: Vec<MultiCropBatch> = loader.map(|b| b.unwrap()).collect();
    let s = stats.snapshot();
    assert_eq!(s.distinct_failed, 2);
    // Each distinct bad file is kept once, with its path and the decoder's reason.
    let failures = stats.failures();
    assert_eq!(failures.iter().map(|f| f.0).collect::<Vec<_>>(), bad);
    assert!(failures[0].1.contains("bad_empty.jpg") && failures[0].1.contains("empty file"));
    assert!(
        failures[1].1.contains("bad_text.png") && failures[1].1.contains("unknown image format")
    );
    // Each bad file is drawn once per epoch; a replacement may hit a bad file again.
    assert!(s.failed_samples >= 4, "{s:?}");
    assert_eq!(
        one.iter().map(|b| b.batch_size).sum::<usize>(),
        36,
        "shapes never change"
    );
    for b in &one {
        assert!(b.indices.iter().all(|i| !bad.contains(&(*i as usize))));
    }
    let three = run(&ds, LoaderOptions { threads: 3, ..o });
    assert!(one == three);
}

#[test]
fn too_many_failures_arrive_as_an_error_message() {
    let dir = tempfile::tempdir().unwrap();
    common::make_png_folder(dir.path(), &["a"], 5);
    std::fs::write(
        dir.path().join("a/broken.jpg"),
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 16],
    )
    .unwrap();
    let ds = open(dir.path());
    let loader = Loader::spawn(
        ds,
        DataAugmentationDino::new(&aug()).unwrap(),
        LoaderOptions {
            batch_size: 3,
            ..opts(2)
        },
    )
    .unwrap();
    let msgs: Vec<_> = loader.collect();
    let last = msgs.last().expect("a message");
    match last {
        Err(DataError::TooManyFailures {
            failed: 1, len: 6, ..
        }) => {}
        other => panic!("expected TooManyFailures, got {other:?}"),
    }
    assert!(msgs[..msgs.len() - 1].iter().all(|m| m.is_ok()));
    let text = last.as_ref().unwrap_err().to_string();
    assert!(text.contains("max_failed_fraction"), "{text}");
}

#[test]
fn dropping_the_loader_stops_the_producer_without_hanging() {
    let (_dir, ds) = folder();
    let long = LoaderOptions {
        epochs: 0..1_000_000,
        prefetch: 1,
        ..opts(2)
    };
    let t0 = Instant::now();
    // Dropped while the producer is blocked on the full channel.
    let loader = Loader::spawn(
        ds.clone(),
        DataAugmentationDino::new(&aug()).unwrap(),
        long.clone(),
    )
    .unwrap();
    let first = loader.recv().unwrap().unwrap();
    assert_eq!(first.step, 0);
    std::thread::sleep(Duration::from_millis(50));
    drop(loader);
    // Dropped right away, mid-batch.
    drop(Loader::spawn(ds, DataAugmentationDino::new(&aug()).unwrap(), long).unwrap());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "drop took {:?}",
        t0.elapsed()
    );
}

#[test]
fn bad_options_fail_before_any_work() {
    let (_dir, ds) = folder();
    let mc = || DataAugmentationDino::new(&aug()).unwrap();
    let err = |o| {
        Loader::spawn(ds.clone(), mc(), o)
            .err()
            .expect("an error")
            .to_string()
    };
    assert!(err(LoaderOptions {
        batch_size: 0,
        ..opts(1)
    })
    .contains("batch_size"));
    let e = err(LoaderOptions {
        batch_size: 17,
        drop_last: true,
        ..opts(1)
    });
    assert!(e.contains("16 samples"), "{e}");
    assert!(err(LoaderOptions {
        start_step: 4,
        ..opts(1)
    })
    .contains("start_step"));
    assert!(err(LoaderOptions {
        max_failed_fraction: 1.5,
        ..opts(1)
    })
    .contains("max_failed"));
}

/// A dataset whose sample 3 panics while loading.
struct Panicky;

impl Dataset for Panicky {
    fn len(&self) -> usize {
        8
    }
    fn load(&self, index: usize) -> Result<dino_data::dataset::Sample, DataError> {
        assert!(index != 3, "sample three is cursed");
        Ok(dino_data::dataset::Sample {
            image: image::RgbImage::from_pixel(20, 20, image::Rgb([index as u8; 3])),
            label: 0,
        })
    }
    fn describe(&self, index: usize) -> String {
        format!("panicky#{index}")
    }
    fn classes(&self) -> &[String] {
        &[]
    }
}

#[test]
fn a_panicking_worker_becomes_an_error_message_not_a_silent_end() {
    let loader = Loader::spawn(
        Arc::new(Panicky),
        DataAugmentationDino::new(&aug()).unwrap(),
        LoaderOptions {
            batch_size: 8,
            ..opts(2)
        },
    )
    .unwrap();
    let msgs: Vec<_> = loader.collect();
    assert_eq!(msgs.len(), 1);
    let text = msgs[0].as_ref().unwrap_err().to_string();
    assert!(
        text.contains("panicked") && text.contains("cursed"),
        "{text}"
    );
}

/// Every image of a batch with all its crops, keyed by dataset index.
fn crops_by_index(b: &MultiCropBatch) -> std::collections::BTreeMap<u64, Vec<Vec<u8>>> {
    (0..b.batch_size)
        .map(|i| {
            let crops = (0..b.n_crops())
                .map(|v| b.crop(v, i).unwrap().to_vec())
                .collect();
            (b.indices[i], crops)
        })
        .collect()
}

#[test]
fn shards_together_give_the_single_process_batches_crop_for_crop() {
    // 16 images, drop_last: one process with batch 4 vs two ranks with batch 2, and three
    // ranks (16 / 3 = 5 per rank, one image dropped per epoch) with batch 2 vs batch 6.
    let (_dir, ds) = folder();
    let base = LoaderOptions {
        drop_last: true,
        ..opts(2)
    };
    for (world, b) in [(2usize, 2usize), (3, 2)] {
        let whole = run(
            &ds,
            LoaderOptions {
                batch_size: b * world,
                ..base.clone()
            },
        );
        let ranks: Vec<Vec<MultiCropBatch>> = (0..world)
            .map(|rank| {
                run(
                    &ds,
                    LoaderOptions {
                        batch_size: b,
                        shard: Shard {
                            rank,
                            world_size: world,
                        },
                        ..base.clone()
                    },
                )
            })
            .collect();
        for r in &ranks {
            assert_eq!(r.len(), whole.len(), "same steps per epoch on every rank");
        }
        for (s, single) in whole.iter().enumerate() {
            let mut union = std::collections::BTreeMap::new();
            for r in &ranks {
                assert_eq!(r[s].batch_size, b);
                union.extend(crops_by_index(&r[s]));
            }
            assert_eq!(union, crops_by_index(single), "world {world} step {s}");
        }
    }
}

#[test]
fn shards_are_disjoint_and_padded_like_distributed_sampler() {
    // 16 images over 3 ranks without drop_last: ⌈16/3⌉ = 6 each, 18 in all, so the first two
    // positions of the epoch order are read twice (DistributedSampler pads from the start).
    let (_dir, ds) = folder();
    let mut seen = Vec::new();
    for rank in 0..3 {
        let got = run(
            &ds,
            LoaderOptions {
                batch_size: 4,
                epochs: 0..1,
                shard: Shard {
                    rank,
                    world_size: 3,
                },
                ..opts(1)
            },
        );
        assert_eq!(got.iter().map(|b| b.batch_size).collect::<Vec<_>>(), [4, 2]);
        seen.extend(got.iter().flat_map(|b| b.indices.clone()));
    }
    let order = epoch_order(7, 0, 16);
    let mut expected: Vec<u64> = order.iter().map(|&i| i as u64).collect();
    expected.extend([order[0] as u64, order[1] as u64]);
    seen.sort_unstable();
    expected.sort_unstable();
    assert_eq!(seen, expected);
}

#[test]
fn a_rank_outside_the_world_is_rejected() {
    let (_dir, ds) = folder();
    let e = Loader::spawn(
        ds,
        DataAugmentationDino::new(&aug()).unwrap(),
        LoaderOptions {
            shard: Shard {
                rank: 2,
                world_size: 2,
            },
            ..opts(1)
        },
    )
    .err()
    .expect("an error");
    assert!(e.to_string().contains("shard"), "{e}");
}

#[test]
fn without_shuffle_every_epoch_visits_the_dataset_in_index_order() {
    // DataLoader(shuffle=False): indices 0..len in order, each image still augmented from
    // (seed, epoch, index), so its crops equal those of the shuffled run.
    let (_dir, ds) = folder();
    let plain = run(
        &ds,
        LoaderOptions {
            shuffle: false,
            ..opts(2)
        },
    );
    let visited: Vec<u64> = plain.iter().flat_map(|b| b.indices.clone()).collect();
    let once: Vec<u64> = (0..16).collect();
    assert_eq!(
        visited,
        [once.clone(), once].concat(),
        "2 epochs in index order"
    );
    let shuffled = run(&ds, opts(2));
    assert_ne!(
        shuffled
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        visited
    );
    for epoch in 0..2u64 {
        let crops = |batches: &[MultiCropBatch]| {
            let mut all = std::collections::BTreeMap::new();
            for b in batches.iter().filter(|b| b.epoch == epoch) {
                all.extend(crops_by_index(b));
            }
            all
        };
        assert_eq!(crops(&plain), crops(&shuffled), "epoch {epoch}");
    }
}
