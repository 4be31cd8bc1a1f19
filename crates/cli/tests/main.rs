//! The integration tests of `dino-cli` as one test binary: every `tests/*.rs` file is a module of
//! it, so the crate's tests compile and link once, not once per file (issue #28 item 5: ~60 test
//! binaries, most of them linking libtorch, were most of the test command's time). One file's
//! tests: `cargo test -p dino-cli --test cli <file>::`.
//!
//! A new test file gets its `mod <file>;` line below; `every_test_file_is_a_module` fails naming a
//! file without one. Tests of all files run in parallel threads of one process: a test must not
//! change the environment or the working directory. Shared helpers are in `tests/common/` (`use
//! crate::common;`).

mod common;

mod accumulation;
mod bench_train_cli;
mod bf16_cpu;
mod cases_cli;
mod cli_surface;
mod collapse_cli;
mod copydetect_cli;
mod crop_groups_cli;
mod dinov2_import_cli;
mod distributed;
mod eval_cli;
mod export_cli;
mod faults_cli;
mod feature_space_cli;
mod first_hour;
mod first_hour_2;
mod init_from_cli;
mod non_finite_cli;
mod resume;
mod supervised_cli;
mod tokens_cli;
mod video_cli;

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
