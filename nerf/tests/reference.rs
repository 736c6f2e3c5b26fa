//! The Tri-Plane field against an independent dense f64 implementation written out by hand (bilinear taps
//! with grid_sample's align_corners=False convention and zero padding, the MLP, midpoint compositing), and
//! its gradients (libtorch's autograd, with the planes' share handed on by the plane tape) against central
//! finite differences.

use lrf_nerf::render::{Rays, Sampling, composite, render};
use lrf_nerf::{PlaneTape, SceneBounds, TriPlaneConfig, TriPlaneField};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor, nn};

const CONFIG: TriPlaneConfig = TriPlaneConfig {
    features: 3,
    resolution: 5,
    hidden: 4,
    channels: 2,
};

/// A field in f64 and its variables.
fn field() -> (TriPlaneField, nn::VarStore) {
    tch::manual_seed(3);
    let mut vars = nn::VarStore::new(Device::Cpu);
    let field = TriPlaneField::new(&vars.root(), CONFIG, 0.8).unwrap();
    vars.double();
    tch::no_grad(|| {
        let mut background = field.background.shallow_clone();
        let _ = background.copy_(&Tensor::from_slice(&[0.3f64, -0.7]));
    });
    (field, vars)
}

/// Rays from outside the box through it, with fixed sorted depths.
fn rays_and_depths(n: i64, s: i64) -> (Rays, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut origins = Vec::new();
    let mut directions = Vec::new();
    for _ in 0..n {
        let o = [rng.random_range(-0.3..0.3), rng.random_range(-0.3..0.3), -2.0];
        let d = glam::DVec3::new(rng.random_range(-0.2..0.2), rng.random_range(-0.2..0.2), 1.0).normalize();
        origins.extend(o);
        directions.extend(d.to_array());
    }
    let t: Vec<f64> = (0..n)
        .flat_map(|_| {
            let mut row: Vec<f64> = (0..s).map(|_| rng.random_range(1.1..2.9)).collect();
            row.sort_by(f64::total_cmp);
            row
        })
        .collect();
    let rays = Rays {
        origins: Tensor::from_slice(&origins).view([n, 3]),
        directions: Tensor::from_slice(&directions).view([n, 3]),
        near: Tensor::full([n], 1.0, (Kind::Double, Device::Cpu)),
        far: Tensor::full([n], 3.0, (Kind::Double, Device::Cpu)),
    };
    (rays, Tensor::from_slice(&t).view([n, s]))
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.contiguous().view([-1])).unwrap()
}

/// grid_sample (bilinear, zeros, align_corners=False) of plane `p` (`[F, R, R]` row-major) at (u, v).
fn bilinear(plane: &[f64], f: usize, r: usize, u: f64, v: f64) -> Vec<f64> {
    let x = ((u + 1.0) * r as f64 - 1.0) / 2.0;
    let y = ((v + 1.0) * r as f64 - 1.0) / 2.0;
    let (x0, y0) = (x.floor(), y.floor());
    let mut out = vec![0.0; f];
    for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
        let (xi, yi) = (x0 + dx, y0 + dy);
        let w = (1.0 - (x - xi).abs()) * (1.0 - (y - yi).abs());
        if xi < 0.0 || yi < 0.0 || xi >= r as f64 || yi >= r as f64 {
            continue;
        }
        for (c, o) in out.iter_mut().enumerate() {
            *o += w * plane[c * r * r + yi as usize * r + xi as usize];
        }
    }
    out
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

fn bounded(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp()) * 1.002 - 0.001
}

/// The dense reference of `composite`.
fn reference(vars: &nn::VarStore, rays: &Rays, t: &Tensor) -> Vec<f64> {
    let vars = vars.variables();
    let planes = values(&vars["planes"]);
    let (w1, b1, w2, b2) = (
        values(&vars["hidden.weight"]),
        values(&vars["hidden.bias"]),
        values(&vars["out.weight"]),
        values(&vars["out.bias"]),
    );
    let background: Vec<f64> = values(&vars["background"]).into_iter().map(bounded).collect();
    let (f, r, h, c) = (3usize, 5usize, 4usize, 2usize);
    let (origins, directions, depths) = (values(&rays.origins), values(&rays.directions), values(t));
    let (n, s) = (t.size()[0] as usize, t.size()[1] as usize);
    let mut out = Vec::new();
    for ray in 0..n {
        let mut samples = Vec::new();
        for k in 0..s {
            let depth = depths[ray * s + k];
            let p: Vec<f64> = (0..3)
                .map(|a| origins[ray * 3 + a] + directions[ray * 3 + a] * depth)
                .collect();
            let mut features = vec![0.0; f];
            for (plane, (a, b)) in [(0, 1), (0, 2), (1, 2)].into_iter().enumerate() {
                let tap = bilinear(&planes[plane * f * r * r..(plane + 1) * f * r * r], f, r, p[a], p[b]);
                features.iter_mut().zip(tap).for_each(|(x, y)| *x += y);
            }
            let hidden: Vec<f64> = (0..h)
                .map(|j| softplus(b1[j] + (0..f).map(|i| w1[j * f + i] * features[i]).sum::<f64>()))
                .collect();
            let raw: Vec<f64> = (0..1 + c)
                .map(|j| b2[j] + (0..h).map(|i| w2[j * h + i] * hidden[i]).sum::<f64>())
                .collect();
            samples.push((
                depth,
                raw[0],
                raw[1..].iter().map(|&x| bounded(x)).collect::<Vec<f64>>(),
            ));
        }
        let mut color = vec![0.0; c];
        let (mut transmittance, mut total) = (1.0, 0.0);
        for k in 0..s - 1 {
            let delta = samples[k + 1].0 - samples[k].0;
            let density = softplus((samples[k].1 + samples[k + 1].1) / 2.0 - 1.0);
            let alpha = 1.0 - (-density * delta).exp();
            let weight = alpha * transmittance;
            for ch in 0..c {
                color[ch] += weight * (samples[k].2[ch] + samples[k + 1].2[ch]) / 2.0;
            }
            total += weight;
            transmittance *= 1.0 - alpha + 1e-10;
        }
        out.extend((0..c).map(|ch| color[ch] + (1.0 - total) * background[ch]));
    }
    out
}

