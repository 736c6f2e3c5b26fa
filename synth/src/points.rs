//! 3D points with exact tracks, sampled on visible surfaces.
//!
//! A candidate is the surface point seen through a random position of a random view. A view
//! observes it when (1) it projects inside the image, (2) the ray from that camera reaches it
//! before any other surface, and (3) the eight rays through the corners and edge midpoints of a
//! square of half-size [`RING_PIXELS`] around its projection, and the colour samples of the pixel
//! it falls in, hit the same surface with radiance within [`SMOOTHNESS`] of its own. (3) makes
//! that pixel show its colour up to 8-bit rounding, even where a pattern has features finer than
//! the square (glyphs, mortar), and keeps keypoints off occlusion edges, box edges and grazing,
//! blurred views of a texture, as a feature matcher would. Points need two observing views.
//!
//! Rejecting a point outright for one unclear view, rather than leaving that view out of its track,
//! would leave almost no points on the objects of an orbit: every point on a sphere is near the
//! silhouette as seen from some camera of the circle.

use glam::{DVec2, DVec3};
use lrf_formats::Camera;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::cameras::View;
use crate::render::{SUBPIXELS, to_8bit};
use crate::world::{Hit, World};

/// Half-size, in pixels of each view, of the square checked around a projection: beyond the colour
/// samples of the pixel the point falls in (at most 0.75 px away along each axis).
const RING_PIXELS: f64 = 1.0;
/// Largest radiance change allowed across that square, per channel.
const SMOOTHNESS: f64 = 1.5 / 255.0;
/// A visibility ray may stop this much (relative) short of the point and still count as reaching
/// it: rounding in the intersection, far below any real gap between surfaces.
const REACH_TOLERANCE: f64 = 1e-6;
/// Candidates are drawn and tested in fixed-size batches, so the points kept do not depend on the
/// number of threads.
const BATCH: usize = 256;
/// Give up after this many candidates per requested point.
const ATTEMPTS_PER_POINT: usize = 40;

#[derive(Clone, Debug)]
pub(crate) struct SampledPoint {
    pub position: DVec3,
    pub rgb: [u8; 3],
    /// Observing views (indices) and the exact projection in each, in view order.
    pub observations: Vec<(usize, DVec2)>,
}

/// Up to `count` points; fewer only when the views see too little smooth surface.
pub(crate) fn sample_points(world: &World, views: &[View], count: usize, rng: &mut ChaCha8Rng) -> Vec<SampledPoint> {
    let mut points = Vec::with_capacity(count);
    let mut attempts = 0;
    while points.len() < count && attempts < count * ATTEMPTS_PER_POINT {
        let candidates: Vec<(usize, DVec2)> = (0..BATCH)
            .map(|_| {
                let view = rng.random_range(0..views.len());
                let camera = &views[view].camera;
                (
                    view,
                    DVec2::new(
                        rng.random::<f64>() * camera.width as f64,
                        rng.random::<f64>() * camera.height as f64,
                    ),
                )
            })
            .collect();
        attempts += BATCH;
        let kept: Vec<Option<SampledPoint>> = candidates
            .par_iter()
            .map(|&(view, pixel)| candidate(world, views, view, pixel))
            .collect();
        points.extend(kept.into_iter().flatten().take(count - points.len()));
    }
    points
}

fn candidate(world: &World, views: &[View], view: usize, pixel: DVec2) -> Option<SampledPoint> {
    let camera = &views[view].camera;
    let hit = world.trace(camera.center(), camera.ray_direction(pixel))?;
    if hit.position.truncate().length() > World::POINT_RADIUS {
        return None;
    }
    let radiance = world.radiance(&hit);
    let observations: Vec<(usize, DVec2)> = views
        .iter()
        .enumerate()
        .filter_map(|(index, view)| {
            let camera = &view.camera;
            let (projection, _) = camera.project(hit.position).filter(|(p, _)| camera.contains(*p))?;
            let origin = camera.center();
            let distance = origin.distance(hit.position);
            let first = world.trace(origin, (hit.position - origin) / distance)?;
            // Another surface at the point's distance (touching shapes) would make it ambiguous.
            let reaches = first.t >= distance * (1.0 - REACH_TOLERANCE) && first.surface == hit.surface;
            (reaches && smooth_around(world, camera, projection, &hit, radiance)).then_some((index, projection))
        })
        .collect();
    (observations.len() >= 2).then(|| SampledPoint {
        position: hit.position,
        rgb: to_8bit(radiance),
        observations,
    })
}

/// Whether the rays through the square around `projection` and the colour samples of the pixel it
/// falls in hit the point's surface with nearly its radiance (compared as stored: clamped to [0, 1]).
fn smooth_around(world: &World, camera: &Camera, projection: DVec2, hit: &Hit, radiance: DVec3) -> bool {
    let origin = camera.center();
    let shown = |radiance: DVec3| radiance.clamp(DVec3::ZERO, DVec3::ONE);
    let offsets = [-RING_PIXELS, 0.0, RING_PIXELS];
    let square = offsets
        .iter()
        .flat_map(|&dy| offsets.map(|dx| DVec2::new(dx, dy)))
        .filter(|offset| *offset != DVec2::ZERO)
        .map(|offset| projection + offset);
    let corner = projection.floor();
    let pixel = SUBPIXELS.iter().map(|&(dx, dy)| corner + DVec2::new(dx, dy));
    square.chain(pixel).all(|position| {
        world.trace(origin, camera.ray_direction(position)).is_some_and(|near| {
            near.surface == hit.surface
                && (shown(world.radiance(&near)) - shown(radiance)).abs().max_element() <= SMOOTHNESS
        })
    })
}
