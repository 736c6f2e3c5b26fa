//! The CPU rasterizer: rayon over 16×16 tiles for the blend, over Gaussians for projection and its backward.
//! Deterministic: every reduction runs in a fixed order whatever the thread schedule.

pub(crate) mod backward;
pub(crate) mod blend;
pub(crate) mod forward;

use self::backward::{BackwardTile, PARTIAL_GEOMETRY, TileUpstream};
use self::blend::{Tile, TileRows};
use self::forward::{ForwardTile, TileImage};
use crate::constants::TILE_SIZE;
use crate::error::{Result, SplatError};
use crate::options::{RenderOptions, check_camera};
use crate::projection::{ColorEval, ColorGradRow, ParamsGrad, PinholeCamera, SplatGrad, project_vjp_batch};
use crate::real::Real;
use crate::tiling::{GaussianSlices, Prepared, SPLAT_CHUNK, Splats, TileBins, prepare};
use lrf_formats::Camera;
use lrf_simd::{SimdTask, dispatch, prefetch_slice};
use rayon::prelude::*;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// How many splats ahead of the one being blended the blend loops prefetch: tile lists visit splats in depth
/// order, i.e. scattered over memory, and each visit would otherwise wait for its cache line.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// Whether the alpha cutoff is the hard threshold or the test-only smooth one (see `blend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cutoff {
    Hard,
    #[cfg_attr(not(test), allow(dead_code))]
    Smooth,
}

/// A rendered frame and what its backward needs.
#[derive(Clone, Debug)]
pub struct Frame<R> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// `[channels, height, width]`, background included.
    pub image: Vec<R>,
    /// `[height, width]` accumulated opacity 1 − T_N.
    pub alpha: Vec<R>,
    /// `[height, width]` expected depth Σ w·z / alpha (0 where alpha is 0). Not differentiated.
    pub depth: Vec<R>,
    /// Per Gaussian: screen radius in pixels (0 when culled).
    pub radii: Vec<i32>,
    /// Per Gaussian: composited into at least one pixel.
    pub visible: Vec<bool>,
    /// (Gaussian, pixel) pairs of the forward blend.
    pub pairs: PairCount,
    pub times: PassTimes,
    background: Vec<R>,
    splats: Splats<R>,
    bins: TileBins,
    cutoff: Cutoff,
}

/// Gradients for every Gaussian parameter, in the layout of [`GaussianSlices`], and densification statistics.
#[derive(Clone, Debug)]
pub struct GaussianGrads<R> {
    pub means: Vec<R>,
    pub log_scales: Vec<R>,
    pub quats: Vec<R>,
    pub opacity_logits: Vec<R>,
    pub colors: ColorGrads<R>,
    /// Per Gaussian: ‖∂L/∂mean2d‖ in pixel units.
    pub mean2d_grad_norm: Vec<R>,
    /// Per Gaussian: ‖∂L/∂mean2d‖ in NDC units (pixel gradient scaled by half the image size per axis).
    pub mean2d_grad_norm_ndc: Vec<R>,
    /// (Gaussian, pixel) pairs of the backward blend.
    pub pairs: PairCount,
    pub times: PassTimes,
}

impl<R: Real> GaussianGrads<R> {
    /// The four geometry gradients, in the order of [`crate::Gaussians::tensors`]: means, log-scales,
    /// quaternions, opacity logits.
    pub fn geometry(&self) -> [&[R]; 4] {
        [&self.means, &self.log_scales, &self.quats, &self.opacity_logits]
    }

    /// The five parameter gradients in the order of [`crate::Gaussians::tensors`], the colours' expanded
    /// ([`ColorGrads::dense`]).
    pub fn parameters(&self) -> [Cow<'_, [R]>; 5] {
        let [means, log_scales, quats, opacity_logits] = self.geometry().map(Cow::Borrowed);
        [
            means,
            log_scales,
            quats,
            opacity_logits,
            Cow::Owned(self.colors.dense()),
        ]
    }
}

