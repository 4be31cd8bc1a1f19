#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite: unit, integration, parity (against the
# virtualenv's PyTorch/Pillow) and doc tests of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."
DINO_SETUP_DATASETS=${DINO_SETUP_DATASETS:-0} bash scripts/setup.sh
# A CI machine builds once: incremental caches would only take disk (it has little to spare).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
cargo test --workspace --locked "$@"
