//! Latent Tri-Plane NeRFs, IG-AE's scene representation: three axis-aligned feature planes sampled
//! bilinearly and summed, a tiny MLP to density and C latent channels, and volume rendering with
//! stratified plus importance samples and midpoint compositing (EG3D's ray marcher, as IG-AE uses it).
//!
//! - [`TriPlaneField`]: the parameters (planes `[3, F, R, R]`, MLP F→hidden→1+C with softplus, a background
//!   latent) in one `VarStore`, so any tch optimiser trains them.
//! - [`render`]: rays → samples → composited channels, differentiable through tch; the field's query runs in
//!   CPU kernels, whose gradient a [`PlaneTape`] hands on after the loss's backward pass.
//! - [`SceneBounds`]: world ↔ the field's `[-1, 1]³` box, chosen from cameras and sparse points.
//! - [`TriPlaneNerf`]: field, bounds and sampling as the unit stages save, load, render and train
//!   ([`NerfOptimizer`]: Adam with IG-AE's plane TV prior).

mod bounds;
mod field;
mod model;
mod query;
pub mod render;

pub use bounds::SceneBounds;
pub use field::{TriPlaneConfig, TriPlaneField};
pub use model::{
    NerfOptimizer, TriPlaneLayout, TriPlaneNerf, plane_total_variation, render_image, render_training_image,
};
pub use query::PlaneTape;

#[derive(Debug, thiserror::Error)]
pub enum NerfError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, NerfError>;
