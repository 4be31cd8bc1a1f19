//! Link arguments for the `dino` binary and this crate's tests (an rpath to libtorch and
//! `--no-as-needed -ltorch`), from the workspace's one build helper (`dino-build-support`), so
//! that they start without `LD_LIBRARY_PATH`. The libtorch version `dino env` prints is set by
//! crates/train/build.rs (`dino_train::runtime::LIBTORCH_VERSION`).
fn main() {
    dino_build_support::link_libtorch();
}
