//! lrf-flow's data on disk: COLMAP sparse models (binary and text), scenes in the 3DGS folder
//! layout, images, and memory-mapped safetensors shards.
//!
//! Every reader returns a [`FormatError`] that names the file and the record at fault; nothing
//! here panics on bad input.

pub mod atomic;
pub mod camera;
pub mod camera_path;
pub mod colmap;
pub mod correspondences;
pub mod distortion;
mod error;
pub mod image;
pub mod ply;
pub mod scene;
pub mod shard;
pub mod video;
pub mod views;

pub use camera::Camera;
pub use error::{FormatError, Result};
pub use ply::{GaussianPly, read_ply, write_ply};
