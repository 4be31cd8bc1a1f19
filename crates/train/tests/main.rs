//! The integration tests of `dino-train` as one test binary: every `tests/*.rs` file is a module of
//! it, so the crate's tests compile and link once, not once per file (issue #28 item 5: ~60 test
//! binaries, most of them linking libtorch, were most of the test command's time). One file's
//! tests: `cargo test --workspace --test train <file>::`.
//!
//! A new test file gets its `mod <file>;` line below; `every_test_file_is_a_module` fails naming a
//! file without one. Tests of all files share one process (and its threads when `RUST_TEST_THREADS` > 1;
//! `.cargo/config.toml` sets 1): a test must not change the environment or the working directory, and one whose assertion depends on libtorch's
//! global generator runs in a process of its own ([`alone!`]). Shared helpers are in
//! `tests/common/` (`use crate::common;`).

#[macro_use]
extern crate dino_test_support;

mod common;

mod checkpoint;
mod cls_only_method;
mod collapse;
mod crop_groups;
mod epoch_sums;
mod ibot_loss;
mod koleo;
mod loss;
mod loss_terms;
mod metrics;
mod optim;
mod optim_flat;
mod optim_rules;
mod overlap_teacher;
mod pack_crop_groups;
mod resnet_method;
mod schedule;
mod sinkhorn;
mod teacher;

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
