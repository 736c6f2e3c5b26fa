//! lrf-splat's build script: the workspace's libtorch rpath (shared with the other crates), and with the `cuda`
//! feature the CUDA rasterizer (`cuda/rasterizer.cu`) compiled by nvcc into a static library.
//!
//! nvcc is looked up in `$NVCC`, then on `PATH`, then in the project's virtualenv (pip's `cuda-toolkit[nvcc]`
//! puts it under `site-packages/nvidia/*/bin/nvcc`), then in `$CUDA_HOME`/`$CUDA_PATH` and `/usr/local/cuda`.
//! The CUDA runtime is linked statically from the same toolkit (`libcudart_static.a` beside nvcc), so binaries
//! need no extra library path at run time; the kernel uses torch's device guard and current stream, and both
//! runtimes work in the device's primary context.
//!
//! The rasterizer's cutoffs reach the CUDA code through a header generated here from `src/constants.rs`, so they
//! are written down once.

#[path = "../build-support/libtorch_rpath.rs"]
mod libtorch_rpath;

#[path = "src/constants.rs"]
#[allow(dead_code)]
mod constants;

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// CUDA architectures compiled by default: Ampere (sm_80, also runs on sm_86/sm_89) and Hopper (sm_90), plus
/// PTX of the newest listed one so later GPUs (Blackwell) compile the kernels when they load. `LRF_CUDA_ARCHS`
/// (e.g. "75;80;90", or one value to build faster) replaces the list.
const DEFAULT_ARCHS: &str = "80;90";

fn main() {
    libtorch_rpath::main();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build-support/libtorch_rpath.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_cuda();
    }
}

fn build_cuda() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sources = manifest.join("cuda");
    for var in [
        "NVCC",
        "LRF_CUDA_ARCHS",
        "CUDA_HOME",
        "CUDA_PATH",
        "VIRTUAL_ENV",
        "NVCC_CCBIN",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=src/constants.rs");
    // A directory: cargo rescans every file in it.
    println!("cargo:rerun-if-changed=cuda");

    let torch_lib = env::var("DEP_TCH_LIBTORCH_LIB")
        .unwrap_or_else(|_| fail("torch-sys did not report the libtorch library folder (DEP_TCH_LIBTORCH_LIB)"));
    if !Path::new(&torch_lib).join("libtorch_cuda.so").exists() {
        fail(&format!(
            "the `cuda` feature needs a CUDA build of libtorch, but {torch_lib} has no libtorch_cuda.so \
             (scripts/setup.sh installs PyPI torch==2.13.0, which is one)"
        ));
    }

    let workspace = manifest.parent().expect("splat/ lies inside the workspace");
    let nvcc = find_nvcc(workspace).unwrap_or_else(|| fail(&missing_nvcc(workspace)));
    let toolkit_lib = ["lib", "lib64"]
        .iter()
        .filter_map(|dir| nvcc.parent()?.parent().map(|root| root.join(dir)))
        .find(|dir| dir.join("libcudart_static.a").exists())
        .unwrap_or_else(|| {
            fail(&format!(
                "found {} but no libcudart_static.a in its toolkit's lib/ or lib64/",
                nvcc.display()
            ))
        });

    std::fs::write(out.join("lrf_splat_constants.cuh"), constants_header())
        .unwrap_or_else(|e| fail(&format!("writing the constants header: {e}")));

    let archs = env::var("LRF_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
    let mut archs: Vec<u32> = archs
        .split([';', ',', ' '])
        .map(|a| a.trim().trim_start_matches("sm_"))
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| fail(&format!("LRF_CUDA_ARCHS: `{a}` is not a compute capability like 80")))
        })
        .collect();
    archs.sort_unstable();
    archs.dedup();
    let Some(&newest) = archs.last() else {
        fail("LRF_CUDA_ARCHS lists no architecture");
    };
    let library = out.join("liblrf_splat_cuda.a");
    let mut cmd = Command::new(&nvcc);
    cmd.arg("--lib")
        .arg("-o")
        .arg(&library)
        .arg(sources.join("rasterizer.cu"))
        .arg("-I")
        .arg(&out)
        .args(["-std=c++17", "-O3", "-Xcompiler", "-fPIC"]);
    for arch in &archs {
        cmd.arg(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
    }
    cmd.arg(format!("-gencode=arch=compute_{newest},code=compute_{newest}"));
    let started = std::time::Instant::now();
    let output = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("running {}: {e}", nvcc.display())));
    let log = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        fail(&format!("nvcc failed ({:?}):\n{log}", cmd));
    }
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning=nvcc: {line}");
    }
    let names: Vec<String> = archs.iter().map(|a| format!("sm_{a}")).collect();
    eprintln!(
        "compiled {} for {} (+ PTX compute_{newest}) with {} in {:.1} s",
        library.display(),
        names.join(", "),
        nvcc.display(),
        started.elapsed().as_secs_f64()
    );

    // Order matters for the linker: the kernel library first, then what it needs. libtorch_cuda last so that the
    // kernel's references to torch's CUDA shim keep it among the needed libraries under --as-needed.
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=lrf_splat_cuda");
    println!("cargo:rustc-link-search=native={}", toolkit_lib.display());
    println!("cargo:rustc-link-lib=static=cudart_static");
    for lib in ["stdc++", "rt", "dl", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-link-search=native={torch_lib}");
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    // This crate's own tests and benches: keep libtorch_cuda even if nothing referenced it (belt and braces; the
    // shared script does the same for every crate when LRF_LINK_CUDA=1).
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
}

