//! Shared build script for every crate whose binaries or tests link libtorch.
//!
//! torch-sys (manifest key `links = "tch"`) exports the libtorch library folder as
//! `DEP_TCH_LIBTORCH_LIB` to crates that depend on it directly. Embedding it as an rpath lets the
//! binaries run without `LD_LIBRARY_PATH`. With `LRF_LINK_CUDA=1`, libtorch_cuda is kept in the
//! binary's needed libraries; without it the linker's `--as-needed` drops it and tch silently sees
//! no GPU.
//!
//! `main` is public so a crate with more to build (lrf-splat) can include this file as a module and call it.
pub fn main() {
    println!("cargo:rerun-if-env-changed=LRF_LINK_CUDA");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    let want_cuda = std::env::var("LRF_LINK_CUDA").is_ok_and(|v| v == "1");
    if want_cuda && std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
