//! The planes' bilinear sampling, forward and backward, on the CPU: what libtorch's `grid_sample` computes
//! (bilinear, zero padding, `align_corners = False`) summed over the three planes, without its backward,
//! which scatters one sample at a time and took over half of a training step.
//!
//! The MLP's first layer is linear, so it is applied to the texels before sampling: W·Σᵢ wᵢ·fᵢ = Σᵢ wᵢ·(W·fᵢ).
//! The kernels read the projected texels `[3, R, R, H]` (channel-last, one small matrix product per query,
//! through libtorch's autograd) and yield the hidden layer's pre-activations: the MLP's widest matrix
//! product and both of its backward products are replaced by a gather of H values per tap.
//!
//! The forward pass gathers each tap's H values; the backward pass scatters each sample's gradient into a
//! per-thread buffer, and the buffers are summed. Gradients reach the texels through a [`PlaneTape`]: the
//! samples enter libtorch's graph as a leaf, and after the loss's backward pass the tape hands their
//! gradient to the texels, whose graph carries it on to the planes and the first layer's weights.

use std::ops::{Add, AddAssign, Mul};

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

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
#[inline(always)]
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
#[inline(always)]
fn round_down(value: f64) -> f64 {
    let truncated = value as i64 as f64;
    if truncated > value { truncated - 1.0 } else { truncated }
}

/// `tensor` as a contiguous CPU tensor of `T`, without gradient: itself when it already is one.
fn host<T: Scalar>(tensor: &Tensor) -> Tensor {
    tensor.detach().to_device(Device::Cpu).to_kind(T::KIND).contiguous()
}

/// The values of a tensor made by [`host`].
fn values<T: Scalar>(tensor: &Tensor) -> &[T] {
    debug_assert!(tensor.is_contiguous() && tensor.kind() == T::KIND && tensor.device() == Device::Cpu);
    if tensor.numel() == 0 {
        return &[];
    }
    // SAFETY: `host` made a contiguous CPU tensor of T, so its `numel` initialised elements lie from
    // `data_ptr`, aligned for T; the borrow cannot outlive the tensor that owns the storage.
    unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const T, tensor.numel()) }
}

/// The projected texels `[3, R, R, H]` of planes `[3, F, R, R]` under the first layer's weights `[H, F]`,
/// with libtorch's graph back to both.
pub(crate) fn project(planes: &Tensor, weights: &Tensor) -> Tensor {
    planes.permute([0, 2, 3, 1]).matmul(&weights.tr()).contiguous()
}

/// The values `[N, H]` at points `[N, 3]`: the bilinear samples of the three planes of `texels`
/// (`[3, R, R, H]`, from [`project`]), summed. No gradient is tracked (see [`PlaneTape`]).
pub(crate) fn sample(texels: &Tensor, points: &Tensor) -> Tensor {
    match texels.kind() {
        Kind::Double => sample_as::<f64>(texels, points),
        _ => sample_as::<f32>(texels, points),
    }
}

fn sample_as<T: Scalar>(texels: &Tensor, points: &Tensor) -> Tensor {
    let size = texels.size();
    let (r, h) = (size[1] as usize, size[3] as usize);
    let (texels, points) = (host::<T>(texels), host::<T>(points));
    let (texels, points) = (values::<T>(&texels), values::<T>(&points));
    let n = points.len() / 3;
    let out = Tensor::empty([n as i64, h as i64], (T::KIND, Device::Cpu));
    if n == 0 || h == 0 {
        return out;
    }
    // SAFETY: `out` is a fresh contiguous CPU tensor of n·h elements of T, written here and nowhere else;
    // every element is written (each row is zeroed before its taps are added).
    let samples = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, n * h) };
    samples
        .par_chunks_mut(POINTS_PER_TASK * h)
        .enumerate()
        .for_each(|(task, block)| {
            let first = task * POINTS_PER_TASK;
            lrf_splat::simd::dispatch(Gather {
                texels,
                points: &points[first * 3..],
                block,
                r,
                h,
            });
        });
    out
}

/// One work item of [`sample`], compiled for the CPU's widest vectors.
struct Gather<'a, T> {
    texels: &'a [T],
    points: &'a [T],
    block: &'a mut [T],
    r: usize,
    h: usize,
}

impl<T: Scalar> lrf_splat::simd::SimdTask for Gather<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Gather {
            texels,
            points,
            block,
            r,
            h,
        } = self;
        for (k, out) in block.chunks_mut(h).enumerate() {
            out.fill(T::default());
            let p = &points[k * 3..][..3];
            for (plane, (a, b)) in PLANE_AXES.into_iter().enumerate() {
                for (texel, weight) in taps(p[a].to_f64(), p[b].to_f64(), r) {
                    if weight == 0.0 {
                        continue;
                    }
                    let w = T::from_f64(weight);
                    let row = &texels[(plane * r * r + texel) * h..][..h];
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += w * v;
                    }
                }
            }
        }
    }
}

/// The texels' gradient `[3, R, R, H]` from the samples' gradient `[N, H]` at points `[N, 3]`: the transpose
/// of [`sample`].
pub(crate) fn scatter(points: &Tensor, gradient: &Tensor, resolution: i64) -> Tensor {
    match gradient.kind() {
        Kind::Double => scatter_as::<f64>(points, gradient, resolution),
        _ => scatter_as::<f32>(points, gradient, resolution),
    }
}

