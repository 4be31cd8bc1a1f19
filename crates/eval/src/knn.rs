//! Weighted k-nearest-neighbour classification of frozen features (DINO paper §4.1, official
//! `eval_knn.py`, `knn_classifier`).
//!
//! Each test feature is compared by cosine similarity with every train feature; its `k` most
//! similar train features vote for their labels with weight `exp(similarity / T)`; the class with
//! the largest summed vote is the top-1 prediction and the five largest form the top-5.
//!
//! Differences from the official code, all on purpose:
//! - the test set is cut into chunks of a fixed size ([`KnnConfig::chunk_size`]) instead of 100
//!   chunks of `⌊N/100⌋` rows, so a validation set with fewer than 100 images works (the official
//!   loop has a zero step there and crashes);
//! - all `k` share one top-`max k` search per chunk instead of one pass over the data per `k`;
//! - ties between summed votes go to the lower class index (what a stable descending sort gives);
//!   the official `sort` leaves the order of ties unspecified. Ties matter in practice only for
//!   classes that received no vote at all, which can still fill the top-5 when fewer than five
//!   classes were voted for.
//!
//! - a class that received no vote is never a top-5 hit: with `k < 5`, or when the `k` neighbours
//!   span fewer than five classes, the official code (and a plain descending sort) fills the
//!   remaining top-5 ranks with zero-vote classes in index order, so a test image of class 0 whose
//!   neighbours are all of class 2 counts as a top-5 hit (facebookresearch/dino#89 fixed only the
//!   `k < 5` rank count, not this);
//! - a `k` larger than the memory bank is capped to the bank size (several `k` capped to the same
//!   size are evaluated once) and the report says so ([`KnnScore::capped_from`]); the official
//!   `topk` raises "selected index k out of range" there, so the default list (10, 20, 100, 200)
//!   failed on every bank under 200 images.
//!
//! Kept from the official code: features are L2-normalised first (eps 1e-12, like
//! `F.normalize`), and for `k < 5` the "top-5" only looks at the first `k` ranks.
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`KnnConfig::chunk_size`]: crate::knn::KnnConfig::chunk_size
//! [`KnnScore::capped_from`]: crate::knn::KnnScore::capped_from

use crate::features::{check_train_eval, FeatureSet, FeaturesError};
use dino_config::EvalConfig;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, TchError, Tensor};

/// Test rows per chunk when none is given: the similarity block is `chunk × n_train` floats,
/// 1.3 GB for ImageNet's 1.28 M train images, 10 MB for a 10 k memory bank.
pub const DEFAULT_CHUNK_SIZE: usize = 256;

/// Bad input to the k-NN classifier.
#[derive(Debug, thiserror::Error)]
pub enum KnnError {
    /// The features or labels (see [`FeatureSet::new`] and [`check_train_eval`]).
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// No `k` was given.
    #[error("no neighbour count k given")]
    NoK,
    /// `k` is 0.
    #[error("k = 0: a neighbour count must be at least 1")]
    ZeroK,
    /// The vote temperature is not a positive finite number.
    #[error("temperature must be finite and > 0, got {0}")]
    Temperature(f64),
    /// The chunk size is 0.
    #[error("chunk size must be at least 1")]
    ChunkSize,
    /// libtorch failed (e.g. out of memory).
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Settings of [`knn_eval`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Neighbour counts to evaluate (official `--nb_knn 10 20 100 200`).
    pub ks: Vec<usize>,
    /// Vote temperature T: a neighbour with cosine similarity s votes exp(s / T)
    /// (official `--temperature 0.07`).
    pub temperature: f64,
    /// Test rows handled at once; bounds memory at `chunk_size × n_train` similarities.
    pub chunk_size: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self::from_eval(&EvalConfig::default())
    }
}

