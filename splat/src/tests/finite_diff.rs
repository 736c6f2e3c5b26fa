//! The CPU backward against central finite differences of the CPU forward, in f64, with the test-only smooth
//! alpha cutoff so the image is differentiable everywhere.

use super::scenes::*;
use crate::cpu::Cutoff;
use crate::options::{RasterMode, RenderOptions};
use lrf_formats::Camera;
use tch::Kind;

fn loss(host: &Host<f64>, camera: &Camera, options: &RenderOptions, w_image: &[f64], w_alpha: &[f64]) -> f64 {
    let f = host.render(camera, options, Cutoff::Smooth);
    f.image.iter().zip(w_image).map(|(a, b)| a * b).sum::<f64>()
        + f.alpha.iter().zip(w_alpha).map(|(a, b)| a * b).sum::<f64>()
}

fn check(name: &str, spec: &SceneSpec, options: &RenderOptions) {
    let camera = camera(spec);
    let g = to_gaussians(&scene_arrays(spec), spec, Kind::Double);
    let mut host = Host::<f64>::of(&g, options);
    let (w_image, w_alpha) = loss_weights(spec.seed, spec.channels, &camera);
    let frame = host.render(&camera, options, Cutoff::Smooth);
    assert!(
        frame.visible.iter().all(|&v| v),
        "{name}: every Gaussian should be visible"
    );
    let grads = host.backward(&camera, options, &frame, &w_image, &w_alpha);
    let analytic = [
        grads.means,
        grads.log_scales,
        grads.quats,
        grads.opacity_logits,
        grads.colors.dense(),
    ];
    let eps = 1e-6;
    let (mut worst, mut checked) = (0.0f64, 0);
    // Indices, not iterators: each step mutates one parameter of `host` and renders it.
    #[allow(clippy::needless_range_loop)]
    for group in 0..5 {
        for i in 0..host.arrays[group].len() {
            let keep = host.arrays[group][i];
            host.arrays[group][i] = keep + eps;
            let plus = loss(&host, &camera, options, &w_image, &w_alpha);
            host.arrays[group][i] = keep - eps;
            let minus = loss(&host, &camera, options, &w_image, &w_alpha);
            host.arrays[group][i] = keep;
            let numeric = (plus - minus) / (2.0 * eps);
            let a = analytic[group][i];
            let err = (a - numeric).abs() / (1e-4 + 1e-3 * a.abs());
            worst = worst.max(err);
            checked += 1;
            assert!(
                err <= 1.0,
                "{name}: group {group} index {i}: analytic {a:.9e}, finite difference {numeric:.9e}"
            );
        }
    }
    println!("{name}: {checked} parameters, worst |analytic − numeric| / (1e-4 + 1e-3·|analytic|) = {worst:.2e}");
}

fn smooth_scene(seed: u64, channels: usize, degree: Option<usize>) -> SceneSpec {
    SceneSpec {
        width: 24,
        height: 20,
        log_scale: (-2.2, -1.4),
        opacity_logit: (-2.0, 0.0),
        ..SceneSpec::new(seed, 6, channels, degree)
    }
}

#[test]
fn backward_matches_finite_differences_classic() {
    check(
        "classic, SH degree 3",
        &smooth_scene(200, 3, Some(3)),
        &RenderOptions {
            background: vec![0.3, -0.2, 0.5],
            ..Default::default()
        },
    );
    check(
        "classic, plain colours",
        &smooth_scene(201, 2, None),
        &RenderOptions::default(),
    );
}

#[test]
fn backward_matches_finite_differences_antialiased() {
    let options = RenderOptions {
        mode: RasterMode::Antialiased,
        ..Default::default()
    };
    check("antialiased, SH degree 2", &smooth_scene(202, 3, Some(2)), &options);
}
