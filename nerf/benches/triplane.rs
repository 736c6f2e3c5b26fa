//! Forward + backward of one 64×48 latent view with 96 samples per ray (48 stratified + 48 importance),
//! IG-AE's field sizes (F 32, R 64, hidden 64) and 32 channels, on this machine's cores. Target: at most
//! 150 ms on 2 cores. On 2 shared cores of an AVX2 AMD EPYC, alternated with the build whose softplus went
//! through a logarithm and a division and whose two sets of samples each projected the texels and ran
//! their own backward pass, 10 rounds each: median of the medians 189.6 ms against 227.4 ms (0.83× per
//! round; the machine's neighbours move single rounds by ±15 %). An AVX-512 machine measured 138.7 ms
//! for that older build. What remains, by profile: the taps' reads of scattered texel rows (half of the
//! forward kernel), the transpose's scatter into the texels, the output layer's products (a fifth of the
//! step), and libgomp's workers spinning after libtorch's operators while the kernels run (a tenth of the
//! samples; with `OMP_WAIT_POLICY=PASSIVE`, which libgomp reads only when it loads, the step's median
//! takes 0.95×).
//!
//!   cargo bench -p lrf-nerf

use std::time::Instant;

use glam::DVec3;
use lrf_formats::Camera;
use lrf_nerf::render::{Rays, Sampling, render};
use lrf_nerf::{PlaneTape, SceneBounds, TriPlaneConfig, TriPlaneField};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor, nn};

fn main() {
    // As the lrf-flow binary does: without it every step's large tensors are faulted in afresh (a third of
    // the step's time).
    lrf_vae::retain_freed_memory();
    let threads = std::env::var("LRF_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let vars = nn::VarStore::new(Device::Cpu);
    let field = TriPlaneField::new(&vars.root(), TriPlaneConfig::default(), 0.1).unwrap();
    let camera = Camera::look_at(DVec3::new(0.0, 0.3, 2.5), DVec3::ZERO, DVec3::Y, 60.0, 60.0, 64, 48);
    let points: Vec<[f64; 3]> = (0..512)
        .map(|i| {
            [
                (i % 8) as f64 / 4.0 - 1.0,
                (i / 8 % 8) as f64 / 4.0 - 1.0,
                (i / 64) as f64 / 4.0 - 1.0,
            ]
        })
        .collect();
    let bounds = SceneBounds::from_scene(&[camera.clone()], &points);
    let rays = Rays::for_camera(&camera, &bounds, Kind::Float);
    let target = Tensor::rand([rays.len(), field.config.channels], (Kind::Float, Device::Cpu));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut step = || {
        let mut tape = PlaneTape::new();
        let out = render(&field, &rays, Sampling::default(), Some(&mut rng), Some(&mut tape)).unwrap();
        let loss = (out - &target).square().mean(None);
        loss.backward();
        tape.backward();
        for var in vars.trainable_variables() {
            let mut grad = var.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    };
    for _ in 0..3 {
        step();
    }
    let runs = 10;
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        step();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "triplane forward+backward, 64x48 rays x 96 samples, F32 R64 C32, {threads} threads: median {:.1} ms (min {:.1}, max {:.1}) over {runs} runs",
        times[runs / 2],
        times[0],
        times[runs - 1]
    );
}
