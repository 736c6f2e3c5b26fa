//! The pinhole camera every renderer and loss in lrf-flow works with.
//!
//! Conventions (DESIGN.md §4): COLMAP world-to-camera pose, OpenCV axes (x right, y down,
//! z forward), pixel centres at +0.5, so the centre of pixel (0, 0) is the point (0.5, 0.5).

use glam::{DMat3, DMat4, DQuat, DVec2, DVec3};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// World-to-camera rotation; serialised column-major (glam's layout, see [`crate::views`]).
    pub rotation: DMat3,
    /// World-to-camera translation: `x_cam = rotation * x_world + translation`.
    pub translation: DVec3,
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
    pub width: u32,
    pub height: u32,
}

impl Camera {
    /// A camera from a COLMAP pose: quaternion (w, x, y, z), which need not be normalised, and
    /// translation.
    pub fn from_colmap(
        qvec: [f64; 4],
        tvec: [f64; 3],
        fx: f64,
        fy: f64,
        cx: f64,
        cy: f64,
        width: u32,
        height: u32,
    ) -> Self {
        Camera {
            rotation: rotation_from_qvec(qvec),
            translation: DVec3::from_array(tvec),
            fx,
            fy,
            cx,
            cy,
            width,
            height,
        }
    }

    /// A camera at `eye` looking at `target`, with `up` pointing roughly up in the image
    /// (that is, towards −y of the OpenCV camera frame).
    pub fn look_at(eye: DVec3, target: DVec3, up: DVec3, fx: f64, fy: f64, width: u32, height: u32) -> Self {
        let forward = (target - eye).normalize();
        let right = forward.cross(up).normalize();
        let down = forward.cross(right);
        // Rows of the world-to-camera rotation are the camera axes in world coordinates.
        let rotation = DMat3::from_cols(right, down, forward).transpose();
        Camera {
            rotation,
            translation: -(rotation * eye),
            fx,
            fy,
            cx: width as f64 / 2.0,
            cy: height as f64 / 2.0,
            width,
            height,
        }
    }

    /// COLMAP quaternion (w, x, y, z) of the world-to-camera rotation, with w ≥ 0.
    pub fn qvec(&self) -> [f64; 4] {
        let q = DQuat::from_mat3(&self.rotation).normalize();
        let q = if q.w < 0.0 { -q } else { q };
        [q.w, q.x, q.y, q.z]
    }

    /// The camera centre in world coordinates.
    pub fn center(&self) -> DVec3 {
        -(self.rotation.transpose() * self.translation)
    }

    pub fn world_to_camera(&self) -> DMat4 {
        DMat4::from_cols(
            self.rotation.x_axis.extend(0.0),
            self.rotation.y_axis.extend(0.0),
            self.rotation.z_axis.extend(0.0),
            self.translation.extend(1.0),
        )
    }

    /// The 4×4 pose P_i of the APE weight (DESIGN.md §2).
    pub fn camera_to_world(&self) -> DMat4 {
        self.world_to_camera().inverse()
    }

    /// A point in camera coordinates.
    pub fn to_camera(&self, world: DVec3) -> DVec3 {
        self.rotation * world + self.translation
    }

    /// Pixel position (continuous, centres at +0.5) and depth of a world point, or `None` when it
    /// is not in front of the camera.
    pub fn project(&self, world: DVec3) -> Option<(DVec2, f64)> {
        let p = self.to_camera(world);
        if p.z <= 0.0 {
            return None;
        }
        Some((
            DVec2::new(self.fx * p.x / p.z + self.cx, self.fy * p.y / p.z + self.cy),
            p.z,
        ))
    }

    /// Whether a continuous pixel position lies on the image.
    pub fn contains(&self, pixel: DVec2) -> bool {
        pixel.x >= 0.0 && pixel.y >= 0.0 && pixel.x < self.width as f64 && pixel.y < self.height as f64
    }

    /// Unit ray direction in world coordinates through a continuous pixel position.
    pub fn ray_direction(&self, pixel: DVec2) -> DVec3 {
        let d = DVec3::new((pixel.x - self.cx) / self.fx, (pixel.y - self.cy) / self.fy, 1.0);
        (self.rotation.transpose() * d).normalize()
    }

