//! CPU kernel backward against autograd through the reference: relative error per parameter group.

use super::scenes::*;
use crate::cpu::Cutoff;
use crate::options::RenderOptions;
use crate::reference;
use tch::{Kind, Tensor};

const GROUPS: [&str; 5] = ["means", "log_scales", "quats", "opacity_logits", "colors"];

/// Worst relative error over the parameter groups, in f32 and f64, of the CPU backward against autograd of the
/// reference, for the loss Σ image·W + Σ alpha·W_alpha.
fn backward_errors(spec: &SceneSpec, options: &RenderOptions, edit: Edit) -> [f64; 2] {
    let camera = camera(spec);
    let mut arrays = scene_arrays(spec);
    edit(&camera, &mut arrays);
    let (w_image, w_alpha) = loss_weights(spec.seed, spec.channels, &camera);
    let mut worst = [0.0; 2];
    for (slot, kind) in [Kind::Float, Kind::Double].into_iter().enumerate() {
        let mut g = to_gaussians(&arrays, spec, kind);
        for t in [
            &mut g.means,
            &mut g.log_scales,
            &mut g.quats,
            &mut g.opacity_logits,
            &mut g.colors,
        ] {
            *t = t.set_requires_grad(true);
        }
        let out = reference::render(&g, &camera, options).unwrap();
        let wi = Tensor::from_slice(&w_image)
            .to_kind(kind)
            .view(out.image.size().as_slice());
        let wa = Tensor::from_slice(&w_alpha)
            .to_kind(kind)
            .view(out.alpha.size().as_slice());
        ((&out.image * wi).sum(kind) + (&out.alpha * wa).sum(kind)).backward();
        let want = g.tensors().map(|t| tensor_f64(&t.grad()));
        let got: [Vec<f64>; 5] = if kind == Kind::Float {
            let host = Host::<f32>::of(&g, options);
            let frame = host.render(&camera, options, Cutoff::Hard);
            let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            let gr = host.backward(&camera, options, &frame, &to32(&w_image), &to32(&w_alpha));
            [
                &gr.means,
                &gr.log_scales,
                &gr.quats,
                &gr.opacity_logits,
                &gr.colors.dense(),
            ]
            .map(|v| to_f64(v))
        } else {
            let host = Host::<f64>::of(&g, options);
            let frame = host.render(&camera, options, Cutoff::Hard);
            let gr = host.backward(&camera, options, &frame, &w_image, &w_alpha);
            [gr.means, gr.log_scales, gr.quats, gr.opacity_logits, gr.colors.dense()]
        };
        for (name, (got, want)) in GROUPS.iter().zip(got.iter().zip(&want)) {
            let err = relative_error(got, want, 1e-12);
            println!(
                "  {kind:?} {name}: relative error {err:.2e} (|grad| {:.2e})",
                want.iter().map(|x| x * x).sum::<f64>().sqrt()
            );
            worst[slot] = f64::max(worst[slot], err);
        }
    }
    worst
}

fn assert_gradients(name: &str, spec: &SceneSpec, options: &RenderOptions, edit: Edit) {
    println!("{name}:");
    let [e32, e64] = backward_errors(spec, options, edit);
    assert!(e32 <= 1e-4, "{name}: f32 relative gradient error {e32}");
    assert!(e64 <= 1e-9, "{name}: f64 relative gradient error {e64}");
}

#[test]
fn backward_matches_reference_autograd_over_channels_and_sh_degrees() {
    for (i, (channels, degree)) in [
        (1, Some(0)),
        (3, Some(3)),
        (4, Some(1)),
        (16, Some(2)),
        (32, Some(3)),
        (4, None),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = SceneSpec::new(100 + i as u64, 120, channels, degree);
        let options = RenderOptions {
            background: (0..channels).map(|k| 0.2 - 0.05 * k as f64).collect(),
            ..Default::default()
        };
        assert_gradients(&format!("C={channels} degree {degree:?}"), &spec, &options, no_edit);
    }
}

#[test]
fn backward_matches_reference_autograd_with_options() {
    let spec = SceneSpec::new(110, 120, 3, Some(3));
    for (name, options) in option_variants(2) {
        assert_gradients(&name, &spec, &options, no_edit);
    }
}

#[test]
fn backward_matches_reference_autograd_on_hard_geometry() {
    let spec = SceneSpec::new(120, 120, 4, Some(1));
    assert_gradients(
        "off screen, opaque, flat",
        &spec,
        &RenderOptions::default(),
        off_screen_opaque_and_flat,
    );
}

#[test]
fn cpu_backward_is_bitwise_deterministic_across_thread_counts() {
    let spec = SceneSpec {
        width: 70,
        height: 50,
        ..SceneSpec::new(130, 400, 16, Some(2))
    };
    let camera = camera(&spec);
    let options = RenderOptions::default();
    let g = to_gaussians(&scene_arrays(&spec), &spec, Kind::Float);
    let host = Host::<f32>::of(&g, &options);
    let (w_image, w_alpha) = loss_weights(spec.seed, spec.channels, &camera);
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let (w_image, w_alpha) = (to32(&w_image), to32(&w_alpha));
    let run = || {
        let frame = host.render(&camera, &options, Cutoff::Hard);
        let gr = host.backward(&camera, &options, &frame, &w_image, &w_alpha);
        [
            gr.means,
            gr.log_scales,
            gr.quats,
            gr.opacity_logits,
            gr.colors.dense(),
            gr.mean2d_grad_norm,
        ]
    };
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let reference = pool(1).install(run);
    for threads in [2, 3, 7] {
        assert!(
            pool(threads).install(run) == reference,
            "gradients differ with {threads} threads"
        );
    }
}