impl KnnConfig {
    /// The k list and temperature of the `[eval]` config section, chunk size
    /// [`DEFAULT_CHUNK_SIZE`].
    pub fn from_eval(eval: &EvalConfig) -> Self {
        Self {
            ks: eval.knn_k.clone(),
            temperature: eval.knn_temperature,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// Accuracy for one neighbour count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnScore {
    /// Neighbour count actually used (at most the memory bank size).
    pub k: usize,
    /// The requested counts that exceeded the bank and were capped to `k` (empty when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capped_from: Vec<usize>,
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Top-5 accuracy in percent (among the first `min(5, k)` ranks, as the official code).
    pub top5: f64,
}

/// Result of [`knn_eval`], one [`KnnScore`] per distinct k used (in the order given; requested
/// counts above the bank size are capped to it and share one score).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnReport {
    /// Scores per k.
    pub scores: Vec<KnnScore>,
    /// Train features (memory bank size).
    pub n_train: usize,
    /// Test features.
    pub n_test: usize,
    /// Classes considered: 1 + the largest train or test label.
    pub num_classes: usize,
    /// Vote temperature used.
    pub temperature: f64,
}

impl KnnReport {
    /// The score for neighbour count `k` (the k used, or a requested k that was capped).
    pub fn score(&self, k: usize) -> Option<&KnnScore> {
        self.scores
            .iter()
            .find(|s| s.k == k || s.capped_from.contains(&k))
    }

