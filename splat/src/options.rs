//! Per-run rendering options and the layout of the per-Gaussian colour coefficients.

use crate::error::{Result, SplatError};
use crate::sh::{MAX_SH_DEGREE, sh_degree_of};
use lrf_formats::Camera;

/// How the screen-space low-pass filter is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RasterMode {
    /// 3DGS: BLUR_VARIANCE px² added to every projected covariance, opacity unchanged.
    #[default]
    Classic,
    /// Mip-Splatting: the same blur, with opacity scaled by sqrt(det Σ / det(Σ + blur)) so small Gaussians do
    /// not grow brighter when blurred.
    Antialiased,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct RenderOptions {
    /// Per-channel background composited behind the Gaussians; empty means zero in every channel.
    pub background: Vec<f64>,
    /// The 3DGS RGB convention: colour = SH value + 0.5, clamped at 0. Off for signed latent channels.
    pub color_offset_clamp: bool,
    pub mode: RasterMode,
    /// SH degree in use (grown during training); `None` uses every stored coefficient.
    pub sh_degree: Option<usize>,
}

impl RenderOptions {
    /// A zero background with colours as SH + 0.5 clamped at 0: 3DGS's RGB convention, which the official
    /// LRF code also uses for normalized latents.
    pub fn offset_clamped() -> Self {
        RenderOptions {
            color_offset_clamp: true,
            ..RenderOptions::default()
        }
    }

    /// The background for `channels` channels, validated.
    pub(crate) fn background_for(&self, channels: usize) -> Result<Vec<f64>> {
        match self.background.len() {
            0 => Ok(vec![0.0; channels]),
            n if n == channels => Ok(self.background.clone()),
            n => Err(SplatError::Options(format!(
                "background has {n} values for {channels} channels"
            ))),
        }
    }
}

/// What a Gaussian's colour coefficients mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorBasis {
    /// One view-independent value per channel, used as is: coefficients `[N, C]`.
    Plain,
    /// Spherical harmonics per channel: `coeffs` stored per channel (`[N, coeffs, C]`), the first
    /// (degree+1)² of them in use.
    Sh { coeffs: usize, degree: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColorLayout {
    pub basis: ColorBasis,
    pub channels: usize,
}

impl ColorLayout {
    /// The layout of colour coefficients of shape `[N, C]` (plain) or `[N, K, C]` (SH), with the SH degree
    /// limited to `active_degree` when given.
    pub fn from_shape(shape: &[usize], active_degree: Option<usize>) -> Result<Self> {
        let layout = match *shape {
            [_, channels] => ColorLayout {
                basis: ColorBasis::Plain,
                channels,
            },
            [_, coeffs, channels] => ColorLayout {
                basis: ColorBasis::Sh {
                    coeffs,
                    degree: active_degree.unwrap_or(sh_degree_of(coeffs).unwrap_or(0)),
                },
                channels,
            },
            _ => {
                return Err(SplatError::Shape(format!(
                    "colours must be [N, C] or [N, K, C], got {shape:?}"
                )));
            }
        };
        layout.check()?;
        Ok(layout)
    }

    /// Rejects layouts the kernels cannot evaluate (the fields are public, so any value can reach them).
    pub fn check(&self) -> Result<()> {
        if self.channels == 0 {
            return Err(SplatError::Shape("colours have zero channels".into()));
        }
        if let ColorBasis::Sh { coeffs, degree } = self.basis {
            let stored = sh_degree_of(coeffs).ok_or_else(|| {
                SplatError::Shape(format!("{coeffs} SH coefficients per channel is not (d+1)² for d ≤ 3"))
            })?;
            if degree > stored.min(MAX_SH_DEGREE) {
                return Err(SplatError::Options(format!(
                    "SH degree {degree} but only degree {stored} stored"
                )));
            }
        }
        Ok(())
    }

    /// Coefficients stored per channel: the SH basis's length, or 1 for plain colours.
    pub fn coefficients(&self) -> usize {
        match self.basis {
            ColorBasis::Plain => 1,
            ColorBasis::Sh { coeffs, .. } => coeffs,
        }
    }

    /// Coefficients stored per Gaussian.
    pub fn stride(&self) -> usize {
        self.coefficients() * self.channels
    }
}

/// Rejects cameras the projection cannot use.
pub(crate) fn check_camera(camera: &Camera) -> Result<()> {
    let finite = camera.rotation.is_finite()
        && camera.translation.is_finite()
        && [camera.fx, camera.fy, camera.cx, camera.cy]
            .iter()
            .all(|v| v.is_finite());
    if !finite || camera.fx <= 0.0 || camera.fy <= 0.0 {
        return Err(SplatError::Camera(format!(
            "non-finite pose or non-positive focal length: {camera:?}"
        )));
    }
    if camera.width == 0 || camera.height == 0 {
        return Err(SplatError::Camera(format!(
            "empty image {}×{}",
            camera.width, camera.height
        )));
    }
    Ok(())
}
