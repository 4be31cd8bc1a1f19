//! iBOT's block masks (`crates/data/src/masking.rs`) against `tests/reference/ibot_masking_reference.py`,
//! a reference of our own written from reading dinov2's `data/masking.py` and `data/collate.py`:
//! the statistics of 10,000 crop masks in batches (fraction of crops masked, their ratios, the
//! spread of the ratios over the batch, block shapes) and of 10,000 masks of one size agree within
//! 5 standard errors; the loader's masks are the same for 1 and 2 threads and follow the seed.

use crate::common;

use std::sync::Arc;

use dino_config::{AugmentationConfig, Config, DataConfig, DataFormat};
use dino_data::augmentation::DataAugmentationDino;
use dino_data::batch::MultiCropBatch;
use dino_data::dataset::{open_dataset, Dataset};
use dino_data::loader::{Loader, LoaderOptions, Shard};
use dino_data::masking::{batch_masks, MaskingGenerator, MaskingOptions};
use dino_data::rng::{rng_for, Stream};

/// (size, patch, batch, batches, p, min, max, target, draws of the target alone).
const SIZE: usize = 224;
const PATCH: usize = 16;
const BATCH: usize = 8;
const BATCHES: usize = 625; // 625 · 2 · 8 = 10,000 crops
const ALONE_TARGET: usize = 60;
const ALONE_DRAWS: usize = 10_000;

#[derive(Default)]
struct Acc(Vec<f64>);

impl Acc {
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }
    fn std(&self) -> f64 {
        let m = self.mean();
        (self.0.iter().map(|v| (v - m).powi(2)).sum::<f64>() / self.0.len() as f64).sqrt()
    }
}

/// 4-connected components of a `g × g` row-major mask.
fn components(mask: &[bool], g: usize) -> usize {
    let mut seen = vec![false; mask.len()];
    let mut count = 0;
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        count += 1;
        seen[start] = true;
        let mut stack = vec![start];
        while let Some(p) = stack.pop() {
            let (i, j) = (p / g, p % g);
            let mut next = Vec::with_capacity(4);
            if i + 1 < g {
                next.push(p + g);
            }
            if i > 0 {
                next.push(p - g);
            }
            if j + 1 < g {
                next.push(p + 1);
            }
            if j > 0 {
                next.push(p - 1);
            }
            for q in next {
                if mask[q] && !seen[q] {
                    seen[q] = true;
                    stack.push(q);
                }
            }
        }
    }
    count
}

/// (log(h / w), fill) of the mask's bounding box.
fn bbox(mask: &[bool], g: usize) -> (f64, f64) {
    let set: Vec<(usize, usize)> = (0..mask.len())
        .filter(|&p| mask[p])
        .map(|p| (p / g, p % g))
        .collect();
    let (r0, r1) = (
        set.iter().map(|s| s.0).min().unwrap(),
        set.iter().map(|s| s.0).max().unwrap(),
    );
    let (c0, c1) = (
        set.iter().map(|s| s.1).min().unwrap(),
        set.iter().map(|s| s.1).max().unwrap(),
    );
    let (h, w) = ((r1 - r0 + 1) as f64, (c1 - c0 + 1) as f64);
    ((h / w).ln(), set.len() as f64 / (h * w))
}

/// Asserts our mean within 5 standard errors (both sides' errors) of the reference's.
fn close(name: &str, ours: &Acc, reference: &serde_json::Value) {
    let (m, s, n) = (
        reference["mean"].as_f64().unwrap(),
        reference["std"].as_f64().unwrap(),
        reference["n"].as_f64().unwrap(),
    );
    let k = ours.0.len() as f64;
    let se = (s * s / n + ours.std().powi(2) / k).sqrt().max(1e-9);
    let z = (ours.mean() - m) / se;
    eprintln!(
        "{name}: ours {:.5} reference {m:.5} (z = {z:.2})",
        ours.mean()
    );
    assert!(
        z.abs() < 5.0,
        "{name}: ours {} vs reference {m} ({z:.1} standard errors)",
        ours.mean()
    );
}

