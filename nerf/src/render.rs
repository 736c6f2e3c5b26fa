//! Volume rendering of a [`TriPlaneField`]: rays in the field's box, stratified samples, importance
//! samples drawn from the stratified pass's weights, and midpoint compositing onto the background latent
//! (EG3D's ray marcher, which IG-AE uses): between consecutive samples the colour and raw density are
//! averaged, density = softplus(σ − 1), α = 1 − exp(−density·δ).

use lrf_formats::Camera;
use rand::{Rng, RngCore};
use tch::{Kind, Tensor};

use crate::field::TriPlaneField;
use crate::planes::PlaneTape;
use crate::{NerfError, Result, SceneBounds};

/// Rays in the field's box coordinates.
pub struct Rays {
    /// `[N, 3]`
    pub origins: Tensor,
    /// `[N, 3]`, unit length.
    pub directions: Tensor,
    /// `[N]`: where each ray enters and leaves the box (equal for a ray that misses it).
    pub near: Tensor,
    pub far: Tensor,
}

/// Samples per ray: IG-AE's 48 + 48.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    pub stratified: i64,
    pub importance: i64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            stratified: 48,
            importance: 48,
        }
    }
}

/// Closest distance along a ray at which samples start (box units), so a camera inside the box does not
/// sample its own lens.
const MIN_NEAR: f64 = 1e-2;

