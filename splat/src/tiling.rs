//! Projection of every Gaussian, depth order, and per-tile lists. Splats are stored by Gaussian id, one packed
//! blend record each, as the projection writes them; each tile's list is the Gaussian ids whose screen extent
//! reaches a pixel centre of the tile, in depth order, hence front to back.

use crate::constants::{PIXEL_CENTER, TILE_SIZE};
use crate::cpu::blend::SplatBlend;
use crate::options::{ColorLayout, RasterMode};
use crate::projection::{ColorEval, PinholeCamera, project_batch};
use crate::real::Real;
use lrf_simd::{SimdTask, dispatch, prefetch, prefetch_slice};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// A borrowed view of Gaussians as flat row-major arrays: means `[N, 3]`, log-scales `[N, 3]`, quaternions
/// `[N, 4]` (w, x, y, z, unnormalised), opacity logits `[N]`, colour coefficients `[N, stride]` (see
/// [`ColorLayout`]).
#[derive(Clone, Copy, Debug)]
pub struct GaussianSlices<'a, R> {
    pub means: &'a [R],
    pub log_scales: &'a [R],
    pub quats: &'a [R],
    pub opacity_logits: &'a [R],
    pub colors: &'a [R],
    pub layout: ColorLayout,
}

impl<R: Real> GaussianSlices<'_, R> {
    pub fn len(&self) -> usize {
        self.opacity_logits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.opacity_logits.is_empty()
    }

    pub(crate) fn check(&self) -> crate::Result<()> {
        let n = self.len();
        self.layout.check()?;
        let sizes = [
            ("means", self.means.len(), 3 * n),
            ("log_scales", self.log_scales.len(), 3 * n),
            ("quats", self.quats.len(), 4 * n),
            ("colors", self.colors.len(), self.layout.stride() * n),
        ];
        for (name, got, want) in sizes {
            if got != want {
                return Err(crate::SplatError::Shape(format!(
                    "{name} has {got} values, {n} Gaussians need {want}"
                )));
            }
        }
        if n > u32::MAX as usize {
            return Err(crate::SplatError::Shape(format!(
                "{n} Gaussians exceed the u32 index range"
            )));
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn coeffs(&self, i: usize) -> &[R] {
        let s = self.layout.stride();
        &self.colors[s * i..s * (i + 1)]
    }
}

/// The projected Gaussians, indexed by Gaussian id (meaningless for culled ones), and the ones that reach a pixel
/// in depth order. Tile lists hold Gaussian ids; a splat's depth rank indexes `gaussian` and the backward's
/// per-splat reduction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Splats<R> {
    /// Gaussian id of each depth rank.
    pub gaussian: Vec<u32>,
    /// What the blend reads per (splat, tile), one record each so a pair loop touches one cache line.
    pub blend: Vec<SplatBlend<R>>,
    /// `[n, channels]` colour seen from the camera.
    pub colors: Vec<R>,
}

impl<R: Real> Splats<R> {
    pub fn len(&self) -> usize {
        self.gaussian.len()
    }

    /// Gaussian `s`'s colour, `channels` values.
    #[inline(always)]
    pub fn color(&self, s: usize, channels: usize) -> &[R] {
        &self.colors[s * channels..(s + 1) * channels]
    }

    /// Starts loading what the blend will read of Gaussian `s` (its record and colour): tile lists visit splats in
    /// depth order, scattered over memory, and each visit would otherwise wait for its cache lines.
    #[inline(always)]
    pub fn prefetch(&self, s: usize, channels: usize) {
        prefetch(&self.blend[s]);
        prefetch_slice(self.color(s, channels));
    }
}

/// Inclusive range of pixel indices whose centres lie within `extent` of `centre`, clipped to `0..size`;
/// `None` when empty.
#[inline(always)]
pub(crate) fn pixel_span<R: Real>(center: R, extent: R, size: usize) -> Option<(usize, usize)> {
    let lo = (center - extent - R::of(PIXEL_CENTER)).ceil().max(R::ZERO);
    let hi = (center + extent - R::of(PIXEL_CENTER))
        .floor()
        .min(R::of(size as f64 - 1.0));
    (lo <= hi).then(|| (lo.to_f64() as usize, hi.to_f64() as usize))
}

