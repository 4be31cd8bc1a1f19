//! Cost of the full DINO multi-crop (2 × 224² + 8 × 96², official defaults) on one image on one
//! core, with and without JPEG decoding. Results: docs/bench/augment.md.
//!
//! Run: `cargo bench -p dino-data --bench augment`

use criterion::{criterion_group, criterion_main, Criterion};
use dino_config::AugmentationConfig;
use dino_data::augmentation::DataAugmentationDino;
use dino_data::rng::{rng_for, Stream};
use dino_data::transforms::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, gaussian_blur_with,
    resized_crop, BlurScratch, CropBox,
};
use std::hint::black_box;

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/hymenoptera/train/ants/1030023514_aad5c608f9.jpg"
);

fn bench(c: &mut Criterion) {
    let Ok(bytes) = std::fs::read(PHOTO) else {
        eprintln!("notice: {PHOTO} missing, augment bench skipped");
        return;
    };
    let img = image::load_from_memory(&bytes).expect("decode").to_rgb8();
    let mc = DataAugmentationDino::new(&AugmentationConfig::default()).expect("defaults");
    let mut idx = 0u64;
    c.bench_function("multicrop_2x224_8x96", |b| {
        b.iter(|| {
            idx += 1;
            black_box(mc.apply(black_box(&img), &mut rng_for(0, 0, idx, Stream::Augment)))
        })
    });
    c.bench_function("decode_plus_multicrop", |b| {
        b.iter(|| {
            idx += 1;
            let img = image::load_from_memory(black_box(&bytes))
                .expect("decode")
                .to_rgb8();
            black_box(mc.apply(&img, &mut rng_for(0, 0, idx, Stream::Augment)))
        })
    });
    c.bench_function("jpeg_decode", |b| {
        b.iter(|| {
            black_box(
                image::load_from_memory(black_box(&bytes))
                    .expect("decode")
                    .to_rgb8(),
            )
        })
    });
    // Single ops on one 224² global crop, to see where the time goes.
    let (w, h) = img.dimensions();
    let crop = CropBox {
        left: w / 8,
        top: h / 8,
        width: 3 * w / 4,
        height: 3 * h / 4,
    };
    c.bench_function("op_resized_crop_224", |b| {
        b.iter(|| black_box(resized_crop(&img, crop, 224, 224).expect("crop")))
    });
    let g = resized_crop(&img, crop, 224, 224).expect("crop");
    let mut scratch = BlurScratch::default();
    let mut buf = g.clone().into_raw();
    c.bench_function("op_blur_224_sigma1.5", |b| {
        b.iter(|| {
            buf.copy_from_slice(g.as_raw());
            gaussian_blur_with(&mut buf, 224, 224, 1.5, &mut scratch)
        })
    });
    type Op = fn(&mut [u8], f64);
    for (name, op, f) in [
        ("op_brightness_224", adjust_brightness as Op, 1.2),
        ("op_contrast_224", adjust_contrast as Op, 1.2),
        ("op_saturation_224", adjust_saturation as Op, 1.1),
        ("op_hue_224", adjust_hue as Op, 0.05),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                buf.copy_from_slice(g.as_raw());
                op(&mut buf, f)
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