/// ∂L/∂(colour coefficients), kept factored. From one view, a Gaussian's coefficient gradient is the outer
/// product of the SH basis at its view direction and the gradient of its colour, so K + C values stand for
/// K·C: 48 for 528 at SH degree 3 and C = 32. A fit then neither writes nor reads back the dense array, tens of
/// MB per step, and its optimiser forms each row as it steps it.
#[derive(Clone, Debug)]
pub struct ColorGrads<R> {
    /// `[N, K]`: the SH basis, 1 then 0s for plain colours; 0 above the degree rendered and for Gaussians
    /// that received no gradient.
    pub basis: Vec<R>,
    /// `[N, C]`: ∂L/∂colour, 0 where the 3DGS clamp held the colour.
    pub color: Vec<R>,
    /// K, the coefficients per channel of the colour tensor.
    pub coefficients: usize,
    pub channels: usize,
}

impl<R: Real> ColorGrads<R> {
    fn zeros(count: usize, coefficients: usize, channels: usize) -> Self {
        ColorGrads {
            basis: zeros(count * coefficients),
            color: zeros(count * channels),
            coefficients,
            channels,
        }
    }

    pub fn len(&self) -> usize {
        self.basis.len() / self.coefficients.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.basis.is_empty()
    }

    /// Gaussian `i`'s coefficients `first .. first + count`, `count` rows of C values: basis × colour
    /// gradient, each the same single rounding the dense array would hold.
    pub(crate) fn row(&self, i: usize, first: usize, count: usize, out: &mut [R]) {
        let (k, c) = (self.coefficients, self.channels);
        let color = &self.color[i * c..(i + 1) * c];
        for (&y, row) in self.basis[i * k + first..i * k + first + count]
            .iter()
            .zip(out.chunks_exact_mut(c))
        {
            for (o, &g) in row.iter_mut().zip(color) {
                *o = y * g;
            }
        }
    }

    /// The dense `[N, K·C]` gradient, row-major like the colour tensor.
    pub fn dense(&self) -> Vec<R> {
        let (k, c) = (self.coefficients, self.channels);
        let mut out = vec![R::ZERO; self.len() * k * c];
        for (i, row) in out.chunks_exact_mut(k * c).enumerate() {
            self.row(i, 0, k, row);
        }
        out
    }
}

/// Wall time of a pass's two halves, for the fit benchmark's breakdown: the per-Gaussian work (forward:
/// projection, colour from SH, culling, depth sort and tile lists; backward: each Gaussian's VJP through colour
/// and projection) and the per-pixel work (the tiles' blend, with the backward's reduction by splat).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassTimes {
    pub per_gaussian: Duration,
    pub per_pixel: Duration,
}

/// (Gaussian, pixel) pairs of a blend, counted two ways, for throughput figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairCount {
    /// Each Gaussian of a tile's list with every image pixel of the tile, up to the tile's early exit: the pairs a
    /// tile rasterizer (3DGS, gsplat) goes through for this scene. It does not depend on how a kernel culls
    /// inside a tile, so it compares kernels.
    pub in_tile_lists: u64,
    /// The pairs this kernel evaluated: of each listed splat, 16 lanes of each tile row within its y-extent,
    /// rounded out to whole groups of rows blended together. Rows that fail the σ pre-test are counted too.
    pub evaluated: u64,
}

impl std::ops::Add for PairCount {
    type Output = PairCount;

    fn add(self, other: PairCount) -> PairCount {
        PairCount {
            in_tile_lists: self.in_tile_lists + other.in_tile_lists,
            evaluated: self.evaluated + other.evaluated,
        }
    }
}

impl std::iter::Sum for PairCount {
    fn sum<I: Iterator<Item = PairCount>>(iter: I) -> PairCount {
        iter.fold(PairCount::default(), |a, b| a + b)
    }
}

/// Splats per parallel work item when reducing partial gradients: enough to amortise rayon's per-item cost.
const REDUCE_CHUNK: usize = 256;

/// A zeroed vector written by every thread: the backward's buffers reach tens of megabytes (partial gradients,
/// the colour gradient at C = 32), and one thread's memset of them took a sixth of a latent-size backward.
fn zeros<R: Real>(len: usize) -> Vec<R> {
    let mut v = Vec::with_capacity(len);
    (0..len).into_par_iter().map(|_| R::ZERO).collect_into_vec(&mut v);
    v
}