    /// The same camera seen through an image resized to `width` × `height`: intrinsics scale by
    /// new size over old size, separately in x and y.
    pub fn resized(&self, width: u32, height: u32) -> Self {
        let sx = width as f64 / self.width as f64;
        let sy = height as f64 / self.height as f64;
        Camera {
            fx: self.fx * sx,
            fy: self.fy * sy,
            cx: self.cx * sx,
            cy: self.cy * sy,
            width,
            height,
            ..self.clone()
        }
    }

    /// The camera after cutting `left` and `top` pixels off and keeping `width` × `height`.
    pub fn cropped(&self, left: u32, top: u32, width: u32, height: u32) -> Self {
        Camera {
            cx: self.cx - left as f64,
            cy: self.cy - top as f64,
            width,
            height,
            ..self.clone()
        }
    }
}

/// Rotation matrix of a COLMAP quaternion (w, x, y, z); normalises it first.
pub fn rotation_from_qvec(qvec: [f64; 4]) -> DMat3 {
    let [w, x, y, z] = qvec;
    DMat3::from_quat(DQuat::from_xyzw(x, y, z, w).normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// views.json's documented layout: the rotation's first three numbers are its first column.
    #[test]
    fn rotation_serialises_column_major() {
        let camera = Camera::from_colmap(
            [0.7, -0.2, 0.5, 0.3],
            [1.0, 2.0, 3.0],
            100.0,
            100.0,
            50.0,
            40.0,
            100,
            80,
        );
        let json = serde_json::to_value(&camera).unwrap();
        let stored: Vec<f64> = serde_json::from_value(json["rotation"].clone()).unwrap();
        let r = camera.rotation;
        assert_eq!(stored[..3], [r.row(0).x, r.row(1).x, r.row(2).x]);
        assert_ne!(
            stored[..3],
            r.row(0).to_array(),
            "the rotation is not symmetric, so the test can tell"
        );
    }

    /// Independent check of the quaternion convention against the closed-form matrix COLMAP
    /// documents (`qvec2rotmat` in its scripts).
    #[test]
    fn quaternion_matches_colmap_formula() {
        let q = [0.7, -0.2, 0.5, 0.3];
        let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        let [w, x, y, z] = q.map(|v| v / n);
        let expected = [
            [
                1.0 - 2.0 * y * y - 2.0 * z * z,
                2.0 * x * y - 2.0 * w * z,
                2.0 * z * x + 2.0 * w * y,
            ],
            [
                2.0 * x * y + 2.0 * w * z,
                1.0 - 2.0 * x * x - 2.0 * z * z,
                2.0 * y * z - 2.0 * w * x,
            ],
            [
                2.0 * z * x - 2.0 * w * y,
                2.0 * y * z + 2.0 * w * x,
                1.0 - 2.0 * x * x - 2.0 * y * y,
            ],
        ];
        let r = rotation_from_qvec(q);
        for (row, expected_row) in expected.iter().enumerate() {
            for (col, value) in expected_row.iter().enumerate() {
                assert!((r.col(col)[row] - value).abs() < 1e-12, "R[{row}][{col}]");
            }
        }
    }

    #[test]
    fn qvec_round_trips_and_look_at_projects_target_to_center() {
        let cam = Camera::look_at(DVec3::new(3.0, -1.0, 2.0), DVec3::ZERO, DVec3::Z, 100.0, 100.0, 64, 48);
        let (pixel, depth) = cam.project(DVec3::ZERO).unwrap();
        assert!((pixel - DVec2::new(32.0, 24.0)).length() < 1e-9);
        assert!((depth - 14f64.sqrt()).abs() < 1e-9);
        let again = Camera::from_colmap(cam.qvec(), cam.translation.to_array(), 100.0, 100.0, 32.0, 24.0, 64, 48);
        assert!(again.rotation.abs_diff_eq(cam.rotation, 1e-12));
        // World up projects upwards in the image (towards smaller y).
        let (above, _) = cam.project(DVec3::Z * 0.1).unwrap();
        assert!(above.y < pixel.y);
        let ray = cam.ray_direction(pixel);
        assert!((ray - (-cam.center()).normalize()).length() < 1e-12);
    }
}
