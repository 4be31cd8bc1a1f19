//! Attention figures written to disk: names, sizes, and what the mask keeps.

use dino_eval::attention::{
    heatmap_overlay, mask_overlay, write_attention_maps, AttentionError, AttentionImage,
    AttentionMaps, AttentionResize, DEFAULT_THRESHOLD,
};
use image::{Rgb, RgbImage};
use tch::Tensor;

/// Two heads over a 2×3 patch grid (1 + 6 tokens). Head 0's CLS row puts 0.7 of its patch mass
/// on patch (row 1, col 2); head 1 spreads evenly. Other rows are filler.
fn attention() -> Tensor {
    let tokens = 7;
    let mut data = vec![1.0f32 / tokens as f32; 2 * tokens * tokens];
    // CLS row of head 0: CLS column 0.1, patches 0.9 in total, 0.63 = 0.7 · 0.9 on patch 5.
    let row0 = [0.1, 0.054, 0.054, 0.054, 0.054, 0.054, 0.63];
    data[..tokens].copy_from_slice(&row0);
    Tensor::from_slice(&data).view([2, tokens as i64, tokens as i64])
}

#[test]
fn maps_are_the_cls_row_over_patches() {
    let maps = AttentionMaps::from_last_block(&attention(), 2, 3).unwrap();
    assert_eq!((maps.h, maps.w, maps.heads.len()), (2, 3, 2));
    assert_eq!(maps.heads[0], [0.054, 0.054, 0.054, 0.054, 0.054, 0.63]);
    // A leading batch axis of one is accepted.
    let batched = AttentionMaps::from_last_block(&attention().unsqueeze(0), 2, 3).unwrap();
    assert_eq!(batched, maps);
    assert!(matches!(
        AttentionMaps::from_last_block(&attention(), 3, 3),
        Err(AttentionError::Shape(_))
    ));
}

#[test]
fn pngs_have_the_image_size_and_the_mask_keeps_the_hot_patch() {
    let patch = 4;
    let image = RgbImage::from_pixel(3 * patch, 2 * patch, Rgb([128, 128, 128]));
    let dir = tempfile::tempdir().unwrap();
    let written =
        write_attention_maps(dir.path(), &image, &attention(), patch, DEFAULT_THRESHOLD).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "attn.npy",
            "img.png",
            "attn-head0.png",
            "attn-head1.png",
            "attn-mean.png",
            "mask_th0.6_head0.png",
            "mask_th0.6_head1.png",
            "mask_th0.6_mean.png",
        ]
    );
    // The raw maps: [heads, h, w], the CLS row over the patches.
    let raw = tch::Tensor::read_npy(&written[0]).unwrap();
    assert_eq!(raw.size(), [2, 2, 3]);
    let maps = AttentionMaps::from_last_block(&attention(), 2, 3).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&raw.reshape([-1])).unwrap(),
        maps.heads.concat()
    );
    for path in &written[1..] {
        let decoded = image::open(path).unwrap().into_rgb8();
        assert_eq!(decoded.dimensions(), (12, 8), "{}", path.display());
    }
    // Head 0's mask covers exactly patch (1, 2): pixels x in 8..12, y in 4..8 differ from grey.
    let mask = image::open(dir.path().join("mask_th0.6_head0.png"))
        .unwrap()
        .into_rgb8();
    for (x, y, px) in mask.enumerate_pixels() {
        let in_patch = x >= 8 && y >= 4;
        assert_eq!(
            *px != Rgb([128, 128, 128]),
            in_patch,
            "pixel ({x}, {y}) = {px:?}"
        );
    }
    // The hot patch of head 0 is the top of the colour map, the others the bottom.
    let heat = image::open(dir.path().join("attn-head0.png"))
        .unwrap()
        .into_rgb8();
    assert_ne!(heat.get_pixel(9, 5), heat.get_pixel(1, 1));
    assert_eq!(heat.get_pixel(0, 0), heat.get_pixel(7, 7));
}

#[test]
fn bad_sizes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let odd = RgbImage::new(13, 8);
    assert!(matches!(
        write_attention_maps(dir.path(), &odd, &attention(), 4, 0.6),
        Err(AttentionError::ImageSize { width: 13, .. })
    ));
    let image = RgbImage::new(12, 8);
    assert!(matches!(
        write_attention_maps(dir.path(), &image, &attention(), 4, 1.5),
        Err(AttentionError::Threshold(_))
    ));
    // Overlays check the map length against the patch grid (2 × 3 here) instead of panicking.
    assert!(matches!(
        heatmap_overlay(&image, &[0.5; 5], 4),
        Err(AttentionError::Shape(_))
    ));
    assert!(matches!(
        mask_overlay(&image, &[true; 7], 4, Rgb([255, 0, 0])),
        Err(AttentionError::Shape(_))
    ));
    assert!(heatmap_overlay(&image, &[0.5; 6], 4).is_ok());
    let big = RgbImage::new(16, 8);
    assert!(matches!(
        write_attention_maps(dir.path(), &big, &attention(), 4, 0.6),
        Err(AttentionError::Shape(_))
    ));
}

