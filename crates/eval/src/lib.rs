//! Evaluation of DINO features: weighted k-NN, linear probe, attention maps, feature export.

pub mod attention;
pub mod embed;
pub mod features;
pub mod knn;
pub mod linear;
