//! Arguments shared by several subcommands.

use anyhow::Context;
use dino_config::Config;
use std::path::PathBuf;

/// `--config FILE` and `--set key=value` shared by every command that reads a config.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// A preset TOML file (only what differs from the official defaults), e.g. configs/cifar10_cpu.toml.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Override any key: `--set optim.lr=0.001 --set model.arch=vit_tiny` (repeatable, applied in order).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The resolved, validated config (defaults ← file ← overrides).
    pub fn load(&self, extra: &[String]) -> anyhow::Result<Config> {
        if let Some(p) = &self.config {
            if let Some(found) = preset_from_repo_root(p) {
                anyhow::bail!(
                    "cannot read config file {}: no such file here ({}); the presets are paths \
                     from the repository root: --config {}",
                    p.display(),
                    std::env::current_dir().unwrap_or_default().display(),
                    crate::train::shell_word(&found.display().to_string())
                );
            }
        }
        let sets: Vec<&str> = extra
            .iter()
            .chain(self.set.iter())
            .map(String::as_str)
            .collect();
        let cfg = match &self.config {
            Some(p) => Config::from_file_noted(p, &sets),
            None => Config::from_toml_str_noted("", &sets),
        };
        // Name every source the user gave, so an error from `--set` does not blame the file.
        let sources: Vec<String> = self
            .config
            .iter()
            .map(|p| p.display().to_string())
            .chain(self.set.iter().map(|s| format!("--set {s}")))
            .collect();
        let (cfg, notes) = cfg.with_context(|| match sources.is_empty() {
            true => "invalid configuration".to_string(),
            false => format!("invalid configuration ({})", sources.join(", ")),
        })?;
        log_notes(&notes);
        Ok(cfg)
    }
}

/// Logs the defaults that followed other keys (`Config::from_toml_str_noted`), one line each.
pub fn log_notes(notes: &[String]) {
    for n in notes {
        tracing::info!("{n}");
    }
}

/// A path as a TOML string value for `--set` (quotes and backslashes escaped by `toml`).
pub fn toml_str(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// For a relative `--config` path that does not exist here but does from the repository root
/// the binary was built in (`<root>/target/<profile>/dino`): that file. The README's commands
/// (`--config configs/imagenette_cpu.toml`) are run from the root; a user elsewhere gets the
/// path to pass.
fn preset_from_repo_root(path: &std::path::Path) -> Option<PathBuf> {
    if !path.is_relative() || path.exists() {
        return None;
    }
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let root = exe.parent()?.parent()?.parent()?;
    let found = root.join(path);
    found.is_file().then_some(found)
}
