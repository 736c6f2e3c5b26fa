//! The first half of the field's query on the CPU, fused per sample: the three planes' bilinear taps (what
//! libtorch's `grid_sample` computes: bilinear, zero padding, `align_corners = False`, summed over the
//! planes), the hidden layer's bias and its softplus; and the transpose of all three for the backward pass.
//! Built from libtorch operators, this half spent its time in grid_sample's backward (which scatters one
//! sample at a time), in the first layer's matrix products, and in elementwise passes over `[samples, 64]`
//! tensors. The output layer stays a libtorch matrix product, which MKL runs faster than a per-sample loop.
//!
//! The first layer is linear, so it is applied to the texels before sampling (W·Σᵢ wᵢ·fᵢ = Σᵢ wᵢ·(W·fᵢ)):
//! the kernels read projected texels `[3, R, R, H]`, channel-last, made by one small matrix product through
//! libtorch's autograd.
//!
//! Gradients reach the planes and the first layer through a [`PlaneTape`]: the hidden activations enter
//! libtorch's graph as a leaf (with the softplus's slope kept beside them); after the loss's backward pass
//! the tape runs the transpose kernel and hands the gradients on: to the texels, whose graph carries them to
//! the planes and the first layer's weights, and to the first layer's bias.

use lrf_splat::real::Real;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor, nn};

/// Which coordinates index each plane, as (column, row): the xy, xz and yz planes.
const PLANE_AXES: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];

/// Points per parallel work item of the forward kernel.
const POINTS_PER_TASK: usize = 2048;

/// Above this, softplus(x) is x, as libtorch's default threshold has it.
const SOFTPLUS_THRESHOLD: f64 = 20.0;

/// softplus(x) and its derivative, the sigmoid, branch-free so that loops over a sample's hidden values
/// vectorise: max(x, 0) + log1p(e^−|x|), with log1p(e) = ln(u)·e/(u − 1) for u = 1 + e (exact where u
/// rounds to 1), so that softplus keeps its relative accuracy far below 0 (down to f32's clamp of exp at −87).
#[inline(always)]
fn softplus_and_slope<T: Real>(x: T) -> (T, T) {
    let e = (-x.abs()).fast_exp();
    let u = T::ONE + e;
    let log1p = if u == T::ONE { e } else { u.fast_ln() * e / (u - T::ONE) };
    let softplus = if x > T::of(SOFTPLUS_THRESHOLD) {
        x
    } else {
        x.max(T::ZERO) + log1p
    };
    let slope = if x >= T::ZERO { T::ONE / u } else { e / u };
    (softplus, slope)
}

/// Points whose taps are computed together, tap by tap across the points, so that the arithmetic
/// vectorises; computed one point at a time, in f64 with branches, the taps cost as much as reading the rows.
const TAP_BLOCK: usize = 64;

/// Lanes of the row sums: one AVX-512 register of f32.
const LANES: usize = 16;

/// The twelve bilinear taps (three planes of four) of up to [`TAP_BLOCK`] points: where each tap's row of
/// H values starts in the texels, and its weight. A tap outside its plane (zero padding), or of a
/// non-finite point, has weight 0 and reads row 0 of its plane.
struct BlockTaps<T> {
    starts: [[usize; TAP_BLOCK]; 12],
    weights: [[T; TAP_BLOCK]; 12],
}

impl<T: Real> BlockTaps<T> {
    fn new() -> Self {
        BlockTaps {
            starts: [[0; TAP_BLOCK]; 12],
            weights: [[T::ZERO; TAP_BLOCK]; 12],
        }
    }

