//! Randomised test scenes: Gaussians around the origin seen by a camera a few units away.

use crate::cpu::{Cutoff, Frame, GaussianGrads, rasterize_backward, rasterize_with};
use crate::gaussians::Gaussians;
use crate::options::{RasterMode, RenderOptions};
use crate::real::Real;
use crate::render::to_host;
use crate::tiling::GaussianSlices;
use glam::DVec3;
use lrf_formats::Camera;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// Knobs of a random scene.
#[derive(Clone, Debug)]
pub struct SceneSpec {
    pub seed: u64,
    pub count: usize,
    pub channels: usize,
    /// `None`: plain `[N, C]` colours; `Some(d)`: SH of degree d.
    pub sh_degree: Option<usize>,
    pub width: u32,
    pub height: u32,
    /// Range of log-scales.
    pub log_scale: (f64, f64),
    /// Range of opacity logits.
    pub opacity_logit: (f64, f64),
}

impl SceneSpec {
    pub fn new(seed: u64, count: usize, channels: usize, sh_degree: Option<usize>) -> Self {
        SceneSpec {
            seed,
            count,
            channels,
            sh_degree,
            width: 37,
            height: 29,
            log_scale: (-3.5, -1.5),
            opacity_logit: (-2.0, 3.0),
        }
    }
}

pub fn camera(spec: &SceneSpec) -> Camera {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0xca3e);
    let eye = DVec3::new(rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5), -4.0);
    let f = spec.width as f64 * rng.random_range(1.0..1.6);
    let mut cam = Camera::look_at(
        eye,
        DVec3::ZERO,
        DVec3::Y,
        f,
        f * rng.random_range(0.9..1.1),
        spec.width,
        spec.height,
    );
    cam.cx += rng.random_range(-2.0..2.0);
    cam
}

/// Host arrays of a scene in f64: means, log-scales, quats, opacity logits, colours.
pub type Arrays = [Vec<f64>; 5];

pub fn scene_arrays(spec: &SceneSpec) -> Arrays {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let n = spec.count;
    let k = spec.sh_degree.map_or(1, |d| (d + 1) * (d + 1));
    let mut uniform = |lo: f64, hi: f64, len: usize| (0..len).map(|_| rng.random_range(lo..hi)).collect::<Vec<f64>>();
    let means = uniform(-1.2, 1.2, 3 * n);
    let log_scales = uniform(spec.log_scale.0, spec.log_scale.1, 3 * n);
    let quats = uniform(-1.0, 1.0, 4 * n);
    let opacity = uniform(spec.opacity_logit.0, spec.opacity_logit.1, n);
    let colors = uniform(-0.8, 0.8, k * spec.channels * n);
    [means, log_scales, quats, opacity, colors]
}

pub fn color_shape(spec: &SceneSpec) -> Vec<i64> {
    let (n, c) = (spec.count as i64, spec.channels as i64);
    match spec.sh_degree {
        None => vec![n, c],
        Some(d) => vec![n, ((d + 1) * (d + 1)) as i64, c],
    }
}

/// The arrays as Gaussians of the given kind.
pub fn to_gaussians(arrays: &Arrays, spec: &SceneSpec, kind: Kind) -> Gaussians {
    let shape = color_shape(spec);
    let (sh_coeffs, channels) = match shape[..] {
        [_, k, c] => (k as usize, c as usize),
        [_, c] => (0, c as usize),
        _ => panic!("colors are [N, K, C] or [N, C], not {shape:?}"),
    };
    Gaussians::from_arrays(std::array::from_fn(|i| arrays[i].as_slice()), sh_coeffs, channels)
        .expect("consistent arrays")
        .map(|t| t.to_kind(kind))
}

/// Host copies of Gaussians, in R.
pub struct Host<R> {
    pub arrays: [Vec<R>; 5],
    pub layout: crate::ColorLayout,
}

impl<R: Real> Host<R> {
    pub fn of(g: &Gaussians, options: &RenderOptions) -> Self {
        let arrays = g.tensors().map(|t| to_host::<R>(t).unwrap());
        Host {
            arrays,
            layout: g.layout(options.sh_degree).unwrap(),
        }
    }

    pub fn slices(&self) -> GaussianSlices<'_, R> {
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

    pub fn render(&self, camera: &Camera, options: &RenderOptions, cutoff: Cutoff) -> Frame<R> {
        rasterize_with(&self.slices(), camera, options, cutoff).unwrap()
    }

    pub fn backward(
        &self,
        camera: &Camera,
        options: &RenderOptions,
        frame: &Frame<R>,
        v_image: &[R],
        v_alpha: &[R],
    ) -> GaussianGrads<R> {
        rasterize_backward(&self.slices(), camera, options, frame, v_image, Some(v_alpha)).unwrap()
    }
}

/// Deterministic loss weights for an image and its alpha.
pub fn loss_weights(seed: u64, channels: usize, camera: &Camera) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1055);
    let plane = (camera.width * camera.height) as usize;
    let image = (0..channels * plane).map(|_| rng.random_range(-1.0..1.0)).collect();
    let alpha = (0..plane).map(|_| rng.random_range(-1.0..1.0)).collect();
    (image, alpha)
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// ‖a − b‖ / max(‖b‖, floor).
pub fn relative_error(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(floor)
}

