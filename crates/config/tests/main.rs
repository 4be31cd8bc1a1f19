//! The integration tests of `dino-config` as one test binary: every `tests/*.rs` file is a
//! module of it (issue #28 item 5). One file's tests: `cargo test -p dino-config --test config
//! <file>::`. A new test file gets its `mod <file>;` line below; `every_test_file_is_a_module`
//! fails naming a file without one.

mod config_md;
mod dinov2_options;
mod dinov2_preset;

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
