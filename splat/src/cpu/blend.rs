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

    /// The transmittance a tile's blend starts from: 1 on the image; off the image the pixels are already done
    /// (see [`blend_rows`] for the sign convention).
    pub fn initial_transmittance<R: Real>(&self) -> TileRows<R> {
        std::array::from_fn(|r| {
            std::array::from_fn(|l| {
                if r < self.rows && l < self.cols {
                    R::ONE
                } else {
                    -R::ONE
                }
            })
        })
    }

    /// Pixel-centre x of each lane.
    pub fn lane_x<R: Real>(&self) -> [R; TILE_SIZE] {
        std::array::from_fn(|l| R::of((self.x0 + l) as f64 + PIXEL_CENTER))
    }

    /// Offsets from `mean_y` of the pixel centres of tile rows `r..r + ROWS`, each computed from its own row index
    /// (as the reference and the CUDA kernel compute them).
    #[inline(always)]
    pub fn row_offsets<R: Real, const ROWS: usize>(&self, r: usize, mean_y: R) -> [R; ROWS] {
        std::array::from_fn(|h| R::of((self.y0 + r + h) as f64 + PIXEL_CENTER) - mean_y)
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
            let pixels = &plane[start..start + self.cols];
            // Whole rows as fixed-size copies: a run-time-length copy of 64 bytes was a memcpy call per row.
            if let Ok(whole) = <&[R; TILE_SIZE]>::try_from(pixels) {
                *row = *whole;
            } else {
                row[..self.cols].copy_from_slice(pixels);
            }
        }
        out
    }

    /// Writes the tile's pixels back into a `[height, width]` image plane.
    pub fn scatter<R: Real>(&self, tile: &TileRows<R>, plane: &mut [R], width: usize) {
        for (r, row) in tile.iter().enumerate().take(self.rows) {
            let start = (self.y0 + r) * width + self.x0;
            let pixels = &mut plane[start..start + self.cols];
            if let Ok(whole) = <&mut [R; TILE_SIZE]>::try_from(&mut *pixels) {
                *whole = *row;
            } else {
                pixels.copy_from_slice(&row[..self.cols]);
            }
        }
    }
}

/// Added to a splat's σ cutoff before the row pre-test, so that rounding in σ, in ln(opacity / threshold) and in
/// the exponential never lets the pre-test skip a pair the blend would composite (an e^−0.001 margin in alpha,
/// far wider than f32 rounding).
const SIGMA_CUT_MARGIN: f64 = 1e-3;

/// One splat's blend inputs, stored contiguously per splat and aligned so that one (splat, tile) step of the
/// blend reads a single cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct SplatBlend<R> {
    pub mean: [R; 2],
    pub conic: [R; 3],
    pub opacity: R,
    pub depth: R,
    /// Half-height in pixels of the rows the splat can reach.
    pub extent_y: R,
    /// σ beyond which no pair composites (see [`SIGMA_CUT_MARGIN`]).
    pub sigma_cut: R,
}

impl<R: Real> SplatBlend<R> {
    pub fn new(s: &Splat<R>) -> Self {
        SplatBlend {
            mean: s.mean2d,
            conic: s.conic,
            opacity: s.opacity,
            depth: s.depth,
            extent_y: s.extent[1],
            sigma_cut: s.sigma_cut + R::of(SIGMA_CUT_MARGIN),
        }
    }
}

/// A splat's per-lane terms in one tile, shared by every row it reaches there: with dx, dy the offsets from its
/// centre, σ = ½a·dx² + dy·(b·dx + ½c·dy) costs two vector operations per row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SplatLanes<R> {
    pub dx: [R; TILE_SIZE],
    half_a_dx2: [R; TILE_SIZE],
    pub b_dx: [R; TILE_SIZE],
    half_c: R,
    sigma_cut: R,
}

impl<R: Real> SplatLanes<R> {
    #[inline(always)]
    pub fn new(s: &SplatBlend<R>, lane_x: &[R; TILE_SIZE]) -> Self {
        let [a, b, c] = s.conic;
        let half = R::of(0.5);
        let dx = lane_x.map(|x| x - s.mean[0]);
        SplatLanes {
            dx,
            half_a_dx2: dx.map(|dx| half * a * dx * dx),
            b_dx: dx.map(|dx| b * dx),
            half_c: half * c,
            sigma_cut: s.sigma_cut,
        }
    }

