//! lrf-flow's splat crate: the differentiable N-channel Gaussian rasterizer.
//!
//! Three implementations compute the same image: [`reference`](mod@reference) (dense tch tensor operations, autograd
//! backward, f32 or f64), the CPU kernel ([`cpu`], rayon over 16×16 tiles, deterministic backward), and, with
//! the `cuda` feature, a CUDA kernel ([`cuda`], sources in `splat/cuda/`). [`render`] picks one by device and
//! hooks its backward into tch autograd. Every cutoff they share lives in [`constants`].
//!
//! Module map: `projection` (one Gaussian to the screen and back), `sh` (spherical harmonics), `tiling`
//! (cull, depth order, tile lists), `cpu/` (the CPU kernel: `blend`, one pair, shared by both passes;
//! `forward` / `backward`, the per-tile blend; `mod.rs`, the passes; `lrf_simd` picks their instruction
//! set), `reference`, `render` (tch entry point), `train` (the trainable field, Adam, densification and the
//! 3DGS schedule).

pub mod constants;
pub mod cpu;
pub mod cuda;
mod error;
mod gaussians;
mod options;
mod projection;
pub mod real;
pub mod reference;
mod render;
pub mod sh;
mod tiling;
pub mod train;

#[cfg(test)]
mod tests;

pub use cpu::{ColorGrads, Frame, GaussianGrads, PairCount, PassTimes, rasterize, rasterize_backward};
pub use error::{Result, SplatError};
pub use gaussians::Gaussians;
pub use lrf_formats::Camera;
pub use options::{ColorBasis, ColorLayout, RasterMode, RenderOptions};
pub use render::{GaussianGradients, Rendered, ScreenGradients, render};
pub use tiling::GaussianSlices;
