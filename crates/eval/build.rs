//! Link arguments for every binary, test and bench of this crate: an rpath to libtorch and
//! `--no-as-needed -ltorch`, from the workspace's one build helper (why: `dino-build-support`).
fn main() {
    dino_build_support::link_libtorch();
}
