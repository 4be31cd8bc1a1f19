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

/// The one check of feature values every evaluation gets its features through: NaN or infinite
/// rows, in the features or their patch tokens, are refused with the count and the first path
/// (shared/cases/resnet-bn-one-value-nan: a NaN student gave 0 % k-NN with exit status 0).
#[test]
fn non_finite_rows_are_refused_with_the_count_and_the_first_path() {
    let paths: Vec<String> = ["a/0.jpg", "a/1.jpg", "b/2.jpg", "b/3.jpg"]
        .map(String::from)
        .to_vec();
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
    let mut v = vec![0.5f32; 12];
    v[4] = f32::NAN; // row 1
    v[11] = f32::INFINITY; // row 3
    let features = Tensor::from_slice(&v).view([4, 3]);
    let err = FeatureSet::new(features, labels.copy(), None, paths.clone()).unwrap_err();
    assert!(
        matches!(
            &err,
            FeaturesError::NonFinite { count: 2, rows: 4, first: 1, first_path: Some(p) }
                if p == "a/1.jpg"
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("2 of 4 feature rows") && msg.contains("row 1, a/1.jpg"),
        "{msg}"
    );
    // A NaN patch token makes its row bad too; without paths the row number is said alone.
    let good = Tensor::ones([4, 3], (Kind::Float, tch::Device::Cpu));
    let mut t = vec![1.0f32; 4 * 2 * 3];
    t[2 * 6 + 5] = f32::NAN; // row 2
    let tokens = Tensor::from_slice(&t).view([4, 2, 3]);
    let err = FeatureSet::new(good.copy(), labels.copy(), Some(tokens), vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            FeaturesError::NonFinite {
                count: 1,
                first: 2,
                first_path: None,
                ..
            }
        ),
        "{err}"
    );
    // Reading a file back applies the same check.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nan.npy");
    let mut bad = v.clone();
    bad[11] = 1.0;
    Tensor::from_slice(&bad)
        .view([4, 3])
        .write_npy(&file)
        .unwrap();
    labels.write_npy(dir.path().join("nan.labels.npy")).unwrap();
    let err = read_features(&file).unwrap_err();
    assert!(
        matches!(
            err,
            FeaturesError::NonFinite {
                count: 1,
                first: 1,
                ..
            }
        ),
        "{err}"
    );
    FeatureSet::new(good, labels, None, paths).unwrap();
}
