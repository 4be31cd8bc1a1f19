//! `dino`: the command-line front of the DINO crates. Thin by design: each subcommand's module
//! parses its arguments and the config, calls library functions of the dino crates, and prints
//! what they return.

mod alloc;
mod args;
mod attention;
mod attention_panel;
mod cluster;
mod config;
mod copydetect;
mod env;
mod eval;
mod export;
mod features_in;
mod launch;
mod map;
mod omp;
mod output;
mod retrieval;
mod run_weights;
mod signals;
mod stated;
mod stored_model;
mod tools;
mod train;
mod video;
mod video_segment;

use clap::{Parser, Subcommand};

/// DINO (self-DIstillation with NO labels, Caron et al. 2021) in Rust.
#[derive(Parser, Debug)]
#[command(
    name = "dino",
    version,
    about = "DINO self-supervised ViT training (Caron et al. 2021): train, evaluate (k-NN, linear \
             probe), attention maps, feature export",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Versions of dino and libtorch, the device found, CUDA devices, thread counts.
    Env(env::EnvArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Train DINO on a folder of images (CUDA when available, CPU otherwise).
    Train(train::TrainArgs),
    /// Start N worker processes of a data-parallel job: `dino launch --nproc-per-node 2 -- train ...`.
    Launch(launch::LaunchArgs),
    /// Evaluate frozen features: weighted k-NN, linear probe, k-means clusters.
    #[command(subcommand)]
    Eval(eval::EvalCmd),
    /// Write features with labels and paths: L2-normalized CLS rows by default (as official
    /// eval_knn.py --dump_features; --raw for the LayerNorm output), or token arrays (--tokens).
    Embed(eval::EmbedArgs),
    /// A 2-D map of the feature space (t-SNE or PCA) as a PNG coloured by class, with the
    /// coordinates as .npy and CSV.
    Map(map::MapArgs),
    /// Attention maps of the last block's CLS token, per head, with threshold masks.
    Attention(attention::AttentionArgs),
    /// Video: attention over a video file or frames folder, and object segmentation by label
    /// propagation on the DAVIS layout (J, F, J&F-mean).
    #[command(subcommand)]
    Video(video::VideoCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(tools::BenchCmd),
    /// Look at the augmentation.
    #[command(subcommand)]
    Augment(tools::AugmentCmd),
    /// Dataset preparation.
    #[command(subcommand)]
    Data(tools::DataCmd),
    /// Convert an official DINO PyTorch checkpoint to safetensors (uses the project's PyTorch).
    Import(tools::ImportArgs),
    /// Export the backbone as ONNX or TorchScript (dynamic image size; uses the project's PyTorch).
    Export(export::ExportArgs),
}

fn main() {
    omp::wait_passively();
    alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Env(a) => env::run(a),
        Command::Config(c) => config::run(c),
        Command::Train(a) => train::run(a),
        Command::Launch(a) => launch::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Embed(a) => eval::embed(a),
        Command::Map(a) => map::run(a),
        Command::Attention(a) => attention::run(a),
        Command::Video(c) => video::run(c),
        Command::Bench(c) => tools::bench(c),
        Command::Augment(c) => tools::augment(c),
        Command::Data(c) => tools::data(c),
        Command::Import(a) => tools::import(a),
        Command::Export(a) => export::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
