//! `dino eval knn|linear` and `dino embed`: frozen features of a trained backbone.

use super::ConfigArgs;
use anyhow::Context;
use dino_config::{Config, DataFormat};
use dino_data::dataset::{open_dataset, Dataset, UnknownClass};
use dino_data::transforms::eval::EvalTransform;
use dino_eval::embed::{embed_dataset, embed_pixels, EmbedOptions, FeatureKind};
use dino_eval::features::{write_features, FeatureSet};
use dino_eval::knn::{knn_eval, KnnConfig};
use dino_eval::linear::{train_linear_probe_with, LinearProbeConfig};
use dino_train::pretrained::{load_backbone, Which};
use dino_train::runtime::apply_threads;
use std::path::{Path, PathBuf};

/// Where features come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The checkpoint's EMA teacher (official default).
    Teacher,
    /// The checkpoint's student.
    Student,
    /// The same architecture at random initialisation (seed runtime.seed): the baseline a
    /// trained network must beat.
    Random,
    /// Raw pixels of the evaluation crop, flattened.
    Pixels,
}

/// Arguments shared by every command that embeds images.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A run folder of `dino train` (evaluated with the run's own configuration, `--set`
    /// applied on top), or a `.safetensors` backbone (architecture from --config). Optional for
    /// `--which random|pixels`, which then take the architecture and crop size from --config.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Which features.
    #[arg(long, value_enum, default_value = "teacher")]
    pub which: Source,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Opens `path` with the split `split` (for CIFAR-10 binary batches and IDX files, which hold
/// both splits in one folder).
fn open(path: &Path, split: &str, cfg: &Config) -> anyhow::Result<Box<dyn Dataset>> {
    open_dataset(path, DataFormat::Auto, split, &cfg.data)
        .with_context(|| format!("opening {}", path.display()))
}

/// Embeds datasets with one model source.
pub struct Embedder {
    pub cfg: Config,
    device: tch::Device,
    source: Source,
    pretrained: Option<dino_train::pretrained::Pretrained>,
}

impl Embedder {
    pub fn new(a: &ModelArgs) -> anyhow::Result<Self> {
        let overrides: Vec<&str> = a.config.set.iter().map(String::as_str).collect();
        // A run folder carries its own configuration (crop size, architecture); --config then
        // only matters for bare .safetensors files and for baselines without a checkpoint.
        let fallback = match &a.checkpoint {
            Some(c) if c.is_dir() && a.config.config.is_none() => {
                dino_train::pretrained::run_config(c, &overrides)?
            }
            Some(_) => a.config.load(&[])?,
            None if matches!(a.which, Source::Random | Source::Pixels) => a.config.load(&[])?,
            None => anyhow::bail!(
                "--checkpoint is required for --which teacher|student (only the random and \
                 pixel baselines can do without one)"
            ),
        };
        apply_threads(&fallback.runtime);
        let device = dino_model::select_device(
            fallback
                .runtime
                .device_request()
                .map_err(anyhow::Error::msg)?,
        )?;
        let which = if a.which == Source::Student {
            Which::Student
        } else {
            Which::Teacher
        };
        // The baselines take only the architecture: no weights are read for them.
        let p = match (&a.checkpoint, a.which) {
            (Some(c), Source::Teacher | Source::Student) => {
                load_backbone(c, which, &fallback, &overrides, device)?
            }
            (Some(c), _) if c.is_dir() => {
                let cfg = dino_train::pretrained::run_config(c, &overrides)?;
                dino_train::pretrained::Pretrained::random(&cfg, device)?
            }
            _ => dino_train::pretrained::Pretrained::random(&fallback, device)?,
        };
        Ok(Self {
            cfg: p.config.clone(),
            device,
            source: a.which,
            pretrained: Some(p),
        })
    }

    /// The loaded backbone (every source but pixels has one).
    pub fn backbone(&self) -> &dino_model::VisionTransformer {
        &self.pretrained.as_ref().expect("backbone loaded").backbone
    }

    /// The device features are computed on.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    pub fn options(&self, kind: FeatureKind, patch_tokens: bool) -> anyhow::Result<EmbedOptions> {
        let e = &self.cfg.eval;
        Ok(EmbedOptions {
            batch_size: e.batch_size,
            transform: EvalTransform::new(e.crop_size, e.resize_ratio)?,
            mean: self.cfg.augmentation.mean,
            std: self.cfg.augmentation.std,
            kind,
            patch_tokens,
            limit: None,
        })
    }

    pub fn embed(&self, ds: &dyn Dataset, opts: &EmbedOptions) -> anyhow::Result<FeatureSet> {
        let (set, failed) = match (self.source, &self.pretrained) {
            (Source::Pixels, _) => embed_pixels(ds, opts, self.device)?,
            (_, Some(p)) => embed_dataset(&p.backbone, ds, opts, self.device)?,
            (_, None) => unreachable!("a backbone is loaded for every source but pixels"),
        };
        if failed > 0 {
            tracing::warn!("{failed} image(s) failed to decode and were skipped");
        }
        Ok(set)
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum EvalCmd {
    /// Weighted k-NN on L2-normalized features (official eval_knn.py).
    Knn(KnnArgs),
    /// Linear probe on frozen features (official eval_linear.py, features cached).
    Linear(LinearArgs),
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
    fn open(&self, cfg: &Config) -> anyhow::Result<dino_eval::labelled::TrainVal> {
        let unknown = if self.skip_unknown_classes {
            UnknownClass::Skip
        } else {
            UnknownClass::Error
        };
        let sets = dino_eval::labelled::TrainVal::open(&self.train, &self.val, &cfg.data, unknown)?;
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCmd) -> anyhow::Result<()> {
    match cmd {
        EvalCmd::Knn(a) => knn(a),
        EvalCmd::Linear(a) => linear(a),
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
    let emb = Embedder::new(&model)?;
    let sets = a.data.open(&emb.cfg)?;
    let opts = emb.options(FeatureKind::Cls, false)?;
    let train = emb.embed(sets.train.as_ref(), &opts)?;
    let val = emb.embed(&sets.val, &opts)?;
    let report = knn_eval(
        &train.features,
        &train.labels,
        &val.features,
        &val.labels,
        &KnnConfig::from_eval(&emb.cfg.eval),
    )?;
    for note in report.capped_notes() {
        eprintln!("note: {note}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "weighted k-NN ({:?} features, T = {}), {} train / {} val images:",
            model.which, report.temperature, report.n_train, report.n_test
        );
        for s in &report.scores {
            println!(
                "  {:>3}-NN  top-1 {:6.2}%  top-5 {:6.2}%",
                s.k, s.top1, s.top5
            );
        }
    }
    Ok(())
}

fn linear(a: LinearArgs) -> anyhow::Result<()> {
    let mut model = a.model;
    if let Some(e) = a.epochs {
        model.config.set.push(format!("eval.linear_epochs={e}"));
    }
    let emb = Embedder::new(&model)?;
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
    let sets = a.data.open(&emb.cfg)?;
    let train = emb.embed(sets.train.as_ref(), &opts)?;
    let val = emb.embed(&sets.val, &opts)?;
    let probe = LinearProbeConfig::from_eval(e, emb.cfg.runtime.seed);
    let (_, report) = train_linear_probe_with(
        &train.features,
        &train.labels,
        &val.features,
        &val.labels,
        &probe,
        |s| {
            tracing::info!(
                "linear probe epoch {}: val top-1 {:.2}%",
                s.epoch,
                s.val_top1
            );
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "linear probe: final top-1 {:.2}%, best top-1 {:.2}% ({} epochs)",
            report.final_top1, report.best_top1, probe.epochs
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
    /// Also store the last block's patch tokens.
    #[arg(long)]
    patch_tokens: bool,
    /// Number the labels by the class names of this (training) folder instead of --data's own
    /// sorted classes, so that features of a validation folder embedded on their own share the
    /// bank's labels. A class of --data that it lacks is an error.
    #[arg(long, value_name = "DIR")]
    classes_from: Option<PathBuf>,
}

pub fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    dino_eval::features::check_path(&a.out)?;
    super::output::prepare_file(&a.out)?;
    let emb = Embedder::new(&a.model)?;
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
    let set = emb.embed(ds.as_ref(), &emb.options(FeatureKind::Cls, a.patch_tokens)?)?;
    let files = write_features(&a.out, &set)?;
    eprintln!(
        "{} features of dim {} written:",
        set.len(),
        set.features.size()[1]
    );
    for f in files {
        eprintln!("  {}", f.display());
    }
    Ok(())
}
