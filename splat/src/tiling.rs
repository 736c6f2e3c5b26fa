//! Projection of every Gaussian, depth order, and per-tile lists. Splats are stored in depth order (`compact` ids
//! are depth ranks), one packed blend record each, and each tile's list is the compact ids whose screen extent
//! reaches a pixel centre of the tile, ascending, hence front to back.

use crate::blend::SplatBlend;
use crate::constants::{PIXEL_CENTER, TILE_SIZE};
use crate::options::{ColorLayout, RasterMode};
use crate::projection::{ColorEval, GaussianParams, PinholeCamera, Splat, project};
use crate::real::Real;
use rayon::prelude::*;

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
    pub(crate) fn params(&self, i: usize) -> GaussianParams<R> {
        GaussianParams {
            mean: std::array::from_fn(|j| self.means[3 * i + j]),
            log_scale: std::array::from_fn(|j| self.log_scales[3 * i + j]),
            quat: std::array::from_fn(|j| self.quats[4 * i + j]),
            opacity_logit: self.opacity_logits[i],
        }
    }

    #[inline]
    pub(crate) fn coeffs(&self, i: usize) -> &[R] {
        let s = self.layout.stride();
        &self.colors[s * i..s * (i + 1)]
    }
}

/// The visible splats in depth order (`compact` ids are depth ranks).
#[derive(Clone, Debug, Default)]
pub(crate) struct Splats<R> {
    /// Global Gaussian id of each compact id.
    pub gaussian: Vec<u32>,
    /// What the blend reads per (splat, tile), one record each so a pair loop touches one cache line.
    pub blend: Vec<SplatBlend<R>>,
    /// Screen half-width in pixels (the half-height is in `blend`); only binning and the radii need it.
    pub extent_x: Vec<R>,
    /// `[n, channels]` colour seen from the camera.
    pub colors: Vec<R>,
}

impl<R: Real> Splats<R> {
    pub fn len(&self) -> usize {
        self.gaussian.len()
    }
}

/// Inclusive range of pixel indices whose centres lie within `extent` of `centre`, clipped to `0..size`;
/// `None` when empty.
#[inline(always)]
pub(crate) fn pixel_span<R: Real>(centre: R, extent: R, size: usize) -> Option<(usize, usize)> {
    let lo = (centre - extent - R::of(PIXEL_CENTER)).ceil().max(R::ZERO);
    let hi = (centre + extent - R::of(PIXEL_CENTER))
        .floor()
        .min(R::of(size as f64 - 1.0));
    (lo <= hi).then(|| (lo.to_f64() as usize, hi.to_f64() as usize))
}

/// Per-tile lists of compact ids: tile t holds `ids[offsets[t]..offsets[t + 1]]`. The same intersections by
/// splat: splat s's positions in `ids` are `isects[splat_offsets[s]..splat_offsets[s + 1]]`, in tile order, so the
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

    /// Positions in `ids` of splat `s`'s intersections, in tile order.
    pub fn isects_of(&self, s: usize) -> &[u32] {
        &self.isects[self.splat_offsets[s]..self.splat_offsets[s + 1]]
    }
}

/// Gaussians per parallel work item in the per-Gaussian passes: large enough to amortise per-item setup (colour
/// scratch space), small enough to balance two to sixteen threads.
const SPLAT_CHUNK: usize = 1024;

