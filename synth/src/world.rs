//! The procedural world: spheres and boxes resting on a textured ground plane, or on the floor of a
//! closed room (floor, four walls, ceiling), under the scene's lighting (see `lighting`); rays are
//! traced against it analytically.
//!
//! World axes: z up, ground or floor at z = 0. Outdoors, objects stand within
//! [`World::LAYOUT_RADIUS`] of the origin; in a room, around [`World::ROOM_CLEARING`], the middle
//! the cameras stand in. Shading is Lambertian without shadows or reflections, so a surface point's
//! radiance is the same from every view and changes only as smoothly as its albedo and normal.

use std::ops::{Range, RangeInclusive};

use glam::{DVec2, DVec3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::CameraPath;
use crate::lighting::Lighting;
use crate::materials::{Palette, Role};
use crate::texture::{Material, smoothstep};

/// Which surface a ray hit: an object and, for boxes, the face (normals jump between faces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Surface {
    object: usize,
    face: u8,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    /// Distance along the (unit) ray.
    pub t: f64,
    pub position: DVec3,
    pub normal: DVec3,
    pub surface: Surface,
}

#[derive(Clone, Debug)]
enum Shape {
    /// The plane `normal · p = offset`, seen from the side `normal` points to: the ground, a room's
    /// floor, walls and ceiling.
    Plane {
        normal: DVec3,
        offset: f64,
    },
    Sphere {
        center: DVec3,
        radius: f64,
    },
    /// A box turned by `yaw` about the vertical axis.
    Cuboid {
        center: DVec3,
        half: DVec3,
        yaw: DVec2,
    },
}

/// The plane z = 0, seen from above.
const GROUND: Shape = Shape::Plane {
    normal: DVec3::Z,
    offset: 0.0,
};

impl Shape {
    /// Radius of a vertical cylinder about the centre that holds the shape.
    fn footprint(&self) -> f64 {
        match *self {
            Shape::Plane { .. } => f64::INFINITY,
            Shape::Sphere { radius, .. } => radius,
            Shape::Cuboid { half, .. } => half.truncate().length(),
        }
    }

    /// The shape moved horizontally.
    fn moved(self, offset: DVec2) -> Shape {
        let offset = offset.extend(0.0);
        match self {
            plane @ Shape::Plane { .. } => plane,
            Shape::Sphere { center, radius } => Shape::Sphere {
                center: center + offset,
                radius,
            },
            Shape::Cuboid { center, half, yaw } => Shape::Cuboid {
                center: center + offset,
                half,
                yaw,
            },
        }
    }
}

#[derive(Clone, Debug)]
struct Object {
    shape: Shape,
    material: Material,
}

#[derive(Clone, Debug)]
pub(crate) struct World {
    objects: Vec<Object>,
    lighting: Lighting,
}

/// Rays start at cameras, never on surfaces, so a tiny positive bound suffices.
const MIN_T: f64 = 1e-9;

impl World {
    /// Outdoors, objects stand within this distance of the origin.
    pub const LAYOUT_RADIUS: f64 = 2.4;
    /// In rooms, objects keep out of this radius about the vertical axis (and 0.15 more), which
    /// is left to the cameras.
    pub const ROOM_CLEARING: f64 = 2.0;
    /// In rooms, objects are at most this tall, so that cameras see over them.
    pub const ROOM_OBJECT_TOP: f64 = 1.2;
    /// Half-widths of rooms along x and y: every corner stays within [`World::POINT_RADIUS`].
    const ROOM_HALF: Range<f64> = 3.3..4.2;
    const ROOM_HEIGHT: Range<f64> = 2.6..3.4;
    /// Planes' patterns fade to their mean colour between these distances from the vertical
    /// axis, so that the ground does not alias near the horizon.
    pub const GROUND_FADE: (f64, f64) = (9.0, 16.0);
    /// Points are sampled within this distance of the vertical axis: the region the cameras
    /// surround or face, seen from all of them at moderate distances and angles.
    pub const POINT_RADIUS: f64 = 6.0;

