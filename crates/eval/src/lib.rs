//! Evaluation of DINO features (Caron et al. 2021, §4.1–4.2; official `eval_knn.py`,
//! `eval_linear.py`, `visualize_attention.py`): how good is a frozen backbone?
//!
//! The crate is laid out in rooms, one per job:
//!
//! | Room | Job | Files |
//! |------|-----|-------|
//! | [`features`] | where features come from and the one check of them: a [`features::FeatureSet`] (features `[N, D]`, labels, patch tokens, paths) built by embedding a dataset through a backbone, read from `.npy`/`.safetensors`, or streamed as every token | `features/{set, embed, source, tokens, labelled, probe}.rs` |
//! | [`knn`] | weighted k-NN classification (`eval_knn.py`) | `knn.rs` |
//! | [`linear`] | linear probe on frozen features (`eval_linear.py`) | `linear.rs` |
//! | [`attention`] | CLS self-attention maps and masks of single images (`visualize_attention.py`), and their score against boxes | `attention/{maps, score}.rs` |
//! | [`space`] | the feature space without a classifier: k-means clusters scored against the classes, a 2-D map (t-SNE / PCA) | `space/{cluster, cluster_metrics, map, map_output, map_plot}.rs` |
//! | [`retrieval`] | cosine ranking (mAP, recall@k), revisited Oxford / Paris, copy detection | `retrieval/{rank, revisited, copydetect}.rs` |
//! | [`video`] | attention over frames (`video_generation.py`), video object segmentation by label propagation, the DAVIS layout and its J&F | `video/{attention, render, segmentation, davis, davis_metrics, davis_segment, synth}.rs` |
//!
//! Every evaluation takes its features as a [`features::FeatureSet`] (or rows checked by the same
//! [`features::check_rows`]) and returns a serialisable report or writes files; the `dino`
//! binary only parses, calls and prints. Devices follow the input tensors.
//!
//! Weighted k-NN on a few hand-made features:
//!
//! ```
//! use dino_eval::features::FeatureSet;
//! use dino_eval::knn::{knn_eval, knn_predict, KnnConfig};
//! use tch::Tensor;
//!
//! // Memory bank: two features of class 0 near the x axis, two of class 1 near the y axis.
//! let train = Tensor::from_slice(&[1.0f32, 0.1, 0.9, 0.0, 0.0, 1.0, 0.2, 0.9]).view([4, 2]);
//! let train_labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
//! let test = Tensor::from_slice(&[0.8f32, 0.3, 0.1, 1.0]).view([2, 2]);
//! let test_labels = Tensor::from_slice(&[0i64, 1]);
//! // Shapes and label kinds are checked once, here.
//! let train = FeatureSet::labelled(train, train_labels)?;
//! let test = FeatureSet::labelled(test, test_labels)?;
//!
//! let cfg = KnnConfig { ks: vec![1, 3], temperature: 0.07, chunk_size: 256 };
//! let report = knn_eval(&train, &test, &cfg)?;
//! assert_eq!(report.score(1).unwrap().top1, 100.0);
//! println!("{}", serde_json::to_string(&report)?);
//!
//! assert_eq!(knn_predict(&train, &test, 3, 0.07)?, [0, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// Room `attention`: CLS self-attention of single images.
pub mod attention;
/// Room `features`: sources, embedding, token export, feature files and the one feature check.
pub mod features;
/// Weighted k-NN classification of features (`eval_knn.py`).
pub mod knn;
/// Linear probe on frozen features (`eval_linear.py`).
pub mod linear;
/// Room `retrieval`: image retrieval, revisited Oxford / Paris, copy detection.
pub mod retrieval;
/// Room `space`: clusters and 2-D maps of the feature space.
pub mod space;
/// Room `video`: attention over frames, video object segmentation, DAVIS.
pub mod video;

// Paths kept for users outside this crate (dino-train's online k-NN imports them).
pub use features::{embed, labelled};
