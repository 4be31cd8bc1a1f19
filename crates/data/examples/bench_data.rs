//! Loader throughput on a folder until `dino bench data` is wired:
//! `cargo run --release -p dino-data --example bench_data -- DIR [batch] [batches] [threads]`.
//! Prints the [`dino_data::bench::BenchReport`] as JSON.

use dino_data::bench::{run_bench, BenchOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let data = args
        .first()
        .ok_or("usage: bench_data DIR [batch] [batches] [threads]")?;
    let opts = BenchOptions {
        batch_size: num(1, 64)?,
        batches: num(2, 20)?,
        threads: num(3, 0)?,
        ..BenchOptions::new(data)
    };
    let report = run_bench(&opts)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