    /// A random world for cameras on `path`: a room for [`CameraPath::Room`], else open ground.
    pub(crate) fn random(rng: &mut ChaCha8Rng, path: CameraPath) -> World {
        let palette = Palette::random(rng);
        let (mut objects, layout, ambient_share) = if path == CameraPath::Room {
            let (planes, layout) = room(rng, &palette);
            (planes, layout, 0.35..0.7)
        } else {
            let ground = Object {
                shape: GROUND,
                material: palette.material(rng, Role::Ground).on_plane(DVec3::Z),
            };
            (vec![ground], Layout::OPEN, 0.15..0.6)
        };
        place_objects(rng, &palette, layout, &mut objects);
        World {
            objects,
            lighting: Lighting::random(rng, ambient_share),
        }
    }

    /// The nearest surface along a unit-direction ray, if any.
    pub(crate) fn trace(&self, origin: DVec3, direction: DVec3) -> Option<Hit> {
        let mut nearest: Option<Hit> = None;
        for (object, item) in self.objects.iter().enumerate() {
            if let Some((t, normal, face)) = intersect(&item.shape, origin, direction)
                && nearest.is_none_or(|hit| t < hit.t)
            {
                let surface = Surface { object, face };
                nearest = Some(Hit {
                    t,
                    position: origin + t * direction,
                    normal,
                    surface,
                });
            }
        }
        nearest
    }

    /// Light leaving a surface point, the same in every direction (Lambertian).
    pub(crate) fn radiance(&self, hit: &Hit) -> DVec3 {
        let object = &self.objects[hit.surface.object];
        let albedo = match object.shape {
            Shape::Plane { .. } => {
                let (start, end) = Self::GROUND_FADE;
                let fade = smoothstep(start, end, hit.position.truncate().length());
                object.material.albedo(hit.position).lerp(object.material.mean(), fade)
            }
            Shape::Sphere { center, .. } => object.material.albedo(hit.position - center),
            // Planar patterns (bricks, glyphs) lie on each face.
            Shape::Cuboid { center, yaw, .. } => object
                .material
                .on_plane(to_box(hit.normal, yaw))
                .albedo(to_box(hit.position - center, yaw)),
        };
        self.lighting.shade(albedo, hit.normal)
    }

    /// What a camera at `origin` sees along a unit direction.
    pub(crate) fn color_along(&self, origin: DVec3, direction: DVec3) -> DVec3 {
        match self.trace(origin, direction) {
            Some(hit) => self.radiance(&hit),
            None => self.lighting.sky(direction),
        }
    }
}

/// Where objects stand and how big they are.
struct Layout {
    count: RangeInclusive<usize>,
    sphere_radius: Range<f64>,
    box_half: Range<f64>,
    box_half_height: Range<f64>,
    /// Centres lie in the rectangle of these half-widths about the origin, less their footprint...
    bounds: DVec2,
    /// ... with footprints within this distance of the vertical axis...
    reach: f64,
    /// ... and 0.15 away from these footprints, (centre, radius), and from each other.
    taken: Vec<(DVec2, f64)>,
}

impl Layout {
    const OPEN: Layout = Layout {
        count: 3..=6,
        sphere_radius: 0.35..0.8,
        box_half: 0.25..0.7,
        box_half_height: 0.25..0.7,
        bounds: DVec2::splat(World::LAYOUT_RADIUS),
        reach: World::LAYOUT_RADIUS,
        taken: Vec::new(),
    };
}

/// A room of random size about the vertical axis, its six planes facing inwards, and where its
/// objects go: around the clearing, clear of the walls.
fn room(rng: &mut ChaCha8Rng, palette: &Palette) -> (Vec<Object>, Layout) {
    let half = DVec2::new(rng.random_range(World::ROOM_HALF), rng.random_range(World::ROOM_HALF));
    let height = rng.random_range(World::ROOM_HEIGHT);
    let floor = palette.material(rng, Role::Floor);
    let walls = palette.material(rng, Role::Wall);
    let ceiling = palette.material(rng, Role::Ceiling);
    let plane = |normal: DVec3, offset: f64, material: Material| Object {
        shape: Shape::Plane { normal, offset },
        material: material.on_plane(normal),
    };
    let planes = vec![
        plane(DVec3::Z, 0.0, floor),
        plane(DVec3::NEG_Z, -height, ceiling),
        plane(DVec3::X, -half.x, walls),
        plane(DVec3::NEG_X, -half.x, walls),
        plane(DVec3::Y, -half.y, walls),
        plane(DVec3::NEG_Y, -half.y, walls),
    ];
    let layout = Layout {
        count: 4..=8,
        sphere_radius: 0.25..World::ROOM_OBJECT_TOP / 2.0 - 0.05,
        box_half: 0.2..0.5,
        box_half_height: 0.2..World::ROOM_OBJECT_TOP / 2.0,
        bounds: half - 0.1,
        reach: f64::INFINITY,
        taken: vec![(DVec2::ZERO, World::ROOM_CLEARING)],
    };
    (planes, layout)
}

