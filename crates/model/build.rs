//! Link arguments for every binary, test and bench of this crate.
//!
//! `rustc-link-arg` from `tch`'s own build script does not reach dependants, so without this the
//! linker's `--as-needed` silently drops `libtorch_cuda.so` (CUDA then reports unavailable) and
//! binaries need `LD_LIBRARY_PATH` to start. `DEP_TCH_LIBTORCH_LIB` is exported by `torch-sys`
//! (`links = "tch"`), which is why this crate depends on it directly.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
            println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib.to_string_lossy());
        }
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
