//! Where a feature-space command (`dino eval cluster`, `dino map`, …) takes its features from:
//! a features file written by `dino embed`, or a model (`--checkpoint`/`--which`, see
//! [`ModelArgs`]) run over a folder of images.

use crate::eval::ModelArgs;
use anyhow::Context;
use dino_config::DataFormat;
use dino_data::dataset::open_dataset;
use dino_eval::embed::FeatureKind;
use dino_eval::features::{read_features, FeatureSet};
use std::path::PathBuf;

/// `--features FILE`, or a model and `--data DIR`.
#[derive(clap::Args, Debug)]
pub struct FeatureInput {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labelled images to embed (class folders, CIFAR-10 binary or IDX). Needed unless
    /// --features is given.
    #[arg(long, required_unless_present = "features")]
    pub data: Option<PathBuf>,
    /// Split for CIFAR-10 binary / IDX folders.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// A features file of `dino embed` (`.npy` with its `.labels.npy`, or `.safetensors`)
    /// instead of a model and --data.
    #[arg(long, conflicts_with_all = ["data", "checkpoint"])]
    pub features: Option<PathBuf>,
}

impl FeatureInput {
    /// The features (CLS tokens) with labels, paths and class names.
    ///
    /// # Errors
    /// An unreadable features file or dataset (the message names it), or a model error.
    pub fn load(&self) -> anyhow::Result<FeatureSet> {
        if let Some(path) = &self.features {
            return read_features(path)
                .with_context(|| format!("reading features from {}", path.display()));
        }
        let data = self
            .data
            .as_ref()
            .expect("clap requires --data without --features");
        let emb = self.model.embedder()?;
        let ds = open_dataset(data, DataFormat::Auto, &self.split, &emb.cfg.data)
            .with_context(|| format!("opening {}", data.display()))?;
        let opts = emb.options(FeatureKind::Cls, false)?;
        Ok(emb.embed(ds.as_ref(), &opts)?)
    }

    /// A short name of the source for reports: the features file, or `which` and the data.
    pub fn describe(&self) -> String {
        match (&self.features, &self.data) {
            (Some(f), _) => f.display().to_string(),
            (None, Some(d)) => format!("{:?} features of {}", self.model.which, d.display()),
            (None, None) => String::new(),
        }
    }
}