fn scatter_as<T: Scalar>(points: &Tensor, gradient: &Tensor, resolution: i64) -> Tensor {
    let h = gradient.size()[1] as usize;
    let r = resolution as usize;
    let (points, gradient) = (host::<T>(points), host::<T>(gradient));
    let (points, gradient) = (values::<T>(&points), values::<T>(&gradient));
    let n = points.len() / 3;
    let texels = 3 * r * r * h;
    // One buffer per thread-sized share of the points, summed at the end (3 MiB each at IG-AE's sizes).
    let shares = rayon::current_num_threads().max(1);
    let per_share = n.div_ceil(shares).max(1);
    let total = (0..shares)
        .into_par_iter()
        .map(|share| {
            let mut buffer = vec![T::default(); texels];
            let (start, end) = ((share * per_share).min(n), ((share + 1) * per_share).min(n));
            lrf_splat::simd::dispatch(Scatter {
                points: &points[start * 3..end * 3],
                gradient: &gradient[start * h..end * h],
                buffer: &mut buffer,
                r,
                h,
            });
            buffer
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, &y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![T::default(); texels]);
    Tensor::from_slice(&total).view([3, resolution, resolution, h as i64])
}

/// One share of [`scatter`], compiled for the CPU's widest vectors.
struct Scatter<'a, T> {
    points: &'a [T],
    gradient: &'a [T],
    buffer: &'a mut [T],
    r: usize,
    h: usize,
}

impl<T: Scalar> lrf_splat::simd::SimdTask for Scatter<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Scatter {
            points,
            gradient,
            buffer,
            r,
            h,
        } = self;
        for (p, g) in points.chunks_exact(3).zip(gradient.chunks_exact(h)) {
            for (plane, (a, b)) in PLANE_AXES.into_iter().enumerate() {
                for (texel, weight) in taps(p[a].to_f64(), p[b].to_f64(), r) {
                    if weight == 0.0 {
                        continue;
                    }
                    let w = T::from_f64(weight);
                    let row = &mut buffer[(plane * r * r + texel) * h..][..h];
                    for (o, &v) in row.iter_mut().zip(g) {
                        *o += w * v;
                    }
                }
            }
        }
    }
}

/// The samples of a differentiable render: they enter libtorch's graph as leaves, and
/// [`PlaneTape::backward`] hands the gradient the loss left on them to the texels they were sampled from,
/// whose graph leads to the planes and the first layer. Renders without a tape track no gradient for
/// either.
#[derive(Default)]
pub struct PlaneTape {
    samples: Vec<TapedSamples>,
}

/// One query's samples: where they were taken, the leaf the loss's gradient lands on, and the texels.
struct TapedSamples {
    points: Tensor,
    leaf: Tensor,
    texels: Tensor,
}

impl PlaneTape {
    pub fn new() -> Self {
        PlaneTape::default()
    }

    /// `samples` of `texels` at `points`, as a leaf whose gradient this tape will hand on.
    pub(crate) fn track(&mut self, points: &Tensor, texels: &Tensor, samples: Tensor) -> Tensor {
        let leaf = samples.set_requires_grad(true);
        self.samples.push(TapedSamples {
            points: points.detach(),
            leaf: leaf.shallow_clone(),
            texels: texels.shallow_clone(),
        });
        leaf
    }

    /// After the loss's backward pass: adds the planes' and the first layer's share of the gradient to
    /// their `grad()`.
    pub fn backward(self) {
        let mut total: Option<Tensor> = None;
        for TapedSamples { points, leaf, texels } in &self.samples {
            let gradient = leaf.grad();
            if !gradient.defined() || !texels.requires_grad() {
                continue;
            }
            // d/dtexels Σ texels·G = G: libtorch carries it through the projection.
            let part = (texels * scatter(points, &gradient, texels.size()[1])).sum(texels.kind());
            total = Some(match total {
                Some(sum) => sum + part,
                None => part,
            });
        }
        if let Some(total) = total {
            total.backward();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The forward pass against libtorch's grid_sample followed by the first layer (what the field computed
    /// before the projection), at points inside, on the edge of and outside the box; the backward pass as its
    /// exact transpose: ⟨sample(T), G⟩ = ⟨T, scatter(G)⟩ for random T and G.
    #[test]
    fn sampling_matches_grid_sample_and_scatter_is_its_transpose() {
        tch::manual_seed(4);
        let opts = (Kind::Double, Device::Cpu);
        let (f, h, r, n) = (3, 4, 5, 40);
        let planes = Tensor::randn([3, f, r, r], opts);
        let weights = Tensor::randn([h, f], opts);
        let points = Tensor::rand([n, 3], opts) * 2.4 - 1.2;
        let _ = points.get(0).copy_(&Tensor::from_slice(&[1.0f64, -1.0, 0.999]));
        let texels = project(&planes, &weights);
        let samples = sample(&texels, &points);
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
        let features = planes
            .grid_sampler(&pairs, 0, 0, false)
            .sum_dim_intlist(0, false, None)
            .squeeze_dim(1)
            .transpose(0, 1);
        let expected = features.matmul(&weights.tr());
        let error = (&samples - expected).abs().max().double_value(&[]);
        assert!(error < 1e-12, "max |difference| to grid_sample and the layer {error}");

        let gradient = Tensor::randn([n, h], opts);
        let left = (&samples * &gradient).sum(Kind::Double).double_value(&[]);
        let right = (&texels * scatter(&points, &gradient, r))
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((left - right).abs() < 1e-9 * left.abs().max(1.0), "{left} vs {right}");
    }
}