    /// σ of each pixel of `ROWS` consecutive rows at offsets `dy` (see [`Tile::row_offsets`]), or `None` when no
    /// open pixel of them (transmittance `t`) is within the splat's σ cutoff: such rows composite nothing, and are
    /// skipped before their exponentials.
    #[inline(always)]
    pub fn rows_sigma<const ROWS: usize>(
        &self,
        dy: &[R; ROWS],
        t: &[[R; TILE_SIZE]; ROWS],
    ) -> Option<[[R; TILE_SIZE]; ROWS]> {
        let mut sigma = [[R::ZERO; TILE_SIZE]; ROWS];
        for (sigma, &dy) in sigma.iter_mut().zip(dy) {
            let row = self.half_c * dy;
            for ((sigma, &b_dx), &half_a_dx2) in sigma.iter_mut().zip(&self.b_dx).zip(&self.half_a_dx2) {
                *sigma = dy.mul_add(b_dx + row, half_a_dx2);
            }
        }
        let reachable = any_lane::<ROWS>(|h, l| (sigma[h][l] <= self.sigma_cut) & (t[h][l] > R::ZERO));
        reachable.then_some(sigma)
    }
}

/// Whether `test(row, lane)` holds for some lane of `ROWS` rows. A fold of its own: inside the blend loop the
/// reduction is not vectorised. The rows are ORed lane-wise first, so one 16-lane reduction remains; folding the
/// flattened rows compiled to lane-by-lane mask extractions.
#[inline(always)]
fn any_lane<const ROWS: usize>(test: impl Fn(usize, usize) -> bool) -> bool {
    let mut lanes = [false; TILE_SIZE];
    for h in 0..ROWS {
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane |= test(h, l);
        }
    }
    lanes.iter().fold(false, |any, &lane| any | lane)
}

/// One (splat, pixel) pair evaluated.
#[derive(Clone, Copy, Debug)]
struct Pair<R> {
    /// G = exp(−σ), σ = ½ dᵀ P d the Mahalanobis half-distance.
    gauss: R,
    /// Composited alpha (after the MAX_ALPHA clamp and, in smooth mode, the cutoff weight).
    alpha: R,
    /// ∂alpha/∂(o·G): zero when clamped at MAX_ALPHA.
    dalpha: R,
    /// The pair changes the pixel.
    composite: bool,
    /// The pixel ends here, before this pair.
    stop: bool,
    next_t: R,
}

/// Evaluates a pair of a splat of `opacity` at Mahalanobis half-distance `sigma`, for a pixel with transmittance
/// `t` (done when t ≤ 0).
#[inline(always)]
fn eval_pair<R: Real, const SMOOTH: bool>(opacity: R, sigma: R, t: R) -> Pair<R> {
    // σ bounded to [0, MAX_BLEND_SIGMA] by selects that compile to one vector min or max each (NaN gives 0),
    // which also keeps the exponential in range. Pairs with σ < 0 are invalid below, whatever G is.
    let bounded = if sigma > R::ZERO { sigma } else { R::ZERO };
    let bounded = if bounded < R::of(MAX_BLEND_SIGMA) {
        bounded
    } else {
        R::of(MAX_BLEND_SIGMA)
    };
    let gauss = (-bounded).fused_exp_in_range();
    let og = opacity * gauss;
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
    let valid = valid & (sigma >= R::ZERO) & (t > R::ZERO);
    let next_t = t * (R::ONE - alpha);
    let stop = valid & (next_t <= R::of(TRANSMITTANCE_THRESHOLD));
    Pair {
        gauss,
        alpha,
        dalpha,
        composite: valid & !stop,
        stop,
        next_t,
    }
}

