//! Every file of `shared/data/nasty/` behaves as its README line says: it decodes to the right
//! upright size (and, where Pillow decodes it too, to nearly Pillow's pixels), or it fails with
//! a clear error of the right kind. Reference: tests/reference/data_decode.py (Pillow 13 with
//! `ImageOps.exif_transpose` + `convert("RGB")`, the official loader's path plus our EXIF choice).

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use dino_data::decode::{decode_file, decode_image, DecodeError};
use dino_data::error::DataError;

/// Pillow's decompression-bomb limit, our default `data.max_image_pixels`.
const LIMIT: u64 = 178_956_970;

/// Files that must decode: (name, width, height, max mean |ours - Pillow| per channel value,
/// or `None` where Pillow cannot serve as the reference).
const OK: &[(&str, u32, u32, Option<f64>)] = &[
    // zune-jpeg vs libjpeg-turbo IDCT/upsampling differ by a level or two on average.
    ("cmyk.jpg", 500, 333, Some(3.0)),
    ("progressive.jpg", 320, 240, Some(2.0)),
    ("exif_orientation_1.jpg", 600, 450, Some(2.0)),
    ("exif_orientation_3.jpg", 600, 450, Some(2.0)),
    ("exif_orientation_5.jpg", 600, 450, Some(2.0)),
    ("exif_orientation_6.jpg", 600, 450, Some(2.0)),
    ("exif_orientation_8.jpg", 600, 450, Some(2.0)),
    // Pillow truncates 16 -> 8 bits (>> 8), we round (/ 257): at most one level apart.
    ("png16_rgb.png", 32, 32, Some(1.0)),
    ("png16_rgb_photo_icc.png", 149, 227, Some(1.0)),
    // Pillow clips I;16 to 255 instead of scaling, so it is no reference here.
    ("png16_gray_interlaced.png", 32, 32, None),
    ("gray_photo.png", 512, 512, Some(0.0)),
    ("gray.jpg", 400, 267, Some(2.0)),
    ("palette_trns.png", 32, 32, Some(0.0)),
    ("tiny_1x1_icc.png", 1, 1, Some(0.0)),
    ("panorama_wide.jpg", 2592, 288, Some(2.0)),
    ("tall_13x169.webp", 13, 169, Some(3.0)),
    ("png_named_as.jpg", 128, 128, Some(0.0)),
    ("lossy.webp", 128, 128, Some(3.0)),
    ("alpha_extended.webp", 300, 300, Some(3.0)),
    ("photo.gif", 800, 533, Some(0.0)),
    ("animated.gif", 80, 80, Some(0.5)),
];

/// Files that must fail, with the error kind.
fn expected_error(name: &str, e: &DecodeError) -> bool {
    use DecodeError::*;
    match name {
        "truncated.jpg" | "corrupt_header.jpg" => matches!(e, Truncated { .. }),
        "empty.jpg" => matches!(e, Empty),
        "arithmetic_coded.jpg" | "jpeg_12bit.jpg" | "jpeg_lossless.jpg" => {
            matches!(e, Unsupported { .. })
        }
        "bomb_65536x65536.png" => {
            matches!(
                e,
                TooManyPixels {
                    width: 65536,
                    height: 65536,
                    ..
                }
            )
        }
        "huge_20000x14000.jpg" => {
            matches!(
                e,
                TooManyPixels {
                    width: 20000,
                    height: 14000,
                    ..
                }
            )
        }
        _ => false,
    }
}

fn pillow_reference(dir: &Path, out: &Path) -> HashMap<String, Option<(u32, u32)>> {
    let status = std::process::Command::new(common::python())
        .arg(common::reference_script("data_decode.py"))
        .arg(dir)
        .arg(out)
        .status()
        .expect("run the Pillow reference");
    assert!(status.success(), "data_decode.py failed");
    let text = std::fs::read_to_string(out.join("manifest.txt")).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let dims = (f[1] != "ERR").then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()));
            (f[0].to_string(), dims)
        })
        .collect()
}

