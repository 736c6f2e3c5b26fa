//! CPU kernel forward against the reference, f32 (≤ 1e-5, the bound) and f64 (≤ 1e-9).

use super::scenes::*;
use crate::cpu::Cutoff;
use crate::options::RenderOptions;
use crate::reference;
use tch::Kind;

/// Renders a scene with both implementations in both precisions and returns the worst f32 and f64 differences
/// over image, alpha and alpha-weighted depth.
pub fn forward_differences(spec: &SceneSpec, options: &RenderOptions, edit: Edit) -> (f64, f64) {
    let camera = camera(spec);
    let mut arrays = scene_arrays(spec);
    edit(&camera, &mut arrays);
    let mut worst = [0.0; 2];
    for (slot, kind) in [Kind::Float, Kind::Double].into_iter().enumerate() {
        let g = to_gaussians(&arrays, spec, kind);
        let want = reference::render(&g, &camera, options).unwrap();
        let (image, alpha, depth) = if kind == Kind::Float {
            let f = Host::<f32>::of(&g, options).render(&camera, options, Cutoff::Hard);
            (to_f64(&f.image), to_f64(&f.alpha), to_f64(&f.depth))
        } else {
            let f = Host::<f64>::of(&g, options).render(&camera, options, Cutoff::Hard);
            (f.image, f.alpha, f.depth)
        };
        let want_alpha = tensor_f64(&want.alpha);
        let weighted = |d: &[f64], a: &[f64]| d.iter().zip(a).map(|(d, a)| d * a / 10.0).collect::<Vec<_>>();
        worst[slot] = [
            max_abs_diff(&image, &tensor_f64(&want.image)),
            max_abs_diff(&alpha, &want_alpha),
            max_abs_diff(
                &weighted(&depth, &alpha),
                &weighted(&tensor_f64(&want.depth), &want_alpha),
            ),
        ]
        .into_iter()
        .fold(0.0, f64::max);
    }
    (worst[0], worst[1])
}

fn assert_parity(name: &str, spec: &SceneSpec, options: &RenderOptions, edit: Edit) {
    let (f32_diff, f64_diff) = forward_differences(spec, options, edit);
    println!("{name}: max |cpu − reference| f32 {f32_diff:.2e}, f64 {f64_diff:.2e}");
    assert!(f32_diff <= 1e-5, "{name}: f32 difference {f32_diff}");
    assert!(f64_diff <= 1e-9, "{name}: f64 difference {f64_diff}");
}

#[test]
fn forward_matches_reference_over_channels_and_sh_degrees() {
    let cases = [
        (1, Some(0)),
        (3, Some(3)),
        (4, Some(1)),
        (16, Some(2)),
        (32, Some(3)),
        (4, None),
        (32, None),
    ];
    for (i, (channels, degree)) in cases.into_iter().enumerate() {
        let spec = SceneSpec::new(10 + i as u64, 150, channels, degree);
        let options = RenderOptions {
            background: (0..channels).map(|k| 0.1 * k as f64 - 0.3).collect(),
            ..Default::default()
        };
        assert_parity(&format!("C={channels} degree {degree:?}"), &spec, &options, no_edit);
    }
}

#[test]
fn forward_matches_reference_with_rgb_convention_antialiasing_and_partial_degree() {
    let spec = SceneSpec::new(30, 150, 3, Some(3));
    for (name, options) in option_variants(1) {
        assert_parity(&name, &spec, &options, no_edit);
    }
}

#[test]
fn forward_matches_reference_at_odd_image_sizes() {
    for (i, (w, h)) in [(16, 16), (50, 21), (17, 33), (1, 1), (5, 40)].into_iter().enumerate() {
        let spec = SceneSpec {
            width: w,
            height: h,
            ..SceneSpec::new(40 + i as u64, 120, 4, Some(1))
        };
        assert_parity(&format!("{w}×{h}"), &spec, &RenderOptions::default(), no_edit);
    }
}

#[test]
fn forward_matches_reference_on_hard_geometry() {
    let spec = SceneSpec::new(50, 160, 4, Some(2));
    let options = RenderOptions::default();
    assert_parity(
        "behind and straddling the near plane",
        &spec,
        &options,
        behind_and_straddling_near_plane,
    );
    assert_parity("tiny, huge and flat scales", &spec, &options, tiny_huge_and_flat);
}