/// Per-tile lists of Gaussian ids in depth order: tile t holds `ids[offsets[t]..offsets[t + 1]]`. The same
/// intersections by splat: the positions in `ids` of the splat of depth rank s are
/// `isects[splat_offsets[s]..splat_offsets[s + 1]]`, in tile order, so the
/// backward can reduce per-intersection gradients per splat in a fixed order without sorting them again (u32
/// positions: 2³² intersections would need a partial-gradient buffer beyond 100 GB).
#[derive(Clone, Debug, Default)]
pub(crate) struct TileBins {
    pub tiles_x: usize,
    pub tiles_y: usize,
    pub offsets: Vec<usize>,
    pub ids: Vec<u32>,
    pub splat_offsets: Vec<usize>,
    pub isects: Vec<u32>,
}

impl TileBins {
    pub fn tile(&self, t: usize) -> &[u32] {
        &self.ids[self.offsets[t]..self.offsets[t + 1]]
    }

    pub fn num_tiles(&self) -> usize {
        self.tiles_x * self.tiles_y
    }

    /// Positions in `ids` of the intersections of the splat of depth rank `s`, in tile order.
    pub fn isects_of(&self, s: usize) -> &[u32] {
        &self.isects[self.splat_offsets[s]..self.splat_offsets[s + 1]]
    }
}

/// Gaussians per parallel work item in the per-Gaussian passes: large enough to amortise per-item setup (colour
/// scratch space), small enough to balance two to sixteen threads.
pub(crate) const SPLAT_CHUNK: usize = 1024;

/// Fewest splats in one run of the parallel binning: below this a run's per-tile tables cost more than its work.
const BIN_RUN: usize = 8192;

/// The visible splats and their tile lists, and every Gaussian's screen radius in pixels (0 when culled).
pub(crate) struct Prepared<R> {
    pub splats: Splats<R>,
    pub bins: TileBins,
    pub radii: Vec<i32>,
}

/// Projects, culls and sorts the Gaussians, evaluates their colours and bins them into tiles.
pub(crate) fn prepare<R: Real>(
    gaussians: &GaussianSlices<R>,
    cam: &PinholeCamera<R>,
    mode: RasterMode,
    offset_clamp: bool,
) -> Prepared<R> {
    let n = gaussians.len();
    let channels = gaussians.layout.channels;
    // Everything per Gaussian is computed in Gaussian order, so the parameters and coefficients (the bulk of the
    // input) stream from memory, and stays in that order: the blend visits splats scattered over memory anyway.
    let mut blend = vec![SplatBlend::default(); n];
    let mut rects = vec![EMPTY_RECT; n];
    let mut colors = vec![R::ZERO; n * channels];
    let mut radii = vec![0; n];
    let mut depth_keys = vec![UNREACHED; n];
    (
        blend.par_chunks_mut(SPLAT_CHUNK),
        rects.par_chunks_mut(SPLAT_CHUNK),
        colors.par_chunks_mut(SPLAT_CHUNK * channels),
        radii.par_chunks_mut(SPLAT_CHUNK),
        depth_keys.par_chunks_mut(SPLAT_CHUNK),
    )
        .into_par_iter()
        .enumerate()
        .for_each(|(chunk, (blend, rects, colors, radii, depth_keys))| {
            dispatch(ProjectChunk {
                cam,
                gaussians,
                first: chunk * SPLAT_CHUNK,
                mode,
                offset_clamp,
                blend,
                rects,
                colors,
                radii,
                depth_keys,
            })
        });
    let gaussian = depth_order(&depth_keys);
    let bins = bin(&rects, &gaussian, cam.width, cam.height);
    Prepared {
        splats: Splats {
            gaussian,
            blend,
            colors,
        },
        bins,
        radii,
    }
}

/// Inclusive tile ranges [x0, x1, y0, y1] a splat reaches; empty ranges when it reaches no pixel centre.
type TileRect = [u32; 4];

const EMPTY_RECT: TileRect = [1, 0, 1, 0];

/// The tiles whose pixel centres a splat's extent reaches.
fn tile_rect<R: Real>(blend: &SplatBlend<R>, extent_x: R, width: usize, height: usize) -> TileRect {
    let spans = (
        pixel_span(blend.mean[0], extent_x, width),
        pixel_span(blend.mean[1], blend.extent_y, height),
    );
    let (Some((x0, x1)), Some((y0, y1))) = spans else {
        return EMPTY_RECT;
    };
    [x0, x1, y0, y1].map(|p| (p / TILE_SIZE) as u32)
}

