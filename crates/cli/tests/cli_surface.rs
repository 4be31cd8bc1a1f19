//! The command-line surface of `dino` is pinned: for the root and every subcommand (and
//! sub-subcommand), its usage line, subcommands, positional arguments and options (flag names,
//! value names, defaults, possible values) equal `cli_surface.txt`. Help *texts* are left out,
//! so documentation can change freely; a renamed, removed or added flag fails here.
//!
//! The snapshot was generated from the binary built before the `dino` binary moved out of
//! dino-train into this crate, which is how the move is shown to have changed no flag. After an
//! intended change, regenerate it:
//!
//! ```sh
//! DINO_CLI_SURFACE_WRITE=1 cargo test --workspace --test cli cli_surface::
//! ```
//!
//! `DINO_CLI_SURFACE_BIN=/path/to/dino` reads the surface of another build instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn binary() -> PathBuf {
    std::env::var_os("DINO_CLI_SURFACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dino")))
}

fn snapshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli_surface.txt")
}

/// `dino <path> -h`: the short help, one line per option unless clap puts every description on
/// its own line (it does when a flag is long).
fn help(bin: &Path, path: &[String]) -> String {
    let out = Command::new(bin)
        .args(path)
        .arg("-h")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "dino {} -h failed:\n{}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The bracketed tags clap appends to a description that belong to the surface.
fn tags(desc: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = desc;
    while let Some(start) = rest.find('[') {
        let tail = &rest[start..];
        let Some(end) = tail.find(']') else { break };
        let tag = &tail[..=end];
        if ["[default: ", "[possible values: ", "[aliases: "]
            .iter()
            .any(|p| tag.starts_with(p))
        {
            found.push(tag);
        }
        rest = &tail[end + 1..];
    }
    found
}

/// Appends the surface of `dino <path>` and of its subcommands, depth first, to `out`.
fn surface(bin: &Path, path: &[String], out: &mut Vec<String>) {
    let text = help(bin, path);
    let mut name = vec!["dino".to_string()];
    name.extend(path.iter().cloned());
    out.push(format!("## {}", name.join(" ")));
    // (section, spec, description); a description may continue on deeper-indented lines.
    let mut entries: Vec<(String, String, String)> = Vec::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            // The program name is argv[0]'s file name; the rest is the usage proper.
            let rest = usage.split_once(' ').map(|(_, r)| r);
            out.push(format!(
                "usage: dino{}",
                rest.map(|r| format!(" {r}")).unwrap_or_default()
            ));
            continue;
        }
        if let Some(s) = line
            .strip_suffix(':')
            .filter(|s| ["Commands", "Arguments", "Options"].contains(s))
        {
            section = Some(s.to_string());
            continue;
        }
        let Some(sec) = &section else { continue };
        let stripped = line.trim();
        if stripped.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 && (sec != "Options" || stripped.starts_with('-')) {
            let (spec, desc) = stripped.split_once("  ").unwrap_or((stripped, ""));
            entries.push((
                sec.clone(),
                spec.trim().to_string(),
                desc.trim().to_string(),
            ));
        } else if let Some(last) = entries.last_mut() {
            last.2.push(' ');
            last.2.push_str(stripped);
        }
    }
    let mut subcommands = Vec::new();
    for (sec, spec, desc) in entries {
        if sec == "Commands" {
            if spec != "help" {
                out.push(format!("command {spec}"));
                subcommands.push(spec);
            }
            continue;
        }
        let kind = if sec == "Arguments" {
            "argument"
        } else {
            "option"
        };
        let mut line = format!("{kind} {spec}");
        for tag in tags(&desc) {
            line.push(' ');
            line.push_str(tag);
        }
        out.push(line);
    }
    for sub in subcommands {
        let mut p = path.to_vec();
        p.push(sub);
        surface(bin, &p, out);
    }
}

#[test]
fn flags_of_every_command_match_the_snapshot() {
    let mut lines = Vec::new();
    surface(&binary(), &[], &mut lines);
    let got = lines.join("\n") + "\n";
    if std::env::var_os("DINO_CLI_SURFACE_WRITE").is_some() {
        std::fs::write(snapshot_path(), &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(snapshot_path()).unwrap();
    if got != want {
        let want_lines: Vec<&str> = want.lines().collect();
        let got_lines: Vec<&str> = got.lines().collect();
        let missing: Vec<&&str> = want_lines
            .iter()
            .filter(|l| !got_lines.contains(l))
            .collect();
        let added: Vec<&&str> = got_lines
            .iter()
            .filter(|l| !want_lines.contains(l))
            .collect();
        panic!(
            "the CLI surface changed (see the top of this file to regenerate after an intended \
             change)\nmissing: {missing:#?}\nadded: {added:#?}\nfull surface:\n{got}"
        );
    }
}

#[test]
fn every_command_is_covered() {
    // The walk follows `Commands:` sections, so a new subcommand is pinned as soon as it exists;
    // this guards the walk itself against a help format it no longer understands.
    let want = std::fs::read_to_string(snapshot_path()).unwrap();
    let sections = want.lines().filter(|l| l.starts_with("## ")).count();
    assert!(sections >= 18, "only {sections} commands in the snapshot");
    assert!(want.contains("## dino eval knn\n"));
    assert!(want.contains("option --which <WHICH> [default: teacher]"));
}
