//! Lens distortion of COLMAP's perspective models, and undistortion to PINHOLE.
//!
//! lrf-flow renders pinhole cameras only, so a view whose camera has distortion parameters is
//! resampled to an ideal pinhole image when its scene is loaded with
//! [`crate::scene::DistortionPolicy::Undistort`] (the default). Fisheye and other non-perspective
//! models are rejected with a message saying how to convert them.
//!
//! All formulas act on normalised image coordinates `(u, v) = ((x − cx)/fx, (y − cy)/fy)`, as in
//! COLMAP's `models.h`, so they do not change when images are resized.

use glam::DVec2;

use crate::colmap::{CameraModel, ColmapCamera};
use crate::image::ImageF32;

/// The distortion of a perspective camera model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distortion {
    None,
    /// SIMPLE_RADIAL (k2 = 0) and RADIAL.
    Radial {
        k1: f64,
        k2: f64,
    },
    /// OPENCV: two radial and two tangential terms.
    OpenCv {
        k1: f64,
        k2: f64,
        p1: f64,
        p2: f64,
    },
    /// FULL_OPENCV: rational radial term and tangential terms.
    FullOpenCv {
        k: [f64; 6],
        p1: f64,
        p2: f64,
    },
}

impl Distortion {
    /// The distortion of a camera, or an explanation of why lrf-flow cannot undistort it.
    pub fn of_camera(camera: &ColmapCamera) -> Result<Distortion, String> {
        let d = camera.distortion_params();
        let distortion = match camera.model {
            CameraModel::SimplePinhole | CameraModel::Pinhole => Distortion::None,
            CameraModel::SimpleRadial => Distortion::Radial { k1: d[0], k2: 0.0 },
            CameraModel::Radial => Distortion::Radial { k1: d[0], k2: d[1] },
            CameraModel::OpenCv => Distortion::OpenCv {
                k1: d[0],
                k2: d[1],
                p1: d[2],
                p2: d[3],
            },
            CameraModel::FullOpenCv => Distortion::FullOpenCv {
                k: [d[0], d[1], d[4], d[5], d[6], d[7]],
                p1: d[2],
                p2: d[3],
            },
            other => {
                return Err(format!(
                    "camera model {} is not a perspective model lrf-flow can undistort (supported: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV); run `colmap image_undistorter` on the scene first",
                    other.name()
                ));
            }
        };
        Ok(if distortion.is_identity() {
            Distortion::None
        } else {
            distortion
        })
    }

    pub fn is_identity(&self) -> bool {
        match *self {
            Distortion::None => true,
            Distortion::Radial { k1, k2 } => k1 == 0.0 && k2 == 0.0,
            Distortion::OpenCv { k1, k2, p1, p2 } => [k1, k2, p1, p2].iter().all(|&v| v == 0.0),
            Distortion::FullOpenCv { k, p1, p2 } => k.iter().chain(&[p1, p2]).all(|&v| v == 0.0),
        }
    }

    /// Ideal (pinhole) normalised coordinates → distorted normalised coordinates.
    pub fn distort(&self, ideal: DVec2) -> DVec2 {
        let (u, v) = (ideal.x, ideal.y);
        let r2 = u * u + v * v;
        let tangential = |p1: f64, p2: f64| {
            DVec2::new(
                2.0 * p1 * u * v + p2 * (r2 + 2.0 * u * u),
                2.0 * p2 * u * v + p1 * (r2 + 2.0 * v * v),
            )
        };
        match *self {
            Distortion::None => ideal,
            Distortion::Radial { k1, k2 } => ideal * (1.0 + k1 * r2 + k2 * r2 * r2),
            Distortion::OpenCv { k1, k2, p1, p2 } => ideal * (1.0 + k1 * r2 + k2 * r2 * r2) + tangential(p1, p2),
            Distortion::FullOpenCv { k, p1, p2 } => {
                let (r4, r6) = (r2 * r2, r2 * r2 * r2);
                let radial = (1.0 + k[0] * r2 + k[1] * r4 + k[2] * r6) / (1.0 + k[3] * r2 + k[4] * r4 + k[5] * r6);
                ideal * radial + tangential(p1, p2)
            }
        }
    }

    /// Distorted normalised coordinates → ideal ones, by Newton iteration with a numerical
    /// Jacobian (as COLMAP's `IterativeUndistortion`).
    pub fn undistort(&self, distorted: DVec2) -> DVec2 {
        if matches!(self, Distortion::None) {
            return distorted;
        }
        const STEP: f64 = 1e-7;
        let mut ideal = distorted;
        for _ in 0..100 {
            let residual = self.distort(ideal) - distorted;
            if residual.length_squared() < 1e-26 {
                break;
            }
            let dx = (self.distort(ideal + DVec2::X * STEP) - self.distort(ideal - DVec2::X * STEP)) / (2.0 * STEP);
            let dy = (self.distort(ideal + DVec2::Y * STEP) - self.distort(ideal - DVec2::Y * STEP)) / (2.0 * STEP);
            let det = dx.x * dy.y - dy.x * dx.y;
            if det.abs() < 1e-12 {
                break;
            }
            // Solve [dx dy] · step = residual.
            let step = DVec2::new(
                dy.y * residual.x - dy.x * residual.y,
                -dx.y * residual.x + dx.x * residual.y,
            ) / det;
            ideal -= step;
        }
        ideal
    }
}