/// Adds randomly sized spheres and boxes where `layout` has room for them.
fn place_objects(rng: &mut ChaCha8Rng, palette: &Palette, layout: Layout, objects: &mut Vec<Object>) {
    let Layout {
        count,
        sphere_radius,
        box_half,
        box_half_height,
        bounds,
        reach,
        mut taken,
    } = layout;
    for _ in 0..rng.random_range(count) {
        let shape = if rng.random_bool(0.5) {
            let radius = rng.random_range(sphere_radius.clone());
            Shape::Sphere {
                center: DVec3::new(0.0, 0.0, radius),
                radius,
            }
        } else {
            let half = DVec3::new(
                rng.random_range(box_half.clone()),
                rng.random_range(box_half.clone()),
                rng.random_range(box_half_height.clone()),
            );
            let angle: f64 = rng.random_range(0.0..std::f64::consts::PI);
            Shape::Cuboid {
                center: DVec3::new(0.0, 0.0, half.z),
                half,
                yaw: DVec2::new(angle.cos(), angle.sin()),
            }
        };
        let footprint = shape.footprint();
        let area = bounds - footprint;
        let spot = (0..100)
            .map(|_| DVec2::new(rng.random_range(-area.x..area.x), rng.random_range(-area.y..area.y)))
            .find(|spot| {
                spot.length() <= reach - footprint
                    && taken.iter().all(|(c, r)| c.distance(*spot) > r + footprint + 0.15)
            });
        let Some(spot) = spot else { continue };
        taken.push((spot, footprint));
        objects.push(Object {
            shape: shape.moved(spot),
            material: palette.material(rng, Role::Object),
        });
    }
}

/// Distance, outward unit normal and face of a ray's first hit on a shape.
fn intersect(shape: &Shape, origin: DVec3, direction: DVec3) -> Option<(f64, DVec3, u8)> {
    match *shape {
        Shape::Plane { normal, offset } => {
            let facing = direction.dot(normal);
            let t = (offset - origin.dot(normal)) / facing;
            (facing < 0.0 && t > MIN_T).then_some((t, normal, 0))
        }
        Shape::Sphere { center, radius } => {
            let oc = origin - center;
            let b = oc.dot(direction);
            let discriminant = b * b - (oc.length_squared() - radius * radius);
            if discriminant < 0.0 {
                return None;
            }
            let t = -b - discriminant.sqrt();
            (t > MIN_T).then(|| (t, (origin + t * direction - center) / radius, 0))
        }
        Shape::Cuboid { center, half, yaw } => {
            let o = to_box(origin - center, yaw);
            let d = to_box(direction, yaw);
            let (mut near, mut far, mut axis) = (f64::NEG_INFINITY, f64::INFINITY, 0);
            for a in 0..3 {
                if d[a] == 0.0 {
                    if o[a].abs() > half[a] {
                        return None;
                    }
                    continue;
                }
                let t1 = (-half[a] - o[a]) / d[a];
                let t2 = (half[a] - o[a]) / d[a];
                let (lo, hi) = if t1 < t2 { (t1, t2) } else { (t2, t1) };
                if lo > near {
                    near = lo;
                    axis = a;
                }
                far = far.min(hi);
            }
            if near > far || near <= MIN_T {
                return None;
            }
            let mut local = DVec3::ZERO;
            local[axis] = -d[axis].signum();
            let face = 2 * axis as u8 + u8::from(local[axis] > 0.0);
            Some((near, from_box(local, yaw), face))
        }
    }
}

/// World offset to box coordinates: rotation by −yaw about z.
fn to_box(v: DVec3, yaw: DVec2) -> DVec3 {
    DVec3::new(yaw.x * v.x + yaw.y * v.y, -yaw.y * v.x + yaw.x * v.y, v.z)
}