/// Renders Gaussians with the CPU kernel.
pub fn rasterize<R: Real>(g: &GaussianSlices<R>, camera: &Camera, options: &RenderOptions) -> Result<Frame<R>> {
    rasterize_with(g, camera, options, Cutoff::Hard)
}

pub(crate) fn rasterize_with<R: Real>(
    g: &GaussianSlices<R>,
    camera: &Camera,
    options: &RenderOptions,
    cutoff: Cutoff,
) -> Result<Frame<R>> {
    g.check()?;
    check_camera(camera)?;
    let channels = g.layout.channels;
    let background: Vec<R> = options.background_for(channels)?.into_iter().map(R::of).collect();
    let cam = PinholeCamera::<R>::new(camera);
    let (width, height) = (cam.width, cam.height);
    let started = Instant::now();
    let Prepared { splats, bins, radii } = prepare(g, &cam, options.mode, options.color_offset_clamp);
    let prepared = Instant::now();
    let tiles: Vec<TileImage<R>> = (0..bins.num_tiles())
        .into_par_iter()
        .map(|t| {
            let tile = Tile::new(t, bins.tiles_x, width, height);
            let (ids, splats) = (bins.tile(t), &splats);
            match cutoff {
                Cutoff::Hard => dispatch(ForwardTile::<R, false> {
                    tile,
                    ids,
                    splats,
                    channels,
                }),
                Cutoff::Smooth => dispatch(ForwardTile::<R, true> {
                    tile,
                    ids,
                    splats,
                    channels,
                }),
            }
        })
        .collect();
    let plane = width * height;
    let mut image = vec![R::ZERO; channels * plane];
    let mut alpha = vec![R::ZERO; plane];
    let mut depth = vec![R::ZERO; plane];
    // Each band of tile rows owns its rows of every output plane, so the bands are written in parallel.
    let band = TILE_SIZE * width;
    let mut bands: Vec<Vec<&mut [R]>> = (0..bins.tiles_y).map(|_| Vec::with_capacity(channels + 2)).collect();
    for rows in image
        .chunks_mut(plane)
        .chain([alpha.as_mut_slice(), depth.as_mut_slice()])
    {
        for (planes, rows) in bands.iter_mut().zip(rows.chunks_mut(band)) {
            planes.push(rows);
        }
    }
    let tile_rows = bands.into_par_iter().zip(tiles.par_chunks(bins.tiles_x));
    tile_rows.enumerate().for_each(|(ty, (mut planes, row))| {
        let (color_planes, alpha_depth) = planes.split_at_mut(channels);
        let [alpha, depth] = alpha_depth else {
            unreachable!("a band holds channels + 2 planes")
        };
        for (tx, out) in row.iter().enumerate() {
            // Within the band, the tile starts at row 0.
            let tile = Tile {
                y0: 0,
                ..Tile::new(ty * bins.tiles_x + tx, bins.tiles_x, width, height)
            };
            let t_final = &out.transmittance;
            for ((color_plane, bg), color) in color_planes.iter_mut().zip(&background).zip(&out.color) {
                let c: TileRows<R> =
                    std::array::from_fn(|r| std::array::from_fn(|l| color[r][l] + t_final[r][l] * *bg));
                tile.scatter(&c, color_plane, width);
            }
            let a: TileRows<R> = t_final.map(|row| row.map(|t| R::ONE - t));
            let z: TileRows<R> = std::array::from_fn(|r| {
                std::array::from_fn(|l| {
                    if a[r][l] > R::ZERO {
                        out.depth[r][l] / a[r][l]
                    } else {
                        R::ZERO
                    }
                })
            });
            tile.scatter(&a, alpha, width);
            tile.scatter(&z, depth, width);
        }
    });
    let mut visible = vec![false; g.len()];
    for out in &tiles {
        for &id in &out.used {
            visible[id as usize] = true;
        }
    }
    let pairs = tiles.iter().map(|out| out.pairs).sum();
    let times = PassTimes {
        per_gaussian: prepared - started,
        per_pixel: prepared.elapsed(),
    };
    Ok(Frame {
        width,
        height,
        channels,
        image,
        alpha,
        depth,
        radii,
        visible,
        pairs,
        times,
        background,
        splats,
        bins,
        cutoff,
    })
}