/// Number of tiles in a rectangle.
fn rect_tiles(&[x0, x1, y0, y1]: &TileRect) -> usize {
    ((x1 + 1).saturating_sub(x0) * (y1 + 1).saturating_sub(y0)) as usize
}

/// The depth key of a splat that reaches no tile. Depth keys are the bit patterns of positive, finite depths
/// (as f64), which sort like the depths; this one is a NaN pattern.
const UNREACHED: u64 = u64::MAX;

/// Gaussian ids of the splats that reach some tile, front to back (by `depth_keys`, one per Gaussian); ties keep
/// the Gaussian order.
fn depth_order(depth_keys: &[u64]) -> Vec<u32> {
    let reached = || depth_keys.iter().enumerate().filter(|&(_, &key)| key != UNREACHED);
    if let Some(KeyPacking { min, shift }) = key_packing(depth_keys) {
        // The packed key above the Gaussian id in one u64: half the bytes per pass of a (key, id) pair, and ties
        // stay in Gaussian order.
        let mut items: Vec<u64> = reached()
            .map(|(i, &key)| ((key - min) >> shift) << 32 | i as u64)
            .collect();
        radix_sort(&mut items, |item| item >> 32);
        items.into_iter().map(|item| item as u32).collect()
    } else {
        let mut items: Vec<(u64, u32)> = reached().map(|(i, &key)| (key, i as u32)).collect();
        radix_sort(&mut items, |(key, _)| key);
        items.into_iter().map(|(_, i)| i).collect()
    }
}

/// Depth keys as 32-bit offsets: (key − min) >> shift orders the keys like the keys themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyPacking {
    min: u64,
    shift: u32,
}

/// How the reached depth keys pack into 32 bits, if they do. f32 depths as f64 patterns leave the 29 low bits
/// zero in every offset, so any range of f32 depths up to a ratio of 2^511 packs; f64 depths spread over all 52
/// mantissa bits do not.
fn key_packing(depth_keys: &[u64]) -> Option<KeyPacking> {
    let reached = depth_keys.iter().copied().filter(|&key| key != UNREACHED);
    let (min, max) = reached
        .clone()
        .fold((u64::MAX, 0), |(lo, hi), key| (lo.min(key), hi.max(key)));
    // Bits below the lowest set bit of any offset are zero in all of them and decide nothing.
    let shift = reached.fold(0, |any, key| any | (key - min)).trailing_zeros().min(63);
    (min <= max && (max - min) >> shift <= u32::MAX as u64).then_some(KeyPacking { min, shift })
}

/// Stable LSD radix sort by a u64 key, a byte per pass. Passes where every key has the same byte are skipped
/// (the packed keys of [`depth_order`] leave their upper four bytes zero; nearby depths share their top bytes).
fn radix_sort<T: Copy>(items: &mut Vec<T>, key: impl Fn(T) -> u64) {
    const BYTES: usize = size_of::<u64>();
    let mut counts = [[0usize; 256]; BYTES];
    for &item in items.iter() {
        let key = key(item);
        for (b, counts) in counts.iter_mut().enumerate() {
            counts[(key >> (8 * b)) as usize & 0xff] += 1;
        }
    }
    let mut scratch = items.clone();
    for (b, counts) in counts.iter().enumerate() {
        if counts.contains(&items.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (next, &count) in next.iter_mut().zip(counts) {
            *next = sum;
            sum += count;
        }
        for &item in items.iter() {
            let digit = (key(item) >> (8 * b)) as usize & 0xff;
            scratch[next[digit]] = item;
            next[digit] += 1;
        }
        std::mem::swap(items, &mut scratch);
    }
}

/// Projection, colour, tiles and screen radius of one chunk of Gaussians, compiled for the CPU's vector
/// instructions (see [`project_batch`]).
struct ProjectChunk<'a, R> {
    cam: &'a PinholeCamera<R>,
    gaussians: &'a GaussianSlices<'a, R>,
    first: usize,
    mode: RasterMode,
    offset_clamp: bool,
    blend: &'a mut [SplatBlend<R>],
    rects: &'a mut [TileRect],
    colors: &'a mut [R],
    radii: &'a mut [i32],
    /// [`UNREACHED`] where the splat reaches no tile.
    depth_keys: &'a mut [u64],
}

