//! `dino eval knn|linear` and `dino embed`: frozen features of a trained backbone.

use crate::args::ConfigArgs;
use crate::run_weights;
use crate::stated::Stated;
use anyhow::Context;
use dino_config::{Config, DataFormat};
use dino_data::dataset::{open_dataset, Dataset, UnknownClass};
use dino_eval::features::embed::FeatureKind;
use dino_eval::features::source::{run_config, run_folder_config, Embedder, SourceError};
use dino_eval::features::tokens::{
    per_image_names, plan_tokens, Layers, NpyTokenWriter, PerImageWriter, SafetensorsTokenWriter,
    TokenKind, TokenSink,
};
use dino_eval::features::write_features;
use dino_eval::knn::{knn_eval, KnnConfig};
use dino_eval::linear::{train_linear_probe_with, LinearProbeConfig};
use dino_train::runtime::apply_threads;
use std::path::{Path, PathBuf};

/// Where features come from: the evaluation crate's type, parsed by clap (`--which`).
pub use dino_eval::features::source::Source;

/// Arguments shared by every command that embeds images.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A run folder of `dino train` (evaluated with the run's own configuration, `--set`
    /// applied on top), or a `.safetensors` backbone (architecture from --config, or the model
    /// keys a `dino import` file carries, over the preset's and under --set). Optional for
    /// `--which random|pixels`, which then take the architecture and crop size from --config.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Which features.
    #[arg(long, value_enum, default_value = "teacher")]
    pub which: Source,
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl ModelArgs {
    /// Loads the features' source: the configuration (the run folder's own, or --config and
    /// --set), thread pools and device from it, then the backbone.
    pub fn embedder(&self) -> anyhow::Result<Embedder> {
        let overrides: Vec<&str> = self.config.set.iter().map(String::as_str).collect();
        let preset = self.config.config.is_some();
        // A run's own weights file is read as the run: its configuration, and for the latest
        // checkpoint the folder itself (teacher or student as --which says).
        let run_dir = self
            .checkpoint
            .as_deref()
            .and_then(run_weights::run_folder_of);
        let latest = run_dir.as_ref().filter(|_| {
            self.checkpoint.as_deref().and_then(Path::file_name)
                == Some(std::ffi::OsStr::new("checkpoint.safetensors"))
        });
        let checkpoint = match latest {
            Some(dir) if !preset => Some(dir.as_path()),
            _ => self.checkpoint.as_deref(),
        };
        if let (Some(dir), false) = (&run_dir, preset) {
            tracing::info!(
                "{} is in run folder {}: evaluated with the run's configuration",
                self.checkpoint.as_deref().unwrap_or(dir).display(),
                dir.display()
            );
        }
        let which = self.which;
        let no_checkpoint = |e: SourceError| match e {
            SourceError::NoCheckpoint(_) => anyhow::anyhow!(
                "--checkpoint is required for --which teacher|student (only the random and \
                 pixel baselines can do without one)"
            ),
            e => e.into(),
        };
        // An override the run's valid stored configuration refuses is the --set's fault.
        let blame_set = |e: SourceError| match e {
            SourceError::StoredConfig { path, source }
                if !overrides.is_empty()
                    && path.parent().is_some_and(|d| run_config(d, &[]).is_ok()) =>
            {
                let given: Vec<String> = self
                    .config
                    .set
                    .iter()
                    .map(|s| format!("--set {s}"))
                    .collect();
                anyhow::anyhow!(
                    "{source} (from {} on the run's stored configuration, {})",
                    given.join(", "),
                    path.display()
                )
            }
            e => no_checkpoint(e),
        };
        let cfg = match (&run_dir, preset) {
            (Some(dir), false) => Some(run_config(dir, &overrides).map_err(blame_set)?),
            _ => run_folder_config(checkpoint, which, preset, &overrides).map_err(blame_set)?,
        };
        let from_run = cfg.is_some();
        // A weights file of `dino import` carries its model keys: between the preset and --set.
        let file_model = match (&cfg, checkpoint) {
            (None, Some(file)) => crate::stored_model::FileModel::read(file)?,
            _ => None,
        };
        let cfg = match (cfg, &file_model) {
            (Some(cfg), _) => cfg,
            (None, Some(fm)) => {
                let cfg = self.config.load(&fm.sets()).with_context(|| {
                    format!(
                        "with the model keys stored in {}",
                        checkpoint.unwrap_or(Path::new("")).display()
                    )
                })?;
                fm.report(&cfg, &self.config.set);
                cfg
            }
            (None, None) => self.config.load(&[])?,
        };
        let crop_set = self
            .config
            .set
            .iter()
            .any(|s| s.trim_start().starts_with("eval.crop_size"));
        let (crop, trained) = (cfg.eval.crop_size, cfg.augmentation.global_crops_size);
        if crop != trained && !crop_set && from_run && !which.is_baseline() {
            tracing::warn!(
                "evaluating at {crop} px (eval.crop_size) a model trained on {trained}-px global \
                 crops; pass --set eval.crop_size={trained} to evaluate at the training size"
            );
        }
        apply_threads(&cfg.runtime);
        let device = dino_model::select_device(cfg.runtime.device)?;
        Embedder::new(checkpoint, which, &cfg, &overrides, device).map_err(|e| {
            match run_weights::explain_mismatch(&e, &cfg) {
                Some(line) => {
                    tracing::debug!("{e:#}");
                    anyhow::anyhow!(line)
                }
                None => no_checkpoint(e),
            }
        })
    }
}

