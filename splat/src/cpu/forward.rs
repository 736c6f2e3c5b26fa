//! Forward blend of one tile: front-to-back compositing of its splat list over 16 rows × 16 lanes, with
//! culling of each splat's rows and an early exit once every pixel is done.

use crate::constants::TILE_SIZE;
use crate::cpu::blend::{LaneFlags, ROWS_PER_STEP, SplatLanes, Tile, TileRows, all_done, blend_rows, row_group};
use crate::cpu::{PREFETCH_AHEAD, PairCount};
use crate::real::Real;
use crate::tiling::Splats;
use lrf_simd::SimdTask;

/// A tile's forward result.
pub(crate) struct TileImage<R> {
    /// Per channel: composited colour, without the background.
    pub color: Vec<TileRows<R>>,
    /// Final transmittance.
    pub transmittance: TileRows<R>,
    /// Σ weight·depth.
    pub depth: TileRows<R>,
    /// Gaussian ids that composited at least one pixel.
    pub used: Vec<u32>,
    pub pairs: PairCount,
}

/// The forward blend of one tile, run through [`lrf_simd::dispatch`].
pub(crate) struct ForwardTile<'a, R, const SMOOTH: bool> {
    pub tile: Tile,
    pub ids: &'a [u32],
    pub splats: &'a Splats<R>,
    pub channels: usize,
}

impl<R: Real, const SMOOTH: bool> SimdTask for ForwardTile<'_, R, SMOOTH> {
    type Output = TileImage<R>;

    #[inline(always)]
    fn run(self) -> TileImage<R> {
        let ForwardTile {
            tile,
            ids,
            splats,
            channels,
        } = self;
        let mut out = TileImage {
            color: vec![[[R::ZERO; TILE_SIZE]; TILE_SIZE]; channels],
            transmittance: tile.initial_transmittance(),
            depth: [[R::ZERO; TILE_SIZE]; TILE_SIZE],
            used: Vec::new(),
            pairs: PairCount::default(),
        };
        let lane_x = tile.lane_x::<R>();
        let mut done = false;
        let tile_pixels = (tile.rows * tile.cols) as u64;
        for (k, &id) in ids.iter().enumerate() {
            if done {
                break;
            }
            out.pairs.in_tile_lists += tile_pixels;
            if let Some(&ahead) = ids.get(k + PREFETCH_AHEAD) {
                splats.prefetch(ahead as usize, channels);
            }
            let s = id as usize;
            let blend = &splats.blend[s];
            let Some((r0, r1)) = tile.rows_of(blend) else {
                continue;
            };
            let color = splats.color(s, channels);
            let lanes = SplatLanes::new(blend, &lane_x);
            // A local copy: the compiler cannot tell that the output rows do not alias the splat record, and
            // would otherwise reload it for every lane, unvectorised.
            let depth = blend.depth;
            let mut flags = LaneFlags::default();
            // Groups of ROWS_PER_STEP rows aligned to multiples of it (see `blend_rows`). A row of a group outside
            // the splat's extent comes along: it lies beyond the α ≥ ALPHA_THRESHOLD ellipse the extent bounds, so it
            // composites nothing (the dense reference evaluates such pairs too), up to rounding at that boundary.
            let steps = r0 / ROWS_PER_STEP..=r1 / ROWS_PER_STEP;
            out.pairs.evaluated += (steps.clone().count() * ROWS_PER_STEP * TILE_SIZE) as u64;
            for step in steps {
                let r = ROWS_PER_STEP * step;
                let dy = tile.row_offsets::<R, ROWS_PER_STEP>(r, blend.mean[1]);
                let t = row_group::<R, ROWS_PER_STEP>(&mut out.transmittance, r);
                let Some(sigma) = lanes.rows_sigma(&dy, t) else {
                    continue;
                };
                let rows = blend_rows::<R, SMOOTH, ROWS_PER_STEP>(blend, &sigma, t);
                flags.add(&rows, t);
                // Rows past the pre-test mostly composite: accumulating their weights (zero where a pair
                // did not composite) without a test is cheaper than a branch that often mispredicts.
                for (acc, &c) in out.color.iter_mut().zip(color) {
                    // Opaque to the optimiser on purpose: each channel's row is one 16-lane vector operation,
                    // but LLVM's loop vectoriser otherwise vectorises across channels instead, with gathers and
                    // scatters over rows 1 KiB apart, several times slower for C >= 8.
                    let acc = std::hint::black_box(row_group::<R, ROWS_PER_STEP>(acc, r));
                    for (acc, weight) in acc.iter_mut().zip(&rows.weight) {
                        for l in 0..TILE_SIZE {
                            acc[l] = weight[l].mul_add(c, acc[l]);
                        }
                    }
                }
                for (acc, weight) in row_group::<R, ROWS_PER_STEP>(&mut out.depth, r)
                    .iter_mut()
                    .zip(&rows.weight)
                {
                    for l in 0..TILE_SIZE {
                        acc[l] = weight[l].mul_add(depth, acc[l]);
                    }
                }
            }
            // Once every pixel is done nothing composites any more; checked per splat, as no row of this one
            // can composite after that either.
            if flags.stopped() {
                done = all_done(&out.transmittance);
            }
            if flags.composited() {
                out.used.push(id);
            }
        }
        // Done pixels hold −T (see `blend_rows`).
        for t in out.transmittance.as_flattened_mut() {
            *t = t.abs();
        }
        out
    }
}
