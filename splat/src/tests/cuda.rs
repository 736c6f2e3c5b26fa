//! The CUDA rasterizer against the tch reference, with the tolerances of the CPU kernel's parity tests (forward
//! max |difference| ≤ 1e-5 in f32 and ≤ 1e-9 in f64; per-parameter-group relative gradient error ≤ 1e-4 in f32
//! and ≤ 1e-9 in f64), on the same random scenes and hard cases ([`super::scenes`]) at C ∈ {4, 16, 32} (and the
//! rounded-up channel counts) with SH degrees 0–3, plain colours and the option variants.
//!
//! Every case runs twice where it can: through the kernels' host emulation (`cuda::render_emulated`: each
//! kernel's per-thread code in host loops, on any machine), and through `render` on a CUDA device, which runs
//! the kernels themselves: those tests are `#[ignore]`d, so a machine without a GPU lists them as ignored, and
//! `make test-cuda` runs them with `--include-ignored` where `nvidia-smi` finds a device.
//!
//! Built only with the `cuda` feature (`cargo test -p lrf-splat --features cuda --lib tests::cuda`).

use super::scenes::*;
use crate::{Camera, Gaussians, RenderOptions, Rendered, cuda, reference, render};
use tch::{Device, Kind, Tensor};

/// The arrays as Gaussians of `kind` on `device`, leaves that require grad when `trainable`.
fn gaussians(arrays: &Arrays, spec: &SceneSpec, kind: Kind, device: Device, trainable: bool) -> Gaussians {
    to_gaussians(arrays, spec, kind).map(|t| t.to_device(device).set_requires_grad(trainable))
}

// ---------------------------------------------------------------------------------------------------------------
// The two ways of running the kernels.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// The kernels' per-thread code in host loops, on CPU tensors.
    Emulated,
    /// The kernels on CUDA device 0, through `render`.
    Gpu,
}

impl Engine {
    fn device(self) -> Device {
        match self {
            Engine::Emulated => Device::Cpu,
            Engine::Gpu => Device::Cuda(0),
        }
    }

    fn render(self, g: &Gaussians, camera: &Camera, options: &RenderOptions) -> Rendered {
        match self {
            Engine::Emulated => cuda::render_emulated(g, camera, options).unwrap(),
            Engine::Gpu => render(g, camera, options).unwrap(),
        }
    }
}

/// Fails loudly when a GPU test was asked for on a machine without a device: it must never pass unrun.
fn require_gpu() {
    assert!(
        tch::Cuda::is_available(),
        "this GPU test was run with --ignored, but tch sees no CUDA device"
    );
}

/// Worst forward differences from the reference, f32 and f64, over image, alpha and alpha-weighted depth (as
/// the CPU kernel's parity tests measure them).
fn forward_differences(engine: Engine, spec: &SceneSpec, options: &RenderOptions, edit: Edit) -> [f64; 2] {
    let camera = camera(spec);
    let mut arrays = scene_arrays(spec);
    edit(&camera, &mut arrays);
    let mut worst = [0.0; 2];
    for (slot, kind) in [Kind::Float, Kind::Double].into_iter().enumerate() {
        let want = reference::render(&gaussians(&arrays, spec, kind, Device::Cpu, false), &camera, options).unwrap();
        let got = engine.render(
            &gaussians(&arrays, spec, kind, engine.device(), false),
            &camera,
            options,
        );
        assert_eq!(got.image.device(), engine.device());
        assert_eq!(got.image.kind(), kind);
        let (alpha, want_alpha) = (tensor_f64(&got.alpha), tensor_f64(&want.alpha));
        let weighted = |d: &[f64], a: &[f64]| d.iter().zip(a).map(|(d, a)| d * a / 10.0).collect::<Vec<_>>();
        worst[slot] = [
            max_abs_diff(&tensor_f64(&got.image), &tensor_f64(&want.image)),
            max_abs_diff(&alpha, &want_alpha),
            max_abs_diff(
                &weighted(&tensor_f64(&got.depth), &alpha),
                &weighted(&tensor_f64(&want.depth), &want_alpha),
            ),
        ]
        .into_iter()
        .fold(0.0, f64::max);
    }
    worst
}