impl Rays {
    /// One ray through each pixel centre of `camera` (row-major), in the box of `bounds`.
    pub fn for_camera(camera: &Camera, bounds: &SceneBounds, kind: Kind) -> Rays {
        let (w, h) = (camera.width as usize, camera.height as usize);
        let to_world = camera.rotation.transpose();
        let origin = bounds.to_box(camera.center());
        let mut origins = Vec::with_capacity(w * h * 3);
        let mut directions = Vec::with_capacity(w * h * 3);
        let mut near = Vec::with_capacity(w * h);
        let mut far = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let local = glam::DVec3::new(
                    (x as f64 + 0.5 - camera.cx) / camera.fx,
                    (y as f64 + 0.5 - camera.cy) / camera.fy,
                    1.0,
                );
                let d = (to_world * local).normalize();
                let (t0, t1) = box_interval(origin, d);
                origins.extend(origin.to_array());
                directions.extend(d.to_array());
                near.push(t0);
                far.push(t1);
            }
        }
        let n = (w * h) as i64;
        let tensor = |v: &[f64], shape: &[i64]| Tensor::from_slice(v).view(shape).to_kind(kind);
        Rays {
            origins: tensor(&origins, &[n, 3]),
            directions: tensor(&directions, &[n, 3]),
            near: tensor(&near, &[n]),
            far: tensor(&far, &[n]),
        }
    }

    /// Rays `start..start + count`.
    pub fn narrow(&self, start: i64, count: i64) -> Rays {
        Rays {
            origins: self.origins.narrow(0, start, count),
            directions: self.directions.narrow(0, start, count),
            near: self.near.narrow(0, start, count),
            far: self.far.narrow(0, start, count),
        }
    }

    pub fn len(&self) -> i64 {
        self.origins.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a ray from `origin` along unit `d` is inside `[-1, 1]³` (slab method), from at least [`MIN_NEAR`].
fn box_interval(origin: glam::DVec3, d: glam::DVec3) -> (f64, f64) {
    let (mut t0, mut t1) = (MIN_NEAR, f64::MAX);
    for axis in 0..3 {
        let (o, v) = (origin[axis], d[axis]);
        if v.abs() < 1e-12 {
            if o.abs() > 1.0 {
                return (MIN_NEAR, MIN_NEAR);
            }
            continue;
        }
        let (a, b) = ((-1.0 - o) / v, (1.0 - o) / v);
        t0 = t0.max(a.min(b));
        t1 = t1.min(a.max(b));
    }
    if t1 <= t0 { (MIN_NEAR, MIN_NEAR) } else { (t0, t1) }
}

/// The composited channels `[N, C]` and the compositing weights `[N, S − 1]` of samples at depths `t`
/// (`[N, S]`, sorted along each ray). `tape` tracks the planes' gradient (see [`TriPlaneField::query`]).
pub fn composite(field: &TriPlaneField, rays: &Rays, t: &Tensor, tape: Option<&mut PlaneTape>) -> (Tensor, Tensor) {
    let (n, s) = (t.size()[0], t.size()[1]);
    let points = rays.origins.unsqueeze(1) + rays.directions.unsqueeze(1) * t.unsqueeze(2);
    let (sigma, color) = field.query(&points.view([n * s, 3]), tape);
    let c = field.config.channels;
    let (sigma, color) = (sigma.view([n, s]), color.view([n, s, c]));
    let deltas = t.narrow(1, 1, s - 1) - t.narrow(1, 0, s - 1);
    let color_mid = (color.narrow(1, 0, s - 1) + color.narrow(1, 1, s - 1)) * 0.5;
    let sigma_mid = (sigma.narrow(1, 0, s - 1) + sigma.narrow(1, 1, s - 1)) * 0.5;
    let density = (sigma_mid - 1.0).softplus();
    let alpha = -(-(density * &deltas)).exp() + 1.0;
    // Transmittance before each segment: exclusive cumulative product of (1 − α).
    let keep = (-&alpha + 1.0 + 1e-10).cumprod(1, None);
    let before = Tensor::cat(&[keep.ones_like().narrow(1, 0, 1), keep.narrow(1, 0, s - 2)], 1);
    let weights = alpha * before;
    let accumulated = weights.sum_dim_intlist(1, true, None);
    let rendered = (weights.unsqueeze(2) * color_mid).sum_dim_intlist(1, false, None)
        + (-accumulated + 1.0) * field.background_color().unsqueeze(0);
    (rendered, weights)
}

/// Renders `rays`: stratified samples, then importance samples from their weights, composited together.
/// With `jitter`, both are placed at random by its draws (training); without, at the bins' middles. The
/// draws come from the caller's generator, not libtorch's global one, so that fits running side by side
/// stay reproducible. Returns `[N, C]`; `tape` tracks the planes' gradient of the final pass.
pub fn render(
    field: &TriPlaneField,
    rays: &Rays,
    sampling: Sampling,
    mut jitter: Option<&mut dyn RngCore>,
    tape: Option<&mut PlaneTape>,
) -> Result<Tensor> {
    if sampling.stratified < 2 || sampling.importance < 0 {
        return Err(NerfError::Input(format!("invalid sampling {sampling:?}")));
    }
    let kind = rays.origins.kind();
    let device = rays.origins.device();
    let (n, s) = (rays.len(), sampling.stratified);
    let steps = Tensor::arange(s, (kind, device)).unsqueeze(0);
    let offsets = if let Some(rng) = jitter.as_deref_mut() {
        uniform(rng, n, s).to_kind(kind).to_device(device)
    } else {
        Tensor::full([n, s], 0.5, (kind, device))
    };
    let span = (&rays.far - &rays.near).unsqueeze(1);
    let coarse = rays.near.unsqueeze(1) + span * (steps + offsets) / s as f64;
    if sampling.importance == 0 {
        return Ok(composite(field, rays, &coarse, tape).0);
    }
    let fine = tch::no_grad(|| {
        let (_, weights) = composite(field, rays, &coarse, None);
        importance_samples(&coarse, &weights, sampling.importance, jitter)
    });
    let (t, _) = Tensor::cat(&[coarse, fine], 1).sort(1, false);
    Ok(composite(field, rays, &t, tape).0)
}

/// `[rows, columns]` draws from U[0, 1).
fn uniform(rng: &mut dyn RngCore, rows: i64, columns: i64) -> Tensor {
    let values: Vec<f32> = (0..rows * columns).map(|_| rng.random::<f32>()).collect();
    Tensor::from_slice(&values).view([rows, columns])
}

/// `count` depths per ray drawn from the piecewise-constant density the weights put on the segments between
/// samples, smoothed as EG3D does (max-pool then average-pool over neighbours, plus 0.01).
fn importance_samples(t: &Tensor, weights: &Tensor, count: i64, jitter: Option<&mut dyn RngCore>) -> Tensor {
    let (n, s) = (t.size()[0], t.size()[1]);
    let w = weights.unsqueeze(1);
    let padded = Tensor::cat(&[w.narrow(2, 0, 1), w.shallow_clone(), w.narrow(2, s - 2, 1)], 2);
    let smoothed = padded
        .max_pool1d([2], [1], [0], [1], false)
        .avg_pool1d([2], [1], [0], false, true)
        .squeeze_dim(1)
        + 0.01;
    // Segment k spans [t_k, t_{k+1}]; its probability is proportional to its smoothed weight.
    let pdf = &smoothed / smoothed.sum_dim_intlist(1, true, None);
    let cdf = Tensor::cat(&[pdf.zeros_like().narrow(1, 0, 1), pdf.cumsum(1, None)], 1);
    let u = if let Some(rng) = jitter {
        uniform(rng, n, count).to_kind(t.kind()).to_device(t.device())
    } else {
        (Tensor::arange(count, (t.kind(), t.device())) + 0.5)
            .unsqueeze(0)
            .expand([n, count], false)
            / count as f64
    }
    .contiguous();
    let upper = u
        .searchsorted(&cdf, false, true, "right", None::<Tensor>)
        .clamp(1, s - 1);
    let lower = &upper - 1;
    let (c0, c1) = (cdf.gather(1, &lower, false), cdf.gather(1, &upper, false));
    let (t0, t1) = (t.gather(1, &lower, false), t.gather(1, &upper, false));
    let fraction = ((u - &c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0);
    &t0 + (t1 - &t0) * fraction
}
