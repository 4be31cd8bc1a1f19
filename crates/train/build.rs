//! Link arguments for every binary, test and bench of this crate, and the libtorch version.
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
    // `dino env` reports the libtorch this binary was linked against. PyPI torch keeps its
    // version in torch/version.py beside lib/.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    println!("cargo:rustc-env=DINO_LIBTORCH_LIB={lib}");
    let version_py = std::path::Path::new(&lib).join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    let text = std::fs::read_to_string(&version_py).unwrap_or_default();
    let field = |name: &str| {
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
    };
    println!(
        "cargo:rustc-env=DINO_LIBTORCH_VERSION={}",
        field("__version__")
    );
    let cuda = field("cuda: Optional[str]");
    println!("cargo:rustc-env=DINO_LIBTORCH_CUDA={}", cuda);
}