impl<R: Real> SimdTask for ProjectChunk<'_, R> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let ProjectChunk {
            cam,
            gaussians,
            first,
            mode,
            offset_clamp,
            blend,
            rects,
            colors,
            radii,
            depth_keys,
        } = self;
        let len = blend.len();
        let mut projected = vec![None; len];
        project_batch(cam, gaussians, first, mode, &mut projected);
        let (channels, stride) = (gaussians.layout.channels, gaussians.layout.stride());
        let mut eval = ColorEval::new(gaussians.layout, offset_clamp);
        let coeffs = &gaussians.colors[first * stride..(first + len) * stride];
        let means = &gaussians.means[3 * first..3 * (first + len)];
        let per_gaussian = projected
            .iter()
            .zip(coeffs.chunks_exact(stride))
            .zip(means.chunks_exact(3))
            .zip(blend.iter_mut().zip(rects.iter_mut()))
            .zip(colors.chunks_exact_mut(channels).zip(radii.iter_mut().zip(depth_keys)));
        for ((((splat, coeffs), mean), (blend, rect)), (color, (radius, depth_key))) in per_gaussian {
            // Non-finite colour coefficients cull the Gaussian like non-finite geometry does. A fold without
            // early exit, so it stays in vectors.
            let Some(s) = splat.filter(|_| coeffs.iter().fold(true, |finite, c| finite & c.is_finite())) else {
                continue;
            };
            *blend = SplatBlend::new(&s);
            *rect = tile_rect(blend, s.extent[0], cam.width, cam.height);
            if rect_tiles(rect) > 0 {
                *depth_key = s.depth.to_f64().to_bits();
            }
            *radius = s.extent[0].max(s.extent[1]).ceil().to_f64() as i32;
            eval.color(cam, [mean[0], mean[1], mean[2]], coeffs, color);
        }
    }
}

/// Counting sort of (tile, Gaussian id) pairs by tile; filling in depth order (`gaussian`, each rank's Gaussian)
/// keeps each list in depth order. `rects` is indexed by Gaussian id.
fn bin(rects: &[TileRect], gaussian: &[u32], width: usize, height: usize) -> TileBins {
    // Gathered once in depth order: the passes below then read them in sequence.
    let ranked: Vec<TileRect> = gaussian.par_iter().map(|&g| rects[g as usize]).collect();
    // A few runs per thread balance the load; their number, not the splat count, sizes the per-run tables.
    let run = gaussian.len().div_ceil(4 * rayon::current_num_threads()).max(BIN_RUN);
    bin_in_runs(&ranked, gaussian, width, height, run)
}

/// Calls `f` with every tile of a rectangle, row by row.
#[inline(always)]
fn for_each_tile(&[x0, x1, y0, y1]: &TileRect, tiles_x: usize, mut f: impl FnMut(usize)) {
    for ty in y0 as usize..=y1 as usize {
        for t in ty * tiles_x + x0 as usize..=ty * tiles_x + x1 as usize {
            f(t);
        }
    }
}

