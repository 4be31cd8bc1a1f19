//! Helpers shared by the data crate's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `shared/data` beside the repository, or `None` (with a notice) when it is absent.
pub fn shared_data() -> Option<PathBuf> {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"));
    if p.is_dir() {
        Some(p.to_path_buf())
    } else {
        eprintln!(
            "notice: {} is missing; skipping a real-data test",
            p.display()
        );
        None
    }
}

/// The project's Python (torch, torchvision, Pillow); panics with the fix when it is missing.
pub fn python() -> PathBuf {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    assert!(
        p.exists(),
        "{} not found: run scripts/setup.sh",
        p.display()
    );
    p.to_path_buf()
}

/// A reference script under tests/reference/.
pub fn reference_script(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/reference"
    ))
    .join(name)
}

/// Writes an ImageFolder of `per_class` PNGs in each of `classes` classes under `root`, with
/// varied sizes and content so crops differ; returns the number of files.
pub fn make_png_folder(root: &Path, classes: &[&str], per_class: usize) -> usize {
    let mut n = 0;
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let (w, h) = (
                40 + 7 * i as u32 + 3 * c as u32,
                30 + 5 * ((i * 3 + c) % 7) as u32,
            );
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x * y + 31 * i as u32 + 97 * c as u32) % 256) as u8,
                ])
            });
            img.save(dir.join(format!("img_{i:03}.png"))).unwrap();
            n += 1;
        }
    }
    n
}