/// Gradients of the loss with respect to the Gaussians given ∂L/∂image (`[C, H, W]`) and optionally ∂L/∂alpha
/// (`[H, W]`). `g`, `camera` and `options` must be those `frame` was rendered with.
pub fn rasterize_backward<R: Real>(
    g: &GaussianSlices<R>,
    camera: &Camera,
    options: &RenderOptions,
    frame: &Frame<R>,
    v_image: &[R],
    v_alpha: Option<&[R]>,
) -> Result<GaussianGrads<R>> {
    g.check()?;
    let (width, height, channels) = (frame.width, frame.height, frame.channels);
    let plane = width * height;
    if v_image.len() != channels * plane || v_alpha.is_some_and(|v| v.len() != plane) {
        return Err(SplatError::Shape("upstream gradients do not match the frame".into()));
    }
    if g.len() != frame.visible.len()
        || g.layout.channels != channels
        || camera.width as usize != width
        || camera.height as usize != height
    {
        return Err(SplatError::Shape(
            "Gaussians or camera differ from the rendered frame's".into(),
        ));
    }
    let started = Instant::now();
    let (partials, pairs) = tile_partials(frame, v_image, v_alpha);
    let reduced = reduce_by_splat(frame, &partials);
    drop(partials);
    let reduced_at = Instant::now();
    let mut grads = gaussian_vjps(g, camera, options, frame, &reduced, pairs);
    grads.times = PassTimes {
        per_gaussian: reduced_at.elapsed(),
        per_pixel: reduced_at - started,
    };
    Ok(grads)
}

/// Backward pass 1, per tile (the CUDA kernel's per-tile backward): each intersection's partial gradient, in
/// the tile's own range of one flat buffer, and the pairs blended.
fn tile_partials<R: Real>(frame: &Frame<R>, v_image: &[R], v_alpha: Option<&[R]>) -> (Vec<R>, PairCount) {
    let (width, height, channels) = (frame.width, frame.height, frame.channels);
    let plane = width * height;
    let bins = &frame.bins;
    let splats = &frame.splats;
    let stride = PARTIAL_GEOMETRY + channels;
    // One partial gradient per intersection; tiles own disjoint ranges.
    let mut partials = zeros(bins.ids.len() * stride);
    let mut chunks = Vec::with_capacity(bins.num_tiles());
    let mut rest = partials.as_mut_slice();
    for t in 0..bins.num_tiles() {
        let (head, tail) = rest.split_at_mut(bins.tile(t).len() * stride);
        chunks.push(head);
        rest = tail;
    }
    let pairs = chunks
        .into_par_iter()
        .enumerate()
        .map(|(t, partials)| {
            let tile = Tile::new(t, bins.tiles_x, width, height);
            let transmittance = tile.gather(&frame.alpha, width).map(|row| row.map(|a| R::ONE - a));
            let mut v_final = v_alpha.map_or([[R::ZERO; TILE_SIZE]; TILE_SIZE], |v| tile.gather(v, width));
            let mut v_color = Vec::with_capacity(channels);
            let mut g_dot_behind = [[R::ZERO; TILE_SIZE]; TILE_SIZE];
            for (k, &bg) in frame.background.iter().enumerate() {
                let g_k = tile.gather(&v_image[k * plane..(k + 1) * plane], width);
                let c_k = tile.gather(&frame.image[k * plane..(k + 1) * plane], width);
                for r in 0..TILE_SIZE {
                    for l in 0..TILE_SIZE {
                        v_final[r][l] -= g_k[r][l] * bg;
                        g_dot_behind[r][l] += g_k[r][l] * (c_k[r][l] - transmittance[r][l] * bg);
                    }
                }
                v_color.push(g_k);
            }
            for (v, t) in v_final.as_flattened_mut().iter_mut().zip(transmittance.as_flattened()) {
                *v *= *t;
            }
            let upstream = TileUpstream {
                v_color,
                v_final,
                g_dot_behind,
            };
            let ids = bins.tile(t);
            match frame.cutoff {
                Cutoff::Hard => dispatch(BackwardTile::<R, false> {
                    tile,
                    ids,
                    splats,
                    channels,
                    upstream,
                    partials,
                }),
                Cutoff::Smooth => dispatch(BackwardTile::<R, true> {
                    tile,
                    ids,
                    splats,
                    channels,
                    upstream,
                    partials,
                }),
            }
        })
        .sum();
    (partials, pairs)
}