#[test]
fn masks_match_the_reference_statistics_over_10000_draws() {
    let dir = common::reference_script("ibot_masking_reference.py");
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("stats.json");
    let args: Vec<String> = [SIZE, PATCH, BATCH, BATCHES]
        .iter()
        .map(|v| v.to_string())
        .chain(["0.5", "0.1", "0.5"].map(String::from))
        .chain([ALONE_TARGET, ALONE_DRAWS].map(|v| v.to_string()))
        .collect();
    let res = std::process::Command::new(common::python())
        .arg(&dir)
        .arg(&json)
        .args(&args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("reference python");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();

    let opts = MaskingOptions {
        generator: MaskingGenerator::for_crops(SIZE, PATCH),
        probability: 0.5,
        ratio_min_max: [0.1, 0.5],
    };
    assert_eq!(r["max_num_patches"].as_f64().unwrap(), 98.0);
    let g = SIZE / PATCH;
    let n = g * g;
    let (mut masked, mut view0, mut ratio) = (Acc::default(), Acc::default(), Acc::default());
    let mut ranked: Vec<Acc> = (0..BATCH).map(|_| Acc::default()).collect();
    let (mut log_aspect, mut abs_log_aspect, mut fill, mut comps) = (
        Acc::default(),
        Acc::default(),
        Acc::default(),
        Acc::default(),
    );
    for step in 0..BATCHES {
        let positions: Vec<usize> = (step * BATCH..(step + 1) * BATCH).collect();
        let mine: Vec<usize> = (0..BATCH).collect();
        let masks = batch_masks(&opts, 0, 0, step as u64, &positions, &mine);
        assert_eq!(masks.len(), 2 * BATCH * n);
        let mut counts = Vec::new();
        for (k, m) in masks.chunks(n).enumerate() {
            let c = m.iter().filter(|&&b| b).count();
            masked.0.push(f64::from(c > 0));
            if c > 0 {
                view0.0.push(f64::from(k < BATCH));
                ratio.0.push(c as f64 / n as f64);
                counts.push(c);
                let (la, f) = bbox(m, g);
                log_aspect.0.push(la);
                abs_log_aspect.0.push(la.abs());
                fill.0.push(f);
                comps.0.push(components(m, g) as f64);
            }
        }
        counts.sort();
        for (j, c) in counts.iter().take(BATCH).enumerate() {
            ranked[j].0.push(*c as f64 / n as f64);
        }
    }
    close("masked fraction", &masked, &r["masked_fraction"]);
    close("masked crops in view 0", &view0, &r["masked_in_view0"]);
    close("masked ratio", &ratio, &r["ratio"]);
    close("ratio std", &Acc(vec![ratio.std()]), &{
        // A single value: compare with a tolerance of 5% of the reference std instead.
        let s = r["ratio"]["std"].as_f64().unwrap();
        serde_json::json!({"mean": s, "std": 0.05 * s, "n": 1})
    });
    for (j, acc) in ranked.iter().enumerate() {
        close(
            &format!("ratio of the {j}-th smallest mask of a batch"),
            acc,
            &r["ranked_ratio"][j],
        );
    }
    let shape = &r["shape"];
    close("log bbox aspect", &log_aspect, &shape["log_aspect"]);
    close(
        "|log bbox aspect|",
        &abs_log_aspect,
        &shape["abs_log_aspect"],
    );
    close("bbox fill", &fill, &shape["fill"]);
    close("components", &comps, &shape["components"]);

    let (mut alone, mut alone_comps) = (Acc::default(), Acc::default());
    let mut rng = rng_for(3, 0, 0, Stream::Mask);
    for _ in 0..ALONE_DRAWS {
        let m = opts.generator.generate(ALONE_TARGET, &mut rng);
        alone.0.push(m.iter().filter(|&&b| b).count() as f64);
        alone_comps.0.push(components(&m, g) as f64);
    }
    close("count of a 60-patch mask", &alone, &r["alone_count"]);
    close(
        "components of a 60-patch mask",
        &alone_comps,
        &r["alone_components"],
    );
}

fn ibot_config() -> Config {
    Config::from_toml_str(
        "[augmentation]\nglobal_crops_size = 32\nlocal_crops_size = 16\nlocal_crops_number = 2\n\
         [model]\narch = \"vit_tiny\"\npatch_size = 4\nimg_size = 32\n[ibot]\nloss_weight = 1.0\n",
        &[],
    )
    .unwrap()
}

fn loader_batches(
    ds: &Arc<dyn Dataset>,
    cfg: &Config,
    threads: usize,
    seed: u64,
) -> Vec<MultiCropBatch> {
    sharded_batches(ds, cfg, threads, seed, 5, Shard::WHOLE)
}

fn sharded_batches(
    ds: &Arc<dyn Dataset>,
    cfg: &Config,
    threads: usize,
    seed: u64,
    batch_size: usize,
    shard: Shard,
) -> Vec<MultiCropBatch> {
    let aug: AugmentationConfig = cfg.augmentation.clone();
    let opts = LoaderOptions {
        batch_size,
        seed,
        epochs: 0..2,
        threads,
        drop_last: false,
        shard,
        ..LoaderOptions::from_config(cfg)
    };
    let loader = Loader::spawn(ds.clone(), DataAugmentationDino::new(&aug).unwrap(), opts).unwrap();
    loader.map(|b| b.unwrap()).collect()
}

fn image_folder(dir: &std::path::Path) -> Arc<dyn Dataset> {
    assert_eq!(common::make_png_folder(dir, &["a", "b"], 6), 12);
    open_dataset(dir, DataFormat::Auto, "train", &DataConfig::default())
        .unwrap()
        .into()
}

/// Issue #31: two processes of batch 3 mask their global crops exactly as one process of batch
/// 6 masks the same images (the plan is the global batch's), so data-parallel iBOT can equal one
/// process. Rank r's image i is the single process's image 2·i + r (`Shard`).
#[test]
fn two_ranks_draw_one_process_masks_of_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = image_folder(dir.path());
    let cfg = ibot_config();
    let one = sharded_batches(&ds, &cfg, 1, 11, 6, Shard::WHOLE);
    let ranks: Vec<Vec<MultiCropBatch>> = (0..2)
        .map(|rank| {
            sharded_batches(
                &ds,
                &cfg,
                2,
                11,
                3,
                Shard {
                    rank,
                    world_size: 2,
                },
            )
        })
        .collect();
    assert_eq!(one.len(), 4); // 12 images, batch 6: 2 steps × 2 epochs
    let n = 8 * 8;
    let mut masked = 0;
    for (s, b) in one.iter().enumerate() {
        for view in 0..2 {
            for (r, rank) in ranks.iter().enumerate() {
                let rb = &rank[s];
                assert_eq!((rb.epoch, rb.step, rb.batch_size), (b.epoch, b.step, 3));
                for i in 0..3 {
                    let j = 2 * i + r;
                    assert_eq!(rb.indices[i], b.indices[j]);
                    let got = &rb.masks[(view * 3 + i) * n..][..n];
                    let want = &b.masks[(view * 6 + j) * n..][..n];
                    assert_eq!(got, want, "step {s} view {view} rank {r} image {i}");
                    masked += usize::from(got.iter().any(|&x| x));
                }
            }
        }
    }
    // int(2·6 · 0.5) = 6 of each global batch's 12 crops masked, split over the ranks.
    assert_eq!(masked, 6 * one.len());
}

