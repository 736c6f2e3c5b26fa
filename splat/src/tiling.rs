//! Projection of every Gaussian, depth order, and per-tile lists. Splats are stored as structure of arrays in
//! depth order (`compact` ids are depth ranks), and each tile's list is the compact ids whose screen extent
//! reaches a pixel centre of the tile, ascending, hence front to back.

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

/// The visible splats in depth order, structure of arrays.
#[derive(Clone, Debug, Default)]
pub(crate) struct Splats<R> {
    /// Global Gaussian id of each compact id.
    pub gaussian: Vec<u32>,
    pub mean_x: Vec<R>,
    pub mean_y: Vec<R>,
    pub conic_a: Vec<R>,
    pub conic_b: Vec<R>,
    pub conic_c: Vec<R>,
    pub opacity: Vec<R>,
    pub depth: Vec<R>,
    pub extent_x: Vec<R>,
    pub extent_y: Vec<R>,
    /// `[n, channels]` colour seen from the camera.
    pub colors: Vec<R>,
}

impl<R: Real> Splats<R> {
    pub fn len(&self) -> usize {
        self.gaussian.len()
    }

    fn with_capacity(n: usize) -> Self {
        let v = || Vec::with_capacity(n);
        Splats {
            gaussian: Vec::with_capacity(n),
            mean_x: v(),
            mean_y: v(),
            conic_a: v(),
            conic_b: v(),
            conic_c: v(),
            opacity: v(),
            depth: v(),
            extent_x: v(),
            extent_y: v(),
            colors: Vec::new(),
        }
    }

    fn push(&mut self, (gaussian, s): (u32, Splat<R>)) {
        self.gaussian.push(gaussian);
        self.mean_x.push(s.mean2d[0]);
        self.mean_y.push(s.mean2d[1]);
        self.conic_a.push(s.conic[0]);
        self.conic_b.push(s.conic[1]);
        self.conic_c.push(s.conic[2]);
        self.opacity.push(s.opacity);
        self.depth.push(s.depth);
        self.extent_x.push(s.extent[0]);
        self.extent_y.push(s.extent[1]);
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

/// Per-tile lists of compact ids: tile t holds `ids[offsets[t]..offsets[t + 1]]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct TileBins {
    pub tiles_x: usize,
    pub tiles_y: usize,
    pub offsets: Vec<usize>,
    pub ids: Vec<u32>,
}

impl TileBins {
    pub fn tile(&self, t: usize) -> &[u32] {
        &self.ids[self.offsets[t]..self.offsets[t + 1]]
    }

    pub fn num_tiles(&self) -> usize {
        self.tiles_x * self.tiles_y
    }
}

/// Projects, culls and sorts the Gaussians, evaluates their colours and bins them into tiles.
pub(crate) fn prepare<R: Real>(
    gaussians: &GaussianSlices<R>,
    cam: &PinholeCamera<R>,
    mode: RasterMode,
    offset_clamp: bool,
) -> (Splats<R>, TileBins) {
    let projected: Vec<(u32, Splat<R>)> = (0..gaussians.len())
        .into_par_iter()
        // Non-finite colour coefficients cull the Gaussian like non-finite geometry does.
        .filter(|&i| gaussians.coeffs(i).iter().all(|c| c.is_finite()))
        .filter_map(|i| project(cam, &gaussians.params(i), mode).map(|s| (i as u32, s)))
        .collect();
    // Depths are positive and finite, so their bit patterns sort like the values; ties keep the Gaussian order
    // (`projected` is in Gaussian order), like a stable sort.
    let mut order: Vec<(u64, u32)> = projected
        .iter()
        .enumerate()
        .map(|(j, (_, s))| (s.depth.to_f64().to_bits(), j as u32))
        .collect();
    order.par_sort_unstable();
    let channels = gaussians.layout.channels;
    let mut splats = Splats::with_capacity(order.len());
    for &(_, j) in &order {
        splats.push(projected[j as usize]);
    }
    splats.colors = vec![R::ZERO; order.len() * channels];
    splats
        .colors
        .par_chunks_mut(channels)
        .zip(splats.gaussian.par_iter())
        .for_each_init(
            || ColorEval::new(gaussians.layout, offset_clamp),
            |eval, (out, &g)| {
                let g = g as usize;
                eval.color(cam, gaussians.params(g).mean, gaussians.coeffs(g), out)
            },
        );
    let bins = bin(&splats, cam.width, cam.height);
    (splats, bins)
}

/// Counting sort of (tile, compact id) pairs by tile; filling in compact order keeps each list in depth order.
fn bin<R: Real>(splats: &Splats<R>, width: usize, height: usize) -> TileBins {
    let tiles_x = width.div_ceil(TILE_SIZE);
    let tiles_y = height.div_ceil(TILE_SIZE);
    let rects: Vec<Option<[usize; 4]>> = (0..splats.len())
        .into_par_iter()
        .map(|s| {
            let (x0, x1) = pixel_span(splats.mean_x[s], splats.extent_x[s], width)?;
            let (y0, y1) = pixel_span(splats.mean_y[s], splats.extent_y[s], height)?;
            Some([x0 / TILE_SIZE, x1 / TILE_SIZE, y0 / TILE_SIZE, y1 / TILE_SIZE])
        })
        .collect();
    let mut counts = vec![0usize; tiles_x * tiles_y];
    for [tx0, tx1, ty0, ty1] in rects.iter().flatten() {
        for ty in *ty0..=*ty1 {
            for c in &mut counts[ty * tiles_x + tx0..=ty * tiles_x + tx1] {
                *c += 1;
            }
        }
    }
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    let mut total = 0;
    offsets.push(0);
    for c in &counts {
        total += c;
        offsets.push(total);
    }
    let mut cursor = offsets.clone();
    let mut ids = vec![0u32; total];
    for (s, rect) in rects.iter().enumerate() {
        let Some([tx0, tx1, ty0, ty1]) = *rect else { continue };
        for ty in ty0..=ty1 {
            for tx in tx0..=tx1 {
                let t = ty * tiles_x + tx;
                ids[cursor[t]] = s as u32;
                cursor[t] += 1;
            }
        }
    }
    TileBins {
        tiles_x,
        tiles_y,
        offsets,
        ids,
    }
}
