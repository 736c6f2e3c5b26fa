//! Volume rendering of a [`TriPlaneField`]: rays in the field's box, stratified samples, importance
//! samples drawn from the stratified pass's weights, and midpoint compositing onto the background latent
//! (EG3D's ray marcher, which IG-AE uses): between consecutive samples the colour and raw density are
//! averaged, density = softplus(σ − 1), α = 1 − exp(−density·δ).

use std::rc::Rc;

use lrf_formats::Camera;
use rand::{Rng, RngCore};
use tch::{Kind, Tensor};

use crate::field::{TriPlaneField, to_bounds};
use crate::query::{PlaneTape, QueryLayers};
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
/// (`[N, S]`, sorted along each ray). `tape` tracks the planes' gradient (see [`PlaneTape`]).
pub fn composite(field: &TriPlaneField, rays: &Rays, t: &Tensor, tape: Option<&mut PlaneTape>) -> (Tensor, Tensor) {
    let layers = field.layers(tape.is_some());
    composite_samples(
        field,
        &[RaySamples::query(field, &layers, rays, t.shallow_clone(), tape)],
    )
}

/// Depths along rays and what the field holds there.
struct RaySamples {
    /// `[N, S]`
    t: Tensor,
    /// Raw density, `[N, S]`.
    sigma: Tensor,
    /// Colour in [0, 1], `[N, S, C]`.
    color: Tensor,
}

impl RaySamples {
    fn query(
        field: &TriPlaneField,
        layers: &Rc<QueryLayers>,
        rays: &Rays,
        t: Tensor,
        tape: Option<&mut PlaneTape>,
    ) -> RaySamples {
        let (n, s) = (t.size()[0], t.size()[1]);
        let points = (rays.origins.unsqueeze(1) + rays.directions.unsqueeze(1) * t.unsqueeze(2)).view([n * s, 3]);
        let (sigma, color) = field.query(layers, &points, tape);
        RaySamples {
            sigma: sigma.view([n, s]),
            color: color.view([n, s, field.config.channels]),
            t,
        }
    }
}

/// The composited channels `[N, C]` of sets of samples along the same rays, taken together in depth order
/// (EG3D's `unify_samples`: each point is queried once, and the stratified pass's samples take part in the
/// final compositing with their gradients), and the compositing weights `[N, S − 1]` in that order.
///
/// Segment k's colour is the mean of samples k and k + 1, so Σₖ wₖ·(cₖ + cₖ₊₁)/2 = Σⱼ vⱼ·cⱼ with
/// vⱼ = (wⱼ₋₁ + wⱼ)/2. Only the per-sample vⱼ are sorted and put back in each set's order; the colours are
/// never gathered or copied, but enter one batched product per set. The colours' affine bounds are applied
/// to the `[N, C]` result (the vⱼ and the background's share sum to 1).
fn composite_samples(field: &TriPlaneField, sets: &[RaySamples]) -> (Tensor, Tensor) {
    let t = Tensor::cat(&sets.iter().map(|set| &set.t).collect::<Vec<_>>(), 1);
    let sigma = Tensor::cat(&sets.iter().map(|set| &set.sigma).collect::<Vec<_>>(), 1);
    let (t, order) = t.sort(1, false);
    let weights = segment_weights(&sigma.gather(1, &order, false), &t);
    let edge = weights.zeros_like().narrow(1, 0, 1);
    let per_sample = (Tensor::cat(&[&weights, &edge], 1) + Tensor::cat(&[&edge, &weights], 1)) * 0.5;
    let per_sample = per_sample.zeros_like().scatter(1, &order, &per_sample);
    let accumulated = weights.sum_dim_intlist(1, true, None);
    let mut unit = (-accumulated + 1.0) * field.background_color().unsqueeze(0);
    let mut offset = 0;
    for set in sets {
        let count = set.t.size()[1];
        unit += per_sample
            .narrow(1, offset, count)
            .unsqueeze(1)
            .bmm(&set.color)
            .squeeze_dim(1);
        offset += count;
    }
    (to_bounds(&unit), weights)
}

/// The compositing weights `[N, S − 1]` of the segments between samples at depths `t` (`[N, S]`) with raw
/// densities `sigma` (`[N, S]`).
fn segment_weights(sigma: &Tensor, t: &Tensor) -> Tensor {
    let s = t.size()[1];
    let deltas = t.narrow(1, 1, s - 1) - t.narrow(1, 0, s - 1);
    let sigma_mid = (sigma.narrow(1, 0, s - 1) + sigma.narrow(1, 1, s - 1)) * 0.5;
    let density = (sigma_mid - 1.0).softplus();
    let alpha = -(-(density * &deltas)).exp() + 1.0;
    // Transmittance before each segment: exclusive cumulative product of (1 − α).
    let keep = (-&alpha + 1.0 + 1e-10).cumprod(1, None);
    let before = Tensor::cat(&[keep.ones_like().narrow(1, 0, 1), keep.narrow(1, 0, s - 2)], 1);
    alpha * before
}

