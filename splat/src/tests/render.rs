//! The tch entry point: its backward lands in `.grad()` like autograd's, and an optimiser step fits a scene.

use super::scenes::*;
use crate::options::RenderOptions;
use crate::{Gaussians, reference, render};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

fn trainable(g: &Gaussians) -> Gaussians {
    let [means, log_scales, quats, opacity_logits, colors] = g.tensors().map(|t| t.copy().set_requires_grad(true));
    Gaussians {
        means,
        log_scales,
        quats,
        opacity_logits,
        colors,
    }
}

fn loss(image: &Tensor, alpha: &Tensor, target: &Tensor) -> Tensor {
    (image - target).abs().mean(Kind::Float) + 0.1 * (alpha * alpha).mean(Kind::Float)
}

#[test]
fn render_backward_fills_grads_like_reference_autograd() {
    let spec = SceneSpec::new(400, 100, 4, Some(2));
    let camera = camera(&spec);
    let g = to_gaussians(&scene_arrays(&spec), &spec, Kind::Float);
    let options = RenderOptions::default();
    let target = Tensor::from_slice(&loss_weights(3, 4, &camera).0)
        .to_kind(Kind::Float)
        .view([4, 29, 37]);

    let ours = trainable(&g);
    let rendered = render(&ours, &camera, &options).unwrap();
    loss(&rendered.image, &rendered.alpha, &target).backward();
    let stats = rendered.backward().unwrap();
    let theirs = trainable(&g);
    let want = reference::render(&theirs, &camera, &options).unwrap();
    loss(&want.image, &want.alpha, &target).backward();
    for (a, b) in ours.tensors().iter().zip(theirs.tensors()) {
        let err = relative_error(&tensor_f64(&a.grad()), &tensor_f64(&b.grad()), 1e-12);
        assert!(err <= 1e-4, "relative gradient error {err}");
    }
    let norms = tensor_f64(&stats.mean2d_grad_norm);
    let ndc = tensor_f64(&stats.mean2d_grad_norm_ndc);
    let visible = Vec::<bool>::try_from(&rendered.visible).unwrap();
    assert!(norms.iter().zip(&visible).all(|(&n, &v)| v || n == 0.0));
    assert!(
        norms.iter().zip(&ndc).all(|(&p, &n)| n >= p * 14.0 && n <= p * 19.0),
        "NDC scale is half the image size"
    );
    assert!(!rendered.depth.requires_grad() && rendered.radii.kind() == Kind::Int);
}

#[test]
fn adam_fits_a_scene_through_render() {
    let truth_spec = SceneSpec {
        opacity_logit: (0.0, 2.0),
        ..SceneSpec::new(401, 60, 3, Some(1))
    };
    let camera = camera(&truth_spec);
    let options = RenderOptions::default();
    let truth = to_gaussians(&scene_arrays(&truth_spec), &truth_spec, Kind::Float);
    let target = render(&truth, &camera, &options).unwrap().image;

    let start = to_gaussians(
        &scene_arrays(&SceneSpec {
            seed: 402,
            ..truth_spec.clone()
        }),
        &truth_spec,
        Kind::Float,
    );
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let root = vs.root();
    let g = Gaussians {
        means: root.var_copy("means", &((&truth.means + &start.means * 0.05) as Tensor)),
        log_scales: root.var_copy("log_scales", &truth.log_scales),
        quats: root.var_copy("quats", &start.quats),
        opacity_logits: root.var_copy("opacity_logits", &start.opacity_logits),
        colors: root.var_copy("colors", &start.colors),
    };
    let mut adam = nn::Adam::default().build(&vs, 0.02).unwrap();
    let mut losses = Vec::new();
    for _ in 0..40 {
        adam.zero_grad();
        let r = render(&g, &camera, &options).unwrap();
        let l = (&r.image - &target).abs().mean(Kind::Float);
        l.backward();
        r.backward().unwrap();
        adam.step();
        losses.push(l.double_value(&[]));
    }
    println!("L1 loss: first {:.4}, last {:.4}", losses[0], losses[losses.len() - 1]);
    assert!(
        losses[losses.len() - 1] < 0.5 * losses[0],
        "loss did not halve: {losses:?}"
    );
}