/// Opens `path` with the split `split` (for CIFAR-10 binary batches and IDX files, which hold
/// both splits in one folder).
fn open(path: &Path, split: &str, cfg: &Config) -> anyhow::Result<Box<dyn Dataset>> {
    open_dataset(path, DataFormat::Auto, split, &cfg.data)
        .with_context(|| format!("opening {}", path.display()))
}

#[derive(clap::Subcommand, Debug)]
pub enum EvalCmd {
    /// Weighted k-NN on L2-normalized features (official eval_knn.py).
    Knn(KnnArgs),
    /// Linear probe on frozen features (official eval_linear.py, features cached).
    Linear(LinearArgs),
    /// k-means on L2-normalised features, scored against the labels (NMI, ARI, purity,
    /// Hungarian accuracy).
    Cluster(crate::cluster::ClusterArgs),
    /// Image retrieval: mAP and recall@k of ranking a gallery (or leave-one-out) by cosine
    /// similarity of CLS or CLS+GeM descriptors.
    Retrieval(crate::retrieval::RetrievalArgs),
    /// Copy detection on a `dino data copydetect` benchmark: mAP and recall@k of finding each
    /// edited copy's original among distractors, after PCA whitening (eval_copy_detection.py).
    Copydetect(crate::copydetect::CopyDetectArgs),
}

/// The labeled train / validation pair of `dino eval`.
#[derive(clap::Args, Debug)]
pub struct TrainVal {
    /// Labeled training images (the k-NN memory bank; the probe's training set).
    #[arg(long)]
    train: PathBuf,
    /// Labeled validation images (test split for CIFAR-10 binary / IDX folders). Labels follow
    /// the class *names* of --train: a validation class folder that --train lacks is an error.
    #[arg(long)]
    val: PathBuf,
    /// Leave out (and count) validation images of classes that --train does not have, instead
    /// of failing.
    #[arg(long)]
    skip_unknown_classes: bool,
}

impl TrainVal {
    fn open(&self, cfg: &Config) -> anyhow::Result<dino_eval::features::labelled::TrainVal> {
        let unknown = if self.skip_unknown_classes {
            UnknownClass::Skip
        } else {
            UnknownClass::Error
        };
        let sets = dino_eval::features::labelled::TrainVal::open(
            &self.train,
            &self.val,
            &cfg.data,
            unknown,
        )?;
        if let Some(note) = sets.skipped_note() {
            tracing::warn!("{note}");
        }
        Ok(sets)
    }
}

