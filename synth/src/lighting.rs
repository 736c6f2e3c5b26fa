//! Per-scene lighting: a sun (or, in rooms, a key light) of random direction and colour temperature,
//! ambient light, a sky, and an exposure that makes some scenes dark and others bright.
//!
//! Light arrives from fixed directions and nothing casts shadows, so shading depends on a surface
//! point's albedo and normal only, never on the view.

use std::ops::Range;

use glam::DVec3;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::texture::{hsv, smoothstep};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lighting {
    /// Unit vector towards the sun.
    sun: DVec3,
    sun_color: DVec3,
    ambient: DVec3,
    zenith: DVec3,
    horizon: DVec3,
}

/// Colour temperatures of the sun, in kelvin: candle-warm to overcast-blue.
const SUN_KELVIN: Range<f64> = 2500.0..9500.0;
/// Ambient (sky) light is bluer than most suns.
const AMBIENT_KELVIN: Range<f64> = 5000.0..14000.0;
/// Exposure as a power of two: 0.5 (dim) to 1.9 (bright, with some clipping).
const EXPOSURE_STOPS: Range<f64> = -1.0..0.9;

impl Lighting {
    /// Random lighting where ambient light takes a share in `ambient_share` of the light: low under
    /// a harsh sun, high under an overcast sky or in a room, whose walls scatter the light.
    pub(crate) fn random(rng: &mut ChaCha8Rng, ambient_share: Range<f64>) -> Lighting {
        let exposure = rng.random_range(EXPOSURE_STOPS).exp2();
        let azimuth: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let elevation: f64 = rng.random_range(12f64..78.0).to_radians();
        let sun = DVec3::new(
            elevation.cos() * azimuth.cos(),
            elevation.cos() * azimuth.sin(),
            elevation.sin(),
        );
        let ambient_share = rng.random_range(ambient_share);
        let sun_color = blackbody(rng.random_range(SUN_KELVIN)) * (1.0 - ambient_share) * exposure;
        let ambient = blackbody(rng.random_range(AMBIENT_KELVIN)) * ambient_share * exposure;
        let zenith = hsv(
            rng.random_range(3.2..4.2),
            rng.random_range(0.1..0.75),
            rng.random_range(0.45..0.95),
        );
        // Hazy towards the horizon, and tinted by a low sun.
        let haze = zenith.lerp(DVec3::splat(rng.random_range(0.6..0.95)), rng.random_range(0.4..0.8));
        let dusk = 1.0 - smoothstep(12f64.to_radians(), 35f64.to_radians(), elevation);
        let horizon = haze.lerp(blackbody(SUN_KELVIN.start) * 0.8, 0.6 * dusk);
        Lighting {
            sun,
            sun_color,
            ambient,
            zenith: zenith * exposure,
            horizon: horizon * exposure,
        }
    }

    /// Light leaving a point of a Lambertian surface, the same in every direction.
    pub(crate) fn shade(&self, albedo: DVec3, normal: DVec3) -> DVec3 {
        albedo * (self.ambient + self.sun_color * normal.dot(self.sun).max(0.0))
    }

    /// Sky colour in a unit direction: horizon to zenith, with a soft glow around the sun.
    pub(crate) fn sky(&self, direction: DVec3) -> DVec3 {
        let glow = direction.dot(self.sun).max(0.0).powi(64) * 0.5;
        self.horizon.lerp(self.zenith, smoothstep(0.0, 0.6, direction.z)) + self.sun_color * glow
    }
}

/// The colour of a black body at `kelvin` (Tanner Helland's fit of the Planckian locus, 1000 K to
/// 40000 K), scaled to unit luminance so that temperature changes the tint and not the brightness.
fn blackbody(kelvin: f64) -> DVec3 {
    let t = kelvin / 100.0;
    let red = if t <= 66.0 {
        255.0
    } else {
        329.698727446 * (t - 60.0).powf(-0.1332047592)
    };
    let green = if t <= 66.0 {
        99.4708025861 * t.ln() - 161.1195681661
    } else {
        288.1221695283 * (t - 60.0).powf(-0.0755148492)
    };
    let blue = if t >= 66.0 {
        255.0
    } else if t <= 19.0 {
        0.0
    } else {
        138.5177312231 * (t - 10.0).ln() - 305.0447927307
    };
    let rgb = DVec3::new(red, green, blue).clamp(DVec3::ZERO, DVec3::splat(255.0));
    rgb / rgb.dot(LUMINANCE)
}

/// Rec. 709 luminance weights.
pub(crate) const LUMINANCE: DVec3 = DVec3::new(0.2126, 0.7152, 0.0722);

#[cfg(test)]
impl Lighting {
    /// Sun, ambient and sky at fixed values, for tests of geometry.
    pub(crate) fn plain() -> Lighting {
        Lighting {
            sun: DVec3::Z,
            sun_color: DVec3::ONE,
            ambient: DVec3::ZERO,
            zenith: DVec3::Z,
            horizon: DVec3::X,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn blackbody_runs_from_warm_to_cool_at_unit_luminance() {
        let warm = blackbody(SUN_KELVIN.start);
        let white = blackbody(6600.0);
        let cool = blackbody(AMBIENT_KELVIN.end);
        assert!(warm.x > 2.5 * warm.z, "{warm}");
        assert!((white.x - white.z).abs() < 0.05, "{white}");
        assert!(cool.z > 1.3 * cool.x, "{cool}");
        for color in [warm, white, cool] {
            assert!((color.dot(LUMINANCE) - 1.0).abs() < 1e-12);
        }
    }

    /// Many draws cover dim and bright, warm and cool, high and low suns.
    #[test]
    fn random_lighting_varies_in_every_parameter() {
        let draws: Vec<Lighting> = (0..64)
            .map(|seed| Lighting::random(&mut ChaCha8Rng::seed_from_u64(seed), 0.15..0.6))
            .collect();
        let total = |l: &Lighting| (l.sun_color + l.ambient).dot(LUMINANCE);
        let range = |f: &dyn Fn(&Lighting) -> f64| {
            let values: Vec<f64> = draws.iter().map(f).collect();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min, max)
        };
        let (dim, bright) = range(&total);
        assert!(dim < 0.6 && bright > 1.6, "total light {dim}..{bright}");
        let (low, high) = range(&|l| l.sun.z.asin().to_degrees());
        assert!(low < 20.0 && high > 70.0, "sun elevation {low}..{high}");
        let (warmest, coolest) = range(&|l| l.sun_color.z / l.sun_color.x);
        assert!(warmest < 0.4 && coolest > 1.1, "sun blue/red {warmest}..{coolest}");
        let (harsh, soft) = range(&|l| l.ambient.dot(LUMINANCE) / total(l));
        assert!(harsh < 0.2 && soft > 0.55, "ambient share {harsh}..{soft}");
        let (gray, blue) = range(&|l| l.zenith.z / l.zenith.x.max(1e-3));
        assert!(gray < 1.3 && blue > 2.5, "zenith blue/red {gray}..{blue}");
    }
}