    /// The taps of `points` (`[k, 3]`, k ≤ [`TAP_BLOCK`]) on R × R planes of rows of `h` values, with
    /// grid_sample's `align_corners = False` convention: box coordinate u maps to texel (u + 1)·R/2 − 1/2.
    #[inline(always)]
    fn fill(&mut self, points: &[T], r: usize, h: usize) {
        let half = T::of(r as f64 / 2.0);
        let (one, a_half) = (T::of(1.0), T::of(0.5));
        // Clamped before the integer cast; columns and rows outside [0, R) are dropped below.
        let (low, high) = (T::of(-2.0), T::of(r as f64 + 1.0));
        let clamp = |v: T| {
            if v < low {
                low
            } else if v > high {
                high
            } else {
                v
            }
        };
        let size = r as u32;
        for (plane, (a, b)) in PLANE_AXES.into_iter().enumerate() {
            for (k, point) in points.chunks_exact(3).enumerate() {
                let x = (point[a] + one) * half - a_half;
                let y = (point[b] + one) * half - a_half;
                let finite = x.is_finite() & y.is_finite();
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (column, row) = (clamp(x0).to_f64() as i32, clamp(y0).to_f64() as i32);
                let corners = [
                    (column, row, (one - fx) * (one - fy)),
                    (column + 1, row, fx * (one - fy)),
                    (column, row + 1, (one - fx) * fy),
                    (column + 1, row + 1, fx * fy),
                ];
                for (corner, (corner_column, corner_row, weight)) in corners.into_iter().enumerate() {
                    let inside = finite & ((corner_column as u32) < size) & ((corner_row as u32) < size);
                    let texel = if inside {
                        corner_row as usize * r + corner_column as usize
                    } else {
                        0
                    };
                    self.starts[plane * 4 + corner][k] = (plane * r * r + texel) * h;
                    self.weights[plane * 4 + corner][k] = if inside { weight } else { T::ZERO };
                }
            }
        }
    }
}

/// `tensor` as a contiguous CPU tensor of `T`, without gradient: itself when it already is one.
fn host<T: Real>(tensor: &Tensor) -> Tensor {
    tensor.detach().to_device(Device::Cpu).to_kind(T::KIND).contiguous()
}

/// The values of a tensor made by [`host`].
fn values<T: Real>(tensor: &Tensor) -> &[T] {
    debug_assert!(tensor.is_contiguous() && tensor.kind() == T::KIND && tensor.device() == Device::Cpu);
    if tensor.numel() == 0 {
        return &[];
    }
    // SAFETY: `host` made a contiguous CPU tensor of T, so its `numel` initialised elements lie from
    // `data_ptr`, aligned for T; the borrow cannot outlive the tensor that owns the storage.
    unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const T, tensor.numel()) }
}

/// The values of a fresh contiguous CPU tensor of `T`, to write.
///
/// # Safety
/// Nothing else may read or write the tensor's storage while the slice lives.
unsafe fn values_mut<T: Real>(tensor: &mut Tensor) -> &mut [T] {
    debug_assert!(tensor.is_contiguous() && tensor.kind() == T::KIND && tensor.device() == Device::Cpu);
    if tensor.numel() == 0 {
        return &mut [];
    }
    // SAFETY: a contiguous CPU tensor of T holds `numel` elements from `data_ptr`, aligned for T; the caller
    // guarantees exclusive use, and the borrow cannot outlive the tensor.
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut T, tensor.numel()) }
}

/// The first layer as the kernels run it, as tensors that carry libtorch's graph back to the field's
/// variables.
pub(crate) struct HiddenLayer {
    /// `[3, R, R, H]`: the planes under the first layer's weights.
    pub texels: Tensor,
    /// `[H]`
    pub bias: Tensor,
}

impl HiddenLayer {
    /// The texels of planes `[3, F, R, R]` under `linear`, and its bias.
    pub fn new(planes: &Tensor, linear: &nn::Linear) -> HiddenLayer {
        HiddenLayer {
            texels: planes.permute([0, 2, 3, 1]).matmul(&linear.ws.tr()).contiguous(),
            bias: match &linear.bs {
                Some(bias) => bias.shallow_clone(),
                None => linear.ws.zeros_like().select(1, 0),
            },
        }
    }
}

/// The layer's values on the host.
#[derive(Clone, Copy)]
struct HostLayer<'a, T> {
    texels: &'a [T],
    bias: &'a [T],
    resolution: usize,
    hidden: usize,
}

impl<T: Real> HostLayer<'_, T> {
    /// The pre-activations of point `k` of `taps`, into `pre` (`[H]`): the bias plus each tap's weighted
    /// row, summed [`LANES`] values at a time so that each sum stays in a register.
    #[inline(always)]
    fn pre_activations(&self, taps: &BlockTaps<T>, k: usize, pre: &mut [T]) {
        let h = self.hidden;
        let mut first = 0;
        while first + LANES <= h {
            let mut sum = [T::ZERO; LANES];
            sum.copy_from_slice(&self.bias[first..first + LANES]);
            for (starts, weights) in taps.starts.iter().zip(&taps.weights) {
                let (row, w) = (&self.texels[starts[k] + first..][..LANES], weights[k]);
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += w * v;
                }
            }
            pre[first..first + LANES].copy_from_slice(&sum);
            first += LANES;
        }
        for (i, p) in pre.iter_mut().enumerate().skip(first) {
            *p = self.bias[i];
            for (starts, weights) in taps.starts.iter().zip(&taps.weights) {
                *p += weights[k] * self.texels[starts[k] + i];
            }
        }
    }
}

