//! `run_bench` and `render_grid` on a small generated folder.

use crate::common;

use dino_config::{AugmentationConfig, DataConfig, DataFormat};
use dino_data::augmentation::DataAugmentationDino;
use dino_data::bench::{run_bench, BenchOptions};
use dino_data::dataset::{open_dataset, Dataset};
use dino_data::loader::{Loader, LoaderOptions};
use std::sync::Arc;

fn aug() -> AugmentationConfig {
    AugmentationConfig {
        global_crops_size: 24,
        local_crops_size: 12,
        local_crops_number: 2,
        ..Default::default()
    }
}

#[test]
fn bench_report_counts_what_it_timed() {
    let dir = tempfile::tempdir().unwrap();
    common::make_png_folder(dir.path(), &["a", "b"], 5);
    let opts = BenchOptions {
        batch_size: 4,
        batches: 5,
        threads: 2,
        augmentation: aug(),
        ..BenchOptions::new(dir.path())
    };
    let r = run_bench(&opts).unwrap();
    assert_eq!(
        (r.dataset_len, r.batches, r.batch_size, r.threads),
        (10, 5, 4, 2)
    );
    assert_eq!(r.crops_per_image, 4);
    assert!(r.wall_s > 0.0 && r.images_per_s > 0.0);
    assert!((r.crops_per_s - 4.0 * r.images_per_s).abs() < 1e-6 * r.crops_per_s);
    assert_eq!(r.failed, 0);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["images_per_s"].is_number());
    let e = run_bench(&BenchOptions { batches: 0, ..opts }).unwrap_err();
    assert!(e.to_string().contains("batches"), "{e}");
}

#[test]
fn preview_rows_show_the_original_and_the_epoch_0_crops() {
    let dir = tempfile::tempdir().unwrap();
    common::make_png_folder(dir.path(), &["a", "b"], 3);
    let ds: Arc<dyn Dataset> = open_dataset(
        dir.path(),
        DataFormat::Auto,
        "train",
        &DataConfig::default(),
    )
    .unwrap()
    .into();
    let mc = DataAugmentationDino::new(&aug()).unwrap();
    let grid = dino_data::preview::render_grid(ds.as_ref(), &mc, 2, 5).unwrap();
    let (pad, g, l) = (4u32, 24u32, 12u32);
    assert_eq!(grid.height(), pad + 2 * (g + pad));
    // The first row's global crop 1 is the loader's epoch-0 crop of the first image.
    let opts = LoaderOptions {
        batch_size: 6,
        seed: 5,
        epochs: 0..1,
        threads: 1,
        ..Default::default()
    };
    let batch = Loader::spawn(ds.clone(), mc.clone(), opts)
        .unwrap()
        .recv()
        .unwrap()
        .unwrap();
    let first = ds.load(batch.indices[0] as usize).unwrap().image;
    let orig_w =
        ((first.width() as f64 * g as f64 / first.height() as f64).round() as u32).min(3 * g);
    let x0 = pad + orig_w + pad;
    let crop = batch.crop_image(0, 0).unwrap();
    for (x, y, p) in crop.enumerate_pixels() {
        assert_eq!(grid.get_pixel(x0 + x, pad + y), p);
    }
    // The last local crop sits after the original and 2 globals and 1 local.
    let xl = x0 + 2 * (g + pad) + (l + pad);
    let local = batch.crop_image(3, 0).unwrap();
    assert_eq!(grid.get_pixel(xl, pad), local.get_pixel(0, 0));
    assert!(dino_data::preview::render_grid(ds.as_ref(), &mc, 0, 5).is_err());
}
