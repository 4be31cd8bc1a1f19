//! Redraws a run's `curves.png` from its `metrics.jsonl`, as the trainer draws it after each
//! epoch (e.g. after the plotting code changed, or for a run copied without its PNG).
//!
//! `cargo run --release -p dino-train --example redraw_curves -- RUN_DIR [OUT.png]`
//! (ln K reference lines from the run's `config.toml` `head.out_dim`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let run = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: redraw_curves RUN_DIR [OUT.png]"))?,
    );
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| run.join("curves.png"));
    let cfg = dino_config::Config::from_file(run.join("config.toml"), &[])?;
    let records = dino_train::metrics::read_jsonl(&run.join("metrics.jsonl"))?;
    let steps = dino_train::metrics::step_records(records);
    let ln_k = (cfg.head.out_dim as f64).ln();
    dino_train::curves::plot_curves(&out, &steps, Some(ln_k), 900, 600)?;
    println!("{} ({} steps)", out.display(), steps.len());
    Ok(())
}
