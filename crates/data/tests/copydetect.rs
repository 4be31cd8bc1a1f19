//! The copy-detection benchmark generator: identical output for a seed whatever the thread
//! count, a different benchmark for another seed, and bad input refused with nothing written.

use dino_data::copydetect::{generate, read_ground_truth, CopyDetectSpec, FOLDERS, GROUND_TRUTH};
use std::collections::BTreeMap;
use std::path::Path;

/// `n` small distinct photos (gradients with a per-image tint) under `dir/a` and `dir/b`.
fn photos(dir: &Path, n: u32) {
    for i in 0..n {
        let sub = dir.join(if i % 2 == 0 { "a" } else { "b" });
        std::fs::create_dir_all(&sub).unwrap();
        let img = image::RgbImage::from_fn(48 + i, 40, |x, y| {
            image::Rgb([(x * 5 + i * 20) as u8, (y * 6) as u8, (i * 37) as u8])
        });
        img.save(sub.join(format!("p{i:02}.png"))).unwrap();
    }
}

fn spec(seed: u64) -> CopyDetectSpec {
    CopyDetectSpec {
        originals: 4,
        copies: 2,
        distractors: 5,
        whitening: 3,
        edits_per_copy: 3,
        seed,
        ..CopyDetectSpec::default()
    }
}

/// Every file of a folder tree (relative path → bytes).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in FOLDERS {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = format!("{sub}/{}", p.file_name().unwrap().to_string_lossy());
            out.insert(name, std::fs::read(&p).unwrap());
        }
    }
    out.insert(
        GROUND_TRUTH.into(),
        std::fs::read(dir.join(GROUND_TRUTH)).unwrap(),
    );
    out
}

fn generate_in_pool(threads: usize, from: &Path, out: &Path, seed: u64) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| generate(from, out, &spec(seed)).unwrap());
}

#[test]
fn same_seed_same_bytes_whatever_the_threads() {
    let tmp = tempfile::tempdir().unwrap();
    photos(&tmp.path().join("src"), 14);
    let (one, four, other) = (
        tmp.path().join("one"),
        tmp.path().join("four"),
        tmp.path().join("other"),
    );
    generate_in_pool(1, &tmp.path().join("src"), &one, 7);
    generate_in_pool(4, &tmp.path().join("src"), &four, 7);
    generate_in_pool(2, &tmp.path().join("src"), &other, 8);
    let a = tree(&one);
    assert_eq!(a, tree(&four));
    assert_ne!(a, tree(&other));
    // 4 + 5 + 3 photos, 8 copies, the ground truth.
    assert_eq!(a.len(), 4 + 5 + 3 + 8 + 1);
    let pairs = read_ground_truth(&one).unwrap();
    assert_eq!(pairs.len(), 8);
    assert_eq!(pairs[1].query, "o0000_c1.jpg");
    assert_eq!(pairs[1].original, "o0000.png");
    // Three edits and the JPEG quality, recorded in order.
    assert_eq!(pairs[0].edits.split(';').count(), 4, "{}", pairs[0].edits);
    // A copy is not its original, and decodes.
    let q = image::open(one.join("queries").join(&pairs[0].query)).unwrap();
    let o = image::open(one.join("originals").join(&pairs[0].original)).unwrap();
    assert_ne!(q.to_rgb8(), o.to_rgb8());
    // Nothing was left besides the outputs.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 4);
}

#[test]
fn bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    photos(&tmp.path().join("src"), 6);
    let out = tmp.path().join("out");
    // 4 + 5 + 3 photos asked, 6 there.
    let err = generate(&tmp.path().join("src"), &out, &spec(0)).unwrap_err();
    assert!(err.to_string().contains("holds 6 images"), "{err}");
    assert!(!out.exists());
    // A non-empty output folder is refused before reading anything.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("x"), b"x").unwrap();
    let err = generate(&tmp.path().join("missing"), &out, &spec(0)).unwrap_err();
    assert!(err.to_string().contains("not an empty folder"), "{err}");
    let zero = CopyDetectSpec {
        copies: 0,
        ..spec(0)
    };
    assert!(generate(&tmp.path().join("src"), &tmp.path().join("o2"), &zero).is_err());
    // Corrupt photos chosen as originals: an error naming it, and no output folder.
    let src = tmp.path().join("src2");
    photos(&src, 12);
    for sub in ["a", "b"] {
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            std::fs::write(e.unwrap().path(), b"not a png").unwrap();
        }
    }
    let out2 = tmp.path().join("out2");
    let err = generate(&src, &out2, &spec(0)).unwrap_err();
    assert!(err.to_string().contains(".png"), "{err}");
    assert!(!out2.exists());
    let hidden = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with('.')
        })
        .count();
    assert_eq!(hidden, 0, "a staging folder was left behind");
}

#[test]
fn ground_truth_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    photos(&tmp.path().join("src"), 12);
    let bench = tmp.path().join("bench");
    generate(&tmp.path().join("src"), &bench, &spec(3)).unwrap();
    let pairs = read_ground_truth(&bench).unwrap();
    // A copy whose original is missing.
    std::fs::remove_file(bench.join("originals").join(&pairs[0].original)).unwrap();
    let err = read_ground_truth(&bench).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("originals/{} does not exist", pairs[0].original)),
        "{err}"
    );
    // An empty query set.
    std::fs::write(bench.join(GROUND_TRUTH), "query,original,edits\n").unwrap();
    let err = read_ground_truth(&bench).unwrap_err();
    assert!(err.to_string().contains("query set is empty"), "{err}");
    assert!(read_ground_truth(tmp.path()).is_err());
}
