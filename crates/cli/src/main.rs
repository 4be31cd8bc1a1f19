//! `dino`: the command-line front of the DINO trainer. Thin by design: it parses the CLI and the
//! config and calls library functions of the dino crates.

mod cli;

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
    Env(cli::env::EnvArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(cli::config::ConfigCmd),
    /// Train DINO on a folder of images (CUDA when available, CPU otherwise).
    Train(cli::train::TrainArgs),
    /// Start N worker processes of a data-parallel job: `dino launch --nproc-per-node 2 -- train ...`.
    Launch(cli::launch::LaunchArgs),
    /// Evaluate frozen features: weighted k-NN or linear probe.
    #[command(subcommand)]
    Eval(cli::eval::EvalCmd),
    /// Write features (normalized CLS, optionally patch tokens) with labels and paths.
    Embed(cli::eval::EmbedArgs),
    /// Attention maps of the last block's CLS token, per head, with threshold masks.
    Attention(cli::attention::AttentionArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cli::tools::BenchCmd),
    /// Look at the augmentation.
    #[command(subcommand)]
    Augment(cli::tools::AugmentCmd),
    /// Dataset preparation.
    #[command(subcommand)]
    Data(cli::tools::DataCmd),
    /// Convert an official DINO PyTorch checkpoint to safetensors (uses the project's PyTorch).
    Import(cli::tools::ImportArgs),
}

fn main() {
    dino_train::runtime::keep_freed_memory();
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
        Command::Env(a) => cli::env::run(a),
        Command::Config(c) => cli::config::run(c),
        Command::Train(a) => cli::train::run(a),
        Command::Launch(a) => cli::launch::run(a),
        Command::Eval(c) => cli::eval::run(c),
        Command::Embed(a) => cli::eval::embed(a),
        Command::Attention(a) => cli::attention::run(a),
        Command::Bench(c) => cli::tools::bench(c),
        Command::Augment(c) => cli::tools::augment(c),
        Command::Data(c) => cli::tools::data(c),
        Command::Import(a) => cli::tools::import(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
