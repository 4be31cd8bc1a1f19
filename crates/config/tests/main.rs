//! The integration tests of `dino-config` as one test binary: every `tests/*.rs` file is a
//! module of it (issue #28 item 5). One file's tests: `cargo test --workspace --test config
//! <file>::`. A new test file gets its `mod <file>;` line below; `every_test_file_is_a_module`
//! fails naming a file without one.

mod config_md;
mod dinov2_options;
mod dinov2_preset;
mod ibot_options;
mod key_suggestion;
mod v2_combinations;

/// Every `tests/*.rs` file is a module of this binary: a file left out of the list above would
/// never be compiled or run, silently. Fails naming each such file.
#[test]
fn every_test_file_is_a_module() {
    let missing = dino_test_support::undeclared_test_files(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests")),
        include_str!("main.rs"),
    );
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs not declared in tests/main.rs: add `mod <file>;` there",
        missing.join(",")
    );
}
