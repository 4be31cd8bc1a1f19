//! Attention figures written to disk: names, sizes, and what the mask keeps.

use dino_eval::attention::{
    heatmap_overlay, mask_overlay, write_attention_maps, AttentionError, AttentionMaps,
    DEFAULT_THRESHOLD,
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
