//! Online k-NN during training: every `eval.knn_every_epochs` epochs, the weighted k-NN
//! (official `eval_knn.py` protocol) of the teacher's CLS features (the supervised objective's
//! network), with `eval.knn_train_path` as the bank and `eval.knn_val_path` as the queries. Not
//! in the official trainer. It runs as a [`crate::run_logger::EpochHook`], on rank 0, and its
//! top-1 accuracies land in the epoch's metrics record as `knn_top1_k<k>`. With a ResNet the
//! feature is its pooled output in eval mode, normalised with the teacher's own BatchNorm
//! running statistics (see [`crate::teacher::ema_update`]).

use crate::objective::TrainMethod;
use crate::run_logger::EpochHook;
use anyhow::Context;
use dino_config::Config;
use dino_eval::embed::{embed_dataset, EmbedOptions, FeatureKind};
use dino_eval::labelled::TrainVal;
use std::collections::BTreeMap;
use std::path::Path;

/// The online k-NN evaluation of a run.
pub struct OnlineKnn {
    cfg: Config,
    /// Bank and query sets, opened once: a folder tree is listed (and CIFAR / IDX files read)
    /// at setup, not again at every evaluation.
    sets: TrainVal,
}

impl OnlineKnn {
    /// The evaluation configured by `cfg.eval`, or `None` when `eval.knn_every_epochs` is 0.
    /// The folders are opened (and their classes matched) now, so a wrong path or a validation
    /// class the bank lacks fails before the first epoch, not after it.
    ///
    /// # Errors
    /// Unreadable `eval.knn_train_path` / `eval.knn_val_path`, or validation classes missing
    /// from the bank.
    pub fn open(cfg: &Config) -> anyhow::Result<Option<Self>> {
        if cfg.eval.knn_every_epochs == 0 {
            return Ok(None);
        }
        let sets = Self::folders(cfg)
            .context("online k-NN data (eval.knn_train_path, eval.knn_val_path)")?;
        Ok(Some(Self {
            cfg: cfg.clone(),
            sets,
        }))
    }

    /// Bank and query folders, the query labels following the bank's class names.
    fn folders(cfg: &Config) -> anyhow::Result<TrainVal> {
        // dino-config's validation has already required both paths when k-NN is on.
        let e = &cfg.eval;
        Ok(TrainVal::open(
            Path::new(&e.knn_train_path),
            Path::new(&e.knn_val_path),
            &cfg.data,
            dino_data::dataset::UnknownClass::Error,
        )?)
    }
}

impl EpochHook for OnlineKnn {
    fn due(&self, epoch: usize) -> bool {
        let every = self.cfg.eval.knn_every_epochs;
        every > 0 && (epoch + 1) % every == 0
    }

    fn run(&mut self, epoch: usize, method: &TrainMethod) -> anyhow::Result<BTreeMap<String, f64>> {
        let cfg = &self.cfg;
        let e = &cfg.eval;
        let sets = &self.sets;
        let opts = EmbedOptions {
            batch_size: e.batch_size,
            transform: dino_data::transforms::EvalTransform::new(e.crop_size, e.resize_ratio)?,
            mean: cfg.augmentation.mean,
            std: cfg.augmentation.std,
            kind: FeatureKind::Cls,
            patch_tokens: false,
            limit: None,
        };
        let backbone = method.eval_backbone();
        let (train, _) = embed_dataset(backbone, sets.train.as_ref(), &opts, method.device())?;
        let (test, _) = embed_dataset(backbone, &sets.val, &opts, method.device())?;
        let report =
            dino_eval::knn::knn_eval(&train, &test, &dino_eval::knn::KnnConfig::from_eval(e))?;
        for note in report.capped_notes() {
            tracing::info!("online k-NN: {note}");
        }
        tracing::info!(
            "epoch {} online k-NN (teacher): {}",
            epoch + 1,
            report
                .scores
                .iter()
                .map(|s| format!("{}-NN {:.2}%", s.k, s.top1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(report
            .scores
            .iter()
            .map(|s| (format!("knn_top1_k{}", s.k), s.top1))
            .collect())
    }
}
