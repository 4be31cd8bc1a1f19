//! Compiles the C++ shim (`csrc/dist.cpp`, and `csrc/fused.cpp`: libtorch's fused optimizer
//! kernels for dino-train) against the project's libtorch and sets the link
//! arguments every binary, test and example of this crate needs.
//!
//! libtorch is the one `torch-sys` found: its `lib/` folder comes as `DEP_TCH_LIBTORCH_LIB`
//! (exported by `torch-sys`, `links = "tch"`, which is why this crate depends on it directly),
//! and the headers sit beside it in `include/`. The flags match how `torch-sys` compiles its own
//! wrapper: C++17 and the C++11 ABI of PyPI's wheels (`LIBTORCH_CXX11_ABI`, default 1).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=DINO_DIST_CUDA_INCLUDE");

    let lib_dir = libtorch_lib_dir();
    let root = lib_dir
        .parent()
        .expect("libtorch lib/ folder has a parent")
        .to_path_buf();
    let include = root.join("include");
    assert!(
        include
            .join("torch/csrc/distributed/c10d/TCPStore.hpp")
            .exists(),
        "dino-distributed: no c10d headers under {} (is libtorch installed? run scripts/setup.sh)",
        include.display()
    );
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let nccl = std::env::var_os("CARGO_FEATURE_NCCL").is_some();

    let mut build = cc::Build::new();
    if nccl {
        for dir in cuda_include_dirs(&root) {
            build.include(dir);
        }
        build
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("DINO_DIST_NCCL", None);
    }
    build
        .cpp(true)
        .pic(true)
        // libtorch's own headers warn under C++17; our code is small enough to read.
        .warnings(false)
        .include("csrc")
        // Declaration-only stand-ins for the Gloo headers PyPI's libtorch omits (see dist.cpp).
        .include("csrc/gloo_decl")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .file("csrc/dist.cpp")
        .file("csrc/fused.cpp")
        .compile("dino_dist_shim");

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }

    // The rpath and `--no-as-needed -ltorch` of every crate that links libtorch.
    dino_build_support::link_libtorch();
}

/// libtorch's `lib/` folder: from torch-sys, else from `$LIBTORCH` (set by .cargo/config.toml).
fn libtorch_lib_dir() -> PathBuf {
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        return PathBuf::from(lib);
    }
    let root = std::env::var_os("LIBTORCH").expect(
        "dino-distributed: neither DEP_TCH_LIBTORCH_LIB (from torch-sys) nor LIBTORCH is set",
    );
    PathBuf::from(root).join("lib")
}

/// Include folders for the `nccl` feature: `$DINO_DIST_CUDA_INCLUDE` (`:`-separated) first, then
/// every `include/` of the `nvidia-*` wheels installed beside PyPI's torch (`nccl.h` comes from
/// `nvidia-nccl-cu13`, the CUDA runtime headers from `nvidia-cuda-runtime`). Those wheels lack two
/// header sets that `cuda_runtime.h` includes, so the build stops with the fix when they are
/// missing.
fn cuda_include_dirs(torch_root: &std::path::Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("DINO_DIST_CUDA_INCLUDE")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let root = torch_root
        .canonicalize()
        .unwrap_or_else(|_| torch_root.to_path_buf());
    if let Some(Ok(entries)) = root.parent().map(|p| std::fs::read_dir(p.join("nvidia"))) {
        let mut wheels: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("include")))
            .filter(|p| p.is_dir())
            .collect();
        wheels.sort();
        dirs.extend(wheels);
    }
    for (header, wheel) in [
        ("nccl.h", "nvidia-nccl-cu13"),
        ("cuda_runtime.h", "nvidia-cuda-runtime"),
        ("crt/host_config.h", "nvidia-cuda-crt"),
        ("nv/target", "nvidia-cuda-cccl"),
    ] {
        assert!(
            dirs.iter().any(|d| d.join(header).exists()),
            "dino-distributed feature `nccl`: no {header} in {dirs:?}; install the `{wheel}` \
             wheel of the CUDA version libtorch was built with into the project virtualenv, or \
             name a folder holding it in DINO_DIST_CUDA_INCLUDE"
        );
    }
    dirs
}