/// Backward pass 2: per splat, its intersections' partials summed (in tile order, so the result does not
/// depend on the thread schedule).
fn reduce_by_splat<R: Real>(frame: &Frame<R>, partials: &[R]) -> Vec<R> {
    let bins = &frame.bins;
    let stride = PARTIAL_GEOMETRY + frame.channels;
    // Per splat, in depth order: its intersections' partials summed in tile order. Consecutive splats' partials
    // lie at increasing positions within each tile's range, so this pass streams through `partials`.
    let mut reduced = zeros(frame.splats.len() * stride);
    reduced
        .par_chunks_mut(stride)
        .with_min_len(REDUCE_CHUNK)
        .enumerate()
        .for_each(|(s, sum)| {
            for &isect in bins.isects_of(s) {
                let isect = isect as usize;
                for (acc, &v) in sum.iter_mut().zip(&partials[isect * stride..(isect + 1) * stride]) {
                    *acc += v;
                }
            }
        });
    reduced
}

/// Backward pass 3, per Gaussian: each splat's reduced gradient through its colour and projection.
fn gaussian_vjps<R: Real>(
    g: &GaussianSlices<R>,
    camera: &Camera,
    options: &RenderOptions,
    frame: &Frame<R>,
    reduced: &[R],
    pairs: PairCount,
) -> GaussianGrads<R> {
    let (width, height) = (frame.width, frame.height);
    let splats = &frame.splats;
    let mut rank_of = vec![u32::MAX; g.len()];
    for (s, &gid) in splats.gaussian.iter().enumerate() {
        rank_of[gid as usize] = s as u32;
    }
    let n = g.len();
    let channels = g.layout.channels;
    let coefficients = g.layout.coefficients();
    let mut grads = GaussianGrads {
        means: vec![R::ZERO; 3 * n],
        log_scales: vec![R::ZERO; 3 * n],
        quats: vec![R::ZERO; 4 * n],
        opacity_logits: vec![R::ZERO; n],
        colors: ColorGrads::zeros(n, coefficients, channels),
        mean2d_grad_norm: vec![R::ZERO; n],
        mean2d_grad_norm_ndc: vec![R::ZERO; n],
        pairs,
        times: PassTimes::default(),
    };
    let cam = PinholeCamera::<R>::new(camera);
    (
        grads.means.par_chunks_mut(3 * SPLAT_CHUNK),
        grads.log_scales.par_chunks_mut(3 * SPLAT_CHUNK),
        grads.quats.par_chunks_mut(4 * SPLAT_CHUNK),
        grads.opacity_logits.par_chunks_mut(SPLAT_CHUNK),
        grads.colors.basis.par_chunks_mut(coefficients * SPLAT_CHUNK),
        grads.colors.color.par_chunks_mut(channels * SPLAT_CHUNK),
        grads.mean2d_grad_norm.par_chunks_mut(SPLAT_CHUNK),
        grads.mean2d_grad_norm_ndc.par_chunks_mut(SPLAT_CHUNK),
        rank_of.par_chunks(SPLAT_CHUNK),
    )
        .into_par_iter()
        .enumerate()
        .for_each(
            |(chunk, (means, log_scales, quats, opacity_logits, basis, colors, norm, norm_ndc, rank_of))| {
                dispatch(GaussianVjp {
                    cam: &cam,
                    gaussians: g,
                    options,
                    first: chunk * SPLAT_CHUNK,
                    rank_of,
                    reduced,
                    forward_colors: &splats.colors,
                    image_size: [width, height],
                    out: [means, log_scales, quats, opacity_logits, basis, colors, norm, norm_ndc],
                })
            },
        );
    grads
}