/// Projects, culls and sorts the Gaussians, evaluates their colours and bins them into tiles.
pub(crate) fn prepare<R: Real>(
    gaussians: &GaussianSlices<R>,
    cam: &PinholeCamera<R>,
    mode: RasterMode,
    offset_clamp: bool,
) -> (Splats<R>, TileBins) {
    let channels = gaussians.layout.channels;
    // Projection and colour in Gaussian order, so the coefficients (the bulk of the input) stream from memory.
    let mut projected: Vec<Option<Splat<R>>> = vec![None; gaussians.len()];
    let mut colors = vec![R::ZERO; gaussians.len() * channels];
    projected
        .par_chunks_mut(SPLAT_CHUNK)
        .zip(colors.par_chunks_mut(SPLAT_CHUNK * channels))
        .enumerate()
        .for_each(|(chunk, (projected, colors))| {
            let mut eval = ColorEval::new(gaussians.layout, offset_clamp);
            for (j, (splat, color)) in projected.iter_mut().zip(colors.chunks_exact_mut(channels)).enumerate() {
                let i = chunk * SPLAT_CHUNK + j;
                // Non-finite colour coefficients cull the Gaussian like non-finite geometry does.
                if !gaussians.coeffs(i).iter().all(|c| c.is_finite()) {
                    continue;
                }
                let params = gaussians.params(i);
                *splat = project(cam, &params, mode);
                if splat.is_some() {
                    eval.color(cam, params.mean, gaussians.coeffs(i), color);
                }
            }
        });
    // Depths are positive and finite, so their bit patterns sort like the values; ties keep the Gaussian order,
    // like a stable sort.
    let mut order: Vec<(u64, u32)> = projected
        .par_iter()
        .with_min_len(SPLAT_CHUNK)
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (s.depth.to_f64().to_bits(), i as u32)))
        .collect();
    order.par_sort_unstable();
    let splat = |&(_, i): &(u64, u32)| projected[i as usize].expect("sorted splats are projected");
    let mut splats = Splats {
        gaussian: order.par_iter().map(|&(_, i)| i).collect(),
        blend: order.par_iter().map(|o| SplatBlend::new(&splat(o))).collect(),
        extent_x: order.par_iter().map(|o| splat(o).extent[0]).collect(),
        colors: vec![R::ZERO; order.len() * channels],
    };
    splats
        .colors
        .par_chunks_mut(channels)
        .with_min_len(SPLAT_CHUNK)
        .zip(&splats.gaussian)
        .for_each(|(out, &g)| out.copy_from_slice(&colors[g as usize * channels..(g as usize + 1) * channels]));
    let bins = bin(&splats, cam.width, cam.height);
    (splats, bins)
}

/// Counting sort of (tile, compact id) pairs by tile; filling in compact order keeps each list in depth order.
fn bin<R: Real>(splats: &Splats<R>, width: usize, height: usize) -> TileBins {
    let tiles_x = width.div_ceil(TILE_SIZE);
    let tiles_y = height.div_ceil(TILE_SIZE);
    let rects: Vec<Option<[usize; 4]>> = (0..splats.len())
        .into_par_iter()
        .with_min_len(SPLAT_CHUNK)
        .map(|s| {
            let (x0, x1) = pixel_span(splats.blend[s].mean[0], splats.extent_x[s], width)?;
            let (y0, y1) = pixel_span(splats.blend[s].mean[1], splats.blend[s].extent_y, height)?;
            Some([x0 / TILE_SIZE, x1 / TILE_SIZE, y0 / TILE_SIZE, y1 / TILE_SIZE])
        })
        .collect();
    let mut counts = vec![0usize; tiles_x * tiles_y];
    let mut splat_offsets = Vec::with_capacity(rects.len() + 1);
    splat_offsets.push(0);
    let mut total = 0;
    for rect in &rects {
        if let Some([tx0, tx1, ty0, ty1]) = *rect {
            for ty in ty0..=ty1 {
                for c in &mut counts[ty * tiles_x + tx0..=ty * tiles_x + tx1] {
                    *c += 1;
                }
            }
            total += (tx1 + 1 - tx0) * (ty1 + 1 - ty0);
        }
        splat_offsets.push(total);
    }
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    let mut sum = 0;
    offsets.push(0);
    for c in &counts {
        sum += c;
        offsets.push(sum);
    }
    let mut cursor = offsets.clone();
    let mut ids = vec![0u32; total];
    let mut isects = Vec::with_capacity(total);
    for (s, rect) in rects.iter().enumerate() {
        let Some([tx0, tx1, ty0, ty1]) = *rect else { continue };
        for ty in ty0..=ty1 {
            for t in ty * tiles_x + tx0..=ty * tiles_x + tx1 {
                ids[cursor[t]] = s as u32;
                isects.push(cursor[t] as u32);
                cursor[t] += 1;
            }
        }
    }
    TileBins {
        tiles_x,
        tiles_y,
        offsets,
        ids,
        splat_offsets,
        isects,
    }
}