#[test]
fn compositing_matches_a_dense_f64_reference() {
    let (field, vars) = field();
    let (rays, t) = rays_and_depths(6, 9);
    let (rendered, _) = composite(&field, &rays, &t, None);
    let expected = reference(&vars, &rays, &t);
    let got = values(&rendered);
    let error = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(error < 1e-12, "max |difference| {error}: {got:?} vs {expected:?}");
    // The rays do cross the field: not all background.
    let background: Vec<f64> = values(&field.background_color());
    assert!(got.chunks(2).any(|px| (px[0] - background[0]).abs() > 1e-3));
}

#[test]
fn gradients_match_central_differences() {
    let (field, vars) = field();
    let (rays, t) = rays_and_depths(5, 7);
    let weights = Tensor::from_slice(&(0..10).map(|i| 0.3 + 0.1 * i as f64).collect::<Vec<_>>()).view([5, 2]);
    let loss = |field: &TriPlaneField, tape: Option<&mut PlaneTape>| {
        (composite(field, &rays, &t, tape).0 * &weights).sum(Kind::Double)
    };
    let mut tape = PlaneTape::new();
    loss(&field, Some(&mut tape)).backward();
    tape.backward();
    let h = 1e-6;
    let (mut checked, mut nonzero) = (0, 0);
    for (name, var) in vars.variables() {
        let gradient = values(&var.grad());
        let count = gradient.len();
        for index in [0, count / 2, count - 1] {
            let flat = var.view([-1]);
            let original = flat.double_value(&[index as i64]);
            let set = |v: f64| {
                tch::no_grad(|| {
                    let _ = flat.get(index as i64).fill_(v);
                })
            };
            set(original + h);
            let plus = loss(&field, None).double_value(&[]);
            set(original - h);
            let minus = loss(&field, None).double_value(&[]);
            set(original);
            let numeric = (plus - minus) / (2.0 * h);
            let analytic = gradient[index];
            assert!(
                (numeric - analytic).abs() <= 1e-6 * (1.0 + numeric.abs()),
                "{name}[{index}]: autograd {analytic} vs finite differences {numeric}"
            );
            checked += 1;
            nonzero += usize::from(analytic.abs() > 1e-8);
        }
    }
    assert_eq!(checked, 6 * 3, "every parameter group is checked");
    assert!(
        nonzero >= 12,
        "most checked gradients are non-zero ({nonzero} of {checked}), so the check bites"
    );
}

#[test]
fn importance_samples_follow_the_density() {
    // A camera looking at the box: rendering with importance samples differs from stratified alone, and
    // both are finite and within the colour bounds.
    tch::manual_seed(1);
    let vars = nn::VarStore::new(Device::Cpu);
    let field = TriPlaneField::new(
        &vars.root(),
        TriPlaneConfig {
            channels: 3,
            ..TriPlaneConfig::default()
        },
        1.0,
    )
    .unwrap();
    let camera = lrf_formats::Camera::look_at(
        glam::DVec3::new(0.0, 0.0, 3.0),
        glam::DVec3::ZERO,
        glam::DVec3::Y,
        20.0,
        20.0,
        8,
        6,
    );
    let bounds = SceneBounds {
        center: glam::DVec3::ZERO,
        scale: 1.0,
    };
    let rays = Rays::for_camera(&camera, &bounds, Kind::Float);
    let plain = render(
        &field,
        &rays,
        Sampling {
            stratified: 32,
            importance: 0,
        },
        None,
        None,
    )
    .unwrap();
    let fine = render(
        &field,
        &rays,
        Sampling {
            stratified: 32,
            importance: 32,
        },
        None,
        None,
    )
    .unwrap();
    assert_eq!(fine.size(), [48, 3]);
    let values = Vec::<f32>::try_from(fine.view([-1])).unwrap();
    assert!(values.iter().all(|v| v.is_finite() && (-0.001..=1.001).contains(v)));
    assert!((fine - plain).abs().max().double_value(&[]) > 1e-4);
}
