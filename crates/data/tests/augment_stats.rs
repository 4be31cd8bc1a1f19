//! Statistical pins of the DINO multi-crop: every probability and range of
//! `DataAugmentationDINO` (facebookresearch/dino `main_dino.py`) measured over many draws, with
//! tolerances of ~4.5 binomial standard deviations (so e.g. a flip p of 0.45 instead of 0.5, or a
//! blur p swapped between views, fails); the official defaults; and reproducibility.

use dino_config::AugmentationConfig;
use dino_data::augmentation::{DataAugmentationDino, ViewKind, ViewParams};
use dino_data::rng::{rng_for, Stream};
use dino_data::transforms::JitterOp;
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The official values, from `main_dino.py` (argparse defaults and `DataAugmentationDINO`) and
/// `utils.py` (`GaussianBlur`, `Solarization`).
#[test]
fn defaults_are_the_official_dino_values() {
    let c = AugmentationConfig::default();
    // RandomResizedCrop(224, scale=global_crops_scale, interpolation=Image.BICUBIC)
    assert_eq!(c.global_crops_size, 224);
    // --global_crops_scale default (0.4, 1.)
    assert_eq!(c.global_crops_scale, [0.4, 1.0]);
    // --local_crops_number default 8
    assert_eq!(c.local_crops_number, 8);
    // RandomResizedCrop(96, scale=local_crops_scale, ...)
    assert_eq!(c.local_crops_size, 96);
    // --local_crops_scale default (0.05, 0.4)
    assert_eq!(c.local_crops_scale, [0.05, 0.4]);
    // torchvision RandomResizedCrop default ratio (3/4, 4/3)
    assert_eq!(c.crop_ratio, [3.0 / 4.0, 4.0 / 3.0]);
    // RandomHorizontalFlip(p=0.5)
    assert_eq!(c.flip_p, 0.5);
    // RandomApply([ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8)
    assert_eq!(c.color_jitter_p, 0.8);
    assert_eq!(
        (c.brightness, c.contrast, c.saturation, c.hue),
        (0.4, 0.4, 0.2, 0.1)
    );
    // RandomGrayscale(p=0.2)
    assert_eq!(c.grayscale_p, 0.2);
    // utils.GaussianBlur(1.0) / GaussianBlur(0.1) / GaussianBlur(p=0.5)
    assert_eq!(
        (c.blur_global1_p, c.blur_global2_p, c.blur_local_p),
        (1.0, 0.1, 0.5)
    );
    // utils.GaussianBlur(radius_min=0.1, radius_max=2.)
    assert_eq!(c.blur_sigma, [0.1, 2.0]);
    // utils.Solarization(0.2) on global view 2; ImageOps.solarize default threshold=128
    assert_eq!(c.solarize_p, 0.2);
    assert_eq!(c.solarize_threshold, 128);
    // transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert_eq!(c.mean, [0.485, 0.456, 0.406]);
    assert_eq!(c.std, [0.229, 0.224, 0.225]);
    let mc = DataAugmentationDino::new(&c).unwrap();
    assert_eq!(
        (
            mc.n_crops(),
            mc.n_local(),
            mc.global_size(),
            mc.local_size()
        ),
        (10, 8, 224, 96)
    );
}

fn rate(views: &[&ViewParams], f: impl Fn(&ViewParams) -> bool) -> f64 {
    views.iter().filter(|v| f(v)).count() as f64 / views.len() as f64
}

fn assert_rate(name: &str, got: f64, p: f64, n: usize) {
    let tol = 4.5 * (p * (1.0 - p) / n as f64).sqrt() + 1e-12;
    assert!(
        (got - p).abs() <= tol,
        "{name}: rate {got:.4} vs p {p} (tol {tol:.4}, n {n})"
    );
    println!("{name:<22} {got:.4} (p {p}, ±{tol:.4})");
}

