//! Running this crate's Python scripts (compiled in, so the library needs no repository checkout
//! at run time) with the project's Python: the one place that starts an interpreter, feeds it a
//! script and reads its one-line JSON report.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python used for conversions and exports: `$DINO_PYTHON` if set; else the first
/// `.venv/bin/python` found walking up from the running executable's folder (a binary in
/// `target/release/` finds the repository's `.venv`), then from the working directory (a binary
/// copied elsewhere, run from the repository as the README does); else `python3` from `PATH`.
pub fn find_python() -> PathBuf {
    if let Some(p) = std::env::var_os("DINO_PYTHON") {
        return PathBuf::from(p);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    for start in exe_dir.iter().chain(cwd.iter()) {
        for dir in start.ancestors() {
            let cand = dir.join(".venv").join("bin").join("python");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("python3")
}

/// The error of a script that exited with `status`: its last stderr line, and where that line
/// says a module is missing (a `python3` without torch), how to point at the project's Python.
fn failure_message(python: &Path, status: &str, stderr: &str) -> String {
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    let hint = if last.contains("ModuleNotFoundError") {
        "; that Python lacks a package the conversion needs: set DINO_PYTHON to the project's \
         .venv/bin/python, run from the repository, or run scripts/setup.sh"
    } else {
        ""
    };
    format!("{} exited with {status}: {last}{hint}", python.display())
}

/// A script of this crate: its file name (other scripts import it by that name) and text.
pub(crate) type Script = (&'static str, &'static str);

/// Writes `scripts` into a fresh temporary folder, runs the first with `args` and returns the
/// last stdout line that parses as JSON, with the interpreter used.
///
/// # Errors
/// A message saying why: Python cannot start (with the hint to set `DINO_PYTHON` or run
/// `scripts/setup.sh`), the script failed (its last stderr line), or it printed no JSON report.
pub(crate) fn run_script(
    scripts: &[Script],
    args: &[&std::ffi::OsStr],
) -> Result<(serde_json::Value, PathBuf), String> {
    let python = find_python();
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary folder: {e}"))?;
    for (name, text) in scripts {
        std::fs::write(dir.path().join(name), text)
            .map_err(|e| format!("writing {name} to {}: {e}", dir.path().display()))?;
    }
    let main: &Path = scripts[0].0.as_ref();
    let output = Command::new(&python)
        .arg(dir.path().join(main))
        .args(args)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}); set DINO_PYTHON or run scripts/setup.sh",
                python.display()
            )
        })?;
    if !output.status.success() {
        return Err(failure_message(
            &python,
            &output.status.to_string(),
            &String::from_utf8_lossy(&output.stderr),
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let report = serde_json::from_str(line).map_err(|e| format!("bad report {line:?}: {e}"))?;
    Ok((report, python))
}

#[cfg(test)]
mod tests {
    use super::failure_message;
    use std::path::Path;

    #[test]
    fn a_missing_module_says_which_python_to_use() {
        let stderr = "Traceback (most recent call last):\n  File \"x.py\"\nModuleNotFoundError: No module named 'torch'\n";
        let m = failure_message(Path::new("python3"), "exit status: 1", stderr);
        assert!(
            m.starts_with("python3 exited with exit status: 1: ModuleNotFoundError"),
            "{m}"
        );
        assert!(
            m.contains("DINO_PYTHON") && m.contains("scripts/setup.sh"),
            "{m}"
        );
        let other = failure_message(Path::new("python3"), "exit status: 1", "ValueError: bad\n");
        assert_eq!(other, "python3 exited with exit status: 1: ValueError: bad");
    }
}
