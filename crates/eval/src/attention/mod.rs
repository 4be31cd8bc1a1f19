//! Room `attention`: CLS self-attention of single images (`visualize_attention.py`), as heat
//! maps and threshold masks, and how much of it lies on the object.

mod maps;
/// How much of the CLS attention lies on the object: mass in hand-drawn boxes and Jaccard of
/// the threshold masks with them.
pub mod score;

pub use maps::*;