/// Worst relative gradient errors against autograd through the reference, f32 and f64, for the loss
/// Σ image·W + Σ alpha·W_alpha, with the gradients landing in `.grad()` through `Rendered::backward`.
fn backward_errors(engine: Engine, spec: &SceneSpec, options: &RenderOptions, edit: Edit) -> [f64; 2] {
    let camera = camera(spec);
    let mut arrays = scene_arrays(spec);
    edit(&camera, &mut arrays);
    let (w_image, w_alpha) = loss_weights(spec.seed, spec.channels, &camera);
    let mut worst = [0.0; 2];
    for (slot, kind) in [Kind::Float, Kind::Double].into_iter().enumerate() {
        let loss = |image: &Tensor, alpha: &Tensor| {
            let w = |v: &[f64], like: &Tensor| {
                Tensor::from_slice(v)
                    .to_kind(kind)
                    .to_device(like.device())
                    .view(like.size().as_slice())
            };
            (image * w(&w_image, image)).sum(kind) + (alpha * w(&w_alpha, alpha)).sum(kind)
        };
        let theirs = gaussians(&arrays, spec, kind, Device::Cpu, true);
        let want = reference::render(&theirs, &camera, options).unwrap();
        loss(&want.image, &want.alpha).backward();

        let ours = gaussians(&arrays, spec, kind, engine.device(), true);
        let got = engine.render(&ours, &camera, options);
        loss(&got.image, &got.alpha).backward();
        let stats = got.backward().unwrap();
        let visible = Vec::<bool>::try_from(got.visible.to_device(Device::Cpu)).unwrap();
        let norms = tensor_f64(&stats.mean2d_grad_norm);
        assert!(norms.iter().zip(&visible).all(|(&n, &v)| v || n == 0.0));

        let names = ["means", "log_scales", "quats", "opacity_logits", "colors"];
        for (name, (a, b)) in names.iter().zip(ours.tensors().iter().zip(theirs.tensors())) {
            let err = relative_error(&tensor_f64(&a.grad()), &tensor_f64(&b.grad()), 1e-12);
            println!("  {kind:?} {name}: relative error {err:.2e}");
            worst[slot] = f64::max(worst[slot], err);
        }
    }
    worst
}

fn assert_parity(engine: Engine, name: &str, spec: &SceneSpec, options: &RenderOptions, edit: Edit) {
    let [f32_diff, f64_diff] = forward_differences(engine, spec, options, edit);
    println!("{engine:?} {name}: forward max |cuda − reference| f32 {f32_diff:.2e}, f64 {f64_diff:.2e}");
    assert!(f32_diff <= 1e-5, "{engine:?} {name}: f32 forward difference {f32_diff}");
    assert!(f64_diff <= 1e-9, "{engine:?} {name}: f64 forward difference {f64_diff}");
    let [e32, e64] = backward_errors(engine, spec, options, edit);
    println!("{engine:?} {name}: backward relative error f32 {e32:.2e}, f64 {e64:.2e}");
    assert!(e32 <= 1e-4, "{engine:?} {name}: f32 relative gradient error {e32}");
    assert!(e64 <= 1e-9, "{engine:?} {name}: f64 relative gradient error {e64}");
}

// ---------------------------------------------------------------------------------------------------------------
// The cases, each run by both engines.

fn channels_and_degrees(engine: Engine) {
    let mut seed = 500;
    for channels in [4, 16, 32] {
        for degree in [Some(0), Some(1), Some(2), Some(3), None] {
            seed += 1;
            let spec = SceneSpec::new(seed, 120, channels, degree);
            let options = RenderOptions {
                background: (0..channels).map(|k| 0.2 - 0.05 * (k % 7) as f64).collect(),
                ..Default::default()
            };
            assert_parity(
                engine,
                &format!("C={channels} degree {degree:?}"),
                &spec,
                &options,
                no_edit,
            );
        }
    }
    // Channel counts between the compiled sizes run on the next one up, with the spare channels masked.
    for (i, (channels, degree)) in [(1, Some(0)), (3, Some(3)), (5, Some(1)), (20, Some(2)), (64, Some(1))]
        .into_iter()
        .enumerate()
    {
        let spec = SceneSpec::new(530 + i as u64, 100, channels, degree);
        assert_parity(
            engine,
            &format!("C={channels} degree {degree:?}"),
            &spec,
            &RenderOptions::default(),
            no_edit,
        );
    }
}

