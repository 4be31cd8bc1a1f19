#!/usr/bin/env bash
# The main job: set up (idempotent), build, and show what the trainer runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p dino-train
./target/release/dino env
./target/release/dino config show --config configs/fashion_mnist_cpu.toml