/// The hidden activations at points `[N, 3]` and the softplus's slope there, both `[N, H]`. No gradient is
/// tracked (see [`PlaneTape`]).
pub(crate) fn hidden_activations(layer: &HiddenLayer, points: &Tensor) -> (Tensor, Tensor) {
    match layer.texels.kind() {
        Kind::Double => hidden_activations_as::<f64>(layer, points),
        _ => hidden_activations_as::<f32>(layer, points),
    }
}

fn hidden_activations_as<T: Real>(layer: &HiddenLayer, points: &Tensor) -> (Tensor, Tensor) {
    let size = layer.texels.size();
    let (r, h) = (size[1] as usize, size[3] as usize);
    let (texels, bias, points) = (host::<T>(&layer.texels), host::<T>(&layer.bias), host::<T>(points));
    let layer = HostLayer {
        texels: values::<T>(&texels),
        bias: values::<T>(&bias),
        resolution: r,
        hidden: h,
    };
    let points = values::<T>(&points);
    let n = points.len() / 3;
    let mut hidden = Tensor::empty([n as i64, h as i64], (T::KIND, Device::Cpu));
    let mut slope = Tensor::empty([n as i64, h as i64], (T::KIND, Device::Cpu));
    if n == 0 || h == 0 {
        return (hidden, slope);
    }
    // SAFETY: both tensors are fresh and this function their only user; every value is written below.
    let (hidden_values, slope_values) = unsafe { (values_mut::<T>(&mut hidden), values_mut::<T>(&mut slope)) };
    hidden_values
        .par_chunks_mut(POINTS_PER_TASK * h)
        .zip(slope_values.par_chunks_mut(POINTS_PER_TASK * h))
        .zip(points.par_chunks(POINTS_PER_TASK * 3))
        .for_each(|((hidden, slope), points)| {
            lrf_splat::simd::dispatch(Forward {
                layer,
                points,
                hidden,
                slope,
            })
        });
    (hidden, slope)
}

/// One work item of [`hidden_activations`], compiled for the CPU's widest vectors.
struct Forward<'a, T> {
    layer: HostLayer<'a, T>,
    points: &'a [T],
    hidden: &'a mut [T],
    slope: &'a mut [T],
}

impl<T: Real> lrf_splat::simd::SimdTask for Forward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Forward {
            layer,
            points,
            hidden,
            slope,
        } = self;
        let h = layer.hidden;
        let mut taps = BlockTaps::new();
        for ((points, hidden), slope) in points
            .chunks(TAP_BLOCK * 3)
            .zip(hidden.chunks_mut(TAP_BLOCK * h))
            .zip(slope.chunks_mut(TAP_BLOCK * h))
        {
            taps.fill(points, layer.resolution, h);
            for (k, (hidden, slope)) in hidden.chunks_exact_mut(h).zip(slope.chunks_exact_mut(h)).enumerate() {
                layer.pre_activations(&taps, k, hidden);
                for (value, s) in hidden.iter_mut().zip(slope.iter_mut()) {
                    (*value, *s) = softplus_and_slope(*value);
                }
            }
        }
    }
}

/// The gradients of a [`HiddenLayer`].
pub(crate) struct HiddenLayerGradients {
    pub texels: Tensor,
    pub bias: Tensor,
}

/// The layer's gradients from the hidden activations' gradient `[N, H]` at points `[N, 3]`, with the
/// softplus's `slope` there: the transpose of [`hidden_activations`].
pub(crate) fn hidden_activations_backward(
    layer: &HiddenLayer,
    points: &Tensor,
    slope: &Tensor,
    gradient: &Tensor,
) -> HiddenLayerGradients {
    match gradient.kind() {
        Kind::Double => backward_as::<f64>(layer, points, slope, gradient),
        _ => backward_as::<f32>(layer, points, slope, gradient),
    }
}

