//! lrf-flow's splat crate: Gaussian splatting: camera projection, spherical harmonics, the differentiable N-channel rasterizer, Gaussian model and optimiser.
//!
//! Not built yet: its contents are tracked by issue #4. The crate exists so the workspace has
//! the layout of DESIGN.md from the start; it exports nothing.
