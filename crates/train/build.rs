//! Link arguments for every binary, test and bench of this crate (an rpath to libtorch and
//! `--no-as-needed -ltorch`), and the libtorch version `dino env` reports
//! (`runtime::LIBTORCH_VERSION`), from the workspace's one build helper (`dino-build-support`).
fn main() {
    let lib = dino_build_support::link_libtorch();
    dino_build_support::libtorch_version_env(lib.as_deref());
}