    /// One line per capped k, e.g. "k = 200 exceeds the 4 images of the k-NN bank: using k = 4".
    pub fn capped_notes(&self) -> Vec<String> {
        self.scores
            .iter()
            .filter(|s| !s.capped_from.is_empty())
            .map(|s| {
                let from: Vec<String> = s.capped_from.iter().map(|k| k.to_string()).collect();
                format!(
                    "k = {} exceed{} the {} images of the k-NN bank: using k = {}",
                    from.join(", "),
                    if from.len() == 1 { "s" } else { "" },
                    self.n_train,
                    s.k
                )
            })
            .collect()
    }
}

/// Weighted k-NN accuracy of the `test` features against the memory bank `train`, for every
/// k of `cfg` at once.
///
/// Shapes: features `[N, D]` f32 (L2-normalised here), labels `[N]` i64 with values `>= 0`, as
/// [`FeatureSet`] holds them (on the CPU). Memory: one `[chunk_size, n_train]` similarity block
/// at a time.
///
/// A `k` above `n_train` is capped to `n_train` (see [`KnnScore::capped_from`]). A test row
/// is a top-1 / top-5 hit only when its true class received a vote.
///
/// # Errors
/// [`KnnError::Features`] for an empty set, a negative label or feature widths that differ
/// ([`check_train_eval`]); [`KnnError`] for an empty k list, `k == 0`, a non-positive
/// temperature, `chunk_size == 0`, or a libtorch failure.
pub fn knn_eval(
    train: &FeatureSet,
    test: &FeatureSet,
    cfg: &KnnConfig,
) -> Result<KnnReport, KnnError> {
    check_train_eval(train, test, "test", true)?;
    let bank = MemoryBank::new(train, cfg.temperature)?;
    let test_labels = &test.labels;
    let test = l2_normalize(&test.features)?;
    let ks = bank.cap_ks(&cfg.ks)?;
    let k_max = ks
        .iter()
        .map(|(k, _)| *k)
        .max()
        .expect("cap_ks rejects an empty list") as i64;
    if cfg.chunk_size == 0 {
        return Err(KnnError::ChunkSize);
    }
    let num_classes = bank.num_classes.max(max_label(test_labels)? + 1);
    let n_test = test.size()[0];
    let classes = Tensor::arange(num_classes, (Kind::Int64, bank.device)).view([1, -1]);
    let mut top1 = vec![0i64; ks.len()];
    let mut top5 = vec![0i64; ks.len()];
    let mut start = 0;
    while start < n_test {
        let len = (cfg.chunk_size as i64).min(n_test - start);
        let queries = test.f_narrow(0, start, len)?.f_to_device(bank.device)?;
        let targets = test_labels
            .f_narrow(0, start, len)?
            .f_to_device(bank.device)?
            .f_view([-1, 1])?;
        let neighbours = bank.neighbours(&queries, k_max)?;
        for (i, &(k, _)) in ks.iter().enumerate() {
            let votes = neighbours.votes(k, num_classes, bank.temperature)?;
            // Rank of the true class = classes strictly ahead of it in a stable descending sort.
            let true_vote = votes.f_gather(1, &targets, false)?;
            // A class no neighbour voted for is no prediction at all, whatever its rank.
            let voted = true_vote.f_gt(0.0)?.f_view([-1])?;
            let ahead = votes.f_gt_tensor(&true_vote)?.f_logical_or(
                &votes
                    .f_eq_tensor(&true_vote)?
                    .f_logical_and(&classes.f_lt_tensor(&targets)?)?,
            )?;
            let rank = ahead.f_sum_dim_intlist(1, false, Kind::Int64)?;
            top1[i] += rank
                .f_eq(0)?
                .f_logical_and(&voted)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            let top5_ranks = k.min(5) as i64;
            top5[i] += rank
                .f_lt(top5_ranks)?
                .f_logical_and(&voted)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
        }
        start += len;
    }
    let pct = |hits: i64| hits as f64 * 100.0 / n_test as f64;
    Ok(KnnReport {
        scores: ks
            .into_iter()
            .enumerate()
            .map(|(i, (k, capped_from))| KnnScore {
                k,
                capped_from,
                top1: pct(top1[i]),
                top5: pct(top5[i]),
            })
            .collect(),
        n_train: bank.n_train as usize,
        n_test: n_test as usize,
        num_classes: num_classes as usize,
        temperature: cfg.temperature,
    })
}

/// Weighted k-NN predictions: the top-1 class of every test feature (ties to the lower class
/// index), chunked by [`DEFAULT_CHUNK_SIZE`]. A `k` above the bank size is capped to it.
///
/// Shapes as in [`knn_eval`]; the labels of `test` are not read (they may be -1). Returns one
/// class per test row, in row order.
///
/// # Errors
/// As [`knn_eval`].
pub fn knn_predict(
    train: &FeatureSet,
    test: &FeatureSet,
    k: usize,
    temperature: f64,
) -> Result<Vec<i64>, KnnError> {
    check_train_eval(train, test, "test", false)?;
    let bank = MemoryBank::new(train, temperature)?;
    let test = l2_normalize(&test.features)?;
    let k = bank.cap_ks(&[k])?[0].0;
    let n_test = test.size()[0];
    let mut predictions = Vec::with_capacity(n_test as usize);
    let mut start = 0;
    while start < n_test {
        let len = (DEFAULT_CHUNK_SIZE as i64).min(n_test - start);
        let queries = test.f_narrow(0, start, len)?.f_to_device(bank.device)?;
        let votes = bank
            .neighbours(&queries, k as i64)?
            .votes(k, bank.num_classes, temperature)?;
        // argmax returns the first maximum, i.e. the lower class index on ties.
        let best = votes.f_argmax(1, false)?.f_to_device(Device::Cpu)?;
        predictions.extend(Vec::<i64>::try_from(&best)?);
        start += len;
    }
    Ok(predictions)
}

/// Normalised train features, transposed for the similarity product, with their labels.
struct MemoryBank {
    features_t: Tensor,
    labels: Tensor,
    n_train: i64,
    num_classes: i64,
    temperature: f64,
    device: Device,
}

/// The `k_max` nearest train features of a chunk of queries, most similar first.
struct Neighbours {
    similarities: Tensor,
    labels: Tensor,
}

impl MemoryBank {
    /// The bank of a train set that [`check_train_eval`] accepted.
    fn new(train: &FeatureSet, temperature: f64) -> Result<Self, KnnError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(KnnError::Temperature(temperature));
        }
        let device = train.features.device();
        let features_t = l2_normalize(&train.features)?.f_tr()?;
        let labels = train.labels.shallow_clone();
        let num_classes = max_label(&labels)? + 1;
        Ok(Self {
            features_t,
            labels,
            n_train: train.len() as i64,
            num_classes,
            temperature,
            device,
        })
    }

    /// The distinct k to use, in the order given, each with the requested k that were capped
    /// to it (every k above `n_train` becomes `n_train`).
    fn cap_ks(&self, ks: &[usize]) -> Result<Vec<(usize, Vec<usize>)>, KnnError> {
        if ks.is_empty() {
            return Err(KnnError::NoK);
        }
        let n = self.n_train as usize;
        let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
        for &k in ks {
            if k == 0 {
                return Err(KnnError::ZeroK);
            }
            let used = k.min(n);
            let slot = match out.iter().position(|(u, _)| *u == used) {
                Some(i) => i,
                None => {
                    out.push((used, Vec::new()));
                    out.len() - 1
                }
            };
            if k > n && !out[slot].1.contains(&k) {
                out[slot].1.push(k);
            }
        }
        Ok(out)
    }

    fn neighbours(&self, queries: &Tensor, k_max: i64) -> Result<Neighbours, KnnError> {
        let similarities = queries.f_matmul(&self.features_t)?;
        let (similarities, indices) = similarities.f_topk(k_max, 1, true, true)?;
        let labels = self
            .labels
            .f_index_select(0, &indices.f_reshape([-1])?)?
            .f_view_as(&indices)?;
        Ok(Neighbours {
            similarities,
            labels,
        })
    }
}

