//! Dataset layouts: ImageFolder, flat folders, CIFAR-10 binary, IDX, format detection, the
//! CIFAR-10 tarball extractor, and clear errors for missing or empty data.

use crate::common;

use std::io::Write;
use std::path::Path;

use dino_config::{DataConfig, DataFormat};
use dino_data::dataset::{
    detect_format, extract_cifar10_tarball, open_dataset, Cifar10Bin, Dataset, Idx,
};
use dino_data::decode::decode_file;
use dino_data::error::DataError;

fn open(path: &Path, format: DataFormat, split: &str) -> Result<Box<dyn Dataset>, DataError> {
    open_dataset(path, format, split, &DataConfig::default())
}

#[test]
fn image_folder_sorts_classes_and_files_and_matches_extensions_case_insensitively() {
    let dir = tempfile::tempdir().unwrap();
    common::make_png_folder(dir.path(), &["zebra", "ant"], 2);
    let img = image::RgbImage::new(5, 4);
    img.save_with_format(dir.path().join("ant/UPPER.PNG"), image::ImageFormat::Png)
        .unwrap();
    img.save_with_format(
        dir.path().join("ant/mislabeled.JPG"),
        image::ImageFormat::Png,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("ant/nested")).unwrap();
    img.save(dir.path().join("ant/nested/deep.png")).unwrap();
    std::fs::write(dir.path().join("ant/notes.txt"), "x").unwrap();
    std::fs::write(dir.path().join("ant/.hidden.png"), "x").unwrap();
    std::fs::create_dir(dir.path().join(".cache")).unwrap();
    std::fs::write(dir.path().join("loose.png"), "ignored by ImageFolder").unwrap();

    let ds = open(dir.path(), DataFormat::Auto, "train").unwrap();
    assert_eq!(ds.classes(), ["ant", "zebra"]);
    assert_eq!(ds.len(), 7);
    let names: Vec<String> = (0..ds.len())
        .map(|i| {
            ds.describe(i)
                .rsplit_once(dir.path().to_str().unwrap())
                .unwrap()
                .1
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "/ant/UPPER.PNG",
            "/ant/img_000.png",
            "/ant/img_001.png",
            "/ant/mislabeled.JPG",
            "/ant/nested/deep.png",
            "/zebra/img_000.png",
            "/zebra/img_001.png",
        ]
    );
    let labels: Vec<i64> = (0..ds.len()).map(|i| ds.load(i).unwrap().label).collect();
    assert_eq!(labels, [0, 0, 0, 0, 0, 1, 1]);
    assert_eq!(
        ds.load(3).unwrap().image.dimensions(),
        (5, 4),
        "content decides the decoder"
    );
    assert!(matches!(
        ds.load(7),
        Err(DataError::IndexOutOfRange { index: 7, len: 7 })
    ));
}

#[test]
fn flat_folder_is_recursive_and_unlabeled() {
    let dir = tempfile::tempdir().unwrap();
    common::make_png_folder(dir.path(), &["x", "y"], 2);
    let img = image::RgbImage::new(3, 3);
    img.save(dir.path().join("top.png")).unwrap();
    let ds = open(dir.path(), DataFormat::Flat, "train").unwrap();
    assert_eq!(ds.len(), 5);
    assert!(ds.classes().is_empty());
    assert!((0..5).all(|i| ds.load(i).unwrap().label == 0));
    assert!(ds.describe(0).ends_with("top.png"));
    // A link back to the root neither loops nor lists files twice.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path(), dir.path().join("x/loop")).unwrap();
        assert_eq!(
            open(dir.path(), DataFormat::Flat, "train").unwrap().len(),
            5
        );
    }
}

/// shared/cases/imagefolder-symlink-loop-relabel: a link inside one class folder back to the
/// dataset root (or into a sibling class) must not list the other class's images again under
/// this class's label; a link to images outside every class folder is followed.
#[cfg(unix)]
#[test]
fn image_folder_links_never_relabel_another_classs_images() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    common::make_png_folder(&root, &["ants", "bees"], 2);
    std::fs::remove_file(root.join("bees/img_001.png")).unwrap();
    symlink("..", root.join("bees/loop")).unwrap();
    symlink(root.join("bees"), root.join("ants/to_bees")).unwrap();
    symlink(
        root.join("bees/img_000.png"),
        root.join("ants/bee_file.png"),
    )
    .unwrap();
    symlink(root.join("ants/img_000.png"), root.join("ants/dup.png")).unwrap();
    // A pool outside the dataset, linked from one class: kept under that class.
    let pool = dir.path().join("pool");
    common::make_png_folder(&pool, &["extra"], 1);
    symlink(pool.join("extra"), root.join("bees/pool")).unwrap();
    symlink(pool.join("extra/img_000.png"), root.join("bees/pooled.png")).unwrap();

    let ds = open(&root, DataFormat::ImageFolder, "train").unwrap();
    let listed: Vec<(String, i64)> = (0..ds.len())
        .map(|i| {
            let path = ds.describe(i);
            let rel = path.rsplit_once("/data/").unwrap().1.to_string();
            (rel, ds.label(i).unwrap())
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("ants/img_000.png".to_string(), 0),
            ("ants/img_001.png".to_string(), 0),
            ("bees/img_000.png".to_string(), 1),
            ("bees/pool/img_000.png".to_string(), 1),
            ("bees/pooled.png".to_string(), 1),
        ]
    );
    let loaded: Vec<i64> = (0..ds.len()).map(|i| ds.load(i).unwrap().label).collect();
    assert_eq!(loaded, [0, 0, 1, 1, 1], "label() agrees with load()");
}