/// Renders `rays`: stratified samples, then importance samples from their weights, composited together
/// (each queried once, as EG3D's renderer does).
/// With `jitter`, both are placed at random by its draws (training); without, at the bins' middles. The
/// draws come from the caller's generator, not libtorch's global one, so that fits running side by side
/// stay reproducible. Returns `[N, C]`; `tape` tracks the gradient of both sets of samples.
pub fn render(
    field: &TriPlaneField,
    rays: &Rays,
    sampling: Sampling,
    mut jitter: Option<&mut dyn RngCore>,
    mut tape: Option<&mut PlaneTape>,
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
    let layers = field.layers(tape.is_some());
    let coarse = RaySamples::query(field, &layers, rays, coarse, tape.as_deref_mut());
    if sampling.importance == 0 {
        return Ok(composite_samples(field, &[coarse]).0);
    }
    let fine = tch::no_grad(|| {
        let weights = segment_weights(&coarse.sigma.detach(), &coarse.t);
        importance_samples(&coarse.t, &weights, sampling.importance, jitter)
    });
    let fine = RaySamples::query(field, &layers, rays, fine, tape);
    Ok(composite_samples(field, &[coarse, fine]).0)
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

#[cfg(test)]
mod tests {
    use tch::{Device, nn};

    use super::*;
    use crate::TriPlaneConfig;

    /// Two interleaved sets of samples composited together give what querying their depth-sorted union
    /// gives, in value and in every parameter's gradient.
    #[test]
    fn two_sample_sets_composite_as_their_sorted_union() {
        tch::manual_seed(7);
        let mut vars = nn::VarStore::new(Device::Cpu);
        let config = TriPlaneConfig {
            features: 3,
            resolution: 6,
            hidden: 5,
            channels: 2,
        };
        let field = TriPlaneField::new(&vars.root(), config, 0.8).unwrap();
        vars.double();
        let opts = (Kind::Double, Device::Cpu);
        let n = 4;
        let rays = Rays {
            origins: Tensor::rand([n, 3], opts) * 0.4 - 0.2 + Tensor::from_slice(&[0.0f64, 0.0, -2.0]),
            directions: Tensor::from_slice(&[0.0f64, 0.0, 1.0])
                .expand([n, 3], false)
                .contiguous(),
            near: Tensor::full([n], 1.0, opts),
            far: Tensor::full([n], 3.0, opts),
        };
        let depths = |count: i64| (Tensor::rand([n, count], opts) * 2.0 + 1.0).sort(1, false).0;
        let (first, second) = (depths(5), depths(4));
        let target = Tensor::randn([n, 2], opts);
        let gradients = |loss: Tensor, tape: PlaneTape| {
            for var in vars.trainable_variables() {
                let mut grad = var.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            }
            loss.backward();
            tape.backward();
            let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named.into_iter().map(|(_, v)| v.grad().copy()).collect::<Vec<_>>()
        };

        let mut tape = PlaneTape::new();
        let layers = field.layers(true);
        let sets = [
            RaySamples::query(&field, &layers, &rays, first.shallow_clone(), Some(&mut tape)),
            RaySamples::query(&field, &layers, &rays, second.shallow_clone(), Some(&mut tape)),
        ];
        let (merged, merged_weights) = composite_samples(&field, &sets);
        let merged_gradients = gradients((&merged * &target).sum(Kind::Double), tape);

        let mut tape = PlaneTape::new();
        let union = Tensor::cat(&[&first, &second], 1).sort(1, false).0;
        let (expected, expected_weights) = composite(&field, &rays, &union, Some(&mut tape));
        let expected_gradients = gradients((&expected * &target).sum(Kind::Double), tape);

        let difference = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(difference(&merged, &expected) < 1e-12);
        assert!(difference(&merged_weights, &expected_weights) < 1e-12);
        assert!(
            merged_weights.sum(Kind::Double).double_value(&[]) > 0.1,
            "the rays cross the field"
        );
        for (got, want) in merged_gradients.iter().zip(&expected_gradients) {
            assert!(difference(got, want) < 1e-12);
            assert!(want.abs().max().double_value(&[]) > 0.0);
        }
    }
}