#[test]
fn probabilities_and_ranges_match_the_official_recipe() {
    let c = AugmentationConfig::default();
    let mc = DataAugmentationDino::new(&c).unwrap();
    let (w, h) = (500u32, 375u32);
    let images = 20_000usize;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let all: Vec<Vec<ViewParams>> = (0..images).map(|_| mc.sample_all(w, h, &mut rng)).collect();
    let g1: Vec<&ViewParams> = all.iter().map(|v| &v[0]).collect();
    let g2: Vec<&ViewParams> = all.iter().map(|v| &v[1]).collect();
    let loc: Vec<&ViewParams> = all.iter().flat_map(|v| v[2..].iter()).collect();
    assert!(all.iter().all(|v| v.len() == 10));
    let every: Vec<&ViewParams> = all.iter().flatten().collect();

    for (name, views) in [("global1", &g1), ("global2", &g2), ("local", &loc)] {
        let n = views.len();
        assert_rate(&format!("{name} flip"), rate(views, |v| v.flip), 0.5, n);
        assert_rate(
            &format!("{name} jitter"),
            rate(views, |v| v.jitter.is_some()),
            0.8,
            n,
        );
        assert_rate(
            &format!("{name} grayscale"),
            rate(views, |v| v.grayscale),
            0.2,
            n,
        );
    }
    assert_eq!(
        rate(&g1, |v| v.blur_sigma.is_some()),
        1.0,
        "global1 blur p 1.0"
    );
    assert_rate(
        "global2 blur",
        rate(&g2, |v| v.blur_sigma.is_some()),
        0.1,
        g2.len(),
    );
    assert_rate(
        "local blur",
        rate(&loc, |v| v.blur_sigma.is_some()),
        0.5,
        loc.len(),
    );
    assert_rate("global2 solarize", rate(&g2, |v| v.solarize), 0.2, g2.len());
    assert_eq!(rate(&g1, |v| v.solarize), 0.0, "global1 never solarized");
    assert_eq!(rate(&loc, |v| v.solarize), 0.0, "locals never solarized");

    // Blur sigma ~ U(0.1, 2.0).
    let sig: Vec<f64> = every.iter().filter_map(|v| v.blur_sigma).collect();
    let (lo, hi) = sig
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
    let mean = sig.iter().sum::<f64>() / sig.len() as f64;
    assert!(
        lo >= 0.1 && hi <= 2.0 && lo < 0.11 && hi > 1.99,
        "sigma range [{lo}, {hi}]"
    );
    let tol = 4.5 * (1.9 / 12f64.sqrt()) / (sig.len() as f64).sqrt();
    assert!((mean - 1.05).abs() < tol, "sigma mean {mean}");

    // Jitter factors span exactly [1-s, 1+s] (hue [-h, h]); op order is a uniform permutation.
    let jit: Vec<_> = every.iter().filter_map(|v| v.jitter).collect();
    let span = |f: &dyn Fn(&dino_data::transforms::ColorJitterParams) -> f64| {
        jit.iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)))
    };
    for (name, (lo, hi), (a, b)) in [
        ("brightness", span(&|j| j.brightness.unwrap()), (0.6, 1.4)),
        ("contrast", span(&|j| j.contrast.unwrap()), (0.6, 1.4)),
        ("saturation", span(&|j| j.saturation.unwrap()), (0.8, 1.2)),
        ("hue", span(&|j| j.hue.unwrap()), (-0.1, 0.1)),
    ] {
        let eps = (b - a) * 1e-3;
        assert!(
            lo >= a && hi <= b && lo < a + eps && hi > b - eps,
            "{name} in [{lo}, {hi}]"
        );
    }
    for op in [
        JitterOp::Brightness,
        JitterOp::Contrast,
        JitterOp::Saturation,
        JitterOp::Hue,
    ] {
        let first = jit.iter().filter(|j| j.order[0] == op).count() as f64 / jit.len() as f64;
        assert_rate(&format!("{op:?} first"), first, 0.25, jit.len());
    }

    // Crop boxes: inside the image, area fraction within the scale range (up to the rounding
    // of the sides), aspect within [3/4, 4/3] (same), top-left uniform.
    let area = f64::from(w * h);
    for (name, views, scale) in [
        ("global", [&g1[..], &g2[..]].concat(), c.global_crops_scale),
        ("local", loc.clone(), c.local_crops_scale),
    ] {
        let mut sum_frac = 0.0;
        let mut wide = 0usize;
        let mut left_pos = 0.0;
        let mut n_pos = 0usize;
        for v in &views {
            let b = v.crop;
            assert!(b.fits(w, h), "{b:?}");
            let (bw, bh) = (f64::from(b.width), f64::from(b.height));
            let round = 1.0 + 1.5 / bw.min(bh);
            let frac = bw * bh / area;
            assert!(
                frac >= scale[0] / round / round && frac <= scale[1] * round * round,
                "{name}: area fraction {frac} outside {scale:?}"
            );
            let aspect = bw / bh;
            assert!(
                aspect >= 0.75 / round && aspect <= 4.0 / 3.0 * round,
                "{name}: aspect {aspect} ({b:?})"
            );
            sum_frac += frac;
            wide += usize::from(aspect > 1.0);
            if b.width < w {
                left_pos += f64::from(b.left) / f64::from(w - b.width);
                n_pos += 1;
            }
        }
        let n = views.len() as f64;
        let mean_frac = sum_frac / n;
        let (want, want_wide) =
            accepted_crop_stats(f64::from(w), f64::from(h), scale, c.crop_ratio);
        assert!(
            (mean_frac - want).abs() < 0.01,
            "{name} mean area {mean_frac} vs {want:.4}"
        );
        let wide_rate = wide as f64 / n;
        assert!(
            (wide_rate - want_wide).abs() < 0.02,
            "{name}: wide {wide_rate} vs {want_wide:.4}"
        );
        let m = left_pos / n_pos as f64;
        assert!((m - 0.5).abs() < 0.02, "{name}: mean relative left {m}");
        println!(
            "{name}: mean area fraction {mean_frac:.4} (expected {want:.4}), \
             wide {wide_rate:.4} (expected {want_wide:.4})"
        );
    }
}