#[test]
fn missing_and_empty_data_fail_clearly_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = open(&missing, DataFormat::Auto, "train").err().unwrap();
    assert!(matches!(e, DataError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"));
    let e = open(dir.path(), DataFormat::Auto, "train").err().unwrap();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    std::fs::create_dir(dir.path().join("empty_class")).unwrap();
    let e = open(dir.path(), DataFormat::ImageFolder, "train")
        .err()
        .unwrap();
    assert!(e.to_string().contains("class folder has no images"), "{e}");
    let e = open(dir.path(), DataFormat::Cifar10Bin, "train")
        .err()
        .unwrap();
    assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
    let e = open(dir.path(), DataFormat::Idx, "test").err().unwrap();
    assert!(e.to_string().contains("t10k-images-idx3-ubyte"), "{e}");
    let e = open(dir.path(), DataFormat::Cifar10Bin, "val")
        .err()
        .unwrap();
    assert!(e.to_string().contains("\"train\" or \"test\""), "{e}");
}

#[test]
fn cifar10_records_are_label_then_planar_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for label in [3u8, 9] {
        bytes.push(label);
        for plane in 0..3u32 {
            bytes.extend((0..1024u32).map(|p| ((p * (plane + 1) + label as u32) % 251) as u8));
        }
    }
    std::fs::write(dir.path().join("data_batch_2.bin"), &bytes).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), &bytes[..3073]).unwrap();
    assert_eq!(detect_format(dir.path()).unwrap(), DataFormat::Cifar10Bin);
    let ds = open(dir.path(), DataFormat::Auto, "train").unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.classes()[3], "cat");
    let s = ds.load(1).unwrap();
    assert_eq!(s.label, 9);
    let (x, y) = (5u32, 7u32);
    let p = y * 32 + x;
    let expect = [0, 1, 2].map(|c| ((p * (c + 1) + 9) % 251) as u8);
    assert_eq!(s.image.get_pixel(x, y).0, expect);
    assert!(ds.describe(1).ends_with("data_batch_2.bin#1"));
    assert_eq!(open(dir.path(), DataFormat::Auto, "test").unwrap().len(), 1);

    std::fs::write(dir.path().join("data_batch_1.bin"), &bytes[..100]).unwrap();
    let e = Cifar10Bin::open(dir.path(), "train").unwrap_err();
    assert!(e.to_string().contains("not a multiple of 3073"), "{e}");
}

#[test]
fn real_cifar10_batches_match_the_readme_and_the_jpegs() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("cifar10/cifar-10-batches-bin");
    let train = open(&dir, DataFormat::Auto, "train").unwrap();
    assert_eq!(train.len(), 10_000, "only data_batch_1.bin is stored");
    let mut counts = [0usize; 10];
    for i in 0..train.len() {
        counts[train.load(i).unwrap().label as usize] += 1;
    }
    assert_eq!(
        counts,
        [1012, 989, 969, 994, 1032, 1019, 992, 1018, 948, 1027]
    );
    let test = open(&dir, DataFormat::Cifar10Bin, "test").unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.classes()[0], "airplane");
    // Record of test/airplane/0000.jpg (from the manifest) vs decoding that JPEG ourselves.
    let manifest = std::fs::read_to_string(dir.join("manifest_test.txt")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.ends_with(" test/airplane/0000.jpg"))
        .unwrap();
    let index: usize = line.split(' ').next().unwrap().parse().unwrap();
    let rec = test.load(index).unwrap();
    assert_eq!(rec.label, 0);
    let jpeg = decode_file(
        &data.join("cifar10/samples/test_airplane_0000.jpg"),
        1 << 20,
    )
    .unwrap();
    let mad = rec
        .image
        .as_raw()
        .iter()
        .zip(jpeg.as_raw())
        .map(|(&a, &b)| a.abs_diff(b) as f64);
    let mad = mad.sum::<f64>() / 3072.0;
    assert!(
        mad < 2.0,
        "Pillow-decoded record vs our decode of the same JPEG: {mad}"
    );
}

fn write_idx_gz(path: &Path, header: &[u8], data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(header).unwrap();
    gz.write_all(data).unwrap();
    gz.finish().unwrap();
}

