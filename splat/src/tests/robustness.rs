//! Non-finite and extreme inputs render cleanly (culled, never NaN), bad shapes and cameras are errors.

use super::scenes::*;
use crate::cpu::Cutoff;
use crate::options::RenderOptions;
use crate::{ColorBasis, ColorLayout, GaussianSlices, Gaussians, SplatError, rasterize, reference, render};
use tch::{Kind, Tensor};

#[test]
fn non_finite_and_huge_parameters_are_culled_not_propagated() {
    let (spec, camera, arrays) = bad_parameter_scene();
    let options = RenderOptions::default();
    let g = to_gaussians(&arrays, &spec, Kind::Float);
    let host = Host::<f32>::of(&g, &options);
    let frame = host.render(&camera, &options, Cutoff::Hard);
    assert!(
        frame
            .image
            .iter()
            .chain(&frame.alpha)
            .chain(&frame.depth)
            .all(|v| v.is_finite())
    );
    let (w_image, w_alpha) = loss_weights(1, spec.channels, &camera);
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let grads = host.backward(&camera, &options, &frame, &to32(&w_image), &to32(&w_alpha));
    for v in [
        &grads.means,
        &grads.log_scales,
        &grads.quats,
        &grads.opacity_logits,
        &grads.colors.dense(),
    ] {
        assert!(v.iter().all(|x| x.is_finite()), "non-finite gradient");
    }
    let want = reference::render(&g, &camera, &options).unwrap();
    // A colour coefficient of 1e30 legitimately makes pixels of that size: compare relative to the largest.
    let want = tensor_f64(&want.image);
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&to_f64(&frame.image), &want) / scale;
    assert!(
        diff <= 1e-5,
        "cpu vs reference with bad inputs: {diff} relative to {scale}"
    );
}

#[test]
fn bad_shapes_options_and_cameras_are_errors() {
    let spec = SceneSpec::new(301, 10, 3, Some(1));
    let cam = camera(&spec);
    let g = to_gaussians(&scene_arrays(&spec), &spec, Kind::Float);
    let ok = RenderOptions::default();
    assert!(render(&g, &cam, &ok).is_ok());
    let five_coeffs = Gaussians {
        colors: Tensor::zeros([10, 5, 3], (Kind::Float, tch::Device::Cpu)),
        ..copy(&g)
    };
    assert!(matches!(render(&five_coeffs, &cam, &ok), Err(SplatError::Shape(_))));
    let short_means = Gaussians {
        means: g.means.narrow(0, 0, 9),
        ..copy(&g)
    };
    assert!(matches!(render(&short_means, &cam, &ok), Err(SplatError::Shape(_))));
    let mixed = Gaussians {
        quats: g.quats.to_kind(Kind::Double),
        ..copy(&g)
    };
    assert!(matches!(render(&mixed, &cam, &ok), Err(SplatError::Shape(_))));
    let bg = RenderOptions {
        background: vec![0.0; 2],
        ..Default::default()
    };
    assert!(matches!(render(&g, &cam, &bg), Err(SplatError::Options(_))));
    let degree = RenderOptions {
        sh_degree: Some(2),
        ..Default::default()
    };
    assert!(matches!(render(&g, &cam, &degree), Err(SplatError::Options(_))));
    let mut flat = cam.clone();
    flat.fx = 0.0;
    assert!(matches!(render(&g, &flat, &ok), Err(SplatError::Camera(_))));
    let mut nan = cam.clone();
    nan.cy = f64::NAN;
    assert!(matches!(reference::render(&g, &nan, &ok), Err(SplatError::Camera(_))));
    let mut empty = cam.clone();
    empty.width = 0;
    assert!(matches!(render(&g, &empty, &ok), Err(SplatError::Camera(_))));
    // Layouts built by hand through the public fields, which `ColorLayout::from_shape` would refuse: the kernel
    // says so instead of indexing past the coefficients.
    let host = Host::<f32>::of(&g, &ok);
    for (coeffs, degree) in [(0, 0), (5, 1), (4, 2), (25, 4)] {
        let layout = ColorLayout {
            basis: ColorBasis::Sh { coeffs, degree },
            channels: 3,
        };
        let colors = vec![0.0; 10 * coeffs * 3];
        let slices = GaussianSlices {
            colors: &colors,
            layout,
            ..host.slices()
        };
        assert!(
            rasterize(&slices, &cam, &ok).is_err(),
            "{coeffs} coefficients, degree {degree}"
        );
    }
}

fn copy(g: &Gaussians) -> Gaussians {
    g.map(Tensor::copy)
}
