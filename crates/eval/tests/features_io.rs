//! Round trips of feature files in both formats.

use dino_eval::features::{read_features, write_features, FeatureSet, FeaturesError};
use tch::{Kind, Tensor};

fn sample(with_tokens: bool) -> FeatureSet {
    let features = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([4, 3]) / 7.0;
    let labels = Tensor::from_slice(&[3i64, 0, 2, 9]);
    let tokens = with_tokens
        .then(|| Tensor::arange(4 * 2 * 3, (Kind::Float, tch::Device::Cpu)).view([4, 2, 3]) - 5.0);
    let paths = ["a/x.jpg", "a/y.jpg", "b/z.png", "c/ü w.jpg"]
        .map(String::from)
        .to_vec();
    FeatureSet::new(features, labels, tokens, paths).unwrap()
}

fn assert_same(a: &FeatureSet, b: &FeatureSet) {
    assert_eq!(b.features.kind(), Kind::Float);
    assert_eq!(b.labels.kind(), Kind::Int64);
    assert!(a.features.equal(&b.features));
    assert!(a.labels.equal(&b.labels));
    match (&a.patch_tokens, &b.patch_tokens) {
        (Some(x), Some(y)) => assert!(x.equal(y)),
        (None, None) => {}
        _ => panic!("patch tokens lost or invented"),
    }
    assert_eq!(a.paths, b.paths);
}

#[test]
fn npy_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for tokens in [false, true] {
        let set = sample(tokens);
        let path = dir.path().join(format!("train_{tokens}.npy"));
        let written = write_features(&path, &set).unwrap();
        assert_eq!(written.len(), if tokens { 4 } else { 3 });
        assert!(dir
            .path()
            .join(format!("train_{tokens}.labels.npy"))
            .exists());
        assert!(dir
            .path()
            .join(format!("train_{tokens}.paths.json"))
            .exists());
        assert_same(&set, &read_features(&path).unwrap());
    }
}

#[test]
fn safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for tokens in [false, true] {
        let set = sample(tokens);
        let path = dir.path().join(format!("val_{tokens}.safetensors"));
        let written = write_features(&path, &set).unwrap();
        assert_eq!(written.len(), 2);
        assert_same(&set, &read_features(&path).unwrap());
        let named = Tensor::read_safetensors(&path).unwrap();
        let mut names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        let expected: &[&str] = if tokens {
            &["features", "labels", "patch_tokens"]
        } else {
            &["features", "labels"]
        };
        assert_eq!(names, expected);
    }
}

#[test]
fn bad_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        write_features(&dir.path().join("f.pt"), &sample(false)),
        Err(FeaturesError::Extension(_))
    ));
    let features = Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu));
    let labels = Tensor::zeros([3], (Kind::Int64, tch::Device::Cpu));
    assert!(matches!(
        FeatureSet::new(features, labels, None, vec![]),
        Err(FeaturesError::Shape(_))
    ));
    assert!(read_features(&dir.path().join("missing.npy")).is_err());
}