/// The per-Gaussian end of the backward for one chunk of consecutive Gaussians: their splats' reduced gradients
/// through the colour and the projection, run through [`lrf_simd::dispatch`] so the projection's VJP is
/// vectorised across Gaussians.
struct GaussianVjp<'a, R> {
    cam: &'a PinholeCamera<R>,
    gaussians: &'a GaussianSlices<'a, R>,
    options: &'a RenderOptions,
    first: usize,
    /// Each Gaussian's depth rank (`u32::MAX`: it reaches no tile).
    rank_of: &'a [u32],
    /// Per depth rank: the splat's blend-input gradient, then its colour gradient.
    reduced: &'a [R],
    /// Per Gaussian: the colour the forward composited (`[N, C]`).
    forward_colors: &'a [R],
    image_size: [usize; 2],
    /// This chunk's share of the [`GaussianGrads`] arrays, in field order (the colours' two).
    out: [&'a mut [R]; 8],
}

impl<R: Real> SimdTask for GaussianVjp<'_, R> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let GaussianVjp {
            cam,
            gaussians,
            options,
            first,
            rank_of,
            reduced,
            forward_colors,
            image_size,
            out: [means, log_scales, quats, opacity_logits, basis, colors, norm, norm_ndc],
        } = self;
        let channels = gaussians.layout.channels;
        let stride = PARTIAL_GEOMETRY + channels;
        let coefficients = gaussians.layout.coefficients();
        let mut eval = ColorEval::new(gaussians.layout, options.color_offset_clamp);
        // The Gaussians with a splat, their splat gradients and view-direction gradients.
        let mut ids = Vec::with_capacity(rank_of.len());
        let mut v = Vec::with_capacity(rank_of.len());
        let mut v_dir = Vec::with_capacity(rank_of.len());
        for (k, &rank) in rank_of.iter().enumerate() {
            // `reduced` is in depth order, this pass in Gaussian order: each row is a random access, so the row of
            // a Gaussian a few ahead is requested now.
            if let Some(&ahead) = rank_of.get(k + PREFETCH_AHEAD)
                && ahead != u32::MAX
            {
                let ahead = ahead as usize;
                prefetch_slice(&reduced[ahead * stride..(ahead + 1) * stride]);
            }
            if rank == u32::MAX {
                continue;
            }
            let rank = rank as usize;
            // Read in place: a copy of this short, run-time-length row was a memcpy call per Gaussian.
            let sum = &reduced[rank * stride..(rank + 1) * stride];
            // Splats hidden behind others or below the alpha cutoff everywhere get no gradient: skip their VJPs,
            // whose results would be zero.
            if sum.iter().all(|&v| v == R::ZERO) {
                continue;
            }
            let i = first + k;
            ids.push(i);
            v.push(SplatGrad {
                mean2d: [sum[0], sum[1]],
                conic: [sum[2], sum[3], sum[4]],
                opacity: sum[5],
            });
            let mean = std::array::from_fn(|j| gaussians.means[3 * i + j]);
            let color = &forward_colors[i * channels..(i + 1) * channels];
            let v_color = &sum[PARTIAL_GEOMETRY..];
            v_dir.push(eval.color_vjp(
                cam,
                mean,
                gaussians.coeffs(i),
                color,
                v_color,
                ColorGradRow {
                    basis: &mut basis[k * coefficients..(k + 1) * coefficients],
                    color: &mut colors[k * channels..(k + 1) * channels],
                },
            ));
        }
        let mut grads = vec![ParamsGrad::default(); ids.len()];
        project_vjp_batch(cam, gaussians, options.mode, &ids, &v, &mut grads);
        let half_size = image_size.map(|size| R::of(size as f64 * 0.5));
        for (((&i, pg), v), v_dir) in ids.iter().zip(&grads).zip(&v).zip(&v_dir) {
            let k = i - first;
            for j in 0..3 {
                means[3 * k + j] = pg.mean[j] + v_dir[j];
            }
            log_scales[3 * k..3 * k + 3].copy_from_slice(&pg.log_scale);
            quats[4 * k..4 * k + 4].copy_from_slice(&pg.quat);
            opacity_logits[k] = pg.opacity_logit;
            let [gx, gy] = v.mean2d;
            norm[k] = (gx * gx + gy * gy).sqrt();
            let (nx, ny) = (gx * half_size[0], gy * half_size[1]);
            norm_ndc[k] = (nx * nx + ny * ny).sqrt();
        }
    }
}
