//! The planes' bilinear sampling, forward and backward, on the CPU: what libtorch's `grid_sample` computes
//! (bilinear, zero padding, `align_corners = False`) summed over the three planes, without its backward,
//! which scatters one sample at a time and took over half of a training step.
//!
//! The forward pass reads each tap's F features from a channel-last copy of the planes; the backward pass
//! scatters each sample's feature gradient into a per-thread buffer, and the buffers are summed. Gradients
//! reach the planes through a [`PlaneTape`]: the sampled features enter libtorch's graph as a leaf, and after
//! the loss's backward pass the tape hands their gradient to the planes.

use std::ops::{Add, AddAssign, Mul};

use rayon::prelude::*;
use tch::{Kind, Tensor};

/// Which coordinates index each plane, as (column, row): the xy, xz and yz planes.
const PLANE_AXES: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];

/// Points per parallel work item.
const POINTS_PER_TASK: usize = 2048;

/// The element types the kernels run in: f32 for training, f64 for the reference tests.
trait Scalar:
    tch::kind::Element + Copy + Default + Send + Sync + Add<Output = Self> + Mul<Output = Self> + AddAssign
{
    fn from_f64(value: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Scalar for f32 {
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Scalar for f64 {
    fn from_f64(value: f64) -> Self {
        value
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// The four bilinear taps of box coordinates (u, v) ∈ [-1, 1]² on an R × R plane: (texel index, weight); taps
/// outside the plane get weight 0 (zero padding).
fn taps(u: f64, v: f64, r: usize) -> [(usize, f64); 4] {
    let x = ((u + 1.0) * r as f64 - 1.0) / 2.0;
    let y = ((v + 1.0) * r as f64 - 1.0) / 2.0;
    let (x0, y0) = (round_down(x), round_down(y));
    let (fx, fy) = (x - x0, y - y0);
    let tap = |dx: f64, dy: f64, weight: f64| {
        let (column, row) = (x0 + dx, y0 + dy);
        if column < 0.0 || row < 0.0 || column >= r as f64 || row >= r as f64 || !weight.is_finite() {
            (0, 0.0)
        } else {
            (row as usize * r + column as usize, weight)
        }
    };
    [
        tap(0.0, 0.0, (1.0 - fx) * (1.0 - fy)),
        tap(1.0, 0.0, fx * (1.0 - fy)),
        tap(0.0, 1.0, (1.0 - fx) * fy),
        tap(1.0, 1.0, fx * fy),
    ]
}

/// `value.floor()` for values well inside i64's range, without the libm call `floor` is on targets without
/// SSE 4.1 (a sixth of the kernels' time). NaN gives 0; its taps are dropped by the weight check.
fn round_down(value: f64) -> f64 {
    let truncated = value as i64 as f64;
    if truncated > value { truncated - 1.0 } else { truncated }
}

fn to_vec<T: Scalar>(tensor: &Tensor) -> Vec<T> {
    Vec::<T>::try_from(tensor.detach().contiguous().view([-1])).expect("a contiguous tensor of the planes' kind")
}

/// The features `[N, F]` at points `[N, 3]`: the bilinear samples of the three planes `[3, F, R, R]`,
/// summed. No gradient is tracked (see [`PlaneTape`]).
pub(crate) fn sample(planes: &Tensor, points: &Tensor) -> Tensor {
    match planes.kind() {
        Kind::Double => sample_as::<f64>(planes, points),
        _ => sample_as::<f32>(planes, points),
    }
}

fn sample_as<T: Scalar>(planes: &Tensor, points: &Tensor) -> Tensor {
    let size = planes.size();
    let (f, r) = (size[1] as usize, size[2] as usize);
    let channel_last: Vec<T> = to_vec(&planes.permute([0, 2, 3, 1]));
    let points: Vec<T> = to_vec(&points.to_kind(planes.kind()));
    let n = points.len() / 3;
    let mut features = vec![T::default(); n * f];
    features
        .par_chunks_mut(POINTS_PER_TASK * f)
        .enumerate()
        .for_each(|(task, block)| {
            let first = task * POINTS_PER_TASK;
            for (k, out) in block.chunks_mut(f).enumerate() {
                let p = &points[(first + k) * 3..][..3];
                for (plane, (a, b)) in PLANE_AXES.into_iter().enumerate() {
                    for (texel, weight) in taps(p[a].to_f64(), p[b].to_f64(), r) {
                        if weight == 0.0 {
                            continue;
                        }
                        let w = T::from_f64(weight);
                        let row = &channel_last[(plane * r * r + texel) * f..][..f];
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o += w * v;
                        }
                    }
                }
            }
        });
    Tensor::from_slice(&features).view([n as i64, f as i64])
}

/// The planes' gradient `[3, F, R, R]` from the features' gradient `[N, F]` at points `[N, 3]`: the transpose
/// of [`sample`].
pub(crate) fn scatter(points: &Tensor, gradient: &Tensor, resolution: i64) -> Tensor {
    match gradient.kind() {
        Kind::Double => scatter_as::<f64>(points, gradient, resolution),
        _ => scatter_as::<f32>(points, gradient, resolution),
    }
}

fn scatter_as<T: Scalar>(points: &Tensor, gradient: &Tensor, resolution: i64) -> Tensor {
    let f = gradient.size()[1] as usize;
    let r = resolution as usize;
    let points: Vec<T> = to_vec(&points.to_kind(gradient.kind()));
    let gradient: Vec<T> = to_vec(gradient);
    let n = points.len() / 3;
    let texels = 3 * r * r * f;
    // One buffer per thread-sized share of the points, summed at the end (1.5 MiB each at IG-AE's sizes).
    let shares = rayon::current_num_threads().max(1);
    let per_share = n.div_ceil(shares).max(1);
    let total = (0..shares)
        .into_par_iter()
        .map(|share| {
            let mut buffer = vec![T::default(); texels];
            for k in share * per_share..((share + 1) * per_share).min(n) {
                let p = &points[k * 3..][..3];
                let g = &gradient[k * f..][..f];
                for (plane, (a, b)) in PLANE_AXES.into_iter().enumerate() {
                    for (texel, weight) in taps(p[a].to_f64(), p[b].to_f64(), r) {
                        if weight == 0.0 {
                            continue;
                        }
                        let w = T::from_f64(weight);
                        let row = &mut buffer[(plane * r * r + texel) * f..][..f];
                        for (o, &v) in row.iter_mut().zip(g) {
                            *o += w * v;
                        }
                    }
                }
            }
            buffer
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, &y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![T::default(); texels]);
    Tensor::from_slice(&total)
        .view([3, resolution, resolution, f as i64])
        .permute([0, 3, 1, 2])
        .contiguous()
}

/// The plane samples of a differentiable render: their features enter libtorch's graph as leaves, and
/// [`PlaneTape::backward`] hands the gradient the loss left on them to the planes. Renders without a tape
/// track no plane gradient.
#[derive(Default)]
pub struct PlaneTape {
    samples: Vec<(Tensor, Tensor)>,
}

impl PlaneTape {
    pub fn new() -> Self {
        PlaneTape::default()
    }

    /// `features` sampled at `points`, as a leaf whose gradient this tape will hand on.
    pub(crate) fn track(&mut self, points: &Tensor, features: Tensor) -> Tensor {
        let leaf = features.set_requires_grad(true);
        self.samples.push((points.detach(), leaf.shallow_clone()));
        leaf
    }

    /// After the loss's backward pass: adds the planes' share of the gradient to `planes.grad()`.
    pub fn backward(self, planes: &Tensor) {
        let resolution = planes.size()[2];
        let mut total: Option<Tensor> = None;
        for (points, leaf) in &self.samples {
            let gradient = leaf.grad();
            if !gradient.defined() {
                continue;
            }
            let part = scatter(points, &gradient, resolution);
            total = Some(match total {
                Some(sum) => sum + part,
                None => part,
            });
        }
        if let Some(total) = total {
            // d/dplanes Σ planes·G = G: libtorch accumulates it into the planes' gradient.
            (planes * total).sum(planes.kind()).backward();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The forward pass against libtorch's grid_sample (what the planes meant before this kernel), at points
    /// inside, on the edge of and outside the box; the backward pass as its exact transpose:
    /// ⟨sample(P), G⟩ = ⟨P, scatter(G)⟩ for random P and G.
    #[test]
    fn sampling_matches_grid_sample_and_scatter_is_its_transpose() {
        tch::manual_seed(4);
        let opts = (Kind::Double, Device::Cpu);
        let (f, r, n) = (3, 5, 40);
        let planes = Tensor::randn([3, f, r, r], opts);
        let points = Tensor::rand([n, 3], opts) * 2.4 - 1.2;
        let _ = points.get(0).copy_(&Tensor::from_slice(&[1.0f64, -1.0, 0.999]));
        let features = sample(&planes, &points);
        let (x, y, z) = (points.select(1, 0), points.select(1, 1), points.select(1, 2));
        let pairs = Tensor::stack(
            &[
                Tensor::stack(&[&x, &y], 1),
                Tensor::stack(&[&x, &z], 1),
                Tensor::stack(&[&y, &z], 1),
            ],
            0,
        )
        .view([3, 1, n, 2]);
        let expected = planes
            .grid_sampler(&pairs, 0, 0, false)
            .sum_dim_intlist(0, false, None)
            .squeeze_dim(1)
            .transpose(0, 1);
        let error = (&features - expected).abs().max().double_value(&[]);
        assert!(error < 1e-12, "max |difference| to grid_sample {error}");

        let gradient = Tensor::randn([n, f], opts);
        let left = (&features * &gradient).sum(Kind::Double).double_value(&[]);
        let right = (&planes * scatter(&points, &gradient, r))
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((left - right).abs() < 1e-9 * left.abs().max(1.0), "{left} vs {right}");
    }
}
