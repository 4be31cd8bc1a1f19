//! Writes the batches a [`Loader`] produces to `.npy` files, so another implementation (the
//! Python wheel's tests, `crates/python/tests/`) can be compared with the Rust loader byte for
//! byte:
//!
//! ```text
//! cargo run -p dino-data --example dump_batches -- --data DIR --out DIR [--config FILE]
//!     [--set section.key=value]... [--epoch E] [--batches N] [--rank R --world-size W]
//!     [--no-shuffle]
//! ```
//!
//! The run is the trainer's: the config (a preset plus `--set` overrides, validated as
//! `dino train` validates it) gives the `[augmentation]` transform, the `[data]` layout and
//! [`LoaderOptions::from_config`]; the loader reads epoch `E` (default 0) of rank `R` of `W`.
//! For batch `k` it writes `batch_{k}_globals.npy` (`[2, B, 3, Hg, Wg]` u8),
//! `batch_{k}_locals.npy` (`[n_local, B, 3, Hl, Wl]` u8), `batch_{k}_labels.npy` and
//! `batch_{k}_indices.npy` (`[B]` i64), and prints one JSON line with the batch count and the
//! loader's counters.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dino_config::Config;
use dino_data::augmentation::DataAugmentationDino;
use dino_data::dataset::open_dataset;
use dino_data::loader::{Loader, LoaderOptions, Shard};

const USAGE: &str = "usage: dump_batches --data DIR --out DIR [--config FILE] \
    [--set section.key=value]... [--epoch E] [--batches N] [--rank R --world-size W] [--no-shuffle]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut data, mut out, mut config) = (None, None, None);
    let mut sets: Vec<String> = Vec::new();
    let (mut epoch, mut batches, mut rank, mut world_size) = (0u64, None, 0usize, 1usize);
    let mut shuffle = true;
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--config" => config = Some(PathBuf::from(value()?)),
            "--set" => sets.push(value()?),
            "--epoch" => epoch = value()?.parse()?,
            "--batches" => batches = Some(value()?.parse::<u64>()?),
            "--rank" => rank = value()?.parse()?,
            "--world-size" => world_size = value()?.parse()?,
            "--no-shuffle" => shuffle = false,
            _ => return Err(format!("unknown argument {flag}; {USAGE}").into()),
        }
    }
    let (data, out) = (data.ok_or(USAGE)?, out.ok_or(USAGE)?);
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let cfg = match &config {
        Some(path) => Config::from_file(path, &sets)?,
        None => Config::with_overrides(&sets)?,
    };

    let dataset = open_dataset(&data, cfg.data.format, &cfg.data.split, &cfg.data)?;
    let transform = DataAugmentationDino::new(&cfg.augmentation)?;
    let opts = LoaderOptions {
        epochs: epoch..epoch + 1,
        shuffle,
        shard: Shard { rank, world_size },
        ..LoaderOptions::from_config(&cfg)
    };
    let loader = Loader::spawn(Arc::from(dataset), transform, opts)?;
    let stats = loader.stats();
    std::fs::create_dir_all(&out)?;
    let mut written = 0u64;
    for batch in loader.take(batches.unwrap_or(u64::MAX) as usize) {
        let b = batch?;
        let name = |what: &str| out.join(format!("batch_{written}_{what}.npy"));
        write_npy(&name("globals"), "|u1", &b.globals_shape(), &b.globals)?;
        write_npy(&name("locals"), "|u1", &b.locals_shape(), &b.locals)?;
        let labels: Vec<u8> = b.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npy(&name("labels"), "<i8", &[b.batch_size], &labels)?;
        let indices: Vec<u8> = b.indices.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npy(&name("indices"), "<i8", &[b.batch_size], &indices)?;
        written += 1;
    }
    let s = stats.snapshot();
    println!(
        "{{\"batches\": {written}, \"failed_samples\": {}, \"distinct_failed\": {}}}",
        s.failed_samples, s.distinct_failed
    );
    Ok(())
}

/// A C-order `.npy` file (format version 1.0) of `data`, already in the bytes of `descr`
/// (`|u1` or little-endian `<i8`). Written here rather than through a crate: the header is one
/// line, and the `.npy` crates' header parsers bring a grammar crate this example does not need.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
    // of 64 bytes and ended by a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.div_ceil(64) * 64 - unpadded));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.flush()
}
