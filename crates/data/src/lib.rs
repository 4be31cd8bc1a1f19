//! DINO data pipeline: datasets, robust decoding, the multi-crop augmentation of DINO, and a
//! parallel loader that sends typed batches over a bounded crossbeam channel. No libtorch.
//!
//! (The usage example is added when the loader lands.)

pub mod rng;
// Datasets, decoding, batches, the loader (owned by the loader work).
pub mod batch;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod loader;
// Augmentation (owned by the transforms work).
pub mod multicrop;
pub mod transforms;
