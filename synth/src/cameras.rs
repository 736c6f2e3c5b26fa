//! Camera paths: an orbit around the objects, a forward-facing spiral (LLFF-like captures), or a
//! turn inside a room, looking outwards.

use glam::DVec3;
use lrf_formats::Camera;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::world::World;

/// How the cameras of a scene are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraPath {
    /// Evenly spaced around a circle about the objects, looking at their middle.
    Orbit,
    /// A small outward spiral in front of the objects, all cameras looking at their middle.
    ForwardFacing,
    /// Inside a closed room, on a small circle in its middle, looking outwards at the objects
    /// around them and the walls: an inside-out capture.
    Room,
    /// Orbit, forward-facing and room in turn across scene indices.
    Alternate,
}

impl CameraPath {
    /// The path scene `index` uses: never [`CameraPath::Alternate`].
    pub fn for_scene(self, index: usize) -> CameraPath {
        match self {
            CameraPath::Alternate => [CameraPath::Orbit, CameraPath::ForwardFacing, CameraPath::Room][index % 3],
            path => path,
        }
    }
}

/// One view of a scene: its image name, the COLMAP rotation it is written with, and the camera
/// built from exactly that rotation, so the model read back projects bit-identically.
#[derive(Clone, Debug)]
pub struct View {
    pub name: String,
    pub qvec: [f64; 4],
    pub camera: Camera,
}

/// Horizontal field of view of every camera.
const FIELD_OF_VIEW_DEGREES: f64 = 55.0;

/// Orbiting and forward-facing cameras aim at this point, about the height of the objects' middles.
const TARGET: DVec3 = DVec3::new(0.0, 0.0, 0.4);

/// Largest turn between neighbouring views of a room, so that they share most of what they see;
/// below 18 views the turn covers less than a full circle.
const ROOM_STEP_DEGREES: f64 = 20.0;

/// `views` views along `path`, named `00000.png`, `00001.png`, ... Callers resolve `Alternate`
/// per scene with [`CameraPath::for_scene`]; here it counts as forward-facing.
pub(crate) fn views(path: CameraPath, views: usize, width: u32, height: u32, rng: &mut ChaCha8Rng) -> Vec<View> {
    let focal = width as f64 / 2.0 / (FIELD_OF_VIEW_DEGREES.to_radians() / 2.0).tan();
    let phase: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    // (eye, target) of each view.
    let aims: Vec<(DVec3, DVec3)> = match path {
        CameraPath::Orbit => {
            let radius = rng.random_range(5.5..6.5);
            let height = rng.random_range(2.2..3.2);
            (0..views)
                .map(|i| {
                    let angle = phase + std::f64::consts::TAU * i as f64 / views as f64;
                    // A gentle rise and fall, so the cameras do not all lie in one plane.
                    let eye = DVec3::new(
                        radius * angle.cos(),
                        radius * angle.sin(),
                        height + 0.35 * (2.0 * angle).sin(),
                    );
                    (eye, TARGET)
                })
                .collect()
        }
        CameraPath::ForwardFacing | CameraPath::Alternate => {
            let distance = rng.random_range(4.5..5.5);
            let center = TARGET + DVec3::new(phase.cos(), phase.sin(), 0.0) * distance + DVec3::Z * 1.6;
            let forward = (TARGET - center).normalize();
            let right = forward.cross(DVec3::Z).normalize();
            let up = right.cross(forward);
            (0..views)
                .map(|i| {
                    // One and a half turns outwards, wider than tall as in hand-held captures.
                    let s = i as f64 / (views - 1).max(1) as f64;
                    let angle = 3.0 * std::f64::consts::PI * s;
                    let r = 0.35 + 0.65 * s;
                    let eye = center + right * (1.0 * r * angle.cos()) + up * (0.5 * r * angle.sin());
                    (eye, TARGET)
                })
                .collect()
        }
        CameraPath::Room => {
            // Eyes on a circle well inside the clearing and above the objects. Each view looks
            // outwards, turned sideways by `turn` so that neighbouring views see with parallax, and
            // down about `tilt` at the objects, nodding so as to see more floor or more wall (and
            // at times the ceiling).
            let radius = World::ROOM_CLEARING * rng.random_range(0.25..0.45);
            let height = World::ROOM_OBJECT_TOP + rng.random_range(0.2..0.4);
            let turn = rng.random_range(-20f64..20.0).to_radians();
            let tilt = rng.random_range(-18f64..-10.0).to_radians();
            let step = (std::f64::consts::TAU / views as f64).min(ROOM_STEP_DEGREES.to_radians());
            (0..views)
                .map(|i| {
                    let angle = phase + step * i as f64;
                    let eye = DVec3::new(
                        radius * angle.cos(),
                        radius * angle.sin(),
                        height + 0.08 * (3.0 * angle).sin(),
                    );
                    let yaw = angle + turn;
                    let pitch = tilt + 12f64.to_radians() * (2.0 * angle).sin();
                    let look = DVec3::new(pitch.cos() * yaw.cos(), pitch.cos() * yaw.sin(), pitch.sin());
                    (eye, eye + look)
                })
                .collect()
        }
    };
    aims.into_iter()
        .enumerate()
        .map(|(i, (eye, target))| {
            let aimed = Camera::look_at(eye, target, DVec3::Z, focal, focal, width, height);
            let qvec = aimed.qvec();
            let camera = Camera::from_colmap(
                qvec,
                aimed.translation.to_array(),
                focal,
                focal,
                aimed.cx,
                aimed.cy,
                width,
                height,
            );
            View {
                name: format!("{i:05}.png"),
                qvec,
                camera,
            }
        })
        .collect()
}
