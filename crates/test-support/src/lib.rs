//! What every dino crate's one integration-test binary (`tests/main.rs`, issue #28 item 5)
//! shares, as a dev-dependency: [`undeclared_test_files`] and [`alone!`].

use std::path::Path;

/// The `tests/*.rs` files of `tests_dir` (their stems, sorted) that `main_rs` (the text of that
/// folder's `main.rs`) does not declare with a `mod <file>;` line: with `autotests = false` such a
/// file would never be compiled or run, silently. Called by each binary's
/// `every_test_file_is_a_module` with `concat!(env!("CARGO_MANIFEST_DIR"), "/tests")` and
/// `include_str!("main.rs")`, which asserts the list is empty.
pub fn undeclared_test_files(tests_dir: &Path, main_rs: &str) -> Vec<String> {
    let declared: Vec<&str> = main_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing: Vec<String> = std::fs::read_dir(tests_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", tests_dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|stem| stem != "main" && !declared.contains(&stem.as_str()))
        .collect();
    missing.sort();
    missing
}

/// Runs the calling test in a process of its own: the first line of a test whose assertion
/// depends on what libtorch's generator draws after a `tch::manual_seed` (the same seed giving
/// the same weights twice, or PyTorch's weights for that seed). The generator is process-global,
/// and tests of every file of a binary may run in parallel threads (when `RUST_TEST_THREADS` is
/// above 1: `.cargo/config.toml` sets 1), so another file's test could draw from it in between.
#[macro_export]
macro_rules! alone {
    () => {{
        fn here() {}
        if !$crate::alone_here(std::any::type_name_of_val(&here)) {
            return;
        }
    }};
}

/// [`alone!`]'s work for the test whose `here` function has type name `marker`
/// (`<crate>::<file>::<test>::here`). In the test binary, spawns it again for this one test and
/// returns false (failing with the child's output when the test fails there); in that child,
/// returns true: run the test's body.
pub fn alone_here(marker: &str) -> bool {
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
