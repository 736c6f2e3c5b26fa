//! Band-limited procedural albedo.
//!
//! Every pattern is a smooth function of an object-space position: flat plateaus joined by soft
//! edges a few hundredths of a world unit wide, or gentle ramps. Defined in object space, a surface
//! point has the same albedo in every view; being smooth, the pixels around its projection show
//! (almost) that albedo too, which is what lets a sampled 3D point carry the colour of the pixels
//! it projects to. Where a fine pattern (glyphs, mortar) is not smooth at a view's pixel scale,
//! `points` finds no points.

use glam::{DVec2, DVec3};

/// The albedo pattern of a surface, evaluated at object-space positions.
#[derive(Clone, Copy, Debug)]
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
    /// Marble: soft veins of half-width `vein` (in periods) where the phase `local · across / period`,
    /// warped by `warp` periods of value noise with features about `scale` wide, is near a whole
    /// number; edges softened over `edge` periods.
    Marble {
        a: DVec3,
        b: DVec3,
        across: DVec3,
        period: f64,
        warp: f64,
        scale: f64,
        vein: f64,
        edge: f64,
        seed: u64,
    },
    /// A smooth ramp from `a` to `b` as `local · across` goes from `from` to `to`, flat beyond.
    Gradient {
        a: DVec3,
        b: DVec3,
        across: DVec3,
        from: f64,
        to: f64,
    },
    /// Staggered bricks (or tiles) of `size` on the plane of `frame`, each a shade between `a` and
    /// `b`, in mortar of half-width `joint`, softened over `edge` world units.
    Bricks {
        a: DVec3,
        b: DVec3,
        mortar: DVec3,
        frame: Frame,
        size: DVec2,
        joint: f64,
        edge: f64,
        seed: u64,
    },
    /// Text-like lines of glyphs from a 3×5 pixel font in `ink` on `paper`, `stroke` world units per
    /// font pixel, on the plane of `frame`; pixels are squares softened over `edge` font pixels.
    Glyphs {
        paper: DVec3,
        ink: DVec3,
        frame: Frame,
        stroke: f64,
        edge: f64,
        seed: u64,
    },
}

/// Axes of a planar pattern: across (`u`) and up (`v`). Off that plane the pattern is extruded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub u: DVec3,
    pub v: DVec3,
}

impl Frame {
    /// Upright on a vertical surface: `u` horizontal, `v` up; on the floor `u` is x and `v` is y.
    pub(crate) const UPRIGHT: Frame = Frame {
        u: DVec3::X,
        v: DVec3::Z,
    };

    /// Axes lying in the plane with unit normal `normal`: upright on walls, x and y on floors and
    /// ceilings.
    fn on_plane(normal: DVec3) -> Frame {
        if normal.z.abs() > 0.5 {
            Frame {
                u: DVec3::X,
                v: DVec3::Y,
            }
        } else {
            Frame {
                u: DVec3::Z.cross(normal).normalize(),
                v: DVec3::Z,
            }
        }
    }

    fn coordinates(&self, p: DVec3) -> DVec2 {
        DVec2::new(p.dot(self.u), p.dot(self.v))
    }
}

