//! Rendering one view: colour with 2×2 supersampling, z-depth through pixel centres.

use glam::DVec2;
use image::RgbImage;
use lrf_formats::Camera;
use rayon::prelude::*;

use crate::Scene;

/// A rendered view at the camera's full resolution.
#[derive(Clone, Debug)]
pub struct RenderedView {
    /// Radiance clamped to [0, 1] and stored linearly in 8 bits (no sRGB curve), so that box
    /// filtering the stored values is box filtering light.
    pub image: RgbImage,
    /// Row-major `[height, width]`: z along the optical axis of the surface seen through each pixel
    /// centre (the point (x + 0.5, y + 0.5)); `f32::INFINITY` where the ray sees sky.
    pub depth: Vec<f32>,
}

/// Colour samples inside a pixel, in pixel units from its top-left corner.
pub(crate) const SUBPIXELS: [(f64, f64); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];

/// Renders `scene` through `camera`. Rows are rendered in parallel; every pixel depends only on
/// its own rays, so the result does not depend on the number of threads.
pub fn render_view(scene: &Scene, camera: &Camera) -> RenderedView {
    let (width, height) = (camera.width as usize, camera.height as usize);
    let origin = camera.center();
    let rows: Vec<(Vec<u8>, Vec<f32>)> = (0..height)
        .into_par_iter()
        .map(|y| {
            let mut colors = Vec::with_capacity(width * 3);
            let mut depths = Vec::with_capacity(width);
            for x in 0..width {
                let corner = DVec2::new(x as f64, y as f64);
                let sum: glam::DVec3 = SUBPIXELS
                    .iter()
                    .map(|&(dx, dy)| {
                        scene
                            .world
                            .color_along(origin, camera.ray_direction(corner + DVec2::new(dx, dy)))
                    })
                    .sum();
                colors.extend(to_8bit(sum / SUBPIXELS.len() as f64));
                let depth = scene
                    .world
                    .trace(origin, camera.ray_direction(corner + 0.5))
                    .map_or(f32::INFINITY, |hit| camera.to_camera(hit.position).z as f32);
                depths.push(depth);
            }
            (colors, depths)
        })
        .collect();
    let (colors, depth): (Vec<Vec<u8>>, Vec<Vec<f32>>) = rows.into_iter().unzip();
    let image = RgbImage::from_raw(camera.width, camera.height, colors.concat()).expect("one RGB triple per pixel");
    RenderedView {
        image,
        depth: depth.concat(),
    }
}

/// Radiance to the stored 8-bit value; 3D point colours use the same rounding.
pub(crate) fn to_8bit(radiance: glam::DVec3) -> [u8; 3] {
    radiance.to_array().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
}

/// Box-filter downsampling by an integer `factor` dividing both sides: each output value is the
/// mean of a `factor` × `factor` block of stored values, rounded half up.
pub(crate) fn downsample(image: &RgbImage, factor: u32) -> RgbImage {
    let area = factor * factor;
    RgbImage::from_fn(image.width() / factor, image.height() / factor, |x, y| {
        let mut sum = [0u32; 3];
        for dy in 0..factor {
            for dx in 0..factor {
                let pixel = image.get_pixel(x * factor + dx, y * factor + dy);
                for (s, &v) in sum.iter_mut().zip(&pixel.0) {
                    *s += u32::from(v);
                }
            }
        }
        image::Rgb(sum.map(|s| ((s + area / 2) / area) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_rounds_block_means_half_up() {
        let image = RgbImage::from_fn(4, 2, |x, y| {
            image::Rgb([(x + 4 * y) as u8, 10, if x == 0 { 1 } else { 0 }])
        });
        let half = downsample(&image, 2);
        assert_eq!(half.dimensions(), (2, 1));
        // Block (0..2, 0..2): red 0, 1, 4, 5 → 2.5 → 3; blue 1, 0, 1, 0 → 0.5 → 1.
        assert_eq!(half.get_pixel(0, 0).0, [3, 10, 1]);
        assert_eq!(half.get_pixel(1, 0).0, [5, 10, 0]);
    }
}