#[derive(clap::Args, Debug)]
pub struct KnnArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: TrainVal,
    /// Neighbour counts (default eval.knn_k: 10,20,100,200).
    #[arg(long, value_delimiter = ',')]
    k: Option<Vec<usize>>,
    /// Vote temperature (default eval.knn_temperature: 0.07).
    #[arg(long)]
    temperature: Option<f64>,
    /// Which feature of the backbone the neighbours are found with.
    #[arg(long, value_enum, default_value = "cls")]
    feature: KnnFeature,
    /// Print the report as JSON (each score's `top5` is null with fewer than 5 classes).
    #[arg(long)]
    json: bool,
}

/// The feature `dino eval knn` compares images with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KnnFeature {
    /// The last block's normed CLS token (official eval_knn.py).
    Cls,
    /// The linear probe's feature (official eval_linear.py): the CLS tokens of the last
    /// eval.n_last_blocks blocks concatenated (4 for ViT-S), with the mean patch token when
    /// eval.avgpool_patchtokens. The earlier blocks keep more of the image's layout. Raw pixels
    /// and ResNets give their only feature.
    LastBlocks,
}

#[derive(clap::Args, Debug)]
pub struct LinearArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: TrainVal,
    /// Epochs (default eval.linear_epochs: 100).
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rate(s) at batch 256 (scaled by batch / 256), e.g. `--lr 0.1` or
    /// `--lr 0.01,0.1`: one probe per value, the best on --val reported. Default: on fewer than
    /// 10,000 training images the DINOv2 grid 1e-5 … 0.1 (the official 0.001 barely moves a
    /// probe in the few steps a small set gives); on larger sets eval.linear_lr (0.001, official
    /// eval_linear.py).
    #[arg(long, value_delimiter = ',')]
    lr: Option<Vec<f64>>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The learning rates of DINOv2's linear evaluation sweep (`eval/linear.py`,
/// `--learning-rates`), at batch 256.
const LR_GRID: [f64; 13] = [
    1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
];

/// Training sets below this size get the lr sweep by default (a probe on cached features of a
/// few thousand images costs seconds).
const SWEEP_BELOW: usize = 10_000;

pub fn run(cmd: EvalCmd) -> anyhow::Result<()> {
    match cmd {
        EvalCmd::Knn(a) => knn(a),
        EvalCmd::Linear(a) => linear(a),
        EvalCmd::Cluster(a) => crate::cluster::run(a),
        EvalCmd::Retrieval(a) => crate::retrieval::run(a),
        EvalCmd::Copydetect(a) => crate::copydetect::run(a),
    }
}