/// Mean area fraction and share of wide (w > h) boxes of torchvision's RRC, by numerical
/// integration: a try draws `s ~ U(scale)`, `ln r ~ U(ln ratio)` and is kept when the
/// `sqrt(s·A·r) x sqrt(s·A/r)` box fits (side rounding ignored), so accepted crops follow that
/// uniform law restricted to the fitting region (the 10-try fallback has negligible mass here).
fn accepted_crop_stats(w: f64, h: f64, scale: [f64; 2], ratio: [f64; 2]) -> (f64, f64) {
    let n = 400;
    let (mut sum, mut wide, mut mass) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let s = scale[0] + (scale[1] - scale[0]) * (i as f64 + 0.5) / n as f64;
        for j in 0..n {
            let lr = ratio[0].ln() + (ratio[1] / ratio[0]).ln() * (j as f64 + 0.5) / n as f64;
            let (a, r) = (s * w * h, lr.exp());
            if (a * r).sqrt() <= w && (a / r).sqrt() <= h {
                sum += s;
                wide += f64::from(u8::from(r > 1.0));
                mass += 1.0;
            }
        }
    }
    (sum / mass, wide / mass)
}

fn photo() -> Option<RgbImage> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/hymenoptera/train/ants/0013035.jpg"
    );
    match image::open(p) {
        Ok(img) => Some(img.to_rgb8()),
        Err(e) => {
            eprintln!("notice: {p} unavailable ({e}); using a synthetic image");
            None
        }
    }
}

fn synthetic(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, (x ^ y) as u8])
    })
}

#[test]
fn same_seed_same_crops_on_any_thread() {
    let img = photo().unwrap_or_else(|| synthetic(500, 375));
    let mc = DataAugmentationDino::new(&AugmentationConfig::default()).unwrap();
    let run = |idx: u64| mc.apply(&img, &mut rng_for(42, 3, idx, Stream::Augment));
    let a = run(5);
    let b = std::thread::scope(|s| s.spawn(|| run(5)).join().unwrap());
    assert_eq!(a, b, "same (seed, epoch, index) must give identical crops");
    assert_ne!(a, run(6), "another index must give other crops");
    assert_eq!(a.len(), 10);
    for (i, c) in a.iter().enumerate() {
        let s = if i < 2 { 224 } else { 96 };
        assert_eq!(c.dimensions(), (s, s), "crop {i}");
    }
}

#[test]
fn rendering_follows_the_sampled_parameters() {
    let img = photo().unwrap_or_else(|| synthetic(500, 375));
    let mc = DataAugmentationDino::new(&AugmentationConfig::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..30 {
        let (crops, params) = mc.apply_with_params(&img, &mut rng);
        for (c, p) in crops.iter().zip(&params) {
            if p.grayscale && !p.solarize {
                assert!(
                    c.pixels().all(|px| px[0] == px[1] && px[1] == px[2]),
                    "grayscale view"
                );
            }
            assert_eq!(*c, mc.render_view(&img, p), "render_view reproduces apply");
        }
    }
    let local = mc.sample_view(ViewKind::Local, img.width(), img.height(), &mut rng);
    assert_eq!((local.size, local.solarize), (96, false));
}

#[test]
fn odd_shapes_never_panic() {
    let mc = DataAugmentationDino::new(&AugmentationConfig::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (w, h) in [(1, 1), (900, 100), (1, 13), (13, 1), (2, 3), (0, 0), (0, 7)] {
        let crops = mc.apply(&synthetic(w, h), &mut rng);
        assert_eq!(crops.len(), 10, "{w}x{h}");
        assert!(crops[..2].iter().all(|c| c.dimensions() == (224, 224)));
        assert!(crops[2..].iter().all(|c| c.dimensions() == (96, 96)));
    }
}

#[test]
fn bad_configs_are_rejected() {
    let base = AugmentationConfig::default();
    type Mutation = Box<dyn Fn(&mut AugmentationConfig)>;
    let bad: Vec<(&str, Mutation)> = vec![
        ("global_crops_size", Box::new(|c| c.global_crops_size = 0)),
        (
            "local_crops_scale",
            Box::new(|c| c.local_crops_scale = [0.4, 0.05]),
        ),
        (
            "global_crops_scale",
            Box::new(|c| c.global_crops_scale = [0.0, 1.0]),
        ),
        ("crop_ratio", Box::new(|c| c.crop_ratio = [f64::NAN, 1.0])),
        ("flip_p", Box::new(|c| c.flip_p = 1.5)),
        ("hue", Box::new(|c| c.hue = 0.7)),
        ("brightness", Box::new(|c| c.brightness = -0.1)),
        ("blur_sigma", Box::new(|c| c.blur_sigma = [2.0, 0.1])),
    ];
    for (name, f) in bad {
        let mut c = base.clone();
        f(&mut c);
        let e = DataAugmentationDino::new(&c).expect_err(name).to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
}
