//! Output paths are made ready before the long work: a command that runs for an hour must not
//! fail at its last step because its output folder is missing or read-only (CBICA/CaPTk#949:
//! features computed, then "No such file or directory" with no path). Every command probes its
//! inputs first (model, data, video, settings) and only then calls [`prepare_dir`] or
//! [`prepare_file`]; the [`OutputDir`] they return removes the folders they created when the
//! command fails before writing into them, so a refused input leaves no empty folder behind.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// The folders [`prepare_dir`] created. Dropping it removes those that are still empty, deepest
/// first (a folder something was written into stays), so hold it until the command is done:
/// `let _out = prepare_dir(..)?;`.
#[must_use = "dropping the guard removes the output folder it created while still empty"]
#[derive(Debug)]
pub struct OutputDir {
    created: Vec<PathBuf>,
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // Fails, harmlessly, on a folder that holds anything.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Creates the folder of the output file `path` and checks that a file can be written there.
///
/// # Errors
/// The folder cannot be created or written, or `path` is an existing folder; the message names
/// the path.
pub fn prepare_file(path: &Path) -> anyhow::Result<OutputDir> {
    anyhow::ensure!(
        !path.is_dir(),
        "output {} is a folder; give a file path",
        path.display()
    );
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => prepare_dir(dir),
        None => prepare_dir(Path::new(".")),
    }
}

/// Creates the output folder `dir` (and its parents) and checks that a file can be written in
/// it, by creating and removing a probe file.
///
/// # Errors
/// As [`prepare_file`].
pub fn prepare_dir(dir: &Path) -> anyhow::Result<OutputDir> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    missing.reverse();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    let guard = OutputDir { created: missing };
    let probe = dir.join(format!(".dino-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write into the output folder {}", dir.display()))?;
    // A probe that cannot be removed is harmless: the write itself is what was checked.
    let _ = std::fs::remove_file(&probe);
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_folders_are_created_and_a_folder_is_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a/b/feats.npy");
        let guard = prepare_file(&file).unwrap();
        assert!(tmp.path().join("a/b").is_dir());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("a/b")).unwrap().count(),
            0
        );
        // Nothing written: the folders made for it go again, the existing one stays.
        drop(guard);
        assert!(!tmp.path().join("a").exists());
        assert!(tmp.path().is_dir());
        // Something written: the folder stays.
        let guard = prepare_file(&file).unwrap();
        std::fs::write(&file, b"x").unwrap();
        drop(guard);
        assert!(file.is_file());
        let err = prepare_file(&tmp.path().join("a")).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        // A regular file where a folder is needed: the error names it.
        std::fs::write(tmp.path().join("blocker"), b"x").unwrap();
        let err = prepare_file(&tmp.path().join("blocker/x.npy")).unwrap_err();
        assert!(format!("{err:#}").contains("blocker"), "{err:#}");
    }
}
