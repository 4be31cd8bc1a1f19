//! `dino env`: what this binary runs on.

use crate::args::ConfigArgs;
use dino_config::RuntimeConfig;
use dino_train::runtime::{apply_threads, Threads};
use serde::Serialize;
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
        let given = args.config.config.is_some() || !args.config.set.is_empty();
        print!("{}", text(&report, given));
    }
    Ok(())
}

/// CUDA version of the libtorch build this binary links (`unknown`/`None` for a CPU-only build).
const LIBTORCH_CUDA: &str = env!("DINO_LIBTORCH_CUDA");
/// The libtorch `lib/` folder baked into the binary's rpath.
const LIBTORCH_LIB: &str = env!("DINO_LIBTORCH_LIB");

/// Whether `libtorch_cuda.so` is mapped into this process: false on a CUDA build of libtorch
/// means the linker dropped it (see the build script), and CUDA would silently be unavailable.
fn libtorch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.contains("libtorch_cuda.so"))
        .unwrap_or(false)
}

/// What `dino env` reports: the libtorch build, CUDA, the device, threads and precision.
#[derive(Debug, Clone, Serialize)]
struct EnvReport {
    /// Version of the dino crates.
    dino_version: String,
    /// libtorch version (e.g. `2.13.0+cu130`).
    libtorch_version: String,
    /// CUDA version libtorch was built with, if any.
    libtorch_cuda: String,
    /// libtorch library folder (rpath).
    libtorch_lib: String,
    /// `libtorch_cuda.so` mapped into the process (CUDA support linked in).
    cuda_linked: bool,
    /// CUDA runtime usable (a driver and at least one device).
    cuda_available: bool,
    /// Number of CUDA devices.
    cuda_devices: i64,
    /// cuDNN usable.
    cudnn_available: bool,
    /// The device the config's `runtime.device` resolves to.
    device: String,
    /// Thread counts.
    threads: Threads,
    /// How libtorch's OpenMP threads wait between parallel regions (see `omp.rs`).
    omp_wait: String,
    /// The process's allocator settings (see `alloc.rs`).
    allocator: String,
    /// This CPU's native-bf16 flags present (`avx512_bf16`, `amx_bf16`); empty when bf16 is
    /// emulated on this CPU.
    cpu_bf16_flags: Vec<String>,
    /// What `runtime.precision = "auto"` resolves to on `device` here (`fp32` or `bf16`).
    auto_precision: String,
    /// Why `auto` resolves so.
    auto_precision_reason: String,
    /// The config's own `runtime.precision` (`fp32`, `bf16` or `auto`).
    config_precision: String,
    /// What the config's `runtime.precision` resolves to on `device` here.
    precision: String,
}

impl EnvReport {
    /// Gathers the report, applying the thread settings of `rt` first.
    ///
    /// # Errors
    /// When `runtime.device` asks for a CUDA device that does not exist.
    fn collect(rt: &RuntimeConfig) -> anyhow::Result<Self> {
        let threads = apply_threads(rt);
        let device = dino_model::select_device(rt.device)?;
        let support = dino_model::Bf16Support::detect(device);
        let auto = dino_model::resolve_precision(dino_config::Precision::Auto, support);
        Ok(Self {
            dino_version: env!("CARGO_PKG_VERSION").into(),
            libtorch_version: dino_train::runtime::LIBTORCH_VERSION.into(),
            libtorch_cuda: LIBTORCH_CUDA.into(),
            libtorch_lib: LIBTORCH_LIB.into(),
            cuda_linked: libtorch_cuda_loaded(),
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
            device: format!("{device:?}"),
            threads,
            omp_wait: crate::omp::describe(),
            allocator: crate::alloc::describe().into(),
            cpu_bf16_flags: dino_model::CpuBf16Flags::detect()
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            auto_precision: auto.resolved.to_string(),
            auto_precision_reason: auto.reason,
            config_precision: rt.precision.to_string(),
            precision: dino_model::resolve_precision(rt.precision, support)
                .resolved
                .to_string(),
        })
    }
}

/// The report as aligned `name  value` lines.
/// The report as text; `config_given` (a --config or --set) decides whether the pinned
/// precision is "this config"'s or the default's.
fn text(r: &EnvReport, config_given: bool) -> String {
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
    line(format!("omp wait        {}", r.omp_wait));
    line(format!("allocator       {}", r.allocator));
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
        line(if config_given {
            format!("                this config pins {}", r.config_precision)
        } else {
            format!(
                "                runtime.precision defaults to {} (a config or --set \
                 runtime.precision=auto picks the line above)",
                r.config_precision
            )
        });
    }
    s
}
