//! Tests of the rasterizer: the CPU kernel against the reference, gradients against autograd and finite
//! differences, robustness, the tch entry point, and a golden image.

mod scenes;

mod backward;
#[cfg(feature = "cuda")]
mod cuda;
mod finite_diff;
mod forward;
mod golden;
mod render;
mod robustness;
