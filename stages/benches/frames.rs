//! The viewer's frame latency on a latent 3DGS field of 25,000 Gaussians at 504×376 (the fern's images_8
//! size) with the bundled TAEF2: the latent preview (render at 63×47, false colour, PNG) and the decoded
//! frame (render, TAEF2 decode, PNG), as `lrf-flow view` serves them, with the decode in f32 and in bfloat16
//! (the viewer's default where the CPU has native bf16). Targets: preview at most 50 ms, decoded at most
//! 500 ms on 2 cores.
//!
//!   cargo bench -p lrf-stages --bench frames

use std::path::Path;
use std::time::Instant;

use glam::DVec3;
use lrf_formats::Camera;
use lrf_formats::image::encode_png;
use lrf_splat::train::{GaussianField, PointInit};
use lrf_stages::artifacts::{FIELD_FILE, FIELD_INFO, FieldInfo, FieldSpace, Normalization, write_json};
use lrf_stages::autoencoder::AutoencoderSource;
use lrf_stages::frames::{DecodePrecision, FieldFrames};
use lrf_stages::latents::side_by_side;
use rand::{Rng, SeedableRng};

const GAUSSIANS: usize = 25_000;

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let threads = std::env::var("LRF_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let autoencoder = AutoencoderSource::resolve("taef2", Path::new(".")).unwrap();
    let channels = autoencoder.open().unwrap().latent_channels() as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let positions: Vec<[f64; 3]> = (0..GAUSSIANS)
        .map(|_| {
            let p = DVec3::new(
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
            );
            (p * 1.5).to_array()
        })
        .collect();
    let colors: Vec<f32> = (0..GAUSSIANS * channels).map(|_| rng.random_range(0.0..1.0)).collect();
    let field = GaussianField::from_points(
        &PointInit {
            positions: &positions,
            colors: &colors,
            channels,
        },
        1,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    field.save(&dir.path().join(FIELD_FILE)).unwrap();
    let info = FieldInfo {
        space: FieldSpace::Latent {
            autoencoder,
            normalization: Normalization {
                min: vec![-3.0; channels],
                max: vec![3.0; channels],
            },
        },
        representation: Default::default(),
        channels,
        downsampling: 8,
        gaussians: GAUSSIANS,
        iterations: 0,
        seconds: 0.0,
        seconds_per_iteration: 0.0,
        peak_memory_mib: None,
        loss_curve: vec![],
        gaussian_curve: vec![],
    };
    write_json(&dir.path().join(FIELD_INFO), &info).unwrap();
    let (frames, decoder) = FieldFrames::open(dir.path(), None).unwrap();
    let decoder = decoder.unwrap();
    let decoders =
        [DecodePrecision::F32, DecodePrecision::Bf16].map(|precision| decoder.clone().open(precision).unwrap());
    let png = |image: &tch::Tensor| encode_png(Path::new("frame.png"), &side_by_side(&[image]).unwrap()).unwrap();
    let mut preview = Vec::new();
    let mut decoded = [Vec::new(), Vec::new()];
    for i in 0..13 {
        let angle = i as f64 * 0.1;
        let eye = DVec3::new(4.0 * angle.sin(), 0.5, 4.0 * angle.cos());
        let camera = Camera::look_at(eye, DVec3::ZERO, DVec3::Y, 420.0, 420.0, 504, 376);
        let started = Instant::now();
        let raw = frames.render(&camera).unwrap();
        png(&raw.preview());
        let preview_ms = started.elapsed().as_secs_f64() * 1e3;
        // The two precisions alternate, so that machine load weighs on both alike.
        for (times, decoder) in decoded.iter_mut().zip(&decoders) {
            let started = Instant::now();
            let raw = frames.render(&camera).unwrap();
            png(&decoder.decode(&raw).unwrap());
            if i >= 3 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        if i >= 3 {
            preview.push(preview_ms);
        }
    }
    let [f32_ms, bf16_ms] = decoded.map(median);
    println!(
        "viewer frames, {GAUSSIANS} Gaussians, {channels} channels, 504x376, {threads} threads: latent preview {:.1} ms \
         (target <= 50); decoded frame (target <= 500): f32 {f32_ms:.1} ms, bf16 {bf16_ms:.1} ms (the viewer's \
         default here: {:?}); medians of 10",
        median(preview),
        DecodePrecision::fastest(),
    );
}