fn knn(a: KnnArgs) -> anyhow::Result<()> {
    let mut sets = Vec::new();
    if let Some(k) = &a.k {
        let list: Vec<String> = k.iter().map(usize::to_string).collect();
        sets.push(format!("eval.knn_k=[{}]", list.join(",")));
    }
    if let Some(t) = a.temperature {
        sets.push(format!("eval.knn_temperature={t}"));
    }
    let mut model = a.model;
    model.config.set.extend(sets);
    let emb = model.embedder()?;
    let sets = a.data.open(&emb.cfg)?;
    let kind = match a.feature {
        KnnFeature::LastBlocks if model.which != Source::Pixels => FeatureKind::LastBlocks {
            n: emb.cfg.eval.n_last_blocks,
            avgpool: emb.cfg.eval.avgpool_patchtokens,
        },
        _ => FeatureKind::Cls,
    };
    let opts = emb.options(kind, false)?;
    let stated = Stated::of(&opts, model.which == Source::Pixels);
    let train = emb.embed(sets.train.as_ref(), &opts)?;
    let val = emb.embed(&sets.val, &opts)?;
    let report = knn_eval(&train, &val, &KnnConfig::from_eval(&emb.cfg.eval))?;
    for note in report.capped_notes() {
        eprintln!("note: {note}");
    }
    // With fewer than 5 classes every class is in the top 5 (as soon as it got a vote): the
    // number says nothing, so it is not shown (null in JSON), as the linear probe's top-5.
    let top5_counts = report.num_classes >= 5;
    if a.json {
        let mut v = stated.json(&report)?;
        if !top5_counts {
            for s in v["scores"].as_array_mut().into_iter().flatten() {
                s["top5"] = serde_json::Value::Null;
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "weighted k-NN ({:?} features, {}, T = {}), {} train / {} val images:",
            model.which,
            stated.phrase(),
            report.temperature,
            report.n_train,
            report.n_test
        );
        for s in &report.scores {
            let top5 = if top5_counts {
                format!("{:6.2}%", s.top5)
            } else {
                format!("n/a ({} classes)", report.num_classes)
            };
            println!("  {:>3}-NN  top-1 {:6.2}%  top-5 {top5}", s.k, s.top1);
        }
    }
    Ok(())
}

fn linear(a: LinearArgs) -> anyhow::Result<()> {
    let mut model = a.model;
    if let Some(e) = a.epochs {
        model.config.set.push(format!("eval.linear_epochs={e}"));
    }
    let emb = model.embedder()?;
    let e = &emb.cfg.eval;
    let kind = if model.which == Source::Pixels {
        FeatureKind::Cls
    } else {
        FeatureKind::LastBlocks {
            n: e.n_last_blocks,
            avgpool: e.avgpool_patchtokens,
        }
    };
    let opts = emb.options(kind, false)?;
    let stated = Stated::of(&opts, model.which == Source::Pixels);
    let sets = a.data.open(&emb.cfg)?;
    let train = emb.embed(sets.train.as_ref(), &opts)?;
    let val = emb.embed(&sets.val, &opts)?;
    let base = LinearProbeConfig::from_eval(e, emb.cfg.runtime.seed);
    let lrs = match &a.lr {
        Some(l) => l.clone(),
        None if train.len() < SWEEP_BELOW => {
            tracing::info!(
                "linear probe: {} training images, so the lr is swept over the DINOv2 grid \
                 {LR_GRID:?} and the best on --val reported (--lr fixes it)",
                train.len()
            );
            LR_GRID.to_vec()
        }
        None => vec![base.base_lr],
    };
    anyhow::ensure!(
        lrs.iter().all(|l| l.is_finite() && *l > 0.0),
        "--lr: every learning rate must be a positive number, got {lrs:?}"
    );
    // One log line per epoch for a single probe; one per lr for a sweep.
    let mut best: Option<(f64, dino_eval::linear::LinearProbeReport)> = None;
    for &lr in &lrs {
        let probe = LinearProbeConfig {
            base_lr: lr,
            ..base.clone()
        };
        let (_, report) = train_linear_probe_with(&train, &val, &probe, |s| {
            if lrs.len() == 1 {
                tracing::info!(
                    "linear probe epoch {}/{}: train loss {:.4}, val top-1 {:.2}%",
                    s.epoch + 1,
                    probe.epochs,
                    s.train_loss,
                    s.val_top1
                );
            }
        })?;
        if lrs.len() > 1 {
            tracing::info!(
                "linear probe lr {lr}: best top-1 {:.2}% (epoch {}), final {:.2}%",
                report.best_top1,
                report.best_epoch + 1,
                report.final_top1
            );
        }
        // The best top-1, then the final one; a tie goes to the larger lr (later in the grid).
        let key = |r: &dino_eval::linear::LinearProbeReport| (r.best_top1, r.final_top1);
        if best.as_ref().is_none_or(|(_, b)| key(&report) >= key(b)) {
            best = Some((lr, report));
        }
    }
    let (lr, report) = best.expect("at least one lr");
    if a.json {
        let mut v = stated.json(&report)?;
        v["lr"] = serde_json::json!(lr);
        v["lrs_tried"] = serde_json::json!(lrs);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let chosen = if lrs.len() > 1 {
            format!("lr {lr}, best of {} on --val", lrs.len())
        } else {
            format!("lr {lr}")
        };
        println!(
            "linear probe ({:?} features, {}, {chosen}): final top-1 {:.2}%, best top-1 {:.2}% \
             ({} epochs)",
            model.which,
            stated.phrase(),
            report.final_top1,
            report.best_top1,
            base.epochs
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images to embed.
    #[arg(long)]
    data: PathBuf,
    /// Split for CIFAR-10 binary / IDX folders.
    #[arg(long, default_value = "train")]
    split: String,
    /// Output file: `.npy` (+ `.labels.npy`, `.paths.json`) or `.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// Write the CLS rows as the backbone gives them (the last block's CLS token after the final
    /// LayerNorm, norm about √D) instead of L2-normalized rows (norm 1, the default, as official
    /// `eval_knn.py --dump_features` saves them). The choice is recorded in `<stem>.meta.json`.
    #[arg(long)]
    raw: bool,
    /// Also store the last block's patch tokens `[N, P, D]` (after the final LayerNorm, never
    /// L2-normalized) beside the CLS features (as
    /// `<stem>.patch_tokens.npy` or tensor `patch_tokens`); the token array of `--tokens` is the
    /// general form.
    #[arg(long, conflicts_with_all = ["tokens", "layers", "per_image"])]
    patch_tokens: bool,
    /// Write the token array `[images, layers, tokens, dim]` f32 instead of CLS features:
    /// `cls` (tokens = 1), `patch` (P = h·w, row-major) or `all` (1 + P, CLS first), each block
    /// through the final LayerNorm, not L2-normalized (official get_intermediate_layers).
    /// Streamed batch by batch; the
    /// layout (grid h, w, patch size, blocks) goes to `<stem>.tokens.json` / the safetensors
    /// metadata. ViT only, except `cls` with one layer (a ResNet's pooled feature).
    #[arg(long, value_enum)]
    tokens: Option<TokenArg>,
    /// Blocks of the token array: `last` (the final block), N (the last N blocks) or `all`
    /// (every block). Implies --tokens (default cls).
    #[arg(long, value_name = "last|N|all")]
    layers: Option<dino_eval::features::tokens::Layers>,
    /// Write one `.npy` `[layers, tokens, dim]` per image into the folder --out (named after
    /// the image's path under --data, extension .npy), plus `index.json` (layout, paths,
    /// labels). Implies --tokens (default cls).
    #[arg(long)]
    per_image: bool,
    /// Number the labels by the class names of this (training) folder instead of --data's own
    /// sorted classes, so that features of a validation folder embedded on their own share the
    /// bank's labels. A class of --data that it lacks is an error.
    #[arg(long, value_name = "DIR")]
    classes_from: Option<PathBuf>,
}

/// `--tokens` values (`dino_eval::features::tokens::TokenKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenArg {
    /// The CLS token.
    Cls,
    /// The patch tokens.
    Patch,
    /// The CLS token then the patch tokens.
    All,
}

impl From<TokenArg> for TokenKind {
    fn from(t: TokenArg) -> Self {
        match t {
            TokenArg::Cls => Self::Cls,
            TokenArg::Patch => Self::Patch,
            TokenArg::All => Self::All,
        }
    }
}

pub fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    if a.tokens.is_some() || a.layers.is_some() || a.per_image {
        return embed_tokens(a);
    }
    dino_eval::features::check_path(&a.out)?;
    // The model and the data are probed before the output folder is made.
    let emb = a.model.embedder()?;
    let ds = open_labelled(&a, &emb)?;
    let _out = crate::output::prepare_file(&a.out)?;
    let opts = emb.options(FeatureKind::Cls, a.patch_tokens)?;
    let stated = Stated::of(&opts, a.model.which == Source::Pixels);
    let mut set = emb.embed(ds.as_ref(), &opts)?;
    let rows = if a.raw {
        "raw (the CLS token after the final LayerNorm)"
    } else {
        set.features = l2_rows(&set.features);
        "L2-normalized (norm 1; --raw for the LayerNorm output)"
    };
    let mut files = write_features(&a.out, &set)?;
    files.push(write_meta(&a.out, &stated, !a.raw, set.features.size()[1])?);
    eprintln!(
        "{} features of dim {} written, rows {rows}, {}:",
        set.len(),
        set.features.size()[1],
        stated.phrase()
    );
    for f in files {
        eprintln!("  {}", f.display());
    }
    Ok(())
}

/// Each row divided by its L2 norm (torch `F.normalize(x, dim=1)`: norms below 1e-12 count as
/// 1e-12), as official `eval_knn.py` normalizes features before `--dump_features` saves them.
fn l2_rows(x: &tch::Tensor) -> tch::Tensor {
    x / x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12)
}

