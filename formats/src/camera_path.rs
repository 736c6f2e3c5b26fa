//! Camera paths for videos: key frames a user can edit, in `camera_path.json`, sampled into a smooth
//! sequence of cameras (Catmull-Rom through the key positions, quaternion slerp between key rotations,
//! focal lengths linear).
//!
//! ```json
//! {"version": 1, "width": 504, "height": 376, "frames": 120, "fps": 30,
//!  "keyframes": [{"position": [x, y, z], "rotation": [[..], [..], [..]], "fx": 400, "fy": 400}, ...]}
//! ```
//!
//! `position` is the camera centre in world coordinates; `rotation` is the camera-to-world rotation as
//! three rows (its columns are the camera's x right, y down and z forward axes, OpenCV's convention);
//! `fx`, `fy` are in pixels of a `width` × `height` frame, principal point at its centre.

use std::path::Path;

use glam::{DMat3, DQuat, DVec3};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::camera::Camera;
use crate::{FormatError, Result};

pub const CAMERA_PATH_VERSION: u32 = 1;

/// One key frame of a [`CameraPath`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFrame {
    pub position: [f64; 3],
    /// Camera-to-world rotation, rows.
    pub rotation: [[f64; 3]; 3],
    pub fx: f64,
    pub fy: f64,
}

/// Key frames and how many frames to sample from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraPath {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub fps: f64,
    pub keyframes: Vec<KeyFrame>,
}

impl KeyFrame {
    pub fn from_camera(camera: &Camera, scale: f64) -> KeyFrame {
        let to_world = camera.rotation.transpose();
        KeyFrame {
            position: camera.center().to_array(),
            rotation: [0, 1, 2].map(|r| to_world.row(r).to_array()),
            fx: camera.fx * scale,
            fy: camera.fy * scale,
        }
    }

    fn to_world(&self) -> DMat3 {
        DMat3::from_cols_array_2d(&self.rotation).transpose()
    }
}

impl CameraPath {
    /// Through `cameras` in their order, at their resolution.
    pub fn through(cameras: &[Camera], frames: usize, fps: f64) -> CameraPath {
        let (width, height) = cameras.first().map_or((0, 0), |c| (c.width, c.height));
        CameraPath {
            version: CAMERA_PATH_VERSION,
            width,
            height,
            frames,
            fps,
            keyframes: cameras
                .iter()
                .map(|c| KeyFrame::from_camera(c, width as f64 / c.width as f64))
                .collect(),
        }
    }

    /// One turn around `center` at the cameras' mean distance and height, looking at it, with their mean
    /// up direction (for object captures). 24 key frames, the first repeated at the end: Catmull-Rom then
    /// keeps within 0.5 % of the circle.
    pub fn orbit(center: DVec3, cameras: &[Camera], frames: usize, fps: f64) -> CameraPath {
        let Some(first) = cameras.first() else {
            return CameraPath::through(cameras, frames, fps);
        };
        let up = cameras
            .iter()
            .map(|c| -(c.rotation.transpose() * DVec3::Y))
            .sum::<DVec3>()
            .normalize_or(DVec3::Z);
        let offsets: Vec<DVec3> = cameras.iter().map(|c| c.center() - center).collect();
        let height = offsets.iter().map(|o| o.dot(up)).sum::<f64>() / offsets.len() as f64;
        let radius = offsets.iter().map(|o| (*o - up * o.dot(up)).length()).sum::<f64>() / offsets.len() as f64;
        let start = (offsets[0] - up * offsets[0].dot(up)).normalize_or(up.any_orthonormal_vector());
        let side = up.cross(start);
        let keys = 24;
        let keyframes = (0..=keys)
            .map(|k| {
                let angle = std::f64::consts::TAU * k as f64 / keys as f64;
                let eye = center + up * height + (start * angle.cos() + side * angle.sin()) * radius;
                let camera = Camera::look_at(eye, center, up, first.fx, first.fy, first.width, first.height);
                KeyFrame::from_camera(&camera, 1.0)
            })
            .collect();
        CameraPath {
            version: CAMERA_PATH_VERSION,
            width: first.width,
            height: first.height,
            frames,
            fps,
            keyframes,
        }
    }