fn options_and_sizes(engine: Engine) {
    let spec = SceneSpec::new(540, 120, 3, Some(3));
    for (name, options) in option_variants(1) {
        assert_parity(engine, &name, &spec, &options, no_edit);
    }
    // Partial tiles at the right and bottom edges, single-pixel and single-tile images.
    for (i, (w, h)) in [(16, 16), (50, 21), (17, 33), (1, 1), (5, 40)].into_iter().enumerate() {
        let spec = SceneSpec {
            width: w,
            height: h,
            ..SceneSpec::new(550 + i as u64, 100, 4, Some(1))
        };
        assert_parity(engine, &format!("{w}×{h}"), &spec, &RenderOptions::default(), no_edit);
    }
}

fn hard_geometry(engine: Engine) {
    let spec = SceneSpec::new(560, 160, 4, Some(2));
    let options = RenderOptions::default();
    for (name, edit) in [
        (
            "behind and straddling the near plane",
            behind_and_straddling_near_plane as Edit,
        ),
        ("tiny, huge and flat scales", tiny_huge_and_flat),
        ("off screen, opaque, flat", off_screen_opaque_and_flat),
    ] {
        assert_parity(engine, name, &spec, &options, edit);
    }
    assert_parity(
        engine,
        "opaque stack",
        &opaque_stack_spec(561),
        &options,
        squeeze_towards_axis,
    );
}

/// Non-finite and extreme parameters are culled, never propagated (the CPU kernel's robustness test, on its
/// scene: elsewhere a 1e30 coefficient can leave the f32 reference itself 1e-4 off the kernels, which agree).
fn non_finite_inputs(engine: Engine) {
    let (spec, camera, arrays) = bad_parameter_scene();
    let options = RenderOptions::default();
    let g = gaussians(&arrays, &spec, Kind::Float, engine.device(), true);
    let out = engine.render(&g, &camera, &options);
    for t in [&out.image, &out.alpha, &out.depth] {
        assert!(
            tensor_f64(t).iter().all(|v| v.is_finite()),
            "{engine:?}: non-finite output"
        );
    }
    let (w_image, w_alpha) = loss_weights(1, spec.channels, &camera);
    let w = |v: &[f64], like: &Tensor| {
        Tensor::from_slice(v)
            .to_kind(Kind::Float)
            .to_device(like.device())
            .view(like.size().as_slice())
    };
    ((&out.image * w(&w_image, &out.image)).sum(Kind::Float) + (&out.alpha * w(&w_alpha, &out.alpha)).sum(Kind::Float))
        .backward();
    out.backward().unwrap();
    for t in g.tensors() {
        assert!(
            tensor_f64(&t.grad()).iter().all(|v| v.is_finite()),
            "{engine:?}: non-finite gradient"
        );
    }
    let want = reference::render(
        &gaussians(&arrays, &spec, Kind::Float, Device::Cpu, false),
        &camera,
        &options,
    )
    .unwrap();
    // A colour coefficient of 1e30 legitimately makes pixels of that size: compare relative to the largest.
    let want = tensor_f64(&want.image);
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&tensor_f64(&out.image), &want) / scale;
    assert!(
        diff <= 1e-5,
        "{engine:?} vs reference with bad inputs: {diff} relative to {scale}"
    );
}

/// An empty scene renders the background; its backward gives empty gradients.
fn empty_scene(engine: Engine) {
    let spec = SceneSpec::new(570, 0, 3, Some(1));
    let camera = camera(&spec);
    let options = RenderOptions {
        background: vec![0.2, -0.1, 0.7],
        ..Default::default()
    };
    let g = gaussians(&scene_arrays(&spec), &spec, Kind::Float, engine.device(), true);
    let out = engine.render(&g, &camera, &options);
    let image = tensor_f64(&out.image);
    assert!(
        image
            .chunks(29 * 37)
            .zip([0.2, -0.1, 0.7])
            .all(|(plane, bg)| plane.iter().all(|&v| (v - bg).abs() < 1e-7))
    );
    assert!(tensor_f64(&out.alpha).iter().all(|&a| a == 0.0));
    (out.image.sum(Kind::Float) + out.alpha.sum(Kind::Float)).backward();
    out.backward().unwrap();
    assert_eq!(g.means.grad().size(), [0, 3]);
}

// ---------------------------------------------------------------------------------------------------------------

#[test]
fn emulated_kernels_match_reference_over_channels_and_sh_degrees() {
    channels_and_degrees(Engine::Emulated);
}

#[test]
fn emulated_kernels_match_reference_with_options_and_odd_sizes() {
    options_and_sizes(Engine::Emulated);
}

#[test]
fn emulated_kernels_match_reference_on_hard_geometry() {
    hard_geometry(Engine::Emulated);
}

