#!/usr/bin/env bash
# Sets up (idempotent), checks formatting and lints, and runs the whole test suite: unit,
# integration, parity (against the virtualenv's PyTorch/Pillow) and doc tests of every crate,
# then the pytest tests of the Python wheel.
# A formatting difference or any clippy warning (missing docs included) fails it, as a test does.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start, with the seconds since this script began (where a fresh clone's time goes).
phase() { echo "== test.sh: $1 (at ${SECONDS} s)"; }
phase setup
# The wheel's tests need it installed (a release build: a dev-profile one measured no cheaper to
# compile, docs/BENCHMARKS.md).
DINO_SETUP_DATASETS=${DINO_SETUP_DATASETS:-0} DINO_SETUP_WHEEL=${DINO_SETUP_WHEEL:-1} \
  bash scripts/setup.sh
# A CI machine builds once: incremental caches would only take disk (it has little to spare).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
phase "fmt, ARCHITECTURE check"
cargo fmt --all --check
# docs/ARCHITECTURE.md names only paths and `file::item`s that exist (standard-library Python).
python3 scripts/check_architecture.py
# docs/BENCHMARKS.md is collected from docs/bench/*.md: the two agree.
python3 scripts/bench_page.py --check
phase clippy
cargo clippy --workspace --all-targets --locked -- -D warnings
# `cargo test --workspace --locked "$@"`, with the CLI's integration tests in a lane of their own
# beside the other binaries (scripts/run_tests.py says why; with arguments, the plain command).
phase "cargo tests"
python3 scripts/run_tests.py "$@"
# The Python wheel (crates/python), which setup.sh built and installed into .venv.
phase pytest
.venv/bin/python -m pytest -q crates/python/tests
phase done
