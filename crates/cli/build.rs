//! Link arguments for the `dino` binary and this crate's tests (an rpath to libtorch and
//! `--no-as-needed -ltorch`), so that they start without `LD_LIBRARY_PATH`, and the libtorch
//! build `dino env` reports (`DINO_LIBTORCH_*`), from the workspace's one build helper
//! (`dino-build-support`). crates/train/build.rs sets the same version for the checkpoints.
fn main() {
    let lib = dino_build_support::link_libtorch();
    dino_build_support::libtorch_version_env(lib.as_deref());
}