    /// Reads and checks a path file; errors name the file and the key frame.
    pub fn read(path: &Path) -> Result<CameraPath> {
        let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
        let parsed: CameraPath = serde_json::from_str(&text).map_err(|e| {
            FormatError::invalid(
                path,
                "camera path",
                format!("{e} (see the format in lrf_formats::camera_path)"),
            )
        })?;
        parsed
            .validate()
            .map_err(|message| FormatError::invalid(path, "camera path", message))?;
        Ok(parsed)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| FormatError::invalid(path, "camera path", e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }

    /// Every way a path cannot be rendered: non-finite numbers, too few key frames, a rotation that is not
    /// one, non-positive focal lengths or sizes, two consecutive identical key frames (a zero-length segment).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != CAMERA_PATH_VERSION {
            return Err(format!("version {} is not {CAMERA_PATH_VERSION}", self.version));
        }
        if self.width == 0 || self.height == 0 {
            return Err(format!("frame size {}x{} is empty", self.width, self.height));
        }
        if self.frames < 2 || self.frames > 100_000 {
            return Err(format!("frames = {} is outside 2..=100000", self.frames));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(format!("fps = {} must be a positive number", self.fps));
        }
        if self.keyframes.len() < 2 {
            return Err(format!(
                "{} key frame(s): a path needs at least 2",
                self.keyframes.len()
            ));
        }
        for (i, key) in self.keyframes.iter().enumerate() {
            let numbers = key
                .position
                .iter()
                .chain(key.rotation.iter().flatten())
                .chain([&key.fx, &key.fy]);
            if numbers.clone().any(|v| !v.is_finite()) {
                return Err(format!("key frame {i} holds a NaN or an infinity"));
            }
            if key.fx <= 0.0 || key.fy <= 0.0 {
                return Err(format!(
                    "key frame {i}: focal lengths must be positive, got {} and {}",
                    key.fx, key.fy
                ));
            }
            let r = key.to_world();
            let error = (r.transpose() * r - DMat3::IDENTITY)
                .to_cols_array()
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            if error > 1e-3 || r.determinant() < 0.0 {
                return Err(format!(
                    "key frame {i}: rotation is not a rotation matrix (|RᵀR − I| = {error:.1e})"
                ));
            }
            if i > 0 && self.keyframes[i - 1] == *key {
                return Err(format!(
                    "key frames {} and {i} are identical: a zero-length segment",
                    i - 1
                ));
            }
        }
        Ok(())
    }

    /// The path's `frames` cameras, evenly spaced in key-frame parameter.
    pub fn cameras(&self) -> Vec<Camera> {
        let keys = &self.keyframes;
        let last = keys.len() - 1;
        let positions: Vec<DVec3> = keys.iter().map(|k| DVec3::from_array(k.position)).collect();
        let mut rotations: Vec<DQuat> = keys
            .iter()
            .map(|k| DQuat::from_mat3(&k.to_world()).normalize())
            .collect();
        // Neighbouring quaternions on one hemisphere, so that slerp takes the short way.
        for i in 1..rotations.len() {
            if rotations[i].dot(rotations[i - 1]) < 0.0 {
                rotations[i] = -rotations[i];
            }
        }
        (0..self.frames)
            .map(|f| {
                let t = f as f64 * last as f64 / (self.frames - 1) as f64;
                let j = (t.floor() as usize).min(last - 1);
                let u = t - j as f64;
                let p = |i: isize| positions[i.clamp(0, last as isize) as usize];
                let j = j as isize;
                let position = catmull_rom(p(j - 1), p(j), p(j + 1), p(j + 2), u);
                let to_world = DMat3::from_quat(rotations[j as usize].slerp(rotations[j as usize + 1], u));
                let (a, b) = (&keys[j as usize], &keys[j as usize + 1]);
                let rotation = to_world.transpose();
                Camera {
                    rotation,
                    translation: -(rotation * position),
                    fx: a.fx + (b.fx - a.fx) * u,
                    fy: a.fy + (b.fy - a.fy) * u,
                    cx: self.width as f64 / 2.0,
                    cy: self.height as f64 / 2.0,
                    width: self.width,
                    height: self.height,
                }
            })
            .collect()
    }
}