/// A `w × h` image with a different colour at every pixel, so crops and resizes show.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

#[test]
fn keep_aspect_resizes_the_shorter_side_then_crops_top_left_to_the_patch() {
    // Landscape 120 × 90 at 64 px, patch 4: torchvision Resize(64) gives 64 rows and
    // int(64 · 120 / 90) = 85 columns; the crop keeps 84 columns (21 patches) and 64 rows (16).
    let img = gradient(120, 90);
    let seen = AttentionImage::prepare(&img, AttentionResize::KeepAspect(64), 4).unwrap();
    assert_eq!(seen.resized, (85, 64));
    assert_eq!(seen.image.dimensions(), (84, 64));
    assert_eq!((seen.h, seen.w), (16, 21));
    assert_eq!(seen.kept_fraction(), (84.0 / 85.0, 1.0));
    // The crop is the top-left corner of the resized image.
    let resized = dino_data::transforms::resize(&img, 85, 64).unwrap();
    let corner = image::imageops::crop_imm(&resized, 0, 0, 84, 64).to_image();
    assert_eq!(seen.image, corner);
    // Portrait 90 × 120 at patch 8: 64 × 85 → 64 × 80, an 8-wide, 10-high grid.
    let seen =
        AttentionImage::prepare(&gradient(90, 120), AttentionResize::KeepAspect(64), 8).unwrap();
    assert_eq!(seen.resized, (64, 85));
    assert_eq!(seen.image.dimensions(), (64, 80));
    assert_eq!((seen.h, seen.w), (10, 8));
    assert_eq!(seen.kept_fraction(), (1.0, 80.0 / 85.0));
    // Already at the target size: not resampled, only cropped (official `Resize` returns the
    // image itself then).
    let seen = AttentionImage::prepare(&img, AttentionResize::KeepAspect(90), 16).unwrap();
    assert_eq!(seen.resized, (120, 90));
    assert_eq!(
        seen.image,
        image::imageops::crop_imm(&img, 0, 0, 112, 80).to_image()
    );
}

#[test]
fn square_resize_is_the_old_behaviour() {
    // Both sides to the multiple of the patch at or below the size, whatever the aspect.
    let img = gradient(120, 90);
    let seen = AttentionImage::prepare(&img, AttentionResize::Square(66), 8).unwrap();
    assert_eq!((seen.resized, seen.h, seen.w), ((64, 64), 8, 8));
    assert_eq!(
        seen.image,
        dino_data::transforms::resize(&img, 64, 64).unwrap()
    );
    assert_eq!(seen.kept_fraction(), (1.0, 1.0));
    // Below one patch: one patch.
    let seen = AttentionImage::prepare(&img, AttentionResize::Square(3), 8).unwrap();
    assert_eq!(seen.image.dimensions(), (8, 8));
}

#[test]
fn model_input_is_normalised_chw() {
    let img = RgbImage::from_fn(8, 4, |x, _| Rgb([if x < 4 { 0 } else { 255 }, 51, 102]));
    let seen = AttentionImage::prepare(&img, AttentionResize::KeepAspect(4), 4).unwrap();
    let x = seen.to_tensor([0.5, 0.2, 0.4], [0.5, 0.1, 0.2]).unwrap();
    assert_eq!(x.size(), [1, 3, 4, 8]);
    let v = |c: i64, y: i64, x_: i64| x.double_value(&[0, c, y, x_]);
    // (v / 255 − mean) / std per channel; red is −1 on the left half and +1 on the right.
    assert!((v(0, 0, 0) + 1.0).abs() < 1e-6 && (v(0, 3, 7) - 1.0).abs() < 1e-6);
    assert!(v(1, 2, 3).abs() < 1e-6 && v(2, 1, 5).abs() < 1e-6);
}

#[test]
fn impossible_fits_are_errors() {
    let img = gradient(20, 10);
    assert!(matches!(
        AttentionImage::prepare(&img, AttentionResize::KeepAspect(7), 8),
        Err(AttentionError::ResizeTarget { size: 7, patch: 8 })
    ));
    assert!(matches!(
        AttentionImage::prepare(&RgbImage::new(0, 5), AttentionResize::KeepAspect(8), 8),
        Err(AttentionError::ImageSize { .. })
    ));
    assert!(matches!(
        AttentionImage::prepare(&img, AttentionResize::Square(8), 0),
        Err(AttentionError::ImageSize { patch: 0, .. })
    ));
}