impl Neighbours {
    /// Summed votes `[chunk, num_classes]` of the first `k` neighbours.
    fn votes(&self, k: usize, num_classes: i64, temperature: f64) -> Result<Tensor, KnnError> {
        let k = k as i64;
        let weights = self
            .similarities
            .f_narrow(1, 0, k)?
            .f_div_scalar(temperature)?
            .f_exp()?;
        let rows = self.similarities.size()[0];
        let votes = Tensor::f_zeros([rows, num_classes], (Kind::Float, weights.device()))?;
        Ok(votes.f_scatter_add(1, &self.labels.f_narrow(1, 0, k)?, &weights)?)
    }
}

fn max_label(labels: &Tensor) -> Result<i64, KnnError> {
    Ok(labels.f_max()?.f_int64_value(&[])?)
}

/// `x / max(‖x‖₂, 1e-12)` per row in f32, as `torch.nn.functional.normalize(x, dim=1, p=2)`.
fn l2_normalize(features: &Tensor) -> Result<Tensor, KnnError> {
    let x = features.f_to_kind(Kind::Float)?;
    let norm = x
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(x.f_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 2])
    }

    fn set(features: &Tensor, labels: &[i64]) -> FeatureSet {
        FeatureSet::labelled(features.shallow_clone(), Tensor::from_slice(labels)).unwrap()
    }

    #[test]
    fn defaults_are_official() {
        // eval_knn.py: --nb_knn default [10, 20, 100, 200], --temperature default 0.07.
        let cfg = KnnConfig::default();
        assert_eq!(cfg.ks, vec![10, 20, 100, 200]);
        assert_eq!(cfg.temperature, 0.07);
        assert_eq!(cfg.chunk_size, DEFAULT_CHUNK_SIZE);
    }

    #[test]
    fn bad_input_is_an_error() {
        let train = set(&feats(&[[1.0, 0.0], [0.0, 1.0]]), &[0, 1]);
        let test = set(&feats(&[[1.0, 0.1]]), &[0]);
        let cfg = |ks: Vec<usize>| KnnConfig {
            ks,
            temperature: 0.07,
            chunk_size: 4,
        };
        let run = |c: &KnnConfig| knn_eval(&train, &test, c);
        assert!(matches!(run(&cfg(vec![0])), Err(KnnError::ZeroK)));
        assert!(matches!(run(&cfg(vec![])), Err(KnnError::NoK)));
        let mut c = cfg(vec![1]);
        c.chunk_size = 0;
        assert!(matches!(run(&c), Err(KnnError::ChunkSize)));
        c.chunk_size = 1;
        c.temperature = 0.0;
        assert!(matches!(run(&c), Err(KnnError::Temperature(_))));
        let c = cfg(vec![1]);
        let wide = set(&Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)), &[0]);
        assert!(matches!(
            knn_eval(&train, &wide, &c),
            Err(KnnError::Features(FeaturesError::DimMismatch {
                train: 2,
                eval: 3,
                ..
            }))
        ));
        let negative = set(&feats(&[[1.0, 0.0], [0.0, 1.0]]), &[0, -1]);
        assert!(matches!(
            knn_eval(&negative, &test, &c),
            Err(KnnError::Features(FeaturesError::NegativeLabel {
                what: "train",
                label: -1
            }))
        ));
        // Queries to predict need no labels: -1 is fine there.
        let unlabelled = set(&feats(&[[1.0, 0.1]]), &[-1]);
        assert_eq!(knn_predict(&train, &unlabelled, 1, 0.07).unwrap(), [0]);
        let empty = FeatureSet::labelled(
            Tensor::zeros([0, 2], (Kind::Float, Device::Cpu)),
            Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        )
        .unwrap();
        assert!(matches!(
            knn_eval(&train, &empty, &c),
            Err(KnnError::Features(FeaturesError::Empty("test")))
        ));
        assert!(matches!(
            knn_predict(&train, &test, 0, 0.07),
            Err(KnnError::ZeroK)
        ));
    }

    #[test]
    fn k_above_the_bank_is_capped_and_reported() {
        // shared/cases/knn-k-exceeds-bank: 4 train images, the default k list.
        let train = feats(&[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]);
        let labels = [0i64, 0, 1, 1];
        let test = feats(&[[1.0, 0.05], [0.05, 1.0]]);
        let test_labels = [0i64, 1];
        let cfg = KnnConfig {
            ks: vec![2, 10, 20, 100, 200],
            temperature: 0.07,
            chunk_size: 1,
        };
        let (train, test) = (set(&train, &labels), set(&test, &test_labels));
        let r = knn_eval(&train, &test, &cfg).unwrap();
        let used: Vec<(usize, Vec<usize>)> = r
            .scores
            .iter()
            .map(|s| (s.k, s.capped_from.clone()))
            .collect();
        assert_eq!(used, [(2, vec![]), (4, vec![10, 20, 100, 200])]);
        assert!(r.scores.iter().all(|s| s.top1 == 100.0));
        assert_eq!(r.score(200).unwrap().k, 4);
        assert_eq!(
            r.capped_notes(),
            ["k = 10, 20, 100, 200 exceed the 4 images of the k-NN bank: using k = 4"]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["scores"][1]["k"], 4);
        assert_eq!(json["scores"][1]["capped_from"][3], 200);
        assert!(json["scores"][0].get("capped_from").is_none());
        assert_eq!(knn_predict(&train, &test, 50, 0.07).unwrap(), [0, 1]);
    }

    #[test]
    fn a_class_without_votes_is_never_a_top5_hit() {
        // shared/cases/knn-top5-zero-vote: class 0's test image has both neighbours in class 2;
        // class 0 gets no vote and must not fill a top-min(5, k) rank.
        let train = feats(&[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.61, 0.79]]);
        let labels = [0i64, 1, 2, 2];
        let test = feats(&[[0.6, 0.8], [0.0, 1.0], [0.6, 0.8]]);
        let test_labels = [0i64, 1, 2];
        let cfg = KnnConfig {
            ks: vec![1, 2],
            temperature: 0.07,
            chunk_size: 2,
        };
        let (train, test) = (set(&train, &labels), set(&test, &test_labels));
        let r = knn_eval(&train, &test, &cfg).unwrap();
        let two = r.score(2).unwrap();
        assert!((two.top1 - 200.0 / 3.0).abs() < 1e-9, "{two:?}");
        assert!((two.top5 - 200.0 / 3.0).abs() < 1e-9, "{two:?}");
        let one = r.score(1).unwrap();
        assert!((one.top5 - 200.0 / 3.0).abs() < 1e-9, "{one:?}");
    }

    #[test]
    fn features_need_not_be_normalised() {
        // Scaling a feature must not change anything: cosine similarity only.
        let train = feats(&[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]);
        let labels = [0i64, 1, 2];
        let test = feats(&[[0.9, 0.2], [0.1, 0.8]]);
        let a = knn_predict(&set(&train, &labels), &set(&test, &[-1, -1]), 1, 0.07).unwrap();
        let b = knn_predict(
            &set(&(&train * 10.0), &labels),
            &set(&(&test * 0.01), &[-1, -1]),
            1,
            0.07,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, vec![0, 1]);
    }
}
