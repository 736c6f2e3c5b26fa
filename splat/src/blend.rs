//! What the forward and the backward blend share: a tile's pixel geometry and the evaluation of one
//! (splat, pixel) pair, so both passes take exactly the same decisions (skip, composite, stop).
//!
//! A tile's per-pixel state is `[[R; TILE_SIZE]; TILE_SIZE]`, rows of lanes; lanes are the SIMD dimension, and
//! fixed-size rows let the compiler drop bounds checks inside the lane loops.

use crate::constants::{ALPHA_THRESHOLD, MAX_ALPHA, PIXEL_CENTER, TILE_SIZE, TRANSMITTANCE_THRESHOLD};
use crate::projection::Splat;
use crate::real::Real;
use crate::tiling::pixel_span;

/// Width of the test-only smooth alpha cutoff: alpha is multiplied by a C¹ smoothstep rising from 0 at
/// ALPHA_THRESHOLD to 1 at ALPHA_THRESHOLD + this, so finite differences see a differentiable image.
pub(crate) const SMOOTH_CUTOFF_WIDTH: f64 = 1e-2;

/// Per-pixel values of one tile: rows of lanes.
pub(crate) type TileRows<T> = [[T; TILE_SIZE]; TILE_SIZE];

/// σ beyond which G is evaluated as exp(−MAX_BLEND_SIGMA): there o·G < 1e-13 ≪ ALPHA_THRESHOLD, so the pair is
/// skipped either way, and products stay out of the denormal range, whose arithmetic is very slow on x86.
const MAX_BLEND_SIGMA: f64 = 30.0;

/// Pixel geometry of one tile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub x0: usize,
    pub y0: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Tile {
    pub fn new(t: usize, tiles_x: usize, width: usize, height: usize) -> Self {
        let (x0, y0) = ((t % tiles_x) * TILE_SIZE, (t / tiles_x) * TILE_SIZE);
        Tile {
            x0,
            y0,
            rows: TILE_SIZE.min(height - y0),
            cols: TILE_SIZE.min(width - x0),
        }
    }

    /// Pixels of the tile that lie on the image.
    pub fn on_image(&self) -> TileRows<bool> {
        std::array::from_fn(|r| std::array::from_fn(|l| r < self.rows && l < self.cols))
    }

    /// Pixel-centre x of each lane.
    pub fn lane_x<R: Real>(&self) -> [R; TILE_SIZE] {
        std::array::from_fn(|l| R::of((self.x0 + l) as f64 + PIXEL_CENTER))
    }

    /// Tile-local rows (inclusive) that a splat can reach.
    #[inline(always)]
    pub fn rows_of<R: Real>(&self, s: &SplatBlend<R>) -> Option<(usize, usize)> {
        let (lo, hi) = pixel_span(s.mean[1], s.extent_y, self.y0 + self.rows)?;
        (hi >= self.y0).then(|| (lo.max(self.y0) - self.y0, hi - self.y0))
    }

    /// Copies a `[height, width]` image plane's pixels of this tile (zero off the image).
    pub fn gather<R: Real>(&self, plane: &[R], width: usize) -> TileRows<R> {
        let mut out = [[R::ZERO; TILE_SIZE]; TILE_SIZE];
        for (r, row) in out.iter_mut().enumerate().take(self.rows) {
            let start = (self.y0 + r) * width + self.x0;
            row[..self.cols].copy_from_slice(&plane[start..start + self.cols]);
        }
        out
    }

    /// Writes the tile's pixels back into a `[height, width]` image plane.
    pub fn scatter<R: Real>(&self, tile: &TileRows<R>, plane: &mut [R], width: usize) {
        for (r, row) in tile.iter().enumerate().take(self.rows) {
            let start = (self.y0 + r) * width + self.x0;
            plane[start..start + self.cols].copy_from_slice(&row[..self.cols]);
        }
    }
}

/// One splat's blend inputs, stored contiguously per splat and aligned so that one (splat, tile) step of the
/// blend reads a single cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(crate) struct SplatBlend<R> {
    pub mean: [R; 2],
    pub conic: [R; 3],
    pub opacity: R,
    pub depth: R,
    /// Half-height in pixels of the rows the splat can reach.
    pub extent_y: R,
}

impl<R: Real> SplatBlend<R> {
    pub fn new(s: &Splat<R>) -> Self {
        SplatBlend {
            mean: s.mean2d,
            conic: s.conic,
            opacity: s.opacity,
            depth: s.depth,
            extent_y: s.extent[1],
        }
    }
}

/// One (splat, pixel) pair evaluated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pair<R> {
    /// G = exp(−σ), σ = ½ dᵀ P d the Mahalanobis half-distance.
    pub gauss: R,
    /// Composited alpha (after the MAX_ALPHA clamp and, in smooth mode, the cutoff weight).
    pub alpha: R,
    /// ∂alpha/∂(o·G): zero when clamped at MAX_ALPHA.
    pub dalpha: R,
    /// The pair changes the pixel.
    pub composite: bool,
    /// The pixel ends here, before this pair.
    pub stop: bool,
    pub next_t: R,
}

/// Evaluates a pair at offset (dx, dy) = pixel − mean, for a pixel with transmittance `t` still `active`.
#[inline(always)]
pub(crate) fn eval_pair<R: Real, const SMOOTH: bool>(s: &SplatBlend<R>, dx: R, dy: R, t: R, active: bool) -> Pair<R> {
    let [a, b, c] = s.conic;
    let sigma = R::of(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy;
    let gauss = (-sigma.min(R::of(MAX_BLEND_SIGMA))).blend_exp();
    let og = s.opacity * gauss;
    let clamped = og > R::of(MAX_ALPHA);
    let raw = if clamped { R::of(MAX_ALPHA) } else { og };
    let threshold = R::of(ALPHA_THRESHOLD);
    let (alpha, dalpha, valid) = if SMOOTH {
        let u = ((raw - threshold) / R::of(SMOOTH_CUTOFF_WIDTH))
            .max(R::ZERO)
            .min(R::ONE);
        let weight = u * u * (R::of(3.0) - R::of(2.0) * u);
        let dweight = R::of(6.0) * u * (R::ONE - u) / R::of(SMOOTH_CUTOFF_WIDTH);
        let d = if clamped { R::ZERO } else { weight + raw * dweight };
        (raw * weight, d, raw > threshold)
    } else {
        (raw, if clamped { R::ZERO } else { R::ONE }, raw >= threshold)
    };
    let valid = valid && sigma >= R::ZERO && active;
    let next_t = t * (R::ONE - alpha);
    let stop = valid && next_t <= R::of(TRANSMITTANCE_THRESHOLD);
    Pair {
        gauss,
        alpha,
        dalpha,
        composite: valid && !stop,
        stop,
        next_t,
    }
}