#[test]
fn every_nasty_file_behaves_as_documented() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("nasty");
    let tmp = tempfile::tempdir().unwrap();
    let reference = pillow_reference(&dir, tmp.path());
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".md") {
            continue;
        }
        seen += 1;
        let result = decode_file(&path, LIMIT);
        match OK.iter().find(|(n, ..)| *n == name) {
            Some(&(_, w, h, tol)) => {
                let img = result.unwrap_or_else(|e| panic!("{name} must decode: {e}"));
                assert_eq!(img.dimensions(), (w, h), "{name}: upright size");
                if let Some(tol) = tol {
                    let (pw, ph) = reference[&name].expect("Pillow decodes it");
                    assert_eq!((pw, ph), (w, h), "{name}: Pillow's size");
                    let pil = std::fs::read(tmp.path().join(format!("{name}.rgb"))).unwrap();
                    let mad = img
                        .as_raw()
                        .iter()
                        .zip(&pil)
                        .map(|(&a, &b)| (a as f64 - b as f64).abs())
                        .sum::<f64>()
                        / pil.len() as f64;
                    assert!(
                        mad <= tol,
                        "{name}: mean |ours - Pillow| = {mad:.3} > {tol}"
                    );
                }
            }
            None => {
                let err = match result {
                    Ok(img) => panic!("{name} must fail, decoded {:?}", img.dimensions()),
                    Err(DataError::Decode {
                        what,
                        cause: source,
                    }) => {
                        assert!(what.ends_with(&name), "error names the file: {what}");
                        source
                    }
                    Err(e) => panic!("{name}: wrong error type {e}"),
                };
                assert!(
                    expected_error(&name, &err),
                    "{name}: unexpected error {err}"
                );
            }
        }
    }
    assert_eq!(seen, 29, "the README lists 29 files");
}

#[test]
fn gray_sources_give_equal_channels() {
    let Some(data) = common::shared_data() else {
        return;
    };
    for name in ["gray.jpg", "gray_photo.png", "png16_gray_interlaced.png"] {
        let img = decode_file(&data.join("nasty").join(name), LIMIT).unwrap();
        assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]), "{name}");
        let distinct: std::collections::HashSet<u8> = img.pixels().map(|p| p[0]).collect();
        assert!(distinct.len() > 8, "{name}: real content, not flat");
    }
}

#[test]
fn exif_orientations_all_give_the_upright_picture() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("nasty");
    let upright = decode_file(&dir.join("exif_orientation_1.jpg"), LIMIT).unwrap();
    let mad = |a: &image::RgbImage| {
        a.as_raw()
            .iter()
            .zip(upright.as_raw())
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum::<f64>()
            / a.as_raw().len() as f64
    };
    for o in [3, 5, 6, 8] {
        let img = decode_file(&dir.join(format!("exif_orientation_{o}.jpg")), LIMIT).unwrap();
        // The fixtures show the same scene with the orientation number drawn in, so they are
        // not identical; any other transform of ours must be clearly further off.
        let ours = mad(&img);
        let rot = mad(&image::imageops::rotate180(&img));
        let flip = mad(&image::imageops::flip_horizontal(&img));
        let vflip = mad(&image::imageops::flip_vertical(&img));
        assert!(
            ours < 0.7 * rot.min(flip).min(vflip),
            "orientation {o}: {ours:.2} vs wrong transforms {rot:.2} {flip:.2} {vflip:.2}"
        );
    }
}

#[test]
fn pixel_limit_bounds_decoding_and_huge_image_is_rejected_from_its_header() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let huge = std::fs::read(data.join("nasty/huge_20000x14000.jpg")).unwrap();
    // Rejected by the header check whatever the limit below 280 Mpx: no pixel is decoded.
    for limit in [LIMIT, 279_999_999, 1] {
        let e = decode_image(&huge, limit).unwrap_err();
        assert!(
            matches!(e, DecodeError::TooManyPixels { limit: l, .. } if l == limit),
            "{e}"
        );
        assert!(e.to_string().contains("20000x14000"), "{e}");
    }
    let small = std::fs::read(data.join("nasty/progressive.jpg")).unwrap();
    assert!(decode_image(&small, 320 * 240).is_ok());
    assert!(decode_image(&small, 320 * 240 - 1).is_err());
}