#[test]
fn forward_matches_reference_on_opaque_stacks_and_empty_scenes() {
    assert_parity(
        "opaque stack",
        &opaque_stack_spec(60),
        &RenderOptions::default(),
        squeeze_towards_axis,
    );
    let empty = SceneSpec::new(61, 0, 3, Some(1));
    assert_parity(
        "empty",
        &empty,
        &RenderOptions {
            background: vec![0.2, -0.1, 0.7],
            ..Default::default()
        },
        no_edit,
    );
}

#[test]
fn cpu_forward_is_deterministic_and_thread_independent() {
    let spec = SceneSpec {
        width: 70,
        height: 50,
        ..SceneSpec::new(70, 400, 16, Some(2))
    };
    let camera = camera(&spec);
    let g = to_gaussians(&scene_arrays(&spec), &spec, Kind::Float);
    let options = RenderOptions::default();
    let host = Host::<f32>::of(&g, &options);
    let first = host.render(&camera, &options, Cutoff::Hard);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let single = pool.install(|| host.render(&camera, &options, Cutoff::Hard));
    assert_eq!(first.image, single.image);
    assert_eq!(first.alpha, single.alpha);
    assert!(first.visible.iter().any(|&v| v) && first.radii.iter().any(|&r| r > 0));
}

/// Forward and backward pair counts of Gaussians (camera at the origin looking down +z, fx = fy = 40, principal
/// point at the image centre, one colour channel), which must agree.
fn pair_counts(means: &[f32], log_scales: &[f32], opacity_logits: &[f32], width: u32, height: u32) -> crate::PairCount {
    let camera = lrf_formats::Camera {
        rotation: glam::DMat3::IDENTITY,
        translation: glam::DVec3::ZERO,
        fx: 40.0,
        fy: 40.0,
        cx: width as f64 / 2.0,
        cy: height as f64 / 2.0,
        width,
        height,
    };
    let n = opacity_logits.len();
    let quats: Vec<f32> = (0..n).flat_map(|_| [1.0, 0.0, 0.0, 0.0]).collect();
    let colors = vec![0.5f32; n];
    let g = crate::GaussianSlices {
        means,
        log_scales,
        quats: &quats,
        opacity_logits,
        colors: &colors,
        layout: crate::ColorLayout::from_shape(&[n, 1], None).unwrap(),
    };
    let options = RenderOptions::default();
    let frame = crate::rasterize(&g, &camera, &options).unwrap();
    let upstream = vec![1.0f32; (width * height) as usize];
    let grads = crate::rasterize_backward(&g, &camera, &options, &frame, &upstream, None).unwrap();
    assert_eq!(frame.pairs, grads.pairs, "forward and backward pair counts");
    frame.pairs
}

#[test]
fn pairs_are_counted_per_tile_list_and_per_evaluated_row_group() {
    // One faint Gaussian far wider than a 40x23 image (3x2 tiles; the last column of tiles is 8 pixels wide, the
    // last row 7 pixels high): it is in every tile's list, and every row of every tile lies within its extent.
    // Row groups round the bottom tiles' 7 rows up to 8.
    let wide = pair_counts(&[0.0, 0.0, 5.0], &[2.0; 3], &[-4.0], 40, 23);
    let expected = crate::PairCount {
        in_tile_lists: 40 * 23,
        evaluated: 16 * (3 * 16 + 3 * 8),
    };
    assert_eq!(wide, expected);
    // A point-like Gaussian at pixel (4, 4) of a 16x16 image, faint enough that its extent (about 0.8 px, the
    // 0.3 px² blur) reaches the pixel centres of rows 3 and 4 only: two row groups, rows 2 to 5.
    let (x, y) = ((4.0 - 8.0) * 5.0 / 40.0, (4.0 - 8.0) * 5.0 / 40.0);
    let point = pair_counts(&[x, y, 5.0], &[-10.0; 3], &[-4.46], 16, 16);
    let expected = crate::PairCount {
        in_tile_lists: 16 * 16,
        evaluated: 4 * 16,
    };
    assert_eq!(point, expected);
    // Ten opaque (α ≈ 0.95) Gaussians stacked in depth over the whole image: the transmittance is 0.05^3 after
    // three, and every pixel ends at the fourth, so each tile stops after four of its ten.
    let means: Vec<f32> = (0..10).flat_map(|k| [0.0, 0.0, 5.0 + k as f32]).collect();
    let stack = pair_counts(&means, &[3.0; 30], &[19f32.ln(); 10], 40, 23);
    assert_eq!(stack.in_tile_lists, 4 * 40 * 23);
}
