//! The procedural world: a textured ground plane and spheres and boxes resting on it, under the
//! scene's lighting (see `lighting`); rays are traced against it analytically.
//!
//! World axes: z up, ground at z = 0, objects within [`World::LAYOUT_RADIUS`] of the origin.
//! Shading is Lambertian without shadows or reflections, so a surface point's radiance is the same
//! from every view and changes only as smoothly as its albedo and normal.

use glam::{DVec2, DVec3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

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
    /// The plane z = 0, seen from above.
    Ground,
    Sphere {
        centre: DVec3,
        radius: f64,
    },
    /// A box turned by `yaw` about the vertical axis.
    Cuboid {
        centre: DVec3,
        half: DVec3,
        yaw: DVec2,
    },
}

impl Shape {
    /// Radius of a vertical cylinder about the centre that holds the shape.
    fn footprint(&self) -> f64 {
        match *self {
            Shape::Ground => f64::INFINITY,
            Shape::Sphere { radius, .. } => radius,
            Shape::Cuboid { half, .. } => half.truncate().length(),
        }
    }

    /// The shape moved horizontally.
    fn moved(self, offset: DVec2) -> Shape {
        let offset = offset.extend(0.0);
        match self {
            Shape::Ground => Shape::Ground,
            Shape::Sphere { centre, radius } => Shape::Sphere {
                centre: centre + offset,
                radius,
            },
            Shape::Cuboid { centre, half, yaw } => Shape::Cuboid {
                centre: centre + offset,
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
    /// Objects stand within this distance of the origin.
    pub const LAYOUT_RADIUS: f64 = 2.4;
    /// The ground's pattern fades to its mean colour between these distances from the origin, so
    /// that it does not alias near the horizon.
    pub const GROUND_FADE: (f64, f64) = (9.0, 16.0);
    /// Points are sampled within this distance of the vertical axis: the region the cameras
    /// surround or face, seen from all of them at moderate distances and angles.
    pub const POINT_RADIUS: f64 = 6.0;

    pub(crate) fn random(rng: &mut ChaCha8Rng) -> World {
        let palette = Palette::random(rng);
        let mut objects = vec![Object {
            shape: Shape::Ground,
            material: palette.material(rng, Role::Ground).on_plane(DVec3::Z),
        }];
        let count = rng.random_range(3..=6);
        // Footprints (centre, radius) already taken, so objects do not overlap.
        let mut taken: Vec<(DVec2, f64)> = Vec::new();
        for _ in 0..count {
            let shape = if rng.random_bool(0.5) {
                let radius = rng.random_range(0.35..0.8);
                Shape::Sphere {
                    centre: DVec3::new(0.0, 0.0, radius),
                    radius,
                }
            } else {
                let half = DVec3::new(
                    rng.random_range(0.25..0.7),
                    rng.random_range(0.25..0.7),
                    rng.random_range(0.25..0.7),
                );
                let angle: f64 = rng.random_range(0.0..std::f64::consts::PI);
                Shape::Cuboid {
                    centre: DVec3::new(0.0, 0.0, half.z),
                    half,
                    yaw: DVec2::new(angle.cos(), angle.sin()),
                }
            };
            let footprint = shape.footprint();
            let reach = Self::LAYOUT_RADIUS - footprint;
            let spot = (0..100)
                .map(|_| DVec2::new(rng.random_range(-reach..reach), rng.random_range(-reach..reach)))
                .find(|spot| {
                    spot.length() <= reach && taken.iter().all(|(c, r)| c.distance(*spot) > r + footprint + 0.15)
                });
            let Some(spot) = spot else { continue };
            taken.push((spot, footprint));
            let shape = shape.moved(spot);
            let material = palette.material(rng, Role::Object);
            objects.push(Object { shape, material });
        }
        World {
            objects,
            lighting: Lighting::random(rng),
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
            Shape::Ground => {
                let (start, end) = Self::GROUND_FADE;
                let fade = smoothstep(start, end, hit.position.truncate().length());
                object.material.albedo(hit.position).lerp(object.material.mean(), fade)
            }
            Shape::Sphere { centre, .. } => object.material.albedo(hit.position - centre),
            // Planar patterns (bricks, glyphs) lie on each face.
            Shape::Cuboid { centre, yaw, .. } => object
                .material
                .on_plane(to_box(hit.normal, yaw))
                .albedo(to_box(hit.position - centre, yaw)),
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

/// Distance, outward unit normal and face of a ray's first hit on a shape.
fn intersect(shape: &Shape, origin: DVec3, direction: DVec3) -> Option<(f64, DVec3, u8)> {
    match *shape {
        Shape::Ground => {
            let t = -origin.z / direction.z;
            (direction.z < 0.0 && t > MIN_T).then_some((t, DVec3::Z, 0))
        }
        Shape::Sphere { centre, radius } => {
            let oc = origin - centre;
            let b = oc.dot(direction);
            let discriminant = b * b - (oc.length_squared() - radius * radius);
            if discriminant < 0.0 {
                return None;
            }
            let t = -b - discriminant.sqrt();
            (t > MIN_T).then(|| (t, (origin + t * direction - centre) / radius, 0))
        }
        Shape::Cuboid { centre, half, yaw } => {
            let o = to_box(origin - centre, yaw);
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
        let ground = world(Shape::Ground);
        let hit = ground
            .trace(DVec3::new(1.0, 2.0, 3.0), DVec3::new(0.0, 0.6, -0.8))
            .unwrap();
        assert!((hit.t - 3.75).abs() < 1e-12 && hit.position.z.abs() < 1e-12);
        assert!(ground.trace(DVec3::new(0.0, 0.0, 3.0), DVec3::Z).is_none());

        let sphere = world(Shape::Sphere {
            centre: DVec3::new(0.0, 0.0, 1.0),
            radius: 0.5,
        });
        let hit = sphere.trace(DVec3::new(-5.0, 0.0, 1.0), DVec3::X).unwrap();
        assert!((hit.t - 4.5).abs() < 1e-12 && (hit.normal + DVec3::X).length() < 1e-12);

        // A box turned 90°: its local x half-size 1 lies along world y.
        let yaw = DVec2::new(0.0, 1.0);
        let cuboid = world(Shape::Cuboid {
            centre: DVec3::ZERO,
            half: DVec3::new(1.0, 0.25, 0.5),
            yaw,
        });
        let hit = cuboid.trace(DVec3::new(0.0, -5.0, 0.0), DVec3::Y).unwrap();
        assert!((hit.t - 4.0).abs() < 1e-12 && (hit.normal + DVec3::Y).length() < 1e-12);
        let side = cuboid.trace(DVec3::new(-5.0, 0.0, 0.0), DVec3::X).unwrap();
        assert!((side.t - 4.75).abs() < 1e-12 && side.surface != hit.surface);
        assert!(cuboid.trace(DVec3::new(-5.0, 0.0, 0.6), DVec3::X).is_none());
    }

    #[test]
    fn random_worlds_place_objects_apart_and_inside_the_layout() {
        use rand::SeedableRng;
        for seed in 0..20 {
            let world = World::random(&mut ChaCha8Rng::seed_from_u64(seed));
            assert!(world.objects.len() >= 2, "seed {seed}: ground and at least one object");
            let placed: Vec<(DVec2, f64)> = world.objects[1..]
                .iter()
                .map(|object| match object.shape {
                    Shape::Sphere { centre, .. } | Shape::Cuboid { centre, .. } => {
                        (centre.truncate(), object.shape.footprint())
                    }
                    Shape::Ground => panic!("seed {seed}: a second ground"),
                })
                .collect();
            for (i, (centre, reach)) in placed.iter().enumerate() {
                assert!(
                    centre.length() + reach <= World::LAYOUT_RADIUS + 1e-9,
                    "seed {seed}: object {i} outside"
                );
                for (other, other_reach) in &placed[..i] {
                    assert!(
                        centre.distance(*other) > reach + other_reach,
                        "seed {seed}: object {i} overlaps"
                    );
                }
            }
        }
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