/// The uniform Catmull-Rom spline through `p1` (u = 0) and `p2` (u = 1).
fn catmull_rom(p0: DVec3, p1: DVec3, p2: DVec3, p3: DVec3, u: f64) -> DVec3 {
    let (u2, u3) = (u * u, u * u * u);
    0.5 * (2.0 * p1 + (p2 - p0) * u + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * u2 + (3.0 * p1 - p0 - 3.0 * p2 + p3) * u3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(eye: DVec3) -> Camera {
        Camera::look_at(eye, DVec3::ZERO, DVec3::Y, 100.0, 100.0, 64, 48)
    }

    #[test]
    fn the_path_passes_through_its_key_frames() {
        let keys: Vec<Camera> = [(-2.0, 0.0), (0.0, 1.0), (2.0, 0.5), (3.0, -1.0)]
            .map(|(x, y)| camera(DVec3::new(x, y, 5.0)))
            .into();
        let path = CameraPath::through(&keys, 7, 30.0);
        path.validate().unwrap();
        let frames = path.cameras();
        assert_eq!(frames.len(), 7);
        // Frames 0, 2, 4, 6 fall on key frames 0..3.
        for (f, k) in [(0, 0), (2, 1), (4, 2), (6, 3)] {
            assert!(frames[f].center().abs_diff_eq(keys[k].center(), 1e-9), "frame {f}");
            assert!(frames[f].rotation.abs_diff_eq(keys[k].rotation, 1e-9), "frame {f}");
        }
        // Between them, rotations stay rotations.
        let r = frames[3].rotation;
        assert!((r * r.transpose()).abs_diff_eq(DMat3::IDENTITY, 1e-9));
    }

    /// Catmull-Rom against its defining property: the tangent at a key is half the chord of its neighbours.
    #[test]
    fn catmull_rom_tangents_are_half_the_neighbouring_chord() {
        let p = [
            DVec3::new(0.0, 0.0, 0.0),
            DVec3::new(1.0, 2.0, 0.0),
            DVec3::new(3.0, 2.0, 1.0),
            DVec3::new(4.0, 0.0, 1.0),
        ];
        let h = 1e-6;
        let tangent = (catmull_rom(p[0], p[1], p[2], p[3], h) - catmull_rom(p[0], p[1], p[2], p[3], 0.0)) / h;
        assert!(tangent.abs_diff_eq((p[2] - p[0]) * 0.5, 1e-4), "{tangent}");
    }

    #[test]
    fn an_orbit_circles_the_centre_looking_at_it() {
        let ring: Vec<Camera> = (0..6)
            .map(|i| {
                let a = i as f64 * std::f64::consts::TAU / 6.0;
                camera(DVec3::new(3.0 * a.cos(), 1.0, 3.0 * a.sin()))
            })
            .collect();
        let path = CameraPath::orbit(DVec3::ZERO, &ring, 48, 24.0);
        path.validate().unwrap();
        for frame in path.cameras() {
            let c = frame.center();
            assert!(((c.x * c.x + c.z * c.z).sqrt() - 3.0).abs() < 0.015, "radius at {c}");
            assert!((c.y - 1.0).abs() < 1e-6, "height at {c}");
            let forward = frame.rotation.row(2);
            assert!(forward.dot(-c.normalize()) > 0.999, "looks at the centre from {c}");
        }
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        let keys = [camera(DVec3::new(0.0, 0.0, 5.0)), camera(DVec3::new(1.0, 0.0, 5.0))];
        let good = CameraPath::through(&keys, 10, 30.0);
        let mut nan = good.clone();
        nan.keyframes[1].position[0] = f64::NAN;
        assert!(nan.validate().unwrap_err().contains("NaN"));
        let mut repeated = good.clone();
        repeated.keyframes[1] = repeated.keyframes[0].clone();
        assert!(repeated.validate().unwrap_err().contains("zero-length"));
        let mut skewed = good.clone();
        skewed.keyframes[0].rotation[0][0] = 2.0;
        assert!(skewed.validate().unwrap_err().contains("not a rotation"));
        let mut one = good.clone();
        one.keyframes.truncate(1);
        assert!(one.validate().unwrap_err().contains("at least 2"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, r#"{"version": 1, "width": 8}"#).unwrap();
        let error = CameraPath::read(&file).unwrap_err().to_string();
        assert!(error.contains("p.json") && error.contains("missing field"), "{error}");
        good.write(&file).unwrap();
        assert_eq!(CameraPath::read(&file).unwrap(), good);
    }
}