/// [`bin`] of the rectangles of each depth rank, `gaussian` their Gaussian ids. Parallel over runs of consecutive
/// ranks: each run counts and fills its own share of every tile's list, and the shares are laid out per tile in
/// run order, so the lists come out exactly as a sequential fill would make them.
fn bin_in_runs(ranked: &[TileRect], gaussian: &[u32], width: usize, height: usize, run: usize) -> TileBins {
    let tiles_x = width.div_ceil(TILE_SIZE);
    let tiles_y = height.div_ceil(TILE_SIZE);
    let num_tiles = tiles_x * tiles_y;
    let runs: Vec<(&[TileRect], &[u32])> = ranked.chunks(run).zip(gaussian.chunks(run)).collect();
    let counts: Vec<Vec<usize>> = runs
        .par_iter()
        .map(|(rects, _)| {
            let mut counts = vec![0usize; num_tiles];
            for rect in rects.iter() {
                for_each_tile(rect, tiles_x, |t| counts[t] += 1);
            }
            counts
        })
        .collect();
    // Tile t's list is its runs' shares in run order: run r's share starts at starts[r][t].
    let mut offsets = Vec::with_capacity(num_tiles + 1);
    let mut starts = vec![vec![0usize; num_tiles]; runs.len()];
    let mut total = 0;
    for t in 0..num_tiles {
        offsets.push(total);
        for (r, counts) in counts.iter().enumerate() {
            starts[r][t] = total;
            total += counts[t];
        }
    }
    offsets.push(total);
    let mut splat_offsets = Vec::with_capacity(ranked.len() + 1);
    splat_offsets.push(0);
    let mut sum = 0;
    for rect in ranked {
        sum += rect_tiles(rect);
        splat_offsets.push(sum);
    }
    // Run r writes tile t's share of `ids` from starts[r][t] on. The shares are disjoint but interleaved, so the
    // runs store through relaxed atomics (plain stores on x86-64 and AArch64), unwrapped in place afterwards; a
    // slice per (run, tile) cost two indirections per intersection.
    let ids: Vec<AtomicU32> = (0..total).map(|_| AtomicU32::new(0)).collect();
    // Each run's contiguous range of `isects`, as disjoint mutable slices.
    let mut isects = vec![0u32; total];
    let mut isect_runs = Vec::with_capacity(runs.len());
    let mut rest = isects.as_mut_slice();
    for r in 0..runs.len() {
        let len = splat_offsets[((r + 1) * run).min(ranked.len())] - splat_offsets[r * run];
        let (head, tail) = rest.split_at_mut(len);
        isect_runs.push(head);
        rest = tail;
    }
    starts
        .into_par_iter()
        .zip(isect_runs)
        .zip(&runs)
        .for_each(|((mut next, isects), &(rects, gaussian))| {
            let mut isects = isects.iter_mut();
            for (rect, &g) in rects.iter().zip(gaussian) {
                for_each_tile(rect, tiles_x, |t| {
                    ids[next[t]].store(g, Ordering::Relaxed);
                    *isects.next().expect("a run's intersections fill its range") = next[t] as u32;
                    next[t] += 1;
                });
            }
        });
    let ids: Vec<u32> = ids.into_iter().map(AtomicU32::into_inner).collect();
    TileBins {
        tiles_x,
        tiles_y,
        offsets,
        ids,
        splat_offsets,
        isects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The radix sort orders like a stable comparison sort, on f32 and f64 depth keys with ties.
    #[test]
    fn radix_sort_orders_like_a_stable_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for len in [0, 1, 2, 300, 5000] {
            let f32_depths: Vec<u64> = (0..len)
                .map(|_| (rng.random_range(0.01f32..50.0) as f64).to_bits())
                .collect();
            let f64_depths: Vec<u64> = (0..len).map(|_| rng.random_range(0.01f64..1e6).to_bits()).collect();
            // Ties: a few distinct depths repeated.
            let tied: Vec<u64> = (0..len).map(|i| (1.0f64 + (i % 7) as f64).to_bits()).collect();
            for keys in [f32_depths, f64_depths, tied] {
                let mut items: Vec<(u64, u32)> = keys.iter().enumerate().map(|(i, &k)| (k, i as u32)).collect();
                let mut expected = items.clone();
                expected.sort_by_key(|&(key, _)| key);
                radix_sort(&mut items, |(key, _)| key);
                assert_eq!(items, expected, "{len} items");
            }
        }
    }

    /// The depth order is that of a stable comparison sort of the reached splats: f32 depths (packed keys), f64
    /// depths over nine decades (full keys), both with ties and unreached splats.
    #[test]
    fn depth_order_is_a_stable_sort_of_the_reached_splats() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for len in [0, 1, 2, 300, 5000] {
            let single: Vec<f64> = (0..len).map(|_| rng.random_range(0.1f32..60.0) as f64).collect();
            let tied: Vec<f64> = (0..len).map(|i| 1.0 + (i % 7) as f64).collect();
            let wide: Vec<f64> = (0..len).map(|_| 10f64.powf(rng.random_range(-3.0..6.0))).collect();
            for depths in [single, tied, wide] {
                let reached: Vec<bool> = (0..len).map(|_| rng.random_bool(0.8)).collect();
                let keys: Vec<u64> = depths
                    .iter()
                    .zip(&reached)
                    .map(|(&depth, &reached)| if reached { depth.to_bits() } else { UNREACHED })
                    .collect();
                let mut expected: Vec<u32> = (0..len as u32).filter(|&i| reached[i as usize]).collect();
                expected.sort_by(|&i, &j| depths[i as usize].total_cmp(&depths[j as usize]));
                assert_eq!(depth_order(&keys), expected, "{len} depths");
                // Both paths are taken: f32 depths pack, f64 depths with full mantissas (beyond a few) do not.
                let f32_depths = depths.iter().all(|&d| d as f32 as f64 == d);
                if expected.len() > 3 {
                    assert_eq!(key_packing(&keys).is_some(), f32_depths, "{len} depths");
                }
            }
        }
    }

    /// f32 depths pack into 32-bit offsets whatever their range, including across powers of two (where the f64
    /// exponent's bits flip); f64 depths with full mantissas do not.
    #[test]
    fn f32_depth_keys_pack_into_32_bits() {
        let keys = |depths: &[f64]| depths.iter().map(|d| d.to_bits()).collect::<Vec<u64>>();
        let f32_depths = [0.011f32, 0.5, 1.999, 2.0, 3.7, 1000.25].map(|d| d as f64);
        let packing = key_packing(&keys(&f32_depths)).expect("f32 depths pack");
        assert_eq!(packing.shift, 29);
        assert!(key_packing(&keys(&[0.5, 0.5 + 1e-12, 1e6])).is_none());
        assert_eq!(key_packing(&[UNREACHED; 3]), None);
        assert_eq!(
            key_packing(&keys(&[2.0, 2.0])),
            Some(KeyPacking {
                min: 2f64.to_bits(),
                shift: 63
            })
        );
    }

    /// Binning in many small runs gives, for every tile, exactly the Gaussians whose extent reaches it, in depth
    /// order, and for every depth rank the positions of its intersections in tile order.
    #[test]
    fn binning_in_runs_lists_every_reached_tile_in_depth_order() {
        let (width, height) = (75, 50);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut blend = Vec::new();
        let mut extent_x = Vec::new();
        for _ in 0..500 {
            blend.push(SplatBlend {
                mean: [rng.random_range(-20.0..95.0), rng.random_range(-20.0..70.0)],
                conic: [1.0, 0.0, 1.0],
                opacity: 0.5,
                extent_y: rng.random_range(0.0..30.0),
                ..SplatBlend::default()
            });
            extent_x.push(rng.random_range(0.0..30.0));
        }
        let rects: Vec<TileRect> = (0..blend.len())
            .map(|g| tile_rect(&blend[g], extent_x[g], width, height))
            .collect();
        // Depth order: a permutation of the Gaussian ids.
        let mut gaussian: Vec<u32> = (0..blend.len() as u32).collect();
        for i in (1..gaussian.len()).rev() {
            gaussian.swap(i, rng.random_range(0..=i));
        }
        let ranked: Vec<TileRect> = gaussian.iter().map(|&g| rects[g as usize]).collect();
        for run in [1, 7, 64, 10_000] {
            let bins = bin_in_runs(&ranked, &gaussian, width, height, run);
            let mut expected = vec![Vec::new(); bins.num_tiles()];
            for &g in &gaussian {
                let spans = (
                    pixel_span(blend[g as usize].mean[0], extent_x[g as usize], width),
                    pixel_span(blend[g as usize].mean[1], blend[g as usize].extent_y, height),
                );
                let (Some((x0, x1)), Some((y0, y1))) = spans else {
                    continue;
                };
                for ty in y0 / TILE_SIZE..=y1 / TILE_SIZE {
                    for tx in x0 / TILE_SIZE..=x1 / TILE_SIZE {
                        expected[ty * bins.tiles_x + tx].push(g);
                    }
                }
            }
            for (t, want) in expected.iter().enumerate() {
                assert_eq!(bins.tile(t), want.as_slice(), "run {run}, tile {t}");
            }
            for (rank, &g) in gaussian.iter().enumerate() {
                let positions = bins.isects_of(rank);
                assert!(
                    positions.iter().all(|&p| bins.ids[p as usize] == g),
                    "run {run}, rank {rank}"
                );
                assert!(
                    positions.is_sorted(),
                    "run {run}, rank {rank}: positions not in tile order"
                );
                let tiles = expected.iter().filter(|list| list.contains(&g)).count();
                assert_eq!(positions.len(), tiles, "run {run}, rank {rank}");
            }
        }
    }
}
