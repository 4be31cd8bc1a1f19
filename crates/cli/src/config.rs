//! `dino config show`: print the fully resolved configuration.

use crate::args::ConfigArgs;

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the fully resolved configuration (defaults, preset, overrides) as TOML.
    Show(ConfigArgs),
}

pub fn run(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Show(args) => {
            let cfg = args.load(&[])?;
            print!("{}", cfg.to_toml_string());
            Ok(())
        }
    }
}