fn from_box(v: DVec3, yaw: DVec2) -> DVec3 {
    DVec3::new(yaw.x * v.x - yaw.y * v.y, yaw.y * v.x + yaw.x * v.y, v.z)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(shape: Shape) -> World {
        World {
            objects: vec![Object {
                shape,
                material: Material::Solid(DVec3::splat(0.5)),
            }],
            lighting: Lighting::plain(),
        }
    }

    #[test]
    fn rays_hit_shapes_where_geometry_says() {
        let ground = world(GROUND);
        let hit = ground
            .trace(DVec3::new(1.0, 2.0, 3.0), DVec3::new(0.0, 0.6, -0.8))
            .unwrap();
        assert!((hit.t - 3.75).abs() < 1e-12 && hit.position.z.abs() < 1e-12);
        assert!(ground.trace(DVec3::new(0.0, 0.0, 3.0), DVec3::Z).is_none());
        // A wall at x = 2 facing −x is seen from x < 2 only.
        let wall = world(Shape::Plane {
            normal: DVec3::NEG_X,
            offset: -2.0,
        });
        let hit = wall.trace(DVec3::new(-1.0, 0.5, 1.0), DVec3::X).unwrap();
        assert!((hit.t - 3.0).abs() < 1e-12 && hit.normal == DVec3::NEG_X);
        assert!(wall.trace(DVec3::new(3.0, 0.5, 1.0), DVec3::NEG_X).is_none());

        let sphere = world(Shape::Sphere {
            center: DVec3::new(0.0, 0.0, 1.0),
            radius: 0.5,
        });
        let hit = sphere.trace(DVec3::new(-5.0, 0.0, 1.0), DVec3::X).unwrap();
        assert!((hit.t - 4.5).abs() < 1e-12 && (hit.normal + DVec3::X).length() < 1e-12);

        // A box turned 90°: its local x half-size 1 lies along world y.
        let yaw = DVec2::new(0.0, 1.0);
        let cuboid = world(Shape::Cuboid {
            center: DVec3::ZERO,
            half: DVec3::new(1.0, 0.25, 0.5),
            yaw,
        });
        let hit = cuboid.trace(DVec3::new(0.0, -5.0, 0.0), DVec3::Y).unwrap();
        assert!((hit.t - 4.0).abs() < 1e-12 && (hit.normal + DVec3::Y).length() < 1e-12);
        let side = cuboid.trace(DVec3::new(-5.0, 0.0, 0.0), DVec3::X).unwrap();
        assert!((side.t - 4.75).abs() < 1e-12 && side.surface != hit.surface);
        assert!(cuboid.trace(DVec3::new(-5.0, 0.0, 0.6), DVec3::X).is_none());
    }

    /// Objects do not overlap; outdoors they stand within the layout radius, in rooms between the
    /// clearing and the walls, and below the cameras.
    #[test]
    fn random_worlds_place_objects_apart_and_inside_the_layout() {
        use rand::SeedableRng;
        for (seed, path) in (0..40).zip([CameraPath::Orbit, CameraPath::Room].into_iter().cycle()) {
            let world = World::random(&mut ChaCha8Rng::seed_from_u64(seed), path);
            let planes = if path == CameraPath::Room { 6 } else { 1 };
            assert!(world.objects.len() > planes, "seed {seed}: at least one object");
            let walls: Vec<(DVec3, f64)> = world.objects[..planes]
                .iter()
                .filter_map(|object| match object.shape {
                    Shape::Plane { normal, offset } => (normal.z == 0.0).then_some((normal, offset)),
                    _ => panic!("seed {seed}: planes come first"),
                })
                .collect();
            let placed: Vec<(DVec3, f64)> = world.objects[planes..]
                .iter()
                .map(|object| match object.shape {
                    Shape::Sphere { center, .. } | Shape::Cuboid { center, .. } => (center, object.shape.footprint()),
                    Shape::Plane { .. } => panic!("seed {seed}: a plane among the objects"),
                })
                .collect();
            for (i, &(center, reach)) in placed.iter().enumerate() {
                let distance = center.truncate().length();
                if path == CameraPath::Room {
                    assert!(
                        distance - reach > World::ROOM_CLEARING,
                        "seed {seed}: object {i} in the clearing"
                    );
                    assert!(
                        2.0 * center.z <= World::ROOM_OBJECT_TOP,
                        "seed {seed}: object {i} too tall"
                    );
                    for (normal, offset) in &walls {
                        assert!(
                            center.dot(*normal) - offset > reach,
                            "seed {seed}: object {i} in a wall"
                        );
                    }
                } else {
                    assert!(
                        distance + reach <= World::LAYOUT_RADIUS + 1e-9,
                        "seed {seed}: object {i} outside"
                    );
                }
                for (other, other_reach) in &placed[..i] {
                    assert!(
                        center.truncate().distance(other.truncate()) > reach + other_reach,
                        "seed {seed}: object {i} overlaps"
                    );
                }
            }
        }
    }

    /// Room scenes: every camera stands inside the room, in the clearing and above the objects,
    /// and every view sees the walls over a good share of its pixels (the rest: floor, ceiling,
    /// objects; never sky); some views see the ceiling.
    #[test]
    fn room_cameras_stand_inside_and_see_the_walls() {
        let mut ceiling_seen = 0;
        for (seed, (width, height)) in (0..8).zip([(64, 48), (64, 32), (48, 64)].into_iter().cycle()) {
            let options = crate::SynthOptions {
                scenes: 1,
                views: 24,
                width,
                height,
                seed,
                path: CameraPath::Room,
                points_per_scene: 1,
                ..Default::default()
            };
            let crate::Scene { views, world, .. } = crate::Scene::new(&options, 0).unwrap();
            // The vertical component of the normal of a plane hit: 0 on walls, −1 on the ceiling.
            let facing = |surface: Surface| match world.objects[surface.object].shape {
                Shape::Plane { normal, .. } => Some(normal.z),
                _ => None,
            };
            for view in &views {
                let camera = &view.camera;
                let eye = camera.center();
                for object in &world.objects {
                    match object.shape {
                        Shape::Plane { normal, offset } => {
                            assert!(eye.dot(normal) - offset > 0.5, "seed {seed}: {} outside", view.name)
                        }
                        _ => assert!(
                            eye.truncate().length() < World::ROOM_CLEARING && eye.z > World::ROOM_OBJECT_TOP,
                            "seed {seed}: {} among the objects",
                            view.name
                        ),
                    }
                }
                let (mut rays, mut walls, mut ceiling) = (0, 0, 0);
                for y in (0..height).step_by(4) {
                    for x in (0..width).step_by(4) {
                        let pixel = DVec2::new(x as f64 + 0.5, y as f64 + 0.5);
                        let hit = world.trace(eye, camera.ray_direction(pixel)).expect("rooms are closed");
                        rays += 1;
                        walls += usize::from(facing(hit.surface) == Some(0.0));
                        ceiling += usize::from(facing(hit.surface) == Some(-1.0));
                    }
                }
                assert!(
                    walls * 4 >= rays,
                    "seed {seed}: {} sees walls on {walls} of {rays} rays",
                    view.name
                );
                ceiling_seen += usize::from(ceiling > 0);
            }
        }
        assert!(ceiling_seen >= 8, "the ceiling shows in {ceiling_seen} of 192 views");
    }

    /// The scenes of one seed differ in lighting, and together use every kind of material.
    #[test]
    fn scenes_vary_in_lighting_and_materials() {
        let options = crate::SynthOptions {
            scenes: 24,
            seed: 3,
            ..Default::default()
        };
        let worlds: Vec<World> = (0..options.scenes)
            .map(|index| crate::Scene::new(&options, index).unwrap().world)
            .collect();
        for (i, world) in worlds.iter().enumerate() {
            for (j, other) in worlds[..i].iter().enumerate() {
                assert_ne!(world.lighting, other.lighting, "scenes {j} and {i}");
            }
        }
        let kinds: std::collections::HashSet<_> = worlds
            .iter()
            .flat_map(|world| &world.objects)
            .map(|object| std::mem::discriminant(&object.material))
            .collect();
        assert_eq!(
            kinds.len(),
            8,
            "solid, checker, stripes, blotches, marble, gradient, bricks, glyphs"
        );
    }
}