#[test]
fn emulated_kernels_cull_non_finite_inputs_and_render_empty_scenes() {
    non_finite_inputs(Engine::Emulated);
    empty_scene(Engine::Emulated);
}

/// The emulated kernels take the CPU kernel's decisions: the same radii and visibility, and in f64 the same
/// image to rounding.
#[test]
fn emulated_kernels_agree_with_the_cpu_kernel() {
    for (i, (channels, degree)) in [(4, Some(1)), (16, Some(3)), (3, None)].into_iter().enumerate() {
        let spec = SceneSpec {
            width: 70,
            height: 50,
            ..SceneSpec::new(580 + i as u64, 400, channels, degree)
        };
        let camera = camera(&spec);
        let arrays = scene_arrays(&spec);
        for kind in [Kind::Float, Kind::Double] {
            let g = gaussians(&arrays, &spec, kind, Device::Cpu, false);
            let options = RenderOptions::default();
            let ours = cuda::render_emulated(&g, &camera, &options).unwrap();
            let cpu = render(&g, &camera, &options).unwrap();
            let radii = |r: &Rendered| Vec::<i32>::try_from(&r.radii).unwrap();
            let visible = |r: &Rendered| Vec::<bool>::try_from(&r.visible).unwrap();
            let mismatches = |a: &[i32], b: &[i32]| a.iter().zip(b).filter(|(x, y)| x != y).count();
            let radii_off = mismatches(&radii(&ours), &radii(&cpu));
            let visible_off = visible(&ours)
                .iter()
                .zip(visible(&cpu))
                .filter(|(a, b)| **a != *b)
                .count();
            let image_diff = max_abs_diff(&tensor_f64(&ours.image), &tensor_f64(&cpu.image));
            println!("C={channels} {kind:?}: radii differ {radii_off}, visible {visible_off}, image {image_diff:.2e}");
            // Rounding may flip a decision sitting exactly on a cutoff; more than a handful means a real
            // difference.
            assert!(radii_off <= spec.count / 100, "{radii_off} radii differ");
            assert!(visible_off <= spec.count / 100, "{visible_off} visibility flags differ");
            if kind == Kind::Double {
                assert!(
                    image_diff <= 1e-12,
                    "f64 image differs from the CPU kernel's by {image_diff}"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device; make test-cuda runs it where nvidia-smi finds one"]
fn gpu_kernels_match_reference_over_channels_and_sh_degrees() {
    require_gpu();
    channels_and_degrees(Engine::Gpu);
}

#[test]
#[ignore = "needs a CUDA device; make test-cuda runs it where nvidia-smi finds one"]
fn gpu_kernels_match_reference_with_options_and_odd_sizes() {
    require_gpu();
    options_and_sizes(Engine::Gpu);
}

#[test]
#[ignore = "needs a CUDA device; make test-cuda runs it where nvidia-smi finds one"]
fn gpu_kernels_match_reference_on_hard_geometry() {
    require_gpu();
    hard_geometry(Engine::Gpu);
}

#[test]
#[ignore = "needs a CUDA device; make test-cuda runs it where nvidia-smi finds one"]
fn gpu_kernels_cull_non_finite_inputs_and_render_empty_scenes() {
    require_gpu();
    non_finite_inputs(Engine::Gpu);
    empty_scene(Engine::Gpu);
}

/// The GPU kernels and their host emulation agree (same decisions; sums in another order).
#[test]
#[ignore = "needs a CUDA device; make test-cuda runs it where nvidia-smi finds one"]
fn gpu_kernels_agree_with_their_emulation() {
    require_gpu();
    let spec = SceneSpec {
        width: 90,
        height: 70,
        ..SceneSpec::new(590, 600, 16, Some(2))
    };
    let camera = camera(&spec);
    let arrays = scene_arrays(&spec);
    let options = RenderOptions::default();
    let gpu = Engine::Gpu.render(
        &gaussians(&arrays, &spec, Kind::Double, Device::Cuda(0), false),
        &camera,
        &options,
    );
    let host = Engine::Emulated.render(
        &gaussians(&arrays, &spec, Kind::Double, Device::Cpu, false),
        &camera,
        &options,
    );
    let diff = max_abs_diff(&tensor_f64(&gpu.image), &tensor_f64(&host.image));
    assert!(diff <= 1e-9, "GPU and emulated images differ by {diff}");
    assert_eq!(
        tensor_f64(&gpu.radii.to_kind(Kind::Double)),
        tensor_f64(&host.radii.to_kind(Kind::Double))
    );
}