/// `<stem>.meta.json` beside the features file: what its rows are (feature, crop, whether
/// L2-normalized), so a file read later says how it was made.
fn write_meta(out: &Path, stated: &Stated, l2: bool, dim: i64) -> anyhow::Result<PathBuf> {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("features");
    let path = out.with_file_name(format!("{stem}.meta.json"));
    let meta = serde_json::json!({
        "feature": stated.feature,
        "crop_size": stated.crop_size,
        "resize_size": stated.resize_size,
        "dim": dim,
        "l2_normalized": l2,
        "rows": if l2 {
            "CLS token after the final LayerNorm, divided by its L2 norm (norm 1)"
        } else {
            "CLS token after the final LayerNorm (raw)"
        },
    });
    std::fs::write(&path, serde_json::to_string_pretty(&meta)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `dino embed --tokens/--layers/--per-image`: the token array, streamed (a thin shell over
/// `dino_eval::features::tokens::embed_tokens`). Every argument is checked against the model before any
/// output is created.
fn embed_tokens(a: EmbedArgs) -> anyhow::Result<()> {
    if a.per_image {
        anyhow::ensure!(
            !a.out.is_file(),
            "--per-image writes into a folder, but --out {} is a file",
            a.out.display()
        );
        let non_empty = std::fs::read_dir(&a.out).is_ok_and(|mut d| d.next().is_some());
        anyhow::ensure!(
            !non_empty,
            "--per-image: the output folder {} is not empty",
            a.out.display()
        );
    } else {
        dino_eval::features::check_path(&a.out)?;
    }
    let emb = a.model.embedder()?;
    anyhow::ensure!(
        emb.source() != Source::Pixels,
        "--tokens needs a backbone: --which pixels has no tokens"
    );
    let kind = a.tokens.map_or(TokenKind::Cls, TokenKind::from);
    let layers = a.layers.unwrap_or(Layers::Last(1));
    let opts = emb.options(FeatureKind::Cls, false)?;
    let crop = opts.transform.crop_size() as usize;
    let layout = plan_tokens(emb.backbone(), kind, layers, crop, 0)?;
    let ds = open_labelled(&a, &emb)?;
    let (mut sink, _out): (Box<dyn TokenSink>, _) = if a.per_image {
        let names = per_image_names(ds.as_ref(), &a.data, ds.len())?;
        let out = crate::output::prepare_dir(&a.out)?;
        (Box::new(PerImageWriter::new(&a.out, names)), out)
    } else {
        let out = crate::output::prepare_file(&a.out)?;
        let sink: Box<dyn TokenSink> = match a.out.extension().and_then(|e| e.to_str()) {
            Some("npy") => Box::new(NpyTokenWriter::new(&a.out)),
            _ => Box::new(SafetensorsTokenWriter::new(&a.out)),
        };
        (sink, out)
    };
    let report = dino_eval::features::tokens::embed_tokens(
        emb.backbone(),
        ds.as_ref(),
        &opts,
        &layout,
        emb.device(),
        sink.as_mut(),
    )?;
    let l = &report.layout;
    let shape = if a.per_image {
        format!(
            "{} files of [{}, {}, {}]",
            l.images, l.layers, l.tokens, l.dim
        )
    } else {
        format!("{:?}", l.shape())
    };
    eprintln!(
        "tokens ({}, blocks {:?}, grid {}x{} of {} px patches) {shape} written:",
        l.token_kind.name(),
        l.blocks,
        l.grid_h,
        l.grid_w,
        l.patch_size
    );
    for f in &report.files {
        eprintln!("  {}", f.display());
    }
    Ok(())
}

/// The dataset of `dino embed`: --data with --split, labelled by --classes-from when given.
fn open_labelled(a: &EmbedArgs, emb: &Embedder) -> anyhow::Result<Box<dyn Dataset>> {
    let mut ds = open(&a.data, &a.split, &emb.cfg)?;
    if let Some(bank) = &a.classes_from {
        let bank = open(bank, "train", &emb.cfg)?;
        ds = Box::new(
            dino_data::dataset::align_classes(bank.classes(), ds, UnknownClass::Error)
                .with_context(|| {
                    format!(
                        "labelling {} by the classes of --classes-from",
                        a.data.display()
                    )
                })?,
        );
    }
    Ok(ds)
}