/// One splat's pairs with `ROWS` consecutive rows of a tile, composited into their transmittance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlendRows<R, const ROWS: usize> {
    /// α·T where the pair composited, 0 elsewhere: the splat's share of each pixel (> 0 where it composited).
    pub weight: [[R; TILE_SIZE]; ROWS],
    pub alpha: [[R; TILE_SIZE]; ROWS],
    pub gauss: [[R; TILE_SIZE]; ROWS],
    /// ∂α/∂(o·G) where the pair composited, 0 elsewhere: it masks every geometry gradient of the backward.
    pub dalpha: [[R; TILE_SIZE]; ROWS],
    /// Transmittance in front of the splat.
    pub t_before: [[R; TILE_SIZE]; ROWS],
}

/// Which lanes of a splat's rows composited, and which pixels ended at the splat, ORed lane-wise over its rows
/// and reduced once per splat. Reductions per row cost a mask test each, and over two rows at a time LLVM compiled
/// them to lane-by-lane mask extractions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LaneFlags {
    composited: [bool; TILE_SIZE],
    stopped: [bool; TILE_SIZE],
}

impl LaneFlags {
    /// Adds the rows just blended; `t` is their transmittance after the splat.
    #[inline(always)]
    #[allow(
        clippy::needless_range_loop,
        reason = "lanes index four arrays; this form vectorises"
    )]
    pub fn add<R: Real, const ROWS: usize>(&mut self, rows: &BlendRows<R, ROWS>, t: &[[R; TILE_SIZE]; ROWS]) {
        for h in 0..ROWS {
            for l in 0..TILE_SIZE {
                self.composited[l] |= rows.weight[h][l] > R::ZERO;
                self.stopped[l] |= (rows.t_before[h][l] > R::ZERO) & (t[h][l] <= R::ZERO);
            }
        }
    }

    /// Some pair composited.
    #[inline(always)]
    pub fn composited(&self) -> bool {
        self.composited.iter().fold(false, |any, &lane| any | lane)
    }

    /// Some pixel ended at the splat: it was open before and is done after.
    #[inline(always)]
    pub fn stopped(&self) -> bool {
        self.stopped.iter().fold(false, |any, &lane| any | lane)
    }
}

/// Evaluates the pairs of splat `s` with `ROWS` consecutive rows of pixels, at half-distances `sigma` (see
/// [`SplatLanes::rows_sigma`]), and composites them into the rows' transmittance `t`. Both passes blend
/// [`ROWS_PER_STEP`] rows at a time: their dependency chains (σ, exponential, compositing) are independent, and in
/// one loop body without a branch between them the processor overlaps them.
///
/// A pixel's transmittance holds its state: t > 0 while it is open, −T once it is done (T its final
/// transmittance), so no separate mask is read and written per row. The forward and the backward both blend
/// through this one function, so they take exactly the same decisions; what a caller does not read is
/// optimised away. Rows that the pre-test would skip composite nothing here either, so blending them with a row
/// that passes changes nothing.
#[inline(always)]
pub(crate) fn blend_rows<R: Real, const SMOOTH: bool, const ROWS: usize>(
    s: &SplatBlend<R>,
    sigma: &[[R; TILE_SIZE]; ROWS],
    t: &mut [[R; TILE_SIZE]; ROWS],
) -> BlendRows<R, ROWS> {
    // Locals, not the struct's fields, and no reductions in this loop (see `LaneFlags`): either makes LLVM's loop
    // vectoriser give up, and the row runs lane by lane.
    let (mut weight, mut alpha, mut gauss, mut dalpha) = (
        [[R::ZERO; TILE_SIZE]; ROWS],
        [[R::ZERO; TILE_SIZE]; ROWS],
        [[R::ZERO; TILE_SIZE]; ROWS],
        [[R::ZERO; TILE_SIZE]; ROWS],
    );
    let mut t_before = [[R::ZERO; TILE_SIZE]; ROWS];
    // A local copy: read through `s` inside the loop, LLVM checks at run time, every row, that `t` does not
    // overlap the splat record.
    let opacity = s.opacity;
    for h in 0..ROWS {
        for l in 0..TILE_SIZE {
            let before = t[h][l];
            t_before[h][l] = before;
            let pair = eval_pair::<R, SMOOTH>(opacity, sigma[h][l], before);
            weight[h][l] = if pair.composite { pair.alpha * before } else { R::ZERO };
            dalpha[h][l] = if pair.composite { pair.dalpha } else { R::ZERO };
            alpha[h][l] = pair.alpha;
            gauss[h][l] = pair.gauss;
            let kept = if pair.stop { -before } else { before };
            t[h][l] = if pair.composite { pair.next_t } else { kept };
        }
    }
    BlendRows {
        weight,
        alpha,
        gauss,
        dalpha,
        t_before,
    }
}

