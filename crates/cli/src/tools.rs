//! Data and weight tools: `dino bench data`, `dino augment preview`, `dino data cifar10`,
//! `dino import`.

use crate::args::{toml_str, ConfigArgs};
use anyhow::Context;
use dino_config::DataFormat;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Throughput of the multi-crop data pipeline (decode + augmentation), images/s and crops/s.
    Data(BenchDataArgs),
    /// Images/s of the full DINO training step (teacher, student forward/backward, loss,
    /// clipping, optimizer, EMA) on synthetic crops on the device and/or through the real loader.
    Train(BenchTrainArgs),
}

/// Which inputs `dino bench train` times.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchInputArg {
    /// Fixed random crops on the device: the model-bound speed.
    Synthetic,
    /// The dataset through the multi-crop loader: the end-to-end speed (needs --data).
    Loader,
    /// Synthetic, then loader.
    Both,
}

#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    /// Model, crops, batch, precision and device from a config (default: the official ViT-S/16 recipe).
    #[command(flatten)]
    config: ConfigArgs,
    /// Image folder (or CIFAR-10 / IDX folder) for `--input loader|both` (sets data.path).
    #[arg(long)]
    data: Option<PathBuf>,
    /// What feeds the step.
    #[arg(long, value_enum, default_value_t = BenchInputArg::Synthetic)]
    input: BenchInputArg,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Print one JSON line per input.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct BenchDataArgs {
    /// Image folder (or CIFAR-10 / IDX folder).
    #[arg(long)]
    data: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed batches.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Augmentation threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Crop settings and the rest from a config (default: the official ones).
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn bench(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Data(a) => bench_data(a),
        BenchCmd::Train(a) => bench_train(a),
    }
}

fn bench_train(a: BenchTrainArgs) -> anyhow::Result<()> {
    use dino_train::bench::{run_train_bench, BenchInput, TrainBenchOptions};
    let extra: Vec<String> = a
        .data
        .iter()
        .map(|d| format!("data.path={}", toml_str(d)))
        .collect();
    let cfg = a.config.load(&extra)?;
    let inputs: &[BenchInput] = match a.input {
        BenchInputArg::Synthetic => &[BenchInput::Synthetic],
        BenchInputArg::Loader => &[BenchInput::Loader],
        BenchInputArg::Both => &[BenchInput::Synthetic, BenchInput::Loader],
    };
    if inputs.contains(&BenchInput::Loader) {
        anyhow::ensure!(
            !cfg.data.path.is_empty(),
            "--input {:?} needs a dataset: pass --data DIR (or set data.path)",
            a.input
        );
    }
    for &input in inputs {
        let opts = TrainBenchOptions {
            input,
            warmup: a.warmup,
            steps: a.steps,
        };
        let mut r = run_train_bench(&cfg, &opts)?;
        r.allocator = Some(crate::alloc::describe().to_string());
        r.omp_wait = Some(crate::omp::describe());
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:>9}: {:.1} images/s (step median {:.1} ms, min {:.1} ms; {} steps of {} on {:?}, {}, data wait {:.1} %)",
                r.input,
                r.images_per_s,
                r.step_ms.median,
                r.step_ms.min,
                r.steps,
                r.batch_size,
                r.device,
                r.precision,
                r.data_wait_fraction * 100.0
            );
            let p = &r.phase_ms;
            println!(
                "{:>9}  per step: forward+backward {:.1} ms (forward {:.1}, backward {:.1}), bookkeeping {:.1} ms (loss statistics {:.1}, clipping + optimizer {:.1}, EMA {:.1}), data wait {:.1} ms",
                "",
                p.forward_backward,
                p.forward,
                p.backward,
                p.bookkeeping,
                p.statistics,
                p.optimizer,
                p.ema,
                p.data_wait
            );
        }
    }
    Ok(())
}