fn backward_as<T: Real>(
    layer: &HiddenLayer,
    points: &Tensor,
    slope: &Tensor,
    gradient: &Tensor,
) -> HiddenLayerGradients {
    let size = layer.texels.size();
    let (r, h) = (size[1] as usize, size[3] as usize);
    let (points, slope, gradient) = (host::<T>(points), host::<T>(slope), host::<T>(gradient));
    let (points, slope, gradient) = (values::<T>(&points), values::<T>(&slope), values::<T>(&gradient));
    let n = points.len() / 3;
    let texel_count = 3 * r * r * h;
    // One pair of buffers per thread-sized share of the points (3 MiB of texels each at IG-AE's sizes).
    let shares = rayon::current_num_threads().max(1);
    let per_share = n.div_ceil(shares).max(1);
    let zeros = || (vec![T::ZERO; texel_count], vec![T::ZERO; h]);
    let (texels, bias) = (0..shares)
        .into_par_iter()
        .map(|share| {
            let (mut texels, mut bias) = zeros();
            let (start, end) = ((share * per_share).min(n), ((share + 1) * per_share).min(n));
            lrf_splat::simd::dispatch(Backward {
                points: &points[start * 3..end * 3],
                slope: &slope[start * h..end * h],
                gradient: &gradient[start * h..end * h],
                texels: &mut texels,
                bias: &mut bias,
                resolution: r,
                hidden: h,
            });
            (texels, bias)
        })
        .reduce_with(|(mut texels, mut bias), (other_texels, other_bias)| {
            texels.iter_mut().zip(&other_texels).for_each(|(x, &y)| *x += y);
            bias.iter_mut().zip(&other_bias).for_each(|(x, &y)| *x += y);
            (texels, bias)
        })
        .unwrap_or_else(zeros);
    HiddenLayerGradients {
        texels: Tensor::from_slice(&texels).view(size.as_slice()),
        bias: Tensor::from_slice(&bias),
    }
}

/// One share of [`hidden_activations_backward`], compiled for the CPU's widest vectors.
struct Backward<'a, T> {
    points: &'a [T],
    slope: &'a [T],
    gradient: &'a [T],
    texels: &'a mut [T],
    bias: &'a mut [T],
    resolution: usize,
    hidden: usize,
}

impl<T: Real> lrf_splat::simd::SimdTask for Backward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Backward {
            points,
            slope,
            gradient,
            texels,
            bias,
            resolution: r,
            hidden: h,
        } = self;
        let mut upstream = vec![T::ZERO; h];
        let mut taps = BlockTaps::new();
        for ((points, slope), gradient) in points
            .chunks(TAP_BLOCK * 3)
            .zip(slope.chunks(TAP_BLOCK * h))
            .zip(gradient.chunks(TAP_BLOCK * h))
        {
            taps.fill(points, r, h);
            for (k, (slope, g)) in slope.chunks_exact(h).zip(gradient.chunks_exact(h)).enumerate() {
                for (((u, &s), &g), db) in upstream.iter_mut().zip(slope).zip(g).zip(bias.iter_mut()) {
                    *u = g * s;
                    *db += *u;
                }
                for (starts, weights) in taps.starts.iter().zip(&taps.weights) {
                    let w = weights[k];
                    if w == T::ZERO {
                        continue;
                    }
                    for (t, &u) in texels[starts[k]..starts[k] + h].iter_mut().zip(&upstream) {
                        *t += w * u;
                    }
                }
            }
        }
    }
}

/// The hidden layers of a differentiable render: their activations enter libtorch's graph as leaves, and
/// [`PlaneTape::backward`] hands the gradient the loss left on them to the layers they were computed with,
/// whose graph leads to the planes and the first layer. Renders without a tape track no gradient for
/// either.
#[derive(Default)]
pub struct PlaneTape {
    queries: Vec<TapedQuery>,
}

/// One query: where it was made, the leaf the loss's gradient lands on, the softplus's slope, the layer.
struct TapedQuery {
    points: Tensor,
    leaf: Tensor,
    slope: Tensor,
    layer: HiddenLayer,
}

impl PlaneTape {
    pub fn new() -> Self {
        PlaneTape::default()
    }

    /// `hidden`, the activations of `layer` at `points` with the softplus's `slope`, as a leaf whose
    /// gradient this tape will hand on.
    pub(crate) fn track(&mut self, points: &Tensor, layer: HiddenLayer, hidden: Tensor, slope: Tensor) -> Tensor {
        let leaf = hidden.set_requires_grad(true);
        self.queries.push(TapedQuery {
            points: points.detach(),
            leaf: leaf.shallow_clone(),
            slope,
            layer,
        });
        leaf
    }

