//! Room `retrieval`: ranking a gallery by cosine similarity (mAP, recall@k, CLS and CLS+GeM
//! descriptors), the revisited Oxford / Paris protocol, and copy detection.

/// Copy detection: PCA whitening learned on distractors, then the rank of each copy's
/// original (`eval_copy_detection.py`).
pub mod copydetect;
mod rank;
/// The revisited Oxford / Paris protocol: ground truth and Easy / Medium / Hard mAP.
pub mod revisited;

pub use rank::*;
