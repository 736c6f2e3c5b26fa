//! Errors for inputs the rasterizer cannot render. Non-finite Gaussian parameters are not errors: such
//! Gaussians are culled.

#[derive(Debug, thiserror::Error)]
pub enum SplatError {
    #[error("bad Gaussian input: {0}")]
    Shape(String),
    #[error("bad camera: {0}")]
    Camera(String),
    #[error("bad render options: {0}")]
    Options(String),
    #[error("{0} is not supported by this build")]
    Unsupported(String),
    #[error("backward called without a gradient on the rendered image or alpha")]
    NoUpstreamGradient,
    /// Reading or writing a checkpoint; the message names the file.
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, SplatError>;