/// Rows the blends evaluate at a time (see [`blend_rows`]).
pub(crate) const ROWS_PER_STEP: usize = 2;
const _: () = assert!(TILE_SIZE.is_multiple_of(ROWS_PER_STEP));

/// Rows `r..r + ROWS` of a tile (`r` a multiple of ROWS, which divides the tile size, so they all exist).
#[inline(always)]
pub(crate) fn row_group<R, const ROWS: usize>(rows: &mut TileRows<R>, r: usize) -> &mut [[R; TILE_SIZE]; ROWS] {
    debug_assert_eq!(r % ROWS, 0, "row groups start at multiples of their size");
    let (group, _) = rows[r..].split_first_chunk_mut().expect("tiles hold whole row groups");
    group
}

/// Whether every pixel of a tile is done (see [`blend_rows`]); an OR over all lanes, no early exit, so it stays
/// in vectors. Called only after a splat where some pixel stopped.
#[inline(always)]
pub(crate) fn all_done<R: Real>(t: &TileRows<R>) -> bool {
    !t.as_flattened().iter().fold(false, |open, &t| open | (t > R::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Pairs placed on the alpha threshold's boundary, where rounding decides: whenever the row pre-test skips a
    /// row, the blend would have composited nothing in it.
    #[test]
    fn the_row_pre_test_never_skips_a_pair_that_composites() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let tile = Tile::new(0, 1, TILE_SIZE, TILE_SIZE);
        let lane_x = tile.lane_x::<f32>();
        let (mut skipped, mut composited) = (0, 0);
        for _ in 0..100_000 {
            let opacity: f32 = rng.random_range(ALPHA_THRESHOLD as f32..1.0);
            let (a, c): (f32, f32) = (rng.random_range(0.01..4.0), rng.random_range(0.01..4.0));
            let b = rng.random_range(-0.99..0.99) * (a * c).sqrt();
            // As `project_one` computes it.
            let sigma_cut = (opacity / ALPHA_THRESHOLD as f32).fast_ln();
            // On row dy = 0, σ = ½a·dx²: the mean sits where the first lane's σ is the cut, give or take twice the
            // margin.
            let margin = 2.0 * SIGMA_CUT_MARGIN as f32;
            let dx = (2.0 * (sigma_cut + rng.random_range(-margin..margin)).max(0.0) / a).sqrt();
            let splat = Splat {
                mean2d: [lane_x[0] - dx, 0.5],
                conic: [a, b, c],
                opacity,
                sigma_cut,
                ..Splat::default()
            };
            let blend = SplatBlend::new(&splat);
            let lanes = SplatLanes::new(&blend, &lane_x);
            let t = [1.0f32; TILE_SIZE];
            let unculled = SplatLanes {
                sigma_cut: f32::INFINITY,
                ..lanes
            };
            let sigma = unculled
                .rows_sigma(&[0.0], &[t])
                .expect("every lane is within an infinite cut");
            let mut after = [t];
            let row = blend_rows::<f32, false, 1>(&blend, &sigma, &mut after);
            let mut flags = LaneFlags::default();
            flags.add(&row, &after);
            if lanes.rows_sigma(&[0.0], &[t]).is_none() {
                skipped += 1;
                assert!(!flags.composited(), "skipped a compositing row: {splat:?}");
            }
            composited += flags.composited() as usize;
        }
        // The boundary is really exercised: both outcomes occur often.
        assert!(
            skipped > 10_000 && composited > 10_000,
            "skipped {skipped}, composited {composited}"
        );
    }
}
