//! Where a feature-space command (`dino eval cluster`, `dino map`, …) takes its features from:
//! a features file written by `dino embed`, or a model (`--checkpoint`/`--which`, see
//! [`ModelArgs`]) run over a folder of images.

use crate::eval::ModelArgs;
use anyhow::Context;
use dino_config::DataFormat;
use dino_data::dataset::{align_classes, open_dataset, Dataset, UnknownClass};
use dino_eval::features::embed::{EmbedOptions, FeatureKind};
use dino_eval::features::source::Embedder;
use dino_eval::features::{read_features, FeatureSet};
use std::path::{Path, PathBuf};

/// An input probed by [`FeatureInput::open`]: features already read from files, or a loaded
/// model with its opened datasets, not yet embedded ([`OpenedInput::features`]).
pub enum OpenedInput {
    /// Read from features files (the input's, and the gallery's when given).
    Read(FeatureSet, Option<FeatureSet>),
    /// To embed: the model, its options, the input's dataset and the gallery's (labelled by the
    /// input's class names).
    Embed {
        /// The model.
        emb: Box<Embedder>,
        /// Feature kind, crop and batch.
        opts: EmbedOptions,
        /// The input images.
        data: Box<dyn Dataset>,
        /// The gallery images.
        gallery: Option<Box<dyn Dataset>>,
    },
}

impl OpenedInput {
    /// The crop and feature of the images to embed; for features read from files, what
    /// `None` for features read from files (`Stated::beside` reads what their metadata states).
    pub fn stated(&self) -> Option<crate::stated::Stated> {
        match self {
            Self::Read(..) => None,
            Self::Embed { opts, emb, .. } => Some(crate::stated::Stated::of(
                opts,
                emb.source() == dino_eval::features::source::Source::Pixels,
            )),
        }
    }

    /// The features of the input and of the gallery: those read, or the datasets embedded now
    /// (the long work).
    ///
    /// # Errors
    /// A model error, or features the shared check refuses (e.g. NaN rows).
    pub fn features(self) -> anyhow::Result<(FeatureSet, Option<FeatureSet>)> {
        match self {
            Self::Read(set, gallery) => Ok((set, gallery)),
            Self::Embed {
                emb,
                opts,
                data,
                gallery,
            } => {
                let second = match gallery {
                    Some(g) => Some(emb.embed(g.as_ref(), &opts)?),
                    None => None,
                };
                Ok((emb.embed(data.as_ref(), &opts)?, second))
            }
        }
    }
}

/// `--features FILE`, or a model and `--data DIR`.
#[derive(clap::Args, Debug)]
pub struct FeatureInput {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labelled images to embed (class folders, CIFAR-10 binary or IDX). Needed unless
    /// --features is given (or, for retrieval, --revisited).
    #[arg(long)]
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
    /// Refuses a command line with neither --data nor --features, before any work.
    ///
    /// # Errors
    /// When both are missing.
    pub fn require(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.data.is_some() || self.features.is_some(),
            "no input: pass --data DIR (images to embed) or --features FILE"
        );
        Ok(())
    }

    /// The features of the input and, when `gallery` is given, of a second set (a features
    /// file when the input is one, else a folder embedded by the same model, its images
    /// labelled by the input's class names; a gallery class the input lacks is an error), short
    /// of embedding them ([`OpenedInput::features`]): features files are read
    /// (and checked), or the model is loaded and the image folders opened, so a command can
    /// refuse a bad input before it makes its output folder. `kind` is the feature of embedded
    /// images (CLS, or multi-scale CLS); `patch_tokens` keeps the last block's patch tokens.
    ///
    /// # Errors
    /// An unreadable features file or dataset (the message names it), or a model error.
    pub fn open(
        &self,
        gallery: Option<&Path>,
        kind: FeatureKind,
        patch_tokens: bool,
    ) -> anyhow::Result<OpenedInput> {
        let read = |path: &Path| {
            read_features(path).with_context(|| format!("reading features from {}", path.display()))
        };
        if let Some(path) = &self.features {
            return Ok(OpenedInput::Read(
                read(path)?,
                gallery.map(read).transpose()?,
            ));
        }
        let data = self
            .data
            .as_ref()
            .context("no input: pass --data DIR (images to embed) or --features FILE")?;
        let emb = self.model.embedder()?;
        let open = |path: &Path| {
            open_dataset(path, DataFormat::Auto, &self.split, &emb.cfg.data)
                .with_context(|| format!("opening {}", path.display()))
        };
        let ds = open(data)?;
        let opts = emb.options(kind, patch_tokens)?;
        let second: Option<Box<dyn Dataset>> = match gallery {
            Some(g) => {
                let aligned = align_classes(ds.classes(), open(g)?, UnknownClass::Error)
                    .with_context(|| {
                        format!(
                            "labelling {} by the classes of {}",
                            g.display(),
                            data.display()
                        )
                    })?;
                Some(Box::new(aligned))
            }
            None => None,
        };
        Ok(OpenedInput::Embed {
            emb: Box::new(emb),
            opts,
            data: ds,
            gallery: second,
        })
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
