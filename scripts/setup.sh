#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, idempotently and quietly:
#   - a project-local Python virtualenv (.venv) with torch==2.13.0 (the libtorch that tch 0.26
#     links against), torchvision, pillow, numpy and scikit-learn (the parity-test references),
#     onnx, onnxscript and onnxruntime (`dino export --format onnx` and its test);
#   - with DINO_SETUP_WHEEL=1, the `dino_multicrop` wheel of crates/python (maturin and pytest,
#     pinned, from PyPI), rebuilt when its Rust sources change;
#   - Debian's `dataset-fashion-mnist` package (the README's main job), when apt is usable;
#   - Debian's `fonts-dejavu-core`, the font of the text in a run's curves.png (without it the
#     curves are drawn without text), when apt is usable.
# After it, plain `cargo build` / `cargo test` find libtorch through .cargo/config.toml, and every
# binary carries an rpath to it (see crates/*/build.rs), so no LD_LIBRARY_PATH is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
VENV=.venv
stamp="$VENV/.dino-setup-$TORCH_VERSION-$TORCHVISION_VERSION"

log() { [ "${DINO_SETUP_QUIET:-0}" = 1 ] || echo "setup: $*" >&2; }

if [ ! -f "$stamp" ]; then
  PY=${PYTHON:-python3}
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
  fi
  log "installing torch==$TORCH_VERSION, torchvision==$TORCHVISION_VERSION, pillow, numpy (about a minute)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" pillow numpy scikit-learn
  "$VENV/bin/python" -c "import torch, torchvision, PIL, numpy; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__"
  touch "$stamp"
fi
# Packages that came later (scikit-learn: clustering references; onnx, onnxscript, onnxruntime:
# `dino export --format onnx` and its check): a virtualenv set up before them gets them here.
for pkg in sklearn:scikit-learn onnx:onnx onnxscript:onnxscript onnxruntime:onnxruntime; do
  if ! "$VENV/bin/python" -c "import ${pkg%%:*}" 2>/dev/null; then
    log "installing ${pkg#*:}"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pkg#*:}"
  fi
done
# A stable path for .cargo/config.toml, whatever the Python minor version.
[ -e "$VENV/libtorch" ] || ln -sfn "$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')" "$VENV/libtorch"

# The data pipeline as a Python module (crates/python, `import dino_multicrop`), with
# DINO_SETUP_WHEEL=1 (scripts/test.sh sets it; the main job does not need the wheel, so it does
# not pay for its build): maturin builds it (release profile, no libtorch) and installs it into
# the virtualenv, where the pytest tests of scripts/test.sh import it. Rebuilt only when a source
# it is built from changed: the stamp holds a hash of crates/python, crates/data and
# crates/config (sources and manifests), the workspace manifest, Cargo.lock and
# .cargo/config.toml.
MATURIN_VERSION=1.16.0
PYTEST_VERSION=9.2.0
pip_pin() { # $1 = distribution, $2 = version: installs it unless that version is there
  "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null ||
    { log "installing $1==$2"; "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$1==$2"; }
}
if [ "${DINO_SETUP_WHEEL:-0}" = 1 ]; then
  pip_pin maturin "$MATURIN_VERSION"
  pip_pin pytest "$PYTEST_VERSION"
  wheel_hash=$( { find crates/python crates/data crates/config -path crates/python/tests -prune -o \
      -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.pyi' \) -print; \
      echo Cargo.toml; echo Cargo.lock; echo .cargo/config.toml; } | LC_ALL=C sort | xargs sha256sum |
      sha256sum | cut -c1-16)
  wheel_stamp="$VENV/.dino-multicrop-$wheel_hash"
  if [ ! -f "$wheel_stamp" ] || ! "$VENV/bin/python" -c "import dino_multicrop" 2>/dev/null; then
    if command -v cargo >/dev/null 2>&1; then
      log "building and installing the dino_multicrop wheel (maturin develop --release)"
      wheel_log=$(mktemp)
      if ! VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/maturin" develop --release --locked --quiet \
        -m crates/python/Cargo.toml >"$wheel_log" 2>&1; then
        cat "$wheel_log" >&2
        rm -f "$wheel_log"
        exit 1
      fi
      rm -f "$wheel_log" "$VENV"/.dino-multicrop-*
      touch "$wheel_stamp"
    else
      log "warning: no cargo: the dino_multicrop wheel is not built (its pytest tests will fail)"
    fi
  fi
fi

# Installs Debian package $1 (apt-get update once if the first try fails); $2 says what is lost
# without it. Never fails the setup: the packages below are optional for the test suite.
apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian package $1"
    (apt-get install -y -qq "$1" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$1" >/dev/null 2>&1; }) ||
      log "warning: could not install $1 ($2)"
  else
    log "warning: run as root with apt-get to install $1 ($2)"
  fi
}

# Fashion-MNIST (real, labeled 28x28 images) for the main job; optional for the test suite.
if [ "${DINO_SETUP_DATASETS:-1}" = 1 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist "the main job needs it; tests do not"
fi

# DejaVu Sans for the titles, ticks and legends of curves.png (crates/train/src/curves.rs reads
# this file; DINO_PLOT_FONT names another). Optional: without it the curves have no text.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] ||
  apt_install fonts-dejavu-core "curves.png will have no text"

# ffmpeg (and ffprobe) for `dino video`: reading video files and writing MP4s
# (crates/data/src/video/). Optional: frames folders and GIF output work without it, and the
# tests that need it print a notice and skip that part.
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 ||
  apt_install ffmpeg "dino video reads frames folders only and writes GIFs"

# Real videos to try `dino video` on: Debian's OpenCV examples ship vtest.avi (pedestrians,
# 768x576, 795 frames) and box.mp4.gz / cup.mp4.gz (a hand moving an object, 640x480) under
# /usr/share/doc/opencv-doc/. Optional data, never needed by the tests.
if [ "${DINO_SETUP_DATASETS:-1}" = 1 ] && [ ! -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ]; then
  apt_install opencv-doc "no real example videos for dino video"
fi
