//! `dino env`: what this binary runs on.

use super::ConfigArgs;

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
    let report = dino_train::runtime::EnvReport::collect(&cfg.runtime)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
