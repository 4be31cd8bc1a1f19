//! Evaluation of DINO features (Caron et al. 2021, §4.1–4.2; official `eval_knn.py`,
//! `eval_linear.py`, `visualize_attention.py`): how good is a frozen backbone?
//!
//! [`source`] resolves and loads the model features come from (a run folder, a weight file, or a
//! baseline), [`embed`] turns a dataset into features through a backbone, and the other modules
//! take those features (or an attention tensor) and return serialisable reports or files.
//! Devices follow the input tensors.
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

/// CLS self-attention heat maps and threshold masks (`visualize_attention.py`).
pub mod attention;
/// How much of the CLS attention lies on the object: mass in hand-drawn boxes and Jaccard of
/// the threshold masks with them.
pub mod attention_score;
/// Clusters without labels: seeded k-means on L2-normalised features, scored against the
/// classes (NMI, ARI, purity, Hungarian accuracy).
pub mod cluster;
/// Scores of a clustering against the classes, from one contingency table.
pub mod cluster_metrics;
/// Copy detection: PCA whitening learned on distractors, then the rank of each copy's
/// original (`eval_copy_detection.py`).
pub mod copydetect;
/// The DAVIS-2017 folder layout and its palette-PNG annotations (read, checked, written).
pub mod davis;
/// DAVIS's region similarity J and contour accuracy F, and the J&F-mean.
pub mod davis_metrics;
/// A DAVIS sequence segmented end to end (frames → patch features → propagation → palette
/// PNGs) and scored on its annotated frames.
pub mod davis_segment;
/// Features of a whole dataset through a frozen backbone (the official `extract_features`).
pub mod embed;
/// Feature files: `.npy` or `.safetensors` with labels and image paths.
pub mod features;
/// Weighted k-NN classification of features (`eval_knn.py`).
pub mod knn;
/// A training bank and the sets scored against it, labelled by the bank's class names.
pub mod labelled;
/// Linear probe on frozen features and the official ViT probe feature (`eval_linear.py`).
pub mod linear;
/// A 2-D map of the feature space: deterministic Barnes–Hut t-SNE or PCA.
pub mod map;
/// The 2-D map's coordinates as `.npy` and CSV.
pub mod map_output;
/// The 2-D map drawn as a PNG scatter plot coloured by class, with a legend.
pub mod map_plot;
/// Image retrieval: cosine ranking, mAP and recall@k; CLS and CLS+GeM descriptors.
pub mod retrieval;
/// The revisited Oxford / Paris protocol: ground truth and Easy / Medium / Hard mAP.
pub mod revisited;
/// Where features come from: a run folder's teacher or student, a `.safetensors` backbone, the
/// architecture at random initialisation, or raw pixels; [`source::Embedder`] embeds with one.
pub mod source;
/// Every token out: CLS and patch tokens of the last L blocks, `[N, L, T, D]`, streamed to
/// `.npy`, `.safetensors` or one file per image.
pub mod tokens;
/// Attention over a video, frame by frame (`video_generation.py`): maps, smoothing over frames,
/// threshold masks and the side-by-side `original | attention | mask` picture.
pub mod video_attention;
/// Video object segmentation by label propagation of the first frame's mask
/// (`eval_video_segmentation.py`).
pub mod video_seg;
/// A generated DAVIS sequence with exact masks: photo cut-outs moving over another photo.
pub mod video_synth;
