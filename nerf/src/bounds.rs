//! World coordinates ↔ the field's `[-1, 1]³` box, chosen from a scene's cameras and sparse points so that
//! one rule serves object orbits, forward-facing captures and inside-out rooms:
//!
//! - the box holds the sparse points between their 2nd and 98th percentiles on each axis (stray points
//!   do not inflate it) together with every camera centre, padded by 10 %;
//! - it is scaled uniformly (by its longest side) into `[-1, 1]³`, so angles are kept.
//!
//! An object orbit gets the object and the ring of cameras; a forward-facing capture gets the frustum's
//! point cloud and the camera rig in front of it; a room gets the walls, with the cameras inside. There is
//! no contraction: what lies beyond the box (the sky, far background) is the background latent, which rays
//! that leave the box composite onto.

use glam::DVec3;
use lrf_formats::Camera;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneBounds {
    pub center: DVec3,
    /// Box units per world unit.
    pub scale: f64,
}

impl SceneBounds {
    pub fn from_scene(cameras: &[Camera], points: &[[f64; 3]]) -> SceneBounds {
        let mut low = DVec3::splat(f64::MAX);
        let mut high = DVec3::splat(f64::MIN);
        if !points.is_empty() {
            for axis in 0..3 {
                let mut values: Vec<f64> = points.iter().map(|p| p[axis]).collect();
                values.sort_by(f64::total_cmp);
                let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
                low[axis] = at(0.02);
                high[axis] = at(0.98);
            }
        }
        for camera in cameras {
            low = low.min(camera.center());
            high = high.max(camera.center());
        }
        if low.x > high.x {
            return SceneBounds {
                center: DVec3::ZERO,
                scale: 1.0,
            };
        }
        let center = (low + high) * 0.5;
        let half = ((high - low) * 0.5 * 1.1).max_element().max(1e-9);
        SceneBounds {
            center,
            scale: 1.0 / half,
        }
    }

    pub fn to_box(&self, world: DVec3) -> DVec3 {
        (world - self.center) * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cameras_and_all_but_stray_points_fit_in_the_box() {
        let mut points: Vec<[f64; 3]> = (0..200)
            .map(|i| [(i % 10) as f64 * 0.1, (i / 10) as f64 * 0.05, 0.0])
            .collect();
        points.push([1000.0, 0.0, 0.0]);
        let camera = Camera::look_at(
            DVec3::new(0.5, 0.5, 3.0),
            DVec3::new(0.5, 0.5, 0.0),
            DVec3::Y,
            50.0,
            50.0,
            32,
            32,
        );
        let bounds = SceneBounds::from_scene(&[camera.clone()], &points);
        let inside = |p: DVec3| bounds.to_box(p).abs().max_element() <= 1.0;
        assert!(inside(camera.center()));
        assert!(points[..200].iter().all(|p| inside(DVec3::from_array(*p))));
        assert!(
            !inside(DVec3::new(1000.0, 0.0, 0.0)),
            "the stray point does not stretch the box"
        );
    }
}