    /// After the loss's backward pass: adds the planes' and the first layer's share of the gradient to their
    /// `grad()`.
    pub fn backward(self) {
        let mut total: Option<Tensor> = None;
        for TapedQuery {
            points,
            leaf,
            slope,
            layer,
        } in &self.queries
        {
            let gradient = leaf.grad();
            if !gradient.defined() {
                continue;
            }
            let gradients = hidden_activations_backward(layer, points, slope, &gradient);
            // d/dθ Σ θ·G = G for each layer tensor θ: libtorch carries it on through the projection.
            let kind = layer.texels.kind();
            let part = (&layer.texels * gradients.texels).sum(kind) + (&layer.bias * gradients.bias).sum(kind);
            total = Some(match total {
                Some(sum) => sum + part,
                None => part,
            });
        }
        if let Some(total) = total.filter(Tensor::requires_grad) {
            total.backward();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels' hidden layer, followed by the output layer, against libtorch's operators (grid_sample
    /// over the planes, the two linear layers, softplus) at points inside, on the edge of and outside the
    /// box, and the backward kernel with the tape against libtorch's autograd of those operators, for every
    /// parameter.
    #[test]
    fn the_kernels_and_their_transpose_match_libtorch() {
        tch::manual_seed(4);
        let opts = (Kind::Double, Device::Cpu);
        // H = 20: one register-wide group of hidden values and a remainder.
        let (f, h, o, r, n) = (3, 20, 3, 5, 40);
        let vars = nn::VarStore::new(Device::Cpu);
        let root = vars.root();
        let planes = root.var("planes", &[3, f, r, r], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let hidden = nn::linear(&root / "hidden", f, h, Default::default());
        let out = nn::linear(&root / "out", h, o, Default::default());
        let mut vars = vars;
        vars.double();
        let points = Tensor::rand([n, 3], opts) * 2.4 - 1.2;
        let _ = points.get(0).copy_(&Tensor::from_slice(&[1.0f64, -1.0, 0.999]));
        let gradient = Tensor::randn([n, o], opts);

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
        let expected = features.apply(&hidden).softplus().apply(&out);
        (&expected * &gradient).sum(Kind::Double).backward();
        let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let expected_gradients: Vec<Tensor> = named.iter().map(|(_, v)| v.grad().copy()).collect();
        for (_, v) in &named {
            let _ = v.grad().zero_();
        }

        let layer = HiddenLayer::new(&planes, &hidden);
        let (activations, slope) = hidden_activations(&layer, &points);
        let mut tape = PlaneTape::new();
        let raw = tape.track(&points, layer, activations, slope).apply(&out);
        let error = (&raw - &expected).abs().max().double_value(&[]);
        assert!(error < 1e-12, "max |difference| to libtorch's query {error}");
        (&raw * &gradient).sum(Kind::Double).backward();
        tape.backward();
        for ((name, v), want) in named.iter().zip(&expected_gradients) {
            let error = (v.grad() - want).abs().max().double_value(&[]);
            assert!(error < 1e-12, "{name}: max |difference| to autograd {error}");
            assert!(
                want.abs().max().double_value(&[]) > 1e-3,
                "{name}'s gradient is not trivial"
            );
        }
    }

    /// The f32 kernels' softplus and sigmoid against libm's in f64, from deep in the negative range to past
    /// the threshold: relative errors, with values below 1e-30 (where f32's exp is clamped) counted as 1e-30.
    #[test]
    fn the_f32_softplus_and_slope_are_accurate() {
        let mut worst = (0.0f64, 0.0f64);
        for i in -20_000..=20_000 {
            let x = (i as f64 * 0.005) as f32;
            let (softplus, slope) = softplus_and_slope(x);
            let x = x as f64;
            let want_softplus = if x > SOFTPLUS_THRESHOLD { x } else { x.exp().ln_1p() };
            let want_slope = 1.0 / (1.0 + (-x).exp());
            worst.0 = worst
                .0
                .max((softplus as f64 - want_softplus).abs() / want_softplus.max(1e-30));
            worst.1 = worst.1.max((slope as f64 - want_slope).abs() / want_slope.max(1e-30));
        }
        assert!(worst.0 < 1e-6 && worst.1 < 1e-6, "relative errors {worst:?}");
    }
}
