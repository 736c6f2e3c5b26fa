//! Band-limited procedural albedo.
//!
//! Every pattern is a smooth function of an object-space position: flat plateaus joined by soft
//! edges a few hundredths of a world unit wide. Defined in object space, a surface point has the
//! same albedo in every view; being smooth, the pixels around its projection show (almost) that
//! albedo too, which is what lets a sampled 3D point carry the colour of the pixels it projects to.

use glam::DVec3;

/// The albedo pattern of a surface, evaluated at object-space positions.
#[derive(Clone, Debug)]
pub(crate) enum Material {
    Solid(DVec3),
    /// A 3D checkerboard of cubes of side `cell`, edges softened over ±`edge` world units.
    Checker {
        a: DVec3,
        b: DVec3,
        cell: f64,
        edge: f64,
    },
    /// Bands of width `period / 2` across the unit vector `across`.
    Stripes {
        a: DVec3,
        b: DVec3,
        across: DVec3,
        period: f64,
        edge: f64,
    },
    /// Blotches: value noise with features about `scale` wide, thresholded at one half with a soft
    /// edge of ±`edge` in noise value.
    Blotches {
        a: DVec3,
        b: DVec3,
        scale: f64,
        edge: f64,
        seed: u64,
    },
}

impl Material {
    pub(crate) fn albedo(&self, local: DVec3) -> DVec3 {
        match *self {
            Material::Solid(colour) => colour,
            Material::Checker { a, b, cell, edge } => {
                let e = edge / cell;
                let [x, y, z] = (local / cell).to_array().map(|u| square_wave(u, e));
                a.lerp(b, soft_xor(soft_xor(x, y), z))
            }
            Material::Stripes {
                a,
                b,
                across,
                period,
                edge,
            } => a.lerp(b, square_wave(local.dot(across) / period, edge / period)),
            Material::Blotches {
                a,
                b,
                scale,
                edge,
                seed,
            } => {
                let p = local / scale;
                // A second octave breaks up the lattice's regularity.
                let n = (value_noise(p, seed) + 0.5 * value_noise(2.0 * p + 17.31, seed ^ 0x5eed)) / 1.5;
                a.lerp(b, smoothstep(0.5 - edge, 0.5 + edge, n))
            }
        }
    }

    /// The pattern's average colour, which the ground fades to far away.
    pub(crate) fn mean(&self) -> DVec3 {
        match *self {
            Material::Solid(colour) => colour,
            Material::Checker { a, b, .. } | Material::Stripes { a, b, .. } | Material::Blotches { a, b, .. } => {
                (a + b) / 2.0
            }
        }
    }
}

/// A colour from hue (in sixths of the colour wheel: 0 red, 2 green, 4 blue), saturation and value.
pub(crate) fn hsv(hue: f64, saturation: f64, value: f64) -> DVec3 {
    let channel = |n: f64| {
        let k = (n + hue).rem_euclid(6.0);
        value - value * saturation * (k.min(4.0 - k)).clamp(0.0, 1.0)
    };
    DVec3::new(channel(5.0), channel(3.0), channel(1.0))
}

/// C1 Hermite step from 0 at `lo` to 1 at `hi`.
pub(crate) fn smoothstep(lo: f64, hi: f64, v: f64) -> f64 {
    let x = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// A square wave of period 1 in `u`: 1 on the middle half of each period, 0 on the outer half,
/// with edges softened over ±`edge` (in periods; below a quarter).
fn square_wave(u: f64, edge: f64) -> f64 {
    let d = (u - u.floor() - 0.5).abs();
    smoothstep(-edge, edge, 0.25 - d)
}

/// Exclusive or of two values in [0, 1]: exact on 0 and 1, smooth in between.
fn soft_xor(a: f64, b: f64) -> f64 {
    a + b - 2.0 * a * b
}

/// Value noise in [0, 1]: hashed lattice values blended with a quintic fade, so the result is C2.
fn value_noise(p: DVec3, seed: u64) -> f64 {
    let cell = p.floor();
    let f = p - cell;
    let w = f * f * f * (f * (f * 6.0 - 15.0) + 10.0);
    let [i, j, k] = cell.to_array().map(|c| c as i64);
    let corner = |di: i64, dj: i64, dk: i64| lattice(i + di, j + dj, k + dk, seed);
    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
    let x00 = lerp(corner(0, 0, 0), corner(1, 0, 0), w.x);
    let x10 = lerp(corner(0, 1, 0), corner(1, 1, 0), w.x);
    let x01 = lerp(corner(0, 0, 1), corner(1, 0, 1), w.x);
    let x11 = lerp(corner(0, 1, 1), corner(1, 1, 1), w.x);
    lerp(lerp(x00, x10, w.y), lerp(x01, x11, w.y), w.z)
}

/// A uniform value in [0, 1) for one lattice corner.
fn lattice(i: i64, j: i64, k: i64, seed: u64) -> f64 {
    let h = splitmix(seed ^ splitmix(i as u64 ^ splitmix(j as u64 ^ splitmix(k as u64))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns must be continuous with a bounded slope: steps of 1e-4 world units change the
    /// albedo by at most slope × step, with slope set by the edge width.
    #[test]
    fn patterns_are_continuous() {
        let a = DVec3::new(0.8, 0.2, 0.1);
        let b = DVec3::new(0.1, 0.3, 0.7);
        let materials = [
            Material::Checker {
                a,
                b,
                cell: 0.5,
                edge: 0.03,
            },
            Material::Stripes {
                a,
                b,
                across: DVec3::new(0.6, 0.0, 0.8),
                period: 0.7,
                edge: 0.03,
            },
            Material::Blotches {
                a,
                b,
                scale: 0.6,
                edge: 0.08,
                seed: 3,
            },
        ];
        let step = 1e-4;
        for material in &materials {
            let mut p = DVec3::new(-2.0, -1.3, -0.7);
            let dir = DVec3::new(0.37, 0.41, 0.29).normalize();
            let mut previous = material.albedo(p);
            for _ in 0..60_000 {
                p += dir * step;
                let current = material.albedo(p);
                assert!(
                    (current - previous).abs().max_element() < 0.05,
                    "{material:?} jumps at {p}"
                );
                previous = current;
            }
        }
    }

    #[test]
    fn value_noise_spans_unit_interval_and_is_seeded() {
        let samples: Vec<f64> = (0..2000)
            .map(|i| value_noise(DVec3::new(i as f64 * 0.37, 0.5, 0.25), 9))
            .collect();
        assert!(samples.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(samples.iter().any(|&v| v < 0.2) && samples.iter().any(|&v| v > 0.8));
        assert_ne!(value_noise(DVec3::splat(0.3), 1), value_noise(DVec3::splat(0.3), 2));
    }
}