impl Material {
    pub(crate) fn albedo(&self, local: DVec3) -> DVec3 {
        match *self {
            Material::Solid(color) => color,
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
                let n = two_octaves(local / scale, seed);
                a.lerp(b, smoothstep(0.5 - edge, 0.5 + edge, n))
            }
            Material::Marble {
                a,
                b,
                across,
                period,
                warp,
                scale,
                vein,
                edge,
                seed,
            } => {
                let phase = local.dot(across) / period + warp * two_octaves(local / scale, seed);
                let distance = (phase - phase.round()).abs();
                a.lerp(b, 1.0 - smoothstep(vein, vein + edge, distance))
            }
            Material::Gradient { a, b, across, from, to } => a.lerp(b, smoothstep(from, to, local.dot(across))),
            Material::Bricks {
                a,
                b,
                mortar,
                frame,
                size,
                joint,
                edge,
                seed,
            } => {
                let p = frame.coordinates(local) / size;
                let row = p.y.floor();
                // Every other row is shifted by half a brick.
                let x = p.x + 0.5 * row.rem_euclid(2.0);
                let column = x.floor();
                let to_joint = |u: f64, cell: f64, side: f64| (u - cell).min(cell + 1.0 - u) * side;
                let distance = to_joint(x, column, size.x).min(to_joint(p.y, row, size.y));
                let brick = a.lerp(b, unit(hash(column as i64, row as i64, 0, seed)));
                // Mortar covers every joint, so the jump between two bricks' shades is hidden.
                brick.lerp(mortar, 1.0 - smoothstep(joint, joint + edge, distance))
            }
            Material::Glyphs {
                paper,
                ink,
                frame,
                stroke,
                edge,
                seed,
            } => {
                // Font pixels, rows counted downwards.
                let p = frame.coordinates(local) / stroke * DVec2::new(1.0, -1.0);
                let cell = p.floor();
                // Each inked pixel is a square grown by `edge` beyond its cell, so that neighbouring
                // pixels merge without a seam; the strongest of the nine nearby wins.
                let grown = |d: f64| 1.0 - smoothstep(0.5, 0.5 + edge, d.abs());
                let mut coverage: f64 = 0.0;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (x, y) = (cell.x as i64 + dx, cell.y as i64 + dy);
                        if font_pixel(x, y, seed) {
                            let center = DVec2::new(x as f64 + 0.5, y as f64 + 0.5);
                            coverage = coverage.max(grown(p.x - center.x) * grown(p.y - center.y));
                        }
                    }
                }
                paper.lerp(ink, coverage)
            }
        }
    }

    /// The material with its oriented patterns turned into the plane of unit normal `normal`:
    /// stripes, veins and ramps run across it, bricks and glyphs lie on it.
    pub(crate) fn on_plane(mut self, normal: DVec3) -> Material {
        let frame = Frame::on_plane(normal);
        match &mut self {
            Material::Stripes { across, .. } | Material::Marble { across, .. } | Material::Gradient { across, .. } => {
                *across = (*across - normal * across.dot(normal))
                    .try_normalize()
                    .unwrap_or(frame.u);
            }
            Material::Bricks { frame: axes, .. } | Material::Glyphs { frame: axes, .. } => *axes = frame,
            Material::Solid(_) | Material::Checker { .. } | Material::Blotches { .. } => {}
        }
        self
    }

    /// About the pattern's average colour, which the ground fades to far away.
    pub(crate) fn mean(&self) -> DVec3 {
        match *self {
            Material::Solid(color) => color,
            Material::Checker { a, b, .. }
            | Material::Stripes { a, b, .. }
            | Material::Blotches { a, b, .. }
            | Material::Gradient { a, b, .. }
            | Material::Bricks { a, b, .. } => (a + b) / 2.0,
            // Veins cover about (2 vein + edge) of each period.
            Material::Marble { a, b, vein, edge, .. } => a.lerp(b, 2.0 * vein + edge),
            Material::Glyphs { paper, ink, .. } => (paper + ink) / 2.0,
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

/// Value noise plus a second octave, which breaks up the lattice's regularity; in [0, 1].
fn two_octaves(p: DVec3, seed: u64) -> f64 {
    (value_noise(p, seed) + 0.5 * value_noise(2.0 * p + 17.31, seed ^ 0x5eed)) / 1.5
}

/// A uniform value in [0, 1) for one lattice corner.
fn lattice(i: i64, j: i64, k: i64, seed: u64) -> f64 {
    unit(hash(i, j, k, seed))
}

/// 64 random bits for a lattice cell.
fn hash(i: i64, j: i64, k: i64, seed: u64) -> u64 {
    splitmix(seed ^ splitmix(i as u64 ^ splitmix(j as u64 ^ splitmix(k as u64))))
}

/// The top 53 bits as a uniform value in [0, 1).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Letters of a 3×5 pixel font, row by row from the top, the most significant bit top left.
const FONT: [u16; 21] = [
    0b010_101_111_101_101, // A
    0b110_101_110_101_110, // B
    0b011_100_100_100_011, // C
    0b110_101_101_101_110, // D
    0b111_100_110_100_111, // E
    0b111_100_110_100_100, // F
    0b011_100_101_101_011, // G
    0b101_101_111_101_101, // H
    0b111_010_010_010_111, // I
    0b101_101_110_101_101, // K
    0b100_100_100_100_111, // L
    0b101_111_111_101_101, // M
    0b110_101_101_101_101, // N
    0b010_101_101_101_010, // O
    0b110_101_110_100_100, // P
    0b110_101_110_101_101, // R
    0b011_100_010_001_110, // S
    0b111_010_010_010_010, // T
    0b101_101_101_101_111, // U
    0b101_101_101_101_010, // V
    0b101_101_010_010_010, // Y
];
/// A glyph takes 4 × 7 font pixels: the letter, a column and two rows of spacing.
const GLYPH: (i64, i64) = (4, 7);
/// Lines wrap at this many glyphs and end, ragged, after 12 of them or more.
const LINE: i64 = 48;

/// Whether font pixel (`x`, `y`) of the text is inked: random letters, about one in six a space,
/// in lines of random length.
fn font_pixel(x: i64, y: i64, seed: u64) -> bool {
    let (column, row) = (x.div_euclid(GLYPH.0), y.div_euclid(GLYPH.1));
    let (px, py) = (x.rem_euclid(GLYPH.0), y.rem_euclid(GLYPH.1));
    if px >= 3 || py >= 5 {
        return false;
    }
    let length = 12 + (hash(0, row, 1, seed) % (LINE - 12) as u64) as i64;
    let letter = hash(column, row, 0, seed);
    if column.rem_euclid(LINE) >= length || letter.is_multiple_of(6) {
        return false;
    }
    let glyph = FONT[(letter >> 8) as usize % FONT.len()];
    (glyph >> (14 - 3 * py - px)) & 1 == 1
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
            Material::Marble {
                a,
                b,
                across: DVec3::new(0.0, 0.6, 0.8),
                period: 0.8,
                warp: 1.0,
                scale: 0.7,
                vein: 0.05,
                edge: 0.04,
                seed: 4,
            },
            Material::Gradient {
                a,
                b,
                across: DVec3::X,
                from: -0.5,
                to: 0.7,
            },
            Material::Bricks {
                a,
                b,
                mortar: DVec3::splat(0.9),
                frame: Frame::UPRIGHT,
                size: DVec2::new(0.25, 0.1),
                joint: 0.01,
                edge: 0.02,
                seed: 5,
            },
            Material::Glyphs {
                paper: a,
                ink: b,
                frame: Frame::UPRIGHT,
                stroke: 0.04,
                edge: 0.35,
                seed: 6,
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

    /// At font pixel centres the text shows pure ink or pure paper, as the font says; letters,
    /// spaces and line ends leave about a third of the pixels inked.
    #[test]
    fn glyphs_print_the_font() {
        let (paper, ink) = (DVec3::ONE, DVec3::ZERO);
        let stroke = 0.05;
        let material = Material::Glyphs {
            paper,
            ink,
            frame: Frame::UPRIGHT,
            stroke,
            edge: 0.35,
            seed: 8,
        };
        let mut inked = 0;
        let (columns, rows) = (LINE * GLYPH.0, 20 * GLYPH.1);
        for y in 0..rows {
            for x in 0..columns {
                // Font rows count downwards, along −v.
                let local = DVec3::new((x as f64 + 0.5) * stroke, 0.3, -(y as f64 + 0.5) * stroke);
                let expected = if font_pixel(x, y, 8) { ink } else { paper };
                assert_eq!(material.albedo(local), expected, "font pixel ({x}, {y})");
                inked += usize::from(font_pixel(x, y, 8));
            }
        }
        let share = inked as f64 / (columns * rows) as f64;
        assert!((0.1..0.4).contains(&share), "{share} of the pixels inked");
        // The first glyph of each line is a letter of the font or a space.
        for row in 0..20 {
            let bits: u16 = (0..15).fold(0, |bits, i| {
                bits << 1 | u16::from(font_pixel(i % 3, row * GLYPH.1 + i / 3, 8))
            });
            assert!(bits == 0 || FONT.contains(&bits), "line {row}: {bits:015b}");
        }
    }

    /// Brick faces take shades between the two brick colours; joints are mortar.
    #[test]
    fn bricks_are_shaded_and_jointed() {
        let (a, b, mortar) = (DVec3::new(0.8, 0.3, 0.2), DVec3::new(0.5, 0.2, 0.1), DVec3::splat(0.9));
        let size = DVec2::new(0.3, 0.1);
        let material = Material::Bricks {
            a,
            b,
            mortar,
            frame: Frame::UPRIGHT,
            size,
            joint: 0.01,
            edge: 0.02,
            seed: 1,
        };
        let mut shades = Vec::new();
        for row in 0..6 {
            let z = (row as f64 + 0.5) * size.y;
            let shift = if row % 2 == 1 { -0.5 * size.x } else { 0.0 };
            for column in 0..6 {
                let x = (column as f64 + 0.5) * size.x + shift;
                let face = material.albedo(DVec3::new(x, 0.0, z));
                let t = (face - a).x / (b - a).x;
                assert!((0.0..1.0).contains(&t) && (a.lerp(b, t) - face).length() < 1e-12);
                shades.push(t);
                // The vertical joint to the right of the brick, and the bed joint above it.
                for joint in [
                    DVec3::new(x + 0.5 * size.x, 0.0, z),
                    DVec3::new(x, 0.0, z + 0.5 * size.y),
                ] {
                    assert!((material.albedo(joint) - mortar).length() < 1e-12, "{joint}");
                }
            }
        }
        shades.sort_by(f64::total_cmp);
        assert!(shades[35] - shades[0] > 0.5, "bricks vary in shade: {shades:?}");
    }

    #[test]
    fn on_plane_turns_oriented_patterns_into_the_plane() {
        let a = DVec3::ONE;
        let wall = DVec3::new(-1.0, 0.0, 0.0);
        let stripes = Material::Stripes {
            a,
            b: a,
            across: DVec3::new(0.6, 0.0, 0.8),
            period: 1.0,
            edge: 0.03,
        };
        let Material::Stripes { across, .. } = stripes.on_plane(wall) else {
            unreachable!()
        };
        assert!((across - DVec3::Z).length() < 1e-12, "{across}");
        let glyphs = Material::Glyphs {
            paper: a,
            ink: a,
            frame: Frame::UPRIGHT,
            stroke: 0.05,
            edge: 0.35,
            seed: 0,
        };
        for normal in [wall, DVec3::Y, DVec3::Z, DVec3::NEG_Z] {
            let Material::Glyphs { frame, .. } = glyphs.on_plane(normal) else {
                unreachable!()
            };
            assert!(frame.u.dot(normal).abs() < 1e-12 && frame.v.dot(normal).abs() < 1e-12);
            assert!((frame.u.cross(frame.v).length() - 1.0).abs() < 1e-12);
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
