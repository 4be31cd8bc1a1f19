//! The one home of the build-script lines every dino crate that links libtorch needs (used as a
//! `[build-dependencies]` entry; each such crate's `build.rs` calls [`link_libtorch`]).
//!
//! `rustc-link-arg` from `tch`'s own build script does not reach dependants, so without these
//! lines the linker's `--as-needed` silently drops `libtorch_cuda.so` (CUDA then reports
//! unavailable) and binaries need `LD_LIBRARY_PATH` to start. `DEP_TCH_LIBTORCH_LIB` is
//! exported by `torch-sys` (`links = "tch"`) only to crates that depend on it directly, which is
//! why each caller lists `torch-sys` among its dependencies.

use std::path::{Path, PathBuf};

/// Prints the link arguments for every binary, test, bench and example of the calling crate:
/// an rpath to libtorch's `lib/` folder and `--no-as-needed -ltorch` (Linux only). Returns that
/// folder when `torch-sys` exported it.
pub fn link_libtorch() -> Option<PathBuf> {
    let lib = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        if let Some(lib) = &lib {
            println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib.display());
        }
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
    lib
}

/// Sets the compile-time variables `DINO_LIBTORCH_LIB`, `DINO_LIBTORCH_VERSION` and
/// `DINO_LIBTORCH_CUDA` (what `dino env` reports), read from PyPI torch's `torch/version.py`
/// beside `lib/`; `unknown` where a field is absent.
pub fn libtorch_version_env(lib: Option<&Path>) {
    let lib = lib.map(Path::to_path_buf).unwrap_or_default();
    println!("cargo:rustc-env=DINO_LIBTORCH_LIB={}", lib.display());
    let version_py = lib.join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    let text = std::fs::read_to_string(&version_py).unwrap_or_default();
    println!(
        "cargo:rustc-env=DINO_LIBTORCH_VERSION={}",
        version_field(&text, "__version__")
    );
    println!(
        "cargo:rustc-env=DINO_LIBTORCH_CUDA={}",
        version_field(&text, "cuda: Optional[str]")
    );
}

/// The value of `name = '…'` in torch's version.py, or `unknown`.
fn version_field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| {
            v.trim()
                .trim_start_matches('=')
                .trim()
                .trim_matches('\'')
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::version_field;

    #[test]
    fn reads_pypi_torch_version_py() {
        let text = "__version__ = '2.13.0+cu130'\ncuda: Optional[str] = '13.0'\n";
        assert_eq!(version_field(text, "__version__"), "2.13.0+cu130");
        assert_eq!(version_field(text, "cuda: Optional[str]"), "13.0");
        assert_eq!(version_field("", "__version__"), "unknown");
    }
}
