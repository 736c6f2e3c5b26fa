//! Backward blend of one tile by forward replay: the splat list is walked front to back again, taking the same
//! decisions as the forward pass, while the colour still behind each pixel (as its dot product with the pixel's
//! upstream gradient, all that the gradient needs) is peeled off; no division of transmittance is needed to
//! recover it. Each (tile, splat) intersection writes its own partial gradient, so
//! the later reduction per splat runs in a fixed order: no atomics, the same result run to run.
//!
//! With g = ∂L/∂colour, S = colour behind the splat, T its transmittance and T_N the pixel's final one:
//! ∂L/∂α = T·Σ_k g_k c_k + (T_N·(∂L/∂A − Σ_k g_k bg_k) − Σ_k g_k S_k) / (1 − α).

use crate::constants::TILE_SIZE;
use crate::cpu::blend::{LaneFlags, ROWS_PER_STEP, SplatLanes, Tile, TileRows, all_done, blend_rows, row_group};
use crate::cpu::{PREFETCH_AHEAD, PairCount};
use crate::real::Real;
use crate::tiling::Splats;
use lrf_simd::SimdTask;

/// Values per intersection in the partial-gradient buffer: mean2d (2), conic (3), opacity (1), then colour.
pub(crate) const PARTIAL_GEOMETRY: usize = 6;

/// Per-pixel upstream state of a tile.
pub(crate) struct TileUpstream<R> {
    /// Per channel: ∂L/∂image.
    pub v_color: Vec<TileRows<R>>,
    /// T_N·(∂L/∂alpha − Σ_k ∂L/∂image_k·bg_k): the background's and alpha's share of ∂L/∂α·(1 − α).
    pub v_final: TileRows<R>,
    /// Σ_k ∂L/∂image_k·S_k with S the colour behind the blend's position: at the start the composited colour
    /// without the background; each splat takes its own share off. Kept as this one sum rather than S per
    /// channel, since only the sum enters ∂L/∂α.
    pub g_dot_behind: TileRows<R>,
}

/// The backward blend of one tile, run through [`lrf_simd::dispatch`]; returns its pairs.
pub(crate) struct BackwardTile<'a, R, const SMOOTH: bool> {
    pub tile: Tile,
    pub ids: &'a [u32],
    pub splats: &'a Splats<R>,
    pub channels: usize,
    pub upstream: TileUpstream<R>,
    /// `[ids.len(), PARTIAL_GEOMETRY + channels]` partial gradients, one row per intersection, zeroed by the
    /// caller: rows of splats the blend does not reach stay zero.
    pub partials: &'a mut [R],
}

