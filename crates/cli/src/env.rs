//! `dino env`: what this binary runs on.

use crate::args::ConfigArgs;
use dino_train::runtime::EnvReport;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EnvArgs) -> anyhow::Result<()> {
    let cfg = args.config.load(&[])?;
    let report = EnvReport::collect(&cfg.runtime)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

/// The report as aligned `name  value` lines.
fn text(r: &EnvReport) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut s = String::new();
    // Writing into a String cannot fail.
    let mut line = |l: String| writeln!(s, "{l}").expect("write to a String");
    line(format!("dino            {}", r.dino_version));
    line(format!(
        "libtorch        {} (CUDA build: {})",
        r.libtorch_version, r.libtorch_cuda
    ));
    line(format!("libtorch lib    {}", r.libtorch_lib));
    line(format!("CUDA linked     {}", yes(r.cuda_linked)));
    line(format!(
        "CUDA available  {} ({} device(s), cuDNN {})",
        yes(r.cuda_available),
        r.cuda_devices,
        yes(r.cudnn_available)
    ));
    line(format!("device          {}", r.device));
    line(format!(
        "threads         {} cores, libtorch {}, augmentation {}",
        r.threads.cores, r.threads.torch, r.threads.data
    ));
    if r.cpu_bf16_flags.is_empty() {
        line("CPU bf16        emulated (no avx512_bf16/amx_bf16 flag)".into());
    } else {
        line(format!(
            "CPU bf16        native ({})",
            r.cpu_bf16_flags.join(", ")
        ));
    }
    line(format!(
        "precision       auto → {} on {} ({})",
        r.auto_precision, r.device, r.auto_precision_reason
    ));
    // The config's line only when it pins a value: for `auto` it is the line above.
    if r.config_precision != "auto" {
        line(format!(
            "                this config pins {}",
            r.config_precision
        ));
    }
    s
}
