//! Helpers shared by the `dino` binary's integration tests: running it, and a tiny training run
//! (`tiny`).
#![allow(dead_code)]

pub mod tiny;

use std::process::{Command, Output};

/// The binary under test.
pub const DINO: &str = env!("CARGO_BIN_EXE_dino");

/// Runs `dino args` to completion.
pub fn dino(args: &[&str]) -> Output {
    Command::new(DINO).args(args).output().unwrap()
}

/// Runs `dino args` and asserts that it succeeded (the failure shows its stderr).
pub fn ok(args: &[&str]) -> Output {
    let out = dino(args);
    assert!(
        out.status.success(),
        "dino {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