impl<R: Real, const SMOOTH: bool> SimdTask for BackwardTile<'_, R, SMOOTH> {
    type Output = PairCount;

    #[inline(always)]
    fn run(self) -> PairCount {
        let BackwardTile {
            tile,
            ids,
            splats,
            channels,
            upstream: mut up,
            partials,
        } = self;
        let stride = PARTIAL_GEOMETRY + channels;
        let mut transmittance = tile.initial_transmittance::<R>();
        let mut done = false;
        let lane_x = tile.lane_x::<R>();
        let half = R::of(0.5);
        // Lane accumulators, reduced once per intersection.
        let mut v_color = vec![[R::ZERO; TILE_SIZE]; channels];
        let mut pairs = PairCount::default();
        let tile_pixels = (tile.rows * tile.cols) as u64;
        for (k, (&id, partial)) in ids.iter().zip(partials.chunks_exact_mut(stride)).enumerate() {
            if done {
                continue;
            }
            pairs.in_tile_lists += tile_pixels;
            if let Some(&ahead) = ids.get(k + PREFETCH_AHEAD) {
                splats.prefetch(ahead as usize, channels);
            }
            let s = id as usize;
            let blend = &splats.blend[s];
            let Some((r0, r1)) = tile.rows_of(blend) else {
                continue;
            };
            let [a, b, c] = blend.conic;
            let opacity = blend.opacity;
            let color = splats.color(s, channels);
            let lanes = SplatLanes::new(blend, &lane_x);
            let dx = lanes.dx;
            // Per-lane factors of the geometry gradients, shared by the splat's rows.
            let a_dx: [R; TILE_SIZE] = std::array::from_fn(|l| a * dx[l]);
            let b_dx = lanes.b_dx;
            let half_dx2: [R; TILE_SIZE] = std::array::from_fn(|l| half * dx[l] * dx[l]);
            let mut v_geom = [[R::ZERO; TILE_SIZE]; PARTIAL_GEOMETRY];
            let mut flags = LaneFlags::default();
            // Groups of rows as in the forward (see `blend_rows`): blended together, then differentiated row by row.
            let steps = r0 / ROWS_PER_STEP..=r1 / ROWS_PER_STEP;
            pairs.evaluated += (steps.clone().count() * ROWS_PER_STEP * TILE_SIZE) as u64;
            for step in steps {
                let first = ROWS_PER_STEP * step;
                let dys = tile.row_offsets::<R, ROWS_PER_STEP>(first, blend.mean[1]);
                let t = row_group::<R, ROWS_PER_STEP>(&mut transmittance, first);
                let Some(sigma) = lanes.rows_sigma(&dys, t) else {
                    continue;
                };
                let rows = blend_rows::<R, SMOOTH, ROWS_PER_STEP>(blend, &sigma, t);
                flags.add(&rows, t);
                // Σ_k g_k c_k per row, and the colour gradient's lanes. The group's rows share each channel's
                // pass, so its lane accumulators are loaded and stored once per group rather than once per row
                // (the loop is bound by loads and stores); each accumulator still adds its rows in order.
                let mut g_dot_c = [[R::ZERO; TILE_SIZE]; ROWS_PER_STEP];
                for ((&ck, g), vc) in color.iter().zip(&up.v_color).zip(&mut v_color) {
                    // Opaque to the optimiser, as in the forward: otherwise LLVM vectorises across channels. The
                    // upstream rows are copied first, so the opaque store cannot alias them.
                    let vc = std::hint::black_box(vc);
                    let g: [[R; TILE_SIZE]; ROWS_PER_STEP] = std::array::from_fn(|h| g[first + h]);
                    for (h, g) in g.iter().enumerate() {
                        for l in 0..TILE_SIZE {
                            vc[l] = rows.weight[h][l].mul_add(g[l], vc[l]);
                            g_dot_c[h][l] = g[l].mul_add(ck, g_dot_c[h][l]);
                        }
                    }
                }
                for (h, &dy) in dys.iter().enumerate() {
                    let r = first + h;
                    // Rows past the pre-test mostly composite; where a pair did not, its weight and ∂α/∂(o·G)
                    // are zero and everything below adds exact zeros for it.
                    let (weight, alpha, gauss) = (rows.weight[h], rows.alpha[h], rows.gauss[h]);
                    let (dalpha, t_before) = (rows.dalpha[h], rows.t_before[h]);
                    let g_dot_c = g_dot_c[h];
                    // Σ_k g_k S_k, with this splat's share taken off S: S now is the colour behind it.
                    let g_dot_s = &mut up.g_dot_behind[r];
                    for l in 0..TILE_SIZE {
                        g_dot_s[l] = (-weight[l]).mul_add(g_dot_c[l], g_dot_s[l]);
                    }
                    let v_final = &up.v_final[r];
                    let (b_dy, c_dy, half_dy2) = (b * dy, c * dy, half * dy * dy);
                    for l in 0..TILE_SIZE {
                        let v_alpha = t_before[l] * g_dot_c[l] + (v_final[l] - g_dot_s[l]) / (R::ONE - alpha[l]);
                        // α = o·G (below the clamp): ∂α/∂o = G, ∂α/∂σ = −o·G. With σ = ½a·dx² + b·dx·dy + ½c·dy²
                        // and dx = x − mean: ∂σ/∂mean = −(a·dx + b·dy, b·dx + c·dy), ∂σ/∂(a, b, c) = (½dx², dx·dy,
                        // ½dy²). `minus_v_sigma` is −∂L/∂σ, so every update below is one fused multiply-add.
                        let v_og = v_alpha * dalpha[l];
                        let minus_v_sigma = v_og * opacity * gauss[l];
                        v_geom[0][l] = minus_v_sigma.mul_add(a_dx[l] + b_dy, v_geom[0][l]);
                        v_geom[1][l] = minus_v_sigma.mul_add(b_dx[l] + c_dy, v_geom[1][l]);
                        v_geom[2][l] = (-minus_v_sigma).mul_add(half_dx2[l], v_geom[2][l]);
                        v_geom[3][l] = (-minus_v_sigma).mul_add(dx[l] * dy, v_geom[3][l]);
                        v_geom[4][l] = (-minus_v_sigma).mul_add(half_dy2, v_geom[4][l]);
                        v_geom[5][l] = v_og.mul_add(gauss[l], v_geom[5][l]);
                    }
                }
            }
            if flags.stopped() {
                done = all_done(&transmittance);
            }
            let sum = |acc: &[R; TILE_SIZE]| acc.iter().fold(R::ZERO, |x, &y| x + y);
            let (geometry, color) = partial.split_at_mut(PARTIAL_GEOMETRY);
            for (out, acc) in geometry.iter_mut().zip(&v_geom) {
                *out = sum(acc);
            }
            // Zeroed here for the next splat, while the lines are in cache: a fill at the splat's start was a
            // memset call, which also reloaded every vector constant of the row loop after it.
            for (out, acc) in color.iter_mut().zip(&mut v_color) {
                *out = sum(acc);
                *acc = [R::ZERO; TILE_SIZE];
            }
        }
        pairs
    }
}
