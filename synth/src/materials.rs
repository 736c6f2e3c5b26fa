//! Random materials: a palette per scene, and the patterns and scales each kind of surface may get.

use std::ops::Range;

use glam::{DVec2, DVec3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::texture::{Frame, Material, hsv};

/// The colours of one scene: hues scattered about a main hue, a band of saturation, and a
/// brightness that makes some scenes dark and others bright.
#[derive(Clone, Debug)]
pub(crate) struct Palette {
    /// In sixths of the colour wheel.
    hue: f64,
    /// How far hues scatter either side of `hue`: 3 is the whole wheel.
    hue_spread: f64,
    saturation: Range<f64>,
    /// Scales every albedo's value.
    brightness: f64,
}

/// What a material is made for: each suits some patterns, at some scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Ground,
    Floor,
    Wall,
    Ceiling,
    Object,
}

/// Makes a material with features about `scale` world units wide, oriented for objects
/// ([`Frame::UPRIGHT`], random directions); planes turn it with [`Material::on_plane`].
type Maker = fn(&Palette, &mut ChaCha8Rng, f64) -> Material;

impl Role {
    /// The patterns this role may get, and the range of their feature size in world units.
    fn patterns(self) -> (&'static [Maker], Range<f64>) {
        match self {
            // No glyphs on the open ground: they would alias long before it fades far away.
            Role::Ground => (&[checker, stripes, blotches, marble, gradient, bricks], 0.9..1.6),
            Role::Floor => (&[checker, stripes, blotches, marble, bricks], 0.4..0.8),
            // Walls fill most of a room's views: no plain colours or ramps there.
            Role::Wall => (&[checker, stripes, blotches, marble, bricks, glyphs], 0.35..0.7),
            Role::Ceiling => (&[solid, checker, blotches, gradient], 0.5..1.0),
            Role::Object => (
                &[solid, checker, stripes, blotches, marble, gradient, bricks, glyphs],
                0.25..0.45,
            ),
        }
    }
}

impl Palette {
    pub(crate) fn random(rng: &mut ChaCha8Rng) -> Palette {
        let low = rng.random_range(0.0..0.6);
        Palette {
            hue: rng.random_range(0.0..6.0),
            hue_spread: rng.random_range(0.2..3.0),
            saturation: low..(low + rng.random_range(0.15..0.4)).min(1.0),
            brightness: rng.random_range(0.6..1.2),
        }
    }

    /// A random material for `role`.
    pub(crate) fn material(&self, rng: &mut ChaCha8Rng, role: Role) -> Material {
        let (makers, scales) = role.patterns();
        let make = makers[rng.random_range(0..makers.len())];
        let scale = rng.random_range(scales);
        make(self, rng, scale)
    }

    /// A colour of the palette with value drawn from `value` before the palette's brightness.
    fn color(&self, rng: &mut ChaCha8Rng, value: Range<f64>) -> DVec3 {
        let hue = self.hue + rng.random_range(-self.hue_spread..self.hue_spread);
        let saturation = rng.random_range(self.saturation.clone());
        hsv(hue, saturation, (rng.random_range(value) * self.brightness).min(0.95))
    }

    /// A light and a dark colour, so patterns show.
    fn pair(&self, rng: &mut ChaCha8Rng) -> (DVec3, DVec3) {
        (self.color(rng, 0.6..0.9), self.color(rng, 0.1..0.45))
    }
}

/// Soft edges about 0.03 world units wide either side: a few pixels at the default sizes.
const EDGE: f64 = 0.03;

fn solid(palette: &Palette, rng: &mut ChaCha8Rng, _scale: f64) -> Material {
    Material::Solid(palette.color(rng, 0.45..0.85))
}

fn checker(palette: &Palette, rng: &mut ChaCha8Rng, scale: f64) -> Material {
    let (a, b) = palette.pair(rng);
    Material::Checker {
        a,
        b,
        cell: scale,
        edge: EDGE,
    }
}

fn stripes(palette: &Palette, rng: &mut ChaCha8Rng, scale: f64) -> Material {
    let (a, b) = palette.pair(rng);
    Material::Stripes {
        a,
        b,
        across: random_unit(rng),
        period: scale * rng.random_range(1.0..2.0),
        edge: EDGE,
    }
}

fn blotches(palette: &Palette, rng: &mut ChaCha8Rng, scale: f64) -> Material {
    let (a, b) = palette.pair(rng);
    Material::Blotches {
        a,
        b,
        scale: scale * rng.random_range(1.0..1.3),
        edge: 0.06,
        seed: rng.random(),
    }
}

fn marble(palette: &Palette, rng: &mut ChaCha8Rng, scale: f64) -> Material {
    // Light veins in dark stone as often as dark veins in light stone.
    let (light, dark) = palette.pair(rng);
    let (a, b) = if rng.random_bool(0.5) {
        (light, dark)
    } else {
        (dark, light)
    };
    Material::Marble {
        a,
        b,
        across: random_unit(rng),
        period: scale * rng.random_range(1.0..2.5),
        warp: rng.random_range(0.3..1.5),
        scale: scale * rng.random_range(1.0..2.0),
        vein: rng.random_range(0.02..0.08),
        edge: 0.04,
        seed: rng.random(),
    }
}

fn gradient(palette: &Palette, rng: &mut ChaCha8Rng, scale: f64) -> Material {
    let (a, b) = palette.pair(rng);
    let half = scale * rng.random_range(1.0..3.0);
    Material::Gradient {
        a,
        b,
        across: random_unit(rng),
        from: -half,
        to: half,
    }
}

fn bricks(palette: &Palette, rng: &mut ChaCha8Rng, scale: f64) -> Material {
    let (a, mortar) = palette.pair(rng);
    // Bricks vary in shade about one colour.
    let b = a.lerp(palette.color(rng, 0.3..0.8), rng.random_range(0.2..0.6));
    let width = scale * rng.random_range(0.5..0.8);
    Material::Bricks {
        a,
        b,
        mortar,
        frame: Frame::UPRIGHT,
        size: DVec2::new(width, width * rng.random_range(0.35..0.7)),
        joint: rng.random_range(0.006..0.02),
        edge: 0.02,
        seed: rng.random(),
    }
}

/// Print, whatever the surface: strokes of one to a few pixels at the default sizes.
fn glyphs(palette: &Palette, rng: &mut ChaCha8Rng, _scale: f64) -> Material {
    let (light, dark) = palette.pair(rng);
    // Mostly dark on light, as print.
    let (paper, ink) = if rng.random_bool(0.75) {
        (light, dark)
    } else {
        (dark, light)
    };
    Material::Glyphs {
        paper,
        ink,
        frame: Frame::UPRIGHT,
        stroke: rng.random_range(0.025..0.05),
        edge: 0.35,
        seed: rng.random(),
    }
}

fn random_unit(rng: &mut ChaCha8Rng) -> DVec3 {
    let z: f64 = rng.random_range(-1.0..1.0);
    let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let r = (1.0 - z * z).sqrt();
    DVec3::new(r * angle.cos(), r * angle.sin(), z)
}