#[test]
fn the_loader_draws_the_same_masks_with_1_and_2_threads() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(common::make_png_folder(dir.path(), &["a", "b"], 6), 12);
    let ds: Arc<dyn Dataset> = open_dataset(
        dir.path(),
        DataFormat::Auto,
        "train",
        &DataConfig::default(),
    )
    .unwrap()
    .into();
    let cfg = ibot_config();
    let one = loader_batches(&ds, &cfg, 1, 11);
    let two = loader_batches(&ds, &cfg, 2, 11);
    assert_eq!(one.len(), 6); // 12 images, batch 5, drop_last false: 3 batches × 2 epochs
    assert_eq!(one, two);
    let g = 32 / 4;
    for b in &one {
        assert_eq!(b.mask_grid, [g, g]);
        assert_eq!(b.masks.len(), 2 * b.batch_size * g * g);
        // int(2·B · 0.5) crops masked, each with at least int(64 · 0.1) = 6 patches asked for.
        let masked = b
            .masks
            .chunks(g * g)
            .filter(|m| m.iter().any(|&x| x))
            .count();
        assert_eq!(masked, b.batch_size, "epoch {} step {}", b.epoch, b.step);
    }
    // The masks differ between batches and epochs, and follow the seed.
    assert_ne!(one[0].masks, one[3].masks);
    let other = loader_batches(&ds, &cfg, 1, 12);
    assert_ne!(other[0].masks, one[0].masks);
    // iBOT off: no masks.
    let off_cfg = Config {
        ibot: Default::default(),
        ..cfg
    };
    let off = loader_batches(&ds, &off_cfg, 1, 11);
    assert!(off.iter().all(|b| !b.has_masks() && b.mask_grid == [0, 0]));
}