/// The first nvcc found, in the order the module documentation gives.
fn find_nvcc(workspace: &Path) -> Option<PathBuf> {
    if let Some(path) = env::var_os("NVCC") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            fail(&format!("NVCC={} is not a file", path.display()));
        }
        return Some(path);
    }
    let on_path = env::var_os("PATH")
        .into_iter()
        .flat_map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nvcc"));
    let venvs = env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace.join(".venv")]);
    let pip = venvs.flat_map(|venv| pip_nvcc(&venv));
    let toolkits = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env::var_os(v).map(PathBuf::from))
        .chain([PathBuf::from("/usr/local/cuda")])
        .map(|root| root.join("bin").join("nvcc"));
    on_path.chain(pip).chain(toolkits).find(|p| p.is_file())
}

/// nvcc binaries of pip's NVIDIA wheels in a virtualenv: `lib/python*/site-packages/nvidia/<package>/bin/nvcc`
/// (`cu13` for CUDA 13, `cuda_nvcc` for CUDA 12), sorted for a stable choice.
fn pip_nvcc(venv: &Path) -> Vec<PathBuf> {
    let list = |dir: &Path| -> Vec<PathBuf> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        entries
    };
    list(&venv.join("lib"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python")))
        .flat_map(|python| list(&python.join("site-packages").join("nvidia")))
        .map(|package| package.join("bin").join("nvcc"))
        .filter(|nvcc| nvcc.is_file())
        .collect()
}

fn missing_nvcc(workspace: &Path) -> String {
    format!(
        "the `cuda` feature compiles the CUDA rasterizer with nvcc, and no nvcc was found (looked in $NVCC, on \
         PATH, in {venv}/lib/python*/site-packages/nvidia/*/bin, in $CUDA_HOME, $CUDA_PATH and /usr/local/cuda).\n\
         Install it into the project's virtualenv (about 100 MB):\n    \
         {venv}/bin/pip install -r {requirements}\n\
         or set NVCC to an nvcc binary; or build without the `cuda` feature.",
        venv = workspace.join(".venv").display(),
        requirements = workspace.join("scripts/requirements-cuda.txt").display(),
    )
}

/// `src/constants.rs` as C preprocessor constants (LRF_ + the Rust name); f64 values are written in Rust's
/// shortest round-trip form, which C reads back as the same double.
fn constants_header() -> String {
    use constants::*;
    let floats = [
        ("NEAR_PLANE", NEAR_PLANE),
        ("MAX_ALPHA", MAX_ALPHA),
        ("ALPHA_THRESHOLD", ALPHA_THRESHOLD),
        ("TRANSMITTANCE_THRESHOLD", TRANSMITTANCE_THRESHOLD),
        ("BLUR_VARIANCE", BLUR_VARIANCE),
        ("MIN_COMPENSATION", MIN_COMPENSATION),
        ("MAX_EXTENT_SIGMAS", MAX_EXTENT_SIGMAS),
        ("FRUSTUM_CLAMP_MARGIN", FRUSTUM_CLAMP_MARGIN),
        ("PIXEL_CENTER", PIXEL_CENTER),
        ("SH_COLOR_OFFSET", SH_COLOR_OFFSET),
    ];
    let ints = [("TILE_SIZE", TILE_SIZE), ("TILE_PIXELS", TILE_PIXELS)];
    let mut header = String::from(
        "// Generated by splat/build.rs from splat/src/constants.rs: edit the Rust constants, not this file.\n\
         #pragma once\n",
    );
    for (name, value) in floats {
        assert!(value.is_finite(), "{name} must be finite");
        writeln!(header, "#define LRF_{name} ({value:?})").expect("writing to a String");
    }
    for (name, value) in ints {
        writeln!(header, "#define LRF_{name} ({value})").expect("writing to a String");
    }
    header
}

fn fail(message: &str) -> ! {
    eprintln!("error: lrf-splat build: {message}");
    std::process::exit(1);
}
