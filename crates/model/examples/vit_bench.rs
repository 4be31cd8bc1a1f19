//! Forward + backward throughput of the ViT backbone on the CPU, printed as one JSON line.
//!
//! `cargo run --release -p dino-model --example vit_bench -- --arch vit_small --batch 8 --threads 2`
//! (`benches/vit_torch_bench.py` runs this beside PyTorch eager and reports the ratio.)

use dino_model::{VisionTransformer, VitConfig};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arch: String = arg(&args, "--arch", "vit_small".to_string());
    let batch: i64 = arg(&args, "--batch", 8);
    let threads: i32 = arg(&args, "--threads", 2);
    let iters: usize = arg(&args, "--iters", 5);
    let warmup: usize = arg(&args, "--warmup", 2);
    let size: i64 = arg(&args, "--size", 224);
    let patch: i64 = arg(&args, "--patch", 16);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let cfg = match arch.as_str() {
        "vit_tiny" => VitConfig::vit_tiny(patch),
        "vit_small" => VitConfig::vit_small(patch),
        "vit_base" => VitConfig::vit_base(patch),
        other => return Err(format!("unknown arch {other}").into()),
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VisionTransformer::new(&vs.root(), &cfg)?;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
    let step = || -> Result<(), Box<dyn std::error::Error>> {
        let y = vit.forward_t(&x, true)?;
        y.square().mean(Kind::Float).backward();
        for v in vs.trainable_variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        Ok(())
    };
    for _ in 0..warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\":\"tch\",\"arch\":\"{arch}\",\"patch\":{patch},\"size\":{size},\"batch\":{batch},\
         \"threads\":{threads},\"iters\":{iters},\"median_s\":{median:.4},\"min_s\":{:.4},\
         \"images_per_s\":{:.3}}}",
        times[0],
        batch as f64 / median
    );
    Ok(())
}
