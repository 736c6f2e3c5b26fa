//! Rasterizer throughput: (Gaussian, pixel) pairs per second forward and backward, the share of the machine's
//! FP32 peak under the cost model (forward 22 + 2C, backward 48 + 8C FLOP per pair), and the speed-up of
//! the CPU kernel over the tch reference measured in the same run.
//!
//! Pairs are those of the tile lists ([`lrf_splat::PairCount::in_tile_lists`]: every listed Gaussian with every
//! pixel of its tile, as a tile rasterizer processes them), which measure the scene and not the kernel (so the
//! share of peak counts the cost model for pairs the kernel culls, and is not bounded by 100%); the
//! summary also gives the rate in pairs this kernel evaluated after its row culling, and, as the yardstick the
//! issue's targets were calibrated on, the forward rate of a naive vectorised tile loop measured in the same run.
//!
//! `cargo bench -p lrf-splat` runs every configuration; `LRF_BENCH_QUICK=1` only the latent-size ones.
//! `LRF_PEAK_GFLOPS` overrides the peak (default 475, the 2-core development machine with AVX-512);
//! `LRF_BENCH_SUMMARY=0` skips the summary table and the reference comparison (for profiling one benchmark).
//! Freed memory is retained for reuse as in the lrf-flow binary (`lrf_vae::retain_freed_memory`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use glam::{DMat3, DVec3};
use lrf_simd::{SimdTask, dispatch};
use lrf_splat::constants::{ALPHA_THRESHOLD, MAX_ALPHA, TILE_PIXELS, TILE_SIZE, TRANSMITTANCE_THRESHOLD};
use lrf_splat::real::Real;
use lrf_splat::{
    Camera, ColorLayout, GaussianSlices, Gaussians, PairCount, RenderOptions, rasterize, rasterize_backward, reference,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

struct Scene {
    arrays: [Vec<f32>; 5],
    layout: ColorLayout,
    camera: Camera,
    degree: usize,
}

impl Scene {
    /// `count` Gaussians filling the view frustum between depths 2 and 6, SH of `degree` per channel.
    fn new(count: usize, channels: usize, degree: usize, width: u32, height: u32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(count as u64 ^ (channels as u64) << 20);
        let f = width as f64;
        let camera = Camera {
            rotation: DMat3::IDENTITY,
            translation: DVec3::ZERO,
            fx: f,
            fy: f,
            cx: width as f64 / 2.0,
            cy: height as f64 / 2.0,
            width,
            height,
        };
        let k = (degree + 1) * (degree + 1);
        let mut means = Vec::with_capacity(3 * count);
        for _ in 0..count {
            let z: f32 = rng.random_range(2.0..6.0);
            let half_w = 0.5 * width as f32 / f as f32 * z;
            let half_h = 0.5 * height as f32 / f as f32 * z;
            means.extend([rng.random_range(-half_w..half_w), rng.random_range(-half_h..half_h), z]);
        }
        // World scale tied to the pixel footprint: Gaussians of about 0.5–3 px standard deviation.
        let pixel = 4.0 / f as f32;
        let mut uniform =
            |lo: f32, hi: f32, len: usize| (0..len).map(|_| rng.random_range(lo..hi)).collect::<Vec<f32>>();
        let log_scales = uniform((0.5 * pixel).ln(), (3.0 * pixel).ln(), 3 * count);
        let quats = uniform(-1.0, 1.0, 4 * count);
        let opacity = uniform(-3.0, 1.0, count);
        let colors = uniform(-0.5, 0.5, k * channels * count);
        let layout = ColorLayout::from_shape(&[count, k, channels], None).unwrap();
        Scene {
            arrays: [means, log_scales, quats, opacity, colors],
            layout,
            camera,
            degree,
        }
    }

    fn slices(&self) -> GaussianSlices<'_, f32> {
        let [means, log_scales, quats, opacity_logits, colors] = &self.arrays;
        GaussianSlices {
            means,
            log_scales,
            quats,
            opacity_logits,
            colors,
            layout: self.layout,
        }
    }

    fn gaussians(&self, requires_grad: bool) -> Gaussians {
        let k = (self.degree + 1) * (self.degree + 1);
        let arrays = std::array::from_fn(|i| self.arrays[i].as_slice());
        Gaussians::from_arrays(arrays, k, self.layout.channels)
            .expect("consistent arrays")
            .map(|t| t.set_requires_grad(requires_grad))
    }

    fn upstream(&self) -> Vec<f32> {
        let n = self.layout.channels * (self.camera.width * self.camera.height) as usize;
        (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
    }

    /// Forward + backward with the CPU kernel.
    fn cpu_step(&self, options: &RenderOptions, upstream: &[f32]) -> (PairCount, PairCount) {
        let frame = rasterize(&self.slices(), &self.camera, options).unwrap();
        let grads = rasterize_backward(&self.slices(), &self.camera, options, &frame, upstream, None).unwrap();
        (frame.pairs, grads.pairs)
    }

    /// Forward + autograd backward with the reference, in bands of rows so memory stays bounded.
    fn reference_step(&self, options: &RenderOptions, upstream: &Tensor, band: usize) {
        let g = self.gaussians(true);
        let h = self.camera.height as usize;
        for start in (0..h).step_by(band) {
            let rows = start..(start + band).min(h);
            let out = reference::render_rows(&g, &self.camera, options, rows.clone()).unwrap();
            let up = upstream.narrow(1, rows.start as i64, rows.len() as i64);
            (out.image * up).sum(Kind::Float).backward();
        }
    }
}

fn summary_wanted() -> bool {
    std::env::var("LRF_BENCH_SUMMARY").map_or(true, |v| v != "0")
}

fn peak_flops() -> f64 {
    std::env::var("LRF_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(475.0)
        * 1e9
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

/// (channels, count, width, height) of every measured configuration.
fn configurations() -> Vec<(usize, usize, u32, u32)> {
    let quick = std::env::var("LRF_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut configs = Vec::new();
    for channels in [4, 16, 32] {
        configs.push((channels, 50_000, 64, 48));
        configs.push((channels, 100_000, 128, 96));
        if !quick {
            configs.push((channels, 10_000, 64, 48));
            configs.push((channels, 300_000, 512, 384));
        }
    }
    configs
}

fn throughput(c: &mut Criterion) {
    // As the lrf-flow binary does: with glibc's defaults every frame page-faults its multi-megabyte buffers in
    // again (about 1000 faults per forward at 50k Gaussians, 64x48, a third of its time).
    lrf_vae::retain_freed_memory();
    let options = RenderOptions::default();
    let mut summary = Vec::new();
    for (channels, count, width, height) in configurations() {
        let scene = Scene::new(count, channels, 1, width, height);
        let upstream = scene.upstream();
        let frame = rasterize(&scene.slices(), &scene.camera, &options).unwrap();
        let grads = rasterize_backward(&scene.slices(), &scene.camera, &options, &frame, &upstream, None).unwrap();
        let id = format!("C{channels}/N{count}/{width}x{height}");
        let mut group = c.benchmark_group("rasterize");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(frame.pairs.in_tile_lists));
        group.bench_function(BenchmarkId::new("forward", &id), |b| {
            b.iter(|| black_box(rasterize(&scene.slices(), &scene.camera, &options).unwrap()))
        });
        group.throughput(Throughput::Elements(grads.pairs.in_tile_lists));
        group.bench_function(BenchmarkId::new("backward", &id), |b| {
            b.iter(|| {
                black_box(
                    rasterize_backward(&scene.slices(), &scene.camera, &options, &frame, &upstream, None).unwrap(),
                )
            })
        });
        group.finish();
        if !summary_wanted() {
            continue;
        }
        let t_fwd = best_of(5, || {
            drop(black_box(rasterize(&scene.slices(), &scene.camera, &options).unwrap()))
        });
        let t_bwd = best_of(5, || {
            drop(black_box(
                rasterize_backward(&scene.slices(), &scene.camera, &options, &frame, &upstream, None).unwrap(),
            ))
        });
        summary.push((id, channels, frame.pairs, t_fwd, grads.pairs, t_bwd));
    }
    if !summary_wanted() {
        return;
    }
    println!(
        "\nbest of 5; G/s in tile-list pairs (evaluated pairs in brackets), share of {:.0} GFLOP/s in tile-list pairs:",
        peak_flops() / 1e9
    );
    println!(
        "{:<22} {:>10} {:>10} {:>7} {:>13} {:>6} {:>7} {:>13} {:>6}",
        "config", "list pairs", "evaluated", "fwd ms", "fwd G/s", "fwd %", "bwd ms", "bwd G/s", "bwd %"
    );
    let naive = naive_pairs_per_second();
    for (id, c, pf, tf, pb, tb) in summary {
        let rate = |p: u64, t: Duration| p as f64 / t.as_secs_f64() / 1e9;
        let share = |p: u64, t: Duration, flop: f64| 100.0 * rate(p, t) * 1e9 * flop / peak_flops();
        let rates =
            |p: PairCount, t: Duration| format!("{:.2} ({:.2})", rate(p.in_tile_lists, t), rate(p.evaluated, t));
        println!(
            "{id:<22} {:>10} {:>10} {:>7.2} {:>13} {:>6.1} {:>7.2} {:>13} {:>6.1}",
            pf.in_tile_lists,
            pf.evaluated,
            tf.as_secs_f64() * 1e3,
            rates(pf, tf),
            share(pf.in_tile_lists, tf, 22.0 + 2.0 * c as f64),
            tb.as_secs_f64() * 1e3,
            rates(pb, tb),
            share(pb.in_tile_lists, tb, 48.0 + 8.0 * c as f64)
        );
    }
    println!(
        "yardstick: a naive vectorised tile loop (every listed Gaussian against all 256 pixels of its tile), C = 4, \
         forward {:.2} G tile-list pairs/s",
        naive / 1e9
    );
}

/// One Gaussian of the naive loop's tile lists, in tile pixel coordinates.
struct NaiveSplat {
    mean: [f32; 2],
    conic: [f32; 3],
    opacity: f32,
}

/// The yardstick, "a naive vectorised C loop": every Gaussian of a tile's list against all 256 pixels
/// of the tile, the pixel loop vectorised, no culling inside the tile, early exit once the tile is saturated.
/// Its pairs are tile-list pairs by construction.
struct NaiveTile<'a> {
    list: &'a [NaiveSplat],
    colors: &'a [f32],
    channels: usize,
}

impl SimdTask for NaiveTile<'_> {
    /// (pairs, Σ of the tile's colour, kept so the work is not optimised away)
    type Output = (u64, f32);

    #[inline(always)]
    fn run(self) -> (u64, f32) {
        const PIXELS: usize = TILE_PIXELS;
        const TRANSMITTANCE: f32 = TRANSMITTANCE_THRESHOLD as f32;
        let x: [f32; PIXELS] = std::array::from_fn(|p| (p % TILE_SIZE) as f32 + 0.5);
        let y: [f32; PIXELS] = std::array::from_fn(|p| (p / TILE_SIZE) as f32 + 0.5);
        let mut t = [1f32; PIXELS];
        let mut color = vec![[0f32; PIXELS]; self.channels];
        let mut pairs = 0;
        for (s, c) in self.list.iter().zip(self.colors.chunks_exact(self.channels)) {
            if t.iter().fold(true, |done, &t| done & (t <= TRANSMITTANCE)) {
                break;
            }
            pairs += PIXELS as u64;
            let [a, b, cc] = s.conic;
            let mut weight = [0f32; PIXELS];
            for p in 0..PIXELS {
                let (dx, dy) = (x[p] - s.mean[0], y[p] - s.mean[1]);
                let sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy;
                let alpha = (s.opacity * (-sigma).fast_exp()).min(MAX_ALPHA as f32);
                let valid = (alpha >= ALPHA_THRESHOLD as f32) & (sigma >= 0.0) & (t[p] > TRANSMITTANCE);
                weight[p] = if valid { alpha * t[p] } else { 0.0 };
                t[p] = if valid { t[p] * (1.0 - alpha) } else { t[p] };
            }
            for (acc, &c) in color.iter_mut().zip(c) {
                for p in 0..PIXELS {
                    acc[p] += weight[p] * c;
                }
            }
        }
        (pairs, color.as_flattened().iter().sum())
    }
}

/// Tile-list pairs per second of [`NaiveTile`] at C = 4, on 192 tiles of 1000 Gaussians each, of 0.5–3 px
/// standard deviation around the tile: the yardstick that calibrates the targets.
fn naive_pairs_per_second() -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let channels = 4;
    let tiles: Vec<(Vec<NaiveSplat>, Vec<f32>)> = (0..192)
        .map(|_| {
            let list = (0..1000)
                .map(|_| {
                    let (sx, sy): (f32, f32) = (rng.random_range(0.5..3.0), rng.random_range(0.5..3.0));
                    NaiveSplat {
                        mean: [rng.random_range(-4.0..20.0), rng.random_range(-4.0..20.0)],
                        conic: [
                            1.0 / (sx * sx),
                            rng.random_range(-0.1..0.1) / (sx * sy),
                            1.0 / (sy * sy),
                        ],
                        opacity: rng.random_range(0.05..0.7),
                    }
                })
                .collect();
            let colors = (0..1000 * channels).map(|_| rng.random_range(-0.5..0.5)).collect();
            (list, colors)
        })
        .collect();
    let run = || -> u64 {
        let tiles = tiles
            .par_iter()
            .map(|(list, colors)| black_box(dispatch(NaiveTile { list, colors, channels })));
        tiles.map(|(pairs, _)| pairs).sum()
    };
    let pairs = run();
    pairs as f64
        / best_of(5, || {
            black_box(run());
        })
        .as_secs_f64()
}

/// Forward + backward speed-up over the reference at 64×48, 50k Gaussians, C = 32, SH degree 1.
fn speedup_over_reference(_: &mut Criterion) {
    if !summary_wanted() {
        return;
    }
    let options = RenderOptions::default();
    let scene = Scene::new(50_000, 32, 1, 64, 48);
    let upstream = scene.upstream();
    let upstream_tensor = Tensor::from_slice(&upstream).view([32, 48, 64]);
    let cpu = best_of(5, || {
        black_box(scene.cpu_step(&options, &upstream));
    });
    let reference = best_of(2, || scene.reference_step(&options, &upstream_tensor, 4));
    println!(
        "\nforward+backward, 64×48, 50k Gaussians, C=32, SH degree 1: cpu {:.2} ms, reference {:.0} ms, speed-up {:.0}×",
        cpu.as_secs_f64() * 1e3,
        reference.as_secs_f64() * 1e3,
        reference.as_secs_f64() / cpu.as_secs_f64()
    );
}

criterion_group!(benches, throughput, speedup_over_reference);
criterion_main!(benches);