#[test]
fn idx_images_are_gray_replicated_to_rgb_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (3u32, 4u32);
    let mut header = vec![0, 0, 8, 3];
    for d in [2u32, rows, cols] {
        header.extend(d.to_be_bytes());
    }
    let pixels: Vec<u8> = (0..24).map(|v| v * 10).collect();
    write_idx_gz(
        &dir.path().join("t10k-images-idx3-ubyte.gz"),
        &header,
        &pixels,
    );
    let mut lheader = vec![0, 0, 8, 1];
    lheader.extend(2u32.to_be_bytes());
    write_idx_gz(
        &dir.path().join("t10k-labels-idx1-ubyte.gz"),
        &lheader,
        &[4, 1],
    );
    assert_eq!(detect_format(dir.path()).unwrap(), DataFormat::Idx);
    let ds = open(dir.path(), DataFormat::Auto, "test").unwrap();
    assert_eq!(ds.len(), 2);
    let s = ds.load(1).unwrap();
    assert_eq!(s.label, 1);
    assert_eq!(s.image.dimensions(), (cols, rows));
    let v = (12 + cols + 2) as u8 * 10; // image 1, row 1, column 2
    assert_eq!(s.image.get_pixel(2, 1).0, [v, v, v]);
    assert_eq!(ds.classes(), ["0", "1", "2", "3", "4"]);
    let e = Idx::open(dir.path(), "train").unwrap_err();
    assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");
    write_idx_gz(
        &dir.path().join("t10k-labels-idx1-ubyte.gz"),
        &lheader,
        &[4],
    );
    let e = Idx::open(dir.path(), "test").unwrap_err();
    assert!(e.to_string().contains("needs 2 data bytes, found 1"), "{e}");
}

#[test]
fn fashion_mnist_from_debian_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!("notice: apt-get install dataset-fashion-mnist to run this test");
        return;
    }
    let test = open(dir, DataFormat::Auto, "test").unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.classes()[9], "Ankle boot");
    let first = test.load(0).unwrap();
    assert_eq!(first.label, 9, "the first t10k item is an ankle boot");
    assert_eq!(first.image.dimensions(), (28, 28));
    assert_eq!(open(dir, DataFormat::Idx, "train").unwrap().len(), 60_000);
}

#[test]
fn real_image_folders_open_with_their_documented_sizes() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let hym = open(&data.join("hymenoptera/train"), DataFormat::Auto, "train").unwrap();
    assert_eq!(hym.classes(), ["ants", "bees"]);
    assert_eq!(hym.len(), 245);
    let gif = (0..hym.len())
        .find(|&i| hym.describe(i).ends_with("imageNotFound.gif"))
        .unwrap();
    assert_eq!(
        hym.load(gif).unwrap().label,
        0,
        "the GIF placeholder decodes"
    );
    let space = (0..hym.len())
        .find(|&i| hym.describe(i).ends_with("ant photos.jpg"))
        .unwrap();
    assert!(hym.load(space).is_ok());
    let nette = open(
        &data.join("imagenette224/val"),
        DataFormat::ImageFolder,
        "train",
    )
    .unwrap();
    assert_eq!((nette.len(), nette.classes().len()), (500, 10));
    assert_eq!(nette.classes()[0], "n01440764");
}

#[test]
fn tarball_extraction_gives_image_folders_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("mini.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut png = Vec::new();
        image::RgbImage::new(4, 4)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        for path in [
            "train/cat/0000.png",
            "train/dog/0000.png",
            "test/cat/0000.png",
            "README",
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(png.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, &png[..]).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    let out = dir.path().join("out");
    assert_eq!(extract_cifar10_tarball(&tgz, &out).unwrap(), 3);
    assert!(
        !out.join("README").exists(),
        "only train/ and test/ are extracted"
    );
    let train = open(&out.join("train"), DataFormat::Auto, "train").unwrap();
    assert_eq!((train.len(), train.classes().len()), (2, 2));
    std::fs::remove_file(out.join("test/cat/0000.png")).unwrap();
    assert_eq!(
        extract_cifar10_tarball(&tgz, &out).unwrap(),
        3,
        "marker short-circuits"
    );
    let e = extract_cifar10_tarball(&dir.path().join("missing.tar.gz"), &dir.path().join("o2"));
    assert!(matches!(e, Err(DataError::NotFound { .. })));
}

/// Extracts the real 60,000-file tarball (about 5 s and 250 MB of small files in a temp dir).
#[test]
fn real_cifar10_tarball_extracts_to_50000_train_and_10000_test() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let n =
        extract_cifar10_tarball(&data.join("cifar10/cifar-10-jpeg.tar.gz"), out.path()).unwrap();
    assert_eq!(n, 60_000);
    let train = open(&out.path().join("train"), DataFormat::Auto, "train").unwrap();
    let test = open(&out.path().join("test"), DataFormat::Auto, "train").unwrap();
    assert_eq!((train.len(), test.len()), (50_000, 10_000));
    assert_eq!(train.classes()[9], "truck");
}