fn bench_data(a: BenchDataArgs) -> anyhow::Result<()> {
    let cfg = a.config.load(&[])?;
    let mut opts = dino_data::bench::BenchOptions::new(&a.data);
    opts.batch_size = a.batch;
    opts.batches = a.batches;
    opts.threads = a.threads;
    opts.seed = cfg.runtime.seed;
    opts.augmentation = cfg.augmentation.clone();
    opts.data_config = cfg.data.clone();
    let report = dino_data::bench::run_bench(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{:.1} images/s, {:.1} crops/s ({} batches of {}, {} threads, {:.2} s, {} failed)",
            report.images_per_s,
            report.crops_per_s,
            report.batches,
            report.batch_size,
            report.threads,
            report.wall_s,
            report.failed
        );
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum AugmentCmd {
    /// Save a grid of a few images with all their crops.
    Preview(PreviewArgs),
}

#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    /// Image folder.
    #[arg(long)]
    data: PathBuf,
    /// Output PNG.
    #[arg(long, default_value = "crops.png")]
    out: PathBuf,
    /// Number of images (rows).
    #[arg(long, default_value_t = 4)]
    images: usize,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn augment(cmd: AugmentCmd) -> anyhow::Result<()> {
    let AugmentCmd::Preview(a) = cmd;
    let cfg = a.config.load(&[])?;
    let ds =
        dino_data::dataset::open_dataset(&a.data, DataFormat::Auto, &cfg.data.split, &cfg.data)?;
    let t = dino_data::augmentation::DataAugmentationDino::new(&cfg.augmentation)?;
    let _out = crate::output::prepare_file(&a.out)?;
    let grid = dino_data::preview::render_grid(ds.as_ref(), &t, a.images, cfg.runtime.seed)?;
    grid.save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {} ({}x{})",
        a.out.display(),
        grid.width(),
        grid.height()
    );
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum DataCmd {
    /// Extract the CIFAR-10 JPEG tarball into an ImageFolder (`OUT/train`, `OUT/test`).
    Cifar10 {
        /// `cifar-10-jpeg.tar.gz`.
        #[arg(long = "from")]
        from: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate a copy-detection benchmark from a folder of photos: originals with strongly
    /// edited copies (crop, rescale, blur, rotation, colour, text, patch; JPEG 10-50),
    /// distractors and a whitening set, for `dino eval copydetect`.
    Copydetect(CopyDetectGenArgs),
    /// Generate a DAVIS-layout video with exact masks for `dino video segment`: elliptical
    /// cut-outs of two photos moving over a third (seeded), every frame annotated.
    VideoSeq(VideoSeqArgs),
}

#[derive(clap::Args, Debug)]
pub struct VideoSeqArgs {
    /// Folder of photos (searched recursively).
    #[arg(long = "from")]
    from: PathBuf,
    /// DAVIS root to write into (`JPEGImages/480p/<name>`, `Annotations/480p/<name>`).
    #[arg(long)]
    out: PathBuf,
    /// Sequence name (its folders must not exist yet).
    #[arg(long, default_value = "synth")]
    name: String,
    /// Frames.
    #[arg(long, default_value_t = 24)]
    frames: usize,
    /// Frame width.
    #[arg(long, default_value_t = 480)]
    width: u32,
    /// Frame height.
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// Seed of the photo choice, object sizes and paths.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct CopyDetectGenArgs {
    /// Folder of photos (searched recursively), e.g. an ImageFolder.
    #[arg(long = "from")]
    from: PathBuf,
    /// Output folder (new, or empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the selection and the edits.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Photos that get copies.
    #[arg(long, default_value_t = 100)]
    originals: usize,
    /// Edited copies per original.
    #[arg(long, default_value_t = 2)]
    copies: usize,
    /// Distractor photos in the database.
    #[arg(long, default_value_t = 500)]
    distractors: usize,
    /// Photos to learn the whitening on.
    #[arg(long, default_value_t = 500)]
    whitening: usize,
    /// Distinct edits chained in each copy (1-7), before the JPEG re-compression.
    #[arg(long, default_value_t = 3)]
    edits: usize,
}

pub fn data(cmd: DataCmd) -> anyhow::Result<()> {
    let (from, out) = match cmd {
        DataCmd::Cifar10 { from, out } => (from, out),
        DataCmd::Copydetect(a) => return copydetect(a),
        DataCmd::VideoSeq(a) => return video_seq(a),
    };
    anyhow::ensure!(
        from.is_file(),
        "--from {}: no such file (the CIFAR-10 JPEG tarball, cifar-10-jpeg.tar.gz)",
        from.display()
    );
    let _out = crate::output::prepare_dir(&out)?;
    let n = dino_data::dataset::extract_cifar10_tarball(&from, &out)?;
    eprintln!("extracted {n} images into {}", out.display());
    Ok(())
}

fn copydetect(a: CopyDetectGenArgs) -> anyhow::Result<()> {
    let spec = dino_data::copydetect::CopyDetectSpec {
        originals: a.originals,
        copies: a.copies,
        distractors: a.distractors,
        whitening: a.whitening,
        edits_per_copy: a.edits,
        seed: a.seed,
        ..Default::default()
    };
    let s = dino_data::copydetect::generate(&a.from, &a.out, &spec)?;
    eprintln!(
        "wrote {}: {} originals, {} copies, {} distractors, {} whitening photos",
        a.out.display(),
        s.originals,
        s.queries,
        s.distractors,
        s.whitening
    );
    Ok(())
}

fn video_seq(a: VideoSeqArgs) -> anyhow::Result<()> {
    for sub in ["JPEGImages/480p", "Annotations/480p"] {
        let d = a.out.join(sub).join(&a.name);
        anyhow::ensure!(!d.exists(), "{} exists already", d.display());
    }
    anyhow::ensure!(
        a.from.is_dir(),
        "--from {}: no such folder of photos",
        a.from.display()
    );
    let _out = crate::output::prepare_dir(&a.out)?;
    let spec = dino_eval::video::synth::SynthSpec {
        name: a.name.clone(),
        frames: a.frames,
        width: a.width,
        height: a.height,
        seed: a.seed,
    };
    let used = dino_eval::video::synth::generate(&a.from, &a.out, &spec)?;
    eprintln!(
        "wrote {} frames of {} into {} (background {}, objects {} and {})",
        a.frames,
        a.name,
        a.out.display(),
        used[0].display(),
        used[1].display(),
        used[2].display()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// An official DINO `.pth` (backbone-only, or a full checkpoint with student/teacher).
    #[arg(long = "from")]
    from: PathBuf,
    /// Output `.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// Entry of a full checkpoint (default: teacher when present).
    #[arg(long)]
    key: Option<String>,
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.from.is_file(),
        "--from {}: no such file (an official DINO .pth checkpoint)",
        a.from.display()
    );
    let _out = crate::output::prepare_file(&a.out)?;
    let r = dino_model::import_official(&a.from, &a.out, a.key.as_deref())?;
    eprintln!("{}", r.describe(&a.from, &a.out));
    Ok(())
}
