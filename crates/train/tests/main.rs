//! The integration tests of `dino-train` as one test binary: every `tests/*.rs` file is a module of
//! it, so the crate's tests compile and link once, not once per file (issue #28 item 5: ~60 test
//! binaries, most of them linking libtorch, were most of the test command's time). One file's
//! tests: `cargo test -p dino-train --test train <file>::`.
//!
//! A new test file gets its `mod <file>;` line below; `every_test_file_is_a_module` fails naming a
//! file without one. Tests of all files run in parallel threads of one process: a test must not
//! change the environment or the working directory, and one whose assertion depends on libtorch's
//! global generator runs in a process of its own ([`alone!`]). Shared helpers are in
//! `tests/common/` (`use crate::common;`).

/// Runs the calling test in a process of its own: first line of a test whose assertion depends
/// on what libtorch's generator draws after a `tch::manual_seed` (the same seed giving the same
/// weights twice, or PyTorch's weights for that seed). The generator is process-global and the
/// tests of every file of this binary run in parallel threads, so another file's test could
/// draw from it in between. In the test binary, spawns it again for this one test and returns
/// (failing with the child's output when the test fails there); in that child, runs the test.
macro_rules! alone {
    () => {{
        fn here() {}
        if !$crate::alone_here(std::any::type_name_of_val(&here)) {
            return;
        }
    }};
}

/// [`alone!`]'s work for the test whose `here` function has type name `marker`
/// (`<crate>::<file>::<test>::here`). Returns whether the test's body should run here.
fn alone_here(marker: &str) -> bool {
    const ALONE: &str = "DINO_TEST_ALONE";
    let path = marker
        .strip_suffix("::here")
        .expect("called through alone!()");
    // libtest names a test by its path without the crate's name.
    let test = &path[path.find("::").expect("a test in a module") + 2..];
    if std::env::var(ALONE).is_ok_and(|t| t == test) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(ALONE, test)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // libtest captures these and shows them on failure or under --nocapture, as the test's own.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} failed in its own process ({})",
        out.status
    );
    false
}

mod common;

mod checkpoint;
mod cls_only_method;
mod collapse;
mod crop_groups;
mod koleo;
mod loss;
mod loss_terms;
mod metrics;
mod optim;
mod optim_flat;
mod optim_rules;
mod resnet_method;
mod schedule;
mod sinkhorn;
mod teacher;

/// Every `tests/*.rs` file is a module of this binary: a file left out of the list above would
/// never be compiled or run, silently. Fails naming each such file.
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let declared: Vec<&str> = include_str!("main.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|stem| stem != "main" && !declared.contains(&stem.as_str()))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs not declared in {}/main.rs: add `mod <file>;` there",
        missing.join(","),
        dir.display()
    );
}