pub fn to_f64<R: Real>(v: &[R]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// A tensor's values in f64 on the host, from any device.
pub fn tensor_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        t.detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Double)
            .contiguous()
            .view([-1]),
    )
    .unwrap()
}

/// World position of a camera-space point.
pub fn world_of(camera: &Camera, p_cam: DVec3) -> DVec3 {
    camera.rotation.transpose() * (p_cam - camera.translation)
}

/// An edit of a scene's arrays, given its camera: the hard cases every parity suite runs.
pub type Edit = fn(&Camera, &mut Arrays);

pub fn no_edit(_: &Camera, _: &mut Arrays) {}

/// The Gaussian count of a scene's arrays.
fn count(a: &Arrays) -> usize {
    a[3].len()
}

/// Every fourth Gaussian behind the camera, every fourth one straddling the near plane with a large scale.
pub fn behind_and_straddling_near_plane(cam: &Camera, a: &mut Arrays) {
    for i in 0..count(a) {
        let p = match i % 4 {
            0 => DVec3::new(0.1 * (i % 7) as f64, -0.2, -0.5 - 0.01 * i as f64),
            1 => DVec3::new(0.02 * (i % 5) as f64, 0.01, 0.005 + 0.0002 * (i % 50) as f64),
            _ => continue,
        };
        a[0][3 * i..3 * i + 3].copy_from_slice(&world_of(cam, p).to_array());
        if i % 4 == 1 {
            a[1][3 * i..3 * i + 3].copy_from_slice(&[-1.0, -1.5, -0.5]);
        }
    }
}

/// Tiny, huge and flat (one axis collapsed) Gaussians.
pub fn tiny_huge_and_flat(_: &Camera, a: &mut Arrays) {
    for i in 0..count(a) {
        match i % 4 {
            0 => a[1][3 * i..3 * i + 3].copy_from_slice(&[-9.0, -9.5, -8.0]),
            1 => a[1][3 * i..3 * i + 3].copy_from_slice(&[1.5, 0.5, 2.0]),
            2 => a[1][3 * i + (i % 3)] = -40.0,
            _ => {}
        }
    }
}

/// Off-screen Gaussians (the Jacobian clamp), opaque ones (the alpha clamp and the stop rule), flat ones.
pub fn off_screen_opaque_and_flat(cam: &Camera, a: &mut Arrays) {
    for i in 0..count(a) {
        match i % 5 {
            0 => a[0][3 * i..3 * i + 3]
                .copy_from_slice(&world_of(cam, DVec3::new(3.0 + 0.1 * (i % 3) as f64, 0.3, 2.0)).to_array()),
            1 => {
                a[3][i] = 7.0;
                a[1][3 * i..3 * i + 3].copy_from_slice(&[-1.5, -1.8, -1.6]);
            }
            2 => a[1][3 * i + (i % 3)] = -40.0,
            _ => {}
        }
    }
}

/// Nearly opaque Gaussians stacked in depth (with [`opaque_stack_spec`]): most pixels end on the
/// transmittance threshold.
pub fn squeeze_towards_axis(_: &Camera, a: &mut Arrays) {
    for i in 0..count(a) {
        a[0][3 * i] *= 0.3;
        a[0][3 * i + 1] *= 0.3;
    }
}

pub fn opaque_stack_spec(seed: u64) -> SceneSpec {
    SceneSpec {
        opacity_logit: (5.0, 9.0),
        log_scale: (-1.5, -0.5),
        ..SceneSpec::new(seed, 200, 4, Some(1))
    }
}

/// A scene whose parameters include NaN, ±∞, ±1e30 and 1e-300 in every group, a zero quaternion and a
/// Gaussian exactly at the camera centre: every implementation must cull these, never propagate them.
pub fn bad_parameter_scene() -> (SceneSpec, Camera, Arrays) {
    let spec = SceneSpec::new(300, 80, 4, Some(2));
    let camera = camera(&spec);
    let mut arrays = scene_arrays(&spec);
    let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30, -1e30, 1e-300];
    for (j, &v) in bad.iter().enumerate() {
        for (group, array) in arrays.iter_mut().enumerate() {
            let stride = array.len() / spec.count;
            array[stride * (6 * group + j)] = v;
        }
    }
    arrays[2][4 * 40..4 * 40 + 4].fill(0.0);
    arrays[0][3 * 41..3 * 41 + 3].copy_from_slice(&camera.center().to_array());
    (spec, camera, arrays)
}

/// The option variants both parity suites run beyond the defaults: RGB offset and clamp with a
/// coloured background, antialiased mode, and a lower active SH degree (for 3-channel degree-3
/// scenes).
pub fn option_variants(active_degree: usize) -> Vec<(String, RenderOptions)> {
    vec![
        (
            "rgb offset+clamp".into(),
            RenderOptions {
                color_offset_clamp: true,
                background: vec![1.0, 0.5, 0.0],
                ..Default::default()
            },
        ),
        (
            "antialiased".into(),
            RenderOptions {
                mode: RasterMode::Antialiased,
                ..Default::default()
            },
        ),
        (
            format!("active degree {active_degree} of 3"),
            RenderOptions {
                sh_degree: Some(active_degree),
                ..Default::default()
            },
        ),
    ]
}