/// Intrinsics of a pinhole camera: focal lengths and principal point, in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

impl Intrinsics {
    fn normalize(&self, pixel: DVec2) -> DVec2 {
        DVec2::new((pixel.x - self.cx) / self.fx, (pixel.y - self.cy) / self.fy)
    }
    fn to_pixel(&self, normalized: DVec2) -> DVec2 {
        DVec2::new(normalized.x * self.fx + self.cx, normalized.y * self.fy + self.cy)
    }
}

/// The pinhole camera an image of `width × height` with `distorted` intrinsics is undistorted
/// to: same size and principal point, both focal lengths scaled by one factor chosen, as COLMAP's
/// undistorter does with `blank_pixels = 0`, so that the widest view still has no blank pixels.
pub fn undistorted_intrinsics(distorted: Intrinsics, distortion: &Distortion, width: u32, height: u32) -> Intrinsics {
    if matches!(distortion, Distortion::None) {
        return distorted;
    }
    let (w, h) = (width as f64, height as f64);
    // Walk the border of the distorted image and find, per side, how far the undistorted border
    // reaches in (the smallest extent in normalised units).
    let samples = 256;
    let mut left = f64::INFINITY;
    let mut right = f64::INFINITY;
    let mut top = f64::INFINITY;
    let mut bottom = f64::INFINITY;
    let ideal = |x: f64, y: f64| distortion.undistort(distorted.normalize(DVec2::new(x, y)));
    for i in 0..=samples {
        let t = i as f64 / samples as f64;
        left = left.min(-ideal(0.0, t * h).x);
        right = right.min(ideal(w, t * h).x);
        top = top.min(-ideal(t * w, 0.0).y);
        bottom = bottom.min(ideal(t * w, h).y);
    }
    let scale = [
        distorted.cx / (left * distorted.fx),
        (w - distorted.cx) / (right * distorted.fx),
        distorted.cy / (top * distorted.fy),
        (h - distorted.cy) / (bottom * distorted.fy),
    ]
    .into_iter()
    .fold(f64::NEG_INFINITY, f64::max);
    Intrinsics {
        fx: distorted.fx * scale,
        fy: distorted.fy * scale,
        ..distorted
    }
}

/// Resamples a distorted image to the pinhole camera `ideal` (bilinear, same size).
pub fn undistort_image(
    image: &ImageF32,
    distorted: Intrinsics,
    distortion: &Distortion,
    ideal: Intrinsics,
) -> ImageF32 {
    let mut out = ImageF32::new(image.channels, image.width, image.height);
    for y in 0..image.height {
        for x in 0..image.width {
            let center = DVec2::new(x as f64 + 0.5, y as f64 + 0.5);
            let source = distorted.to_pixel(distortion.distort(ideal.normalize(center)));
            for c in 0..image.channels {
                out.set(c, x, y, image.sample_bilinear(c, source.x, source.y));
            }
        }
    }
    out
}

/// Where a keypoint of the distorted image lies in the undistorted one.
pub fn undistort_pixel(pixel: DVec2, distorted: Intrinsics, distortion: &Distortion, ideal: Intrinsics) -> DVec2 {
    ideal.to_pixel(distortion.undistort(distorted.normalize(pixel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODELS: [Distortion; 3] = [
        Distortion::Radial { k1: 0.0198, k2: -0.01 },
        Distortion::OpenCv {
            k1: 0.024,
            k2: -0.070,
            p1: 0.003,
            p2: -0.004,
        },
        Distortion::FullOpenCv {
            k: [0.1, -0.05, 0.01, 0.02, -0.01, 0.003],
            p1: 0.001,
            p2: 0.002,
        },
    ];

    #[test]
    fn undistort_inverts_distort() {
        for model in MODELS {
            for i in -10..=10 {
                for j in -10..=10 {
                    let ideal = DVec2::new(i as f64 * 0.06, j as f64 * 0.045);
                    let back = model.undistort(model.distort(ideal));
                    assert!((back - ideal).length() < 1e-10, "{model:?} at {ideal}: {back}");
                }
            }
        }
    }

    #[test]
    fn undistorted_camera_has_no_blank_pixels_and_is_tight() {
        let distorted = Intrinsics {
            fx: 815.0,
            fy: 815.0,
            cx: 504.0,
            cy: 378.0,
        };
        for model in MODELS {
            let ideal = undistorted_intrinsics(distorted, &model, 1008, 756);
            let source = |x: f64, y: f64| distorted.to_pixel(model.distort(ideal.normalize(DVec2::new(x, y))));
            let mut touches = false;
            for i in 0..=100 {
                let t = i as f64 / 100.0;
                for p in [
                    source(0.0, t * 756.0),
                    source(1008.0, t * 756.0),
                    source(t * 1008.0, 0.0),
                    source(t * 1008.0, 756.0),
                ] {
                    assert!(
                        p.x > -1e-6 && p.x < 1008.0 + 1e-6 && p.y > -1e-6 && p.y < 756.0 + 1e-6,
                        "{model:?}: {p}"
                    );
                    touches |=
                        p.x.abs() < 0.5 || (p.x - 1008.0).abs() < 0.5 || p.y.abs() < 0.5 || (p.y - 756.0).abs() < 0.5;
                }
            }
            assert!(touches, "{model:?}: the undistorted view should reach the image border");
        }
    }
}
