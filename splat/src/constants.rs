//! Every cutoff and convention of the rasterizer, named once. The tch reference, the CPU kernel and the
//! CUDA kernel all read these, so a change here changes every implementation together.

/// Gaussians whose centre is closer to the camera than this (in camera z) are culled.
pub const NEAR_PLANE: f64 = 0.01;
/// Ceiling of a Gaussian's alpha at a pixel, so one opaque Gaussian never ends a pixel on its own.
pub const MAX_ALPHA: f64 = 0.99;
/// A (Gaussian, pixel) pair with alpha below this is skipped (it does not change the pixel).
pub const ALPHA_THRESHOLD: f64 = 1.0 / 255.0;
/// A pixel is done when compositing the next Gaussian would leave transmittance at or below this; that
/// Gaussian is excluded. Equals (1 − MAX_ALPHA)²: a maximally opaque Gaussian must be hit twice.
pub const TRANSMITTANCE_THRESHOLD: f64 = 1e-4;
/// Isotropic screen-space blur (px²) added to every projected covariance: a pixel-sized low-pass filter.
pub const BLUR_VARIANCE: f64 = 0.3;
/// Floor of the Mip-Splatting opacity compensation sqrt(det Σ / det(Σ + blur)).
pub const MIN_COMPENSATION: f64 = 0.005;
/// Widest screen extent of a Gaussian in standard deviations, whatever its opacity.
pub const MAX_EXTENT_SIGMAS: f64 = 3.33;
/// The projection Jacobian is evaluated with x/z, y/z clamped to the field of view widened by this fraction
/// of its half-tangent, so Gaussians far off screen do not get huge, unstable footprints.
pub const FRUSTUM_CLAMP_MARGIN: f64 = 0.3;
/// Side of a square screen tile in pixels.
pub const TILE_SIZE: usize = 16;
/// Pixels per tile.
pub const TILE_PIXELS: usize = TILE_SIZE * TILE_SIZE;
/// Offset of a pixel centre from its integer corner.
pub const PIXEL_CENTER: f64 = 0.5;
/// Added to every SH colour before the clamp at zero when the 3DGS RGB colour convention is on.
pub const SH_COLOR_OFFSET: f64 = 0.5;
