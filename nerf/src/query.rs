//! The field's query on the CPU, the whole MLP fused per block of samples: the three planes' bilinear taps
//! (what libtorch's `grid_sample` computes: bilinear, zero padding, `align_corners = False`, summed over
//! the planes), the hidden layer's bias and softplus, the output layer and the colours' sigmoid; and the
//! transpose of all of it for the backward pass. Built from libtorch operators, the query spent its time in
//! grid_sample's backward (which scatters one sample at a time), in the layers' matrix products and in
//! elementwise passes, copies and fills over `[samples, 64]` and `[samples, 33]` tensors; with the output
//! layer left to libtorch, in its autograd's copies and OpenMP's idle workers. Here the output layer's
//! products run per block of [`PRODUCT_ROWS`] samples inside the kernels' parallel shares, while the block's
//! activations are in cache.
//!
//! The first layer is linear, so it is applied to the texels before sampling (W·Σᵢ wᵢ·fᵢ = Σᵢ wᵢ·(W·fᵢ)):
//! the kernels read projected texels `[3, R, R, H]`, channel-last, made by one small matrix product through
//! libtorch's autograd.
//!
//! Gradients reach the field through a [`PlaneTape`]: the densities and colours enter libtorch's graph as
//! leaves (with the hidden activations and the softplus's slope kept beside them); after the loss's backward
//! pass the tape runs the transpose kernel and hands the gradients on: to the texels, whose graph carries
//! them to the planes and the first layer's weights, and to the biases and the output layer's weights.

use std::rc::Rc;

use lrf_splat::real::Real;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor, nn};

/// Which coordinates index each plane, as (column, row): the xy, xz and yz planes.
const PLANE_AXES: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];

/// Points per parallel work item of the forward kernel.
const POINTS_PER_TASK: usize = 2048;

/// Points whose output layer is one matrix product: large enough that the product's packing is a small
/// share of it, small enough that its activations stay in the core's cache.
const PRODUCT_ROWS: usize = 512;

/// Above this, softplus(x) is x, as libtorch's default threshold has it.
const SOFTPLUS_THRESHOLD: f64 = 20.0;

/// softplus(x) and its derivative, the sigmoid, branch-free so that loops over a sample's hidden values
/// vectorise: max(x, 0) + log1p(e^−|x|), with log1p by a polynomial on [0, 1], which keeps softplus's relative
/// accuracy far below 0 (down to f32's clamp of exp at −87). A logarithm's range reduction and a division in
/// its place cost half of the forward kernel's time.
#[inline(always)]
fn softplus_and_slope<T: Real>(x: T) -> (T, T) {
    let e = (-x.abs()).fast_exp();
    let softplus = if x > T::of(SOFTPLUS_THRESHOLD) {
        x
    } else {
        x.max(T::ZERO) + e.fused_ln_1p_unit()
    };
    let slope = if x >= T::ZERO { T::ONE } else { e } / (T::ONE + e);
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
        // Clamped first; columns and rows outside [0, R) are dropped below.
        let (low, high) = (T::of(-2.0), T::of(r as f64 + 1.0));
        let index = |v: T| {
            let v = if v < low {
                low
            } else if v > high {
                high
            } else {
                v
            };
            integer(v)
        };
        let size = r as u32;
        for (plane, (a, b)) in PLANE_AXES.into_iter().enumerate() {
            for (k, point) in points.chunks_exact(3).enumerate() {
                let x = (point[a] + one) * half - a_half;
                let y = (point[b] + one) * half - a_half;
                let finite = x.is_finite() & y.is_finite();
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (column, row) = (index(x0), index(y0));
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

/// An integer-valued `v` with |v| < 2^31 as an i32, by the bits of v + 1.5·2^52, which holds v in its low
/// mantissa bits: Rust's saturating `as` cast does not vectorise, and would keep the taps' loops scalar. NaN
/// gives an unspecified value.
#[inline(always)]
fn integer<T: Real>(v: T) -> i32 {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    ((v.to_f64() + SHIFT).to_bits() as i64 - SHIFT.to_bits() as i64) as i32
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

/// The field's MLP as the kernels run it, as tensors that carry libtorch's graph back to the field's
/// variables.
pub(crate) struct QueryLayers {
    /// `[3, R, R, H]`: the planes under the first layer's weights.
    pub texels: Tensor,
    /// `[H]`
    pub hidden_bias: Tensor,
    /// `[1 + C, H]`: row 0 gives the raw density, rows 1.. the colours' logits.
    pub output_weights: Tensor,
    /// `[1 + C]`
    pub output_bias: Tensor,
}

impl QueryLayers {
    /// The texels of planes `[3, F, R, R]` under the first layer `hidden`, and the output layer `out`.
    pub fn new(planes: &Tensor, hidden: &nn::Linear, out: &nn::Linear) -> QueryLayers {
        let bias = |linear: &nn::Linear| match &linear.bs {
            Some(bias) => bias.shallow_clone(),
            None => linear.ws.zeros_like().select(1, 0),
        };
        QueryLayers {
            texels: planes.permute([0, 2, 3, 1]).matmul(&hidden.ws.tr()).contiguous(),
            hidden_bias: bias(hidden),
            output_weights: out.ws.shallow_clone(),
            output_bias: bias(out),
        }
    }

    /// The layer tensors, in the order of [`query_backward`]'s gradients.
    fn tensors(&self) -> [&Tensor; 4] {
        [&self.texels, &self.hidden_bias, &self.output_weights, &self.output_bias]
    }
}

/// Host copies of the layers' values, in the layouts the kernels read.
struct HostLayers {
    texels: Tensor,
    hidden_bias: Tensor,
    output_weights: Tensor,
    output_bias: Tensor,
}

impl HostLayers {
    fn new<T: Real>(layers: &QueryLayers) -> HostLayers {
        HostLayers {
            texels: host::<T>(&layers.texels),
            hidden_bias: host::<T>(&layers.hidden_bias),
            output_weights: host::<T>(&layers.output_weights),
            output_bias: host::<T>(&layers.output_bias),
        }
    }

    fn view<T: Real>(&self) -> LayerValues<'_, T> {
        let size = self.texels.size();
        let output_bias = values::<T>(&self.output_bias);
        LayerValues {
            texels: values::<T>(&self.texels),
            hidden_bias: values::<T>(&self.hidden_bias),
            output_weights: values::<T>(&self.output_weights),
            sigma_bias: output_bias[0],
            color_bias: &output_bias[1..],
            resolution: size[1] as usize,
            hidden: size[3] as usize,
            channels: output_bias.len() - 1,
        }
    }
}

/// The layers' values on the host.
#[derive(Clone, Copy)]
struct LayerValues<'a, T> {
    texels: &'a [T],
    hidden_bias: &'a [T],
    output_weights: &'a [T],
    sigma_bias: T,
    color_bias: &'a [T],
    resolution: usize,
    hidden: usize,
    channels: usize,
}

impl<T: Real> LayerValues<'_, T> {
    /// The pre-activations of point `k` of `taps`, into `pre` (`[H]`): the bias plus each tap's weighted
    /// row, summed [`LANES`] values at a time so that each sum stays in a register.
    #[inline(always)]
    fn pre_activations(&self, taps: &BlockTaps<T>, k: usize, pre: &mut [T]) {
        let h = self.hidden;
        let mut first = 0;
        while first + LANES <= h {
            let mut sum = [T::ZERO; LANES];
            sum.copy_from_slice(&self.hidden_bias[first..first + LANES]);
            for (starts, weights) in taps.starts.iter().zip(&taps.weights) {
                let (row, w) = (&self.texels[starts[k] + first..][..LANES], weights[k]);
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s = w.mul_add(v, *s);
                }
            }
            pre[first..first + LANES].copy_from_slice(&sum);
            first += LANES;
        }
        for (i, p) in pre.iter_mut().enumerate().skip(first) {
            *p = self.hidden_bias[i];
            for (starts, weights) in taps.starts.iter().zip(&taps.weights) {
                *p += weights[k] * self.texels[starts[k] + i];
            }
        }
    }
}

/// A strided view of a row-major-or-transposed matrix, for [`multiply`].
#[derive(Clone, Copy)]
struct Matrix<'a, T> {
    values: &'a [T],
    rows: usize,
    columns: usize,
    row_stride: usize,
    column_stride: usize,
}

impl<'a, T> Matrix<'a, T> {
    /// `values` as `[rows, columns]`, row-major.
    fn rows(values: &'a [T], rows: usize, columns: usize) -> Self {
        Matrix {
            values,
            rows,
            columns,
            row_stride: columns,
            column_stride: 1,
        }
    }

    /// The transpose of [`Matrix::rows`].
    fn transposed(self) -> Self {
        Matrix {
            rows: self.columns,
            columns: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element lies inside `values`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.columns == 0
            || (self.rows - 1) * self.row_stride + (self.columns - 1) * self.column_stride < self.values.len()
    }
}

/// The signature of `matrixmultiply`'s products: C ← α·A·B + β·C for strided A, B and C.
type GemmFunction<T> =
    unsafe fn(usize, usize, usize, T, *const T, isize, isize, *const T, isize, isize, T, *mut T, isize, isize);

/// Matrix products on the host, by `matrixmultiply`'s packed kernels: the output layer's products are too
/// small for libtorch's threads, and run inside the kernels' parallel shares.
trait Gemm: Real {
    const GEMM: GemmFunction<Self>;
}

impl Gemm for f32 {
    const GEMM: GemmFunction<f32> = matrixmultiply::sgemm;
}

impl Gemm for f64 {
    const GEMM: GemmFunction<f64> = matrixmultiply::dgemm;
}

/// Whether [`multiply`] adds to its product's target or overwrites it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Product {
    Overwrite,
    Accumulate,
}

/// `c` (`[a.rows, b.columns]`, row-major) gets A·B, or A·B added.
fn multiply<T: Gemm>(a: Matrix<'_, T>, b: Matrix<'_, T>, product: Product, c: &mut [T]) {
    assert!(
        a.columns == b.rows && a.fits() && b.fits() && c.len() >= a.rows * b.columns,
        "matrix shapes"
    );
    let beta = if product == Product::Accumulate {
        T::ONE
    } else {
        T::ZERO
    };
    let (m, k, n) = (a.rows, a.columns, b.columns);
    let stride = |length: usize| length as isize;
    // SAFETY: the shapes were checked against the slices just above, and `c` is borrowed mutably, so it
    // overlaps neither input.
    unsafe {
        T::GEMM(
            m,
            k,
            n,
            T::ONE,
            a.values.as_ptr(),
            stride(a.row_stride),
            stride(a.column_stride),
            b.values.as_ptr(),
            stride(b.row_stride),
            stride(b.column_stride),
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        )
    }
}

/// The logistic function, branch-free and accurate far into both tails.
#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    let e = (-x.abs()).fast_exp();
    let u = T::ONE + e;
    if x >= T::ZERO { T::ONE / u } else { e / u }
}

/// What a query computes, all on the host.
pub(crate) struct QueryValues {
    /// Raw density, `[N]`.
    pub sigma: Tensor,
    /// Colour in [0, 1], `[N, C]`.
    pub color: Tensor,
    /// The hidden activations and the softplus's slope there, `[N, H]` each, kept for the backward pass.
    pub activations: Option<(Tensor, Tensor)>,
}

/// Whether a query keeps its hidden activations for a backward pass.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activations {
    Keep,
    Discard,
}

/// Raw density and colour at points `[N, 3]`. No gradient is tracked (see [`PlaneTape`]).
pub(crate) fn query_values(layers: &QueryLayers, points: &Tensor, activations: Activations) -> QueryValues {
    match layers.texels.kind() {
        Kind::Double => query_values_as::<f64>(layers, points, activations),
        _ => query_values_as::<f32>(layers, points, activations),
    }
}

fn query_values_as<T: Gemm>(layers: &QueryLayers, points: &Tensor, activations: Activations) -> QueryValues {
    let host_layers = HostLayers::new::<T>(layers);
    let layers = host_layers.view::<T>();
    let (h, c) = (layers.hidden, layers.channels);
    let points = host::<T>(points);
    let points = values::<T>(&points);
    let n = points.len() / 3;
    let fresh = |columns: usize| Tensor::empty([n as i64, columns as i64], (T::KIND, Device::Cpu));
    let (mut sigma, mut color) = (Tensor::empty([n as i64], (T::KIND, Device::Cpu)), fresh(c));
    let mut kept = (activations == Activations::Keep).then(|| (fresh(h), fresh(h)));
    if n > 0 && h > 0 {
        // SAFETY: the tensors are fresh and this function their only user; every value is written below.
        let (sigma_values, color_values) = unsafe { (values_mut::<T>(&mut sigma), values_mut::<T>(&mut color)) };
        let mut kept_values = kept
            .as_mut()
            .map(|(hidden, slope)| unsafe { (values_mut::<T>(hidden), values_mut::<T>(slope)) });
        let mut tasks: Vec<ForwardTask<'_, T>> = points
            .chunks(POINTS_PER_TASK * 3)
            .zip(sigma_values.chunks_mut(POINTS_PER_TASK))
            .zip(color_values.chunks_mut(POINTS_PER_TASK * c.max(1)))
            .map(|((points, sigma), color)| ForwardTask {
                points,
                sigma,
                color,
                activations: None,
            })
            .collect();
        if let Some((hidden, slope)) = kept_values.as_mut() {
            for ((task, hidden), slope) in tasks
                .iter_mut()
                .zip(hidden.chunks_mut(POINTS_PER_TASK * h))
                .zip(slope.chunks_mut(POINTS_PER_TASK * h))
            {
                task.activations = Some((hidden, slope));
            }
        }
        tasks.into_par_iter().for_each(|task| {
            lrf_simd::dispatch(Forward { layers, task });
        });
    }
    QueryValues {
        sigma,
        color,
        activations: kept,
    }
}

/// One parallel share of [`query_values`].
struct ForwardTask<'a, T> {
    points: &'a [T],
    sigma: &'a mut [T],
    color: &'a mut [T],
    activations: Option<(&'a mut [T], &'a mut [T])>,
}

/// A [`ForwardTask`] compiled for the CPU's widest vectors.
struct Forward<'a, T> {
    layers: LayerValues<'a, T>,
    task: ForwardTask<'a, T>,
}

impl<T: Gemm> lrf_simd::SimdTask for Forward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Forward { layers, task } = self;
        let ForwardTask {
            points,
            sigma,
            color,
            mut activations,
        } = task;
        let (h, c) = (layers.hidden, layers.channels);
        let o = c + 1;
        // Where activations are not kept, one product's worth is enough.
        let mut scratch = match activations {
            Some(_) => (Vec::new(), Vec::new()),
            None => (vec![T::ZERO; PRODUCT_ROWS * h], vec![T::ZERO; PRODUCT_ROWS * h]),
        };
        let mut raw = vec![T::ZERO; PRODUCT_ROWS * o];
        let mut taps = BlockTaps::new();
        for (product, points) in points.chunks(PRODUCT_ROWS * 3).enumerate() {
            let (first, count) = (product * PRODUCT_ROWS, points.len() / 3);
            let (hidden, slope) = match activations.as_mut() {
                Some((hidden, slope)) => (
                    &mut hidden[first * h..(first + count) * h],
                    &mut slope[first * h..(first + count) * h],
                ),
                None => (&mut scratch.0[..count * h], &mut scratch.1[..count * h]),
            };
            for ((points, hidden), slope) in points
                .chunks(TAP_BLOCK * 3)
                .zip(hidden.chunks_mut(TAP_BLOCK * h))
                .zip(slope.chunks_mut(TAP_BLOCK * h))
            {
                taps.fill(points, layers.resolution, h);
                for (k, (hidden, slope)) in hidden.chunks_exact_mut(h).zip(slope.chunks_exact_mut(h)).enumerate() {
                    layers.pre_activations(&taps, k, hidden);
                    for (value, s) in hidden.iter_mut().zip(slope.iter_mut()) {
                        (*value, *s) = softplus_and_slope(*value);
                    }
                }
            }
            let output_weights = Matrix::rows(layers.output_weights, o, h).transposed();
            multiply(
                Matrix::rows(hidden, count, h),
                output_weights,
                Product::Overwrite,
                &mut raw,
            );
            for (k, raw) in raw.chunks_exact(o).take(count).enumerate() {
                let point = first + k;
                sigma[point] = raw[0] + layers.sigma_bias;
                for ((out, &logit), &bias) in color[point * c..(point + 1) * c]
                    .iter_mut()
                    .zip(&raw[1..])
                    .zip(layers.color_bias)
                {
                    *out = sigmoid(logit + bias);
                }
            }
        }
    }
}

/// The gradients of [`QueryLayers`], as flat host values in their layouts.
struct LayerGradients<T> {
    texels: Vec<T>,
    hidden_bias: Vec<T>,
    output_weights: Vec<T>,
    output_bias: Vec<T>,
}

impl<T: Real> LayerGradients<T> {
    fn zeros(layers: &LayerValues<'_, T>) -> Self {
        LayerGradients {
            texels: vec![T::ZERO; layers.texels.len()],
            hidden_bias: vec![T::ZERO; layers.hidden],
            output_weights: vec![T::ZERO; layers.output_weights.len()],
            output_bias: vec![T::ZERO; layers.channels + 1],
        }
    }

    fn add(mut self, other: Self) -> Self {
        for (mine, theirs) in [
            (&mut self.texels, &other.texels),
            (&mut self.hidden_bias, &other.hidden_bias),
            (&mut self.output_weights, &other.output_weights),
            (&mut self.output_bias, &other.output_bias),
        ] {
            mine.iter_mut().zip(theirs).for_each(|(x, &y)| *x += y);
        }
        self
    }
}

/// A query's values kept for its backward pass, and the gradients the loss left on its outputs.
struct QueryRecord<'a, T> {
    points: &'a [T],
    hidden: &'a [T],
    slope: &'a [T],
    color: &'a [T],
    /// `[N]`; `None` where the loss did not reach the density.
    sigma_gradient: Option<&'a [T]>,
    /// `[N, C]`; `None` where the loss did not reach the colours.
    color_gradient: Option<&'a [T]>,
}

/// A taped query and the gradients the loss left on its outputs.
struct QueryGradient<'a> {
    query: &'a TapedQuery,
    sigma: Option<Tensor>,
    color: Option<Tensor>,
}

/// Host copies of what [`QueryRecord`] reads.
struct HostRecord {
    points: Tensor,
    hidden: Tensor,
    slope: Tensor,
    color: Tensor,
    sigma_gradient: Option<Tensor>,
    color_gradient: Option<Tensor>,
}

impl HostRecord {
    fn new<T: Real>(gradient: &QueryGradient<'_>) -> HostRecord {
        let query = gradient.query;
        HostRecord {
            points: host::<T>(&query.points),
            hidden: host::<T>(&query.activations.0),
            slope: host::<T>(&query.activations.1),
            color: host::<T>(&query.color),
            sigma_gradient: gradient.sigma.as_ref().map(host::<T>),
            color_gradient: gradient.color.as_ref().map(host::<T>),
        }
    }

    fn view<T: Real>(&self) -> QueryRecord<'_, T> {
        QueryRecord {
            points: values::<T>(&self.points),
            hidden: values::<T>(&self.hidden),
            slope: values::<T>(&self.slope),
            color: values::<T>(&self.color),
            sigma_gradient: self.sigma_gradient.as_ref().map(values::<T>),
            color_gradient: self.color_gradient.as_ref().map(values::<T>),
        }
    }
}

/// The layers' gradients, as tensors shaped as the layers: the transpose of [`query_values`], from the
/// gradients of the densities and colours of `queries`, all made with `layers`. One pass serves them all, so
/// the texels' gradient is zeroed, reduced and copied out once per render, not once per set of samples.
fn query_backward(layers: &QueryLayers, queries: &[QueryGradient<'_>]) -> [Tensor; 4] {
    match layers.texels.kind() {
        Kind::Double => query_backward_as::<f64>(layers, queries),
        _ => query_backward_as::<f32>(layers, queries),
    }
}

fn query_backward_as<T: Gemm>(layers: &QueryLayers, queries: &[QueryGradient<'_>]) -> [Tensor; 4] {
    let host_layers = HostLayers::new::<T>(layers);
    let values_of = host_layers.view::<T>();
    let (h, c) = (values_of.hidden, values_of.channels);
    let hosts: Vec<HostRecord> = queries.iter().map(HostRecord::new::<T>).collect();
    let records: Vec<QueryRecord<'_, T>> = hosts.iter().map(HostRecord::view).collect();
    // One set of gradients per thread-sized share of each query's points (3 MiB of texels each at IG-AE's
    // sizes); share i takes part i of every query.
    let shares = rayon::current_num_threads().max(1);
    let gradients = (0..shares)
        .into_par_iter()
        .map(|share| {
            let parts: Vec<QueryRecord<'_, T>> = records
                .iter()
                .map(|record| {
                    let n = record.points.len() / 3;
                    let per_share = n.div_ceil(shares).max(1);
                    let (start, end) = ((share * per_share).min(n), ((share + 1) * per_share).min(n));
                    QueryRecord {
                        points: &record.points[start * 3..end * 3],
                        hidden: &record.hidden[start * h..end * h],
                        slope: &record.slope[start * h..end * h],
                        color: &record.color[start * c..end * c],
                        sigma_gradient: record.sigma_gradient.map(|g| &g[start..end]),
                        color_gradient: record.color_gradient.map(|g| &g[start * c..end * c]),
                    }
                })
                .collect();
            lrf_simd::dispatch(Backward {
                layers: values_of,
                records: &parts,
            })
        })
        .reduce_with(LayerGradients::add)
        .unwrap_or_else(|| LayerGradients::zeros(&values_of));
    let values = [
        &gradients.texels,
        &gradients.hidden_bias,
        &gradients.output_weights,
        &gradients.output_bias,
    ];
    let shapes = layers.tensors().map(Tensor::size);
    std::array::from_fn(|i| Tensor::from_slice(values[i]).view(shapes[i].as_slice()))
}

/// One share of [`query_backward`], compiled for the CPU's widest vectors.
struct Backward<'a, T> {
    layers: LayerValues<'a, T>,
    records: &'a [QueryRecord<'a, T>],
}

impl<T: Gemm> lrf_simd::SimdTask for Backward<'_, T> {
    type Output = LayerGradients<T>;

    #[inline(always)]
    fn run(self) -> LayerGradients<T> {
        let Backward { layers, records } = self;
        let (r, h, c) = (layers.resolution, layers.hidden, layers.channels);
        let o = c + 1;
        let mut gradients = LayerGradients::zeros(&layers);
        let mut raw = vec![T::ZERO; PRODUCT_ROWS * o];
        let mut upstream = vec![T::ZERO; PRODUCT_ROWS * h];
        let mut taps = BlockTaps::new();
        for record in records {
            for (product, points) in record.points.chunks(PRODUCT_ROWS * 3).enumerate() {
                let (first, count) = (product * PRODUCT_ROWS, points.len() / 3);
                let (raw, upstream) = (&mut raw[..count * o], &mut upstream[..count * h]);
                // The gradient of the output layer's pre-activations: density first, then the colours' logits.
                for (k, raw) in raw.chunks_exact_mut(o).enumerate() {
                    let point = first + k;
                    raw[0] = record.sigma_gradient.map_or(T::ZERO, |g| g[point]);
                    let color = &record.color[point * c..(point + 1) * c];
                    match record.color_gradient {
                        Some(g) => {
                            for ((d, &g), &y) in raw[1..].iter_mut().zip(&g[point * c..(point + 1) * c]).zip(color) {
                                *d = g * y * (T::ONE - y);
                            }
                        }
                        None => raw[1..].fill(T::ZERO),
                    }
                }
                let hidden = Matrix::rows(&record.hidden[first * h..(first + count) * h], count, h);
                let raw_rows = Matrix::rows(&*raw, count, o);
                let output_weights = Matrix::rows(layers.output_weights, o, h);
                multiply(
                    raw_rows.transposed(),
                    hidden,
                    Product::Accumulate,
                    &mut gradients.output_weights,
                );
                for raw in raw.chunks_exact(o) {
                    for (bias, &d) in gradients.output_bias.iter_mut().zip(raw) {
                        *bias += d;
                    }
                }
                multiply(raw_rows, output_weights, Product::Overwrite, upstream);
                for (u, &s) in upstream.iter_mut().zip(&record.slope[first * h..(first + count) * h]) {
                    *u *= s;
                }
                for (points, upstream) in points.chunks(TAP_BLOCK * 3).zip(upstream.chunks(TAP_BLOCK * h)) {
                    taps.fill(points, r, h);
                    for (k, upstream) in upstream.chunks_exact(h).enumerate() {
                        for (db, &u) in gradients.hidden_bias.iter_mut().zip(upstream) {
                            *db += u;
                        }
                        for (starts, weights) in taps.starts.iter().zip(&taps.weights) {
                            let w = weights[k];
                            if w == T::ZERO {
                                continue;
                            }
                            for (t, &u) in gradients.texels[starts[k]..starts[k] + h].iter_mut().zip(upstream) {
                                *t = w.mul_add(u, *t);
                            }
                        }
                    }
                }
            }
        }
        gradients
    }
}

/// The queries of a differentiable render: their densities and colours enter libtorch's graph as leaves,
/// and [`PlaneTape::backward`] hands the gradient the loss left on them to the layers they were computed
/// with, whose graph leads to the planes and the MLP. Renders without a tape track no gradient for any of
/// them.
#[derive(Default)]
pub struct PlaneTape {
    queries: Vec<TapedQuery>,
}

/// One query: where it was made, the leaves the loss's gradient lands on, what the backward pass reads, and
/// the layers it was made with (shared by the queries of one render).
struct TapedQuery {
    points: Tensor,
    sigma: Tensor,
    color: Tensor,
    activations: (Tensor, Tensor),
    layers: Rc<QueryLayers>,
}

impl PlaneTape {
    pub fn new() -> Self {
        PlaneTape::default()
    }

    /// The raw density `[N]` and colours `[N, C]` of `layers` at `points`, as leaves whose gradient this
    /// tape will hand on.
    pub(crate) fn query(&mut self, layers: &Rc<QueryLayers>, points: &Tensor) -> (Tensor, Tensor) {
        let values = query_values(layers, points, Activations::Keep);
        let (sigma, color) = (
            values.sigma.set_requires_grad(true),
            values.color.set_requires_grad(true),
        );
        self.queries.push(TapedQuery {
            points: points.detach(),
            sigma: sigma.shallow_clone(),
            color: color.shallow_clone(),
            activations: values.activations.expect("kept for the tape"),
            layers: Rc::clone(layers),
        });
        (sigma, color)
    }

    /// After the loss's backward pass: adds the planes' and the MLP's share of the gradient to their
    /// `grad()`. Consecutive queries made with the same layers go through one backward pass.
    pub fn backward(self) {
        let mut total: Option<Tensor> = None;
        for same_layers in self.queries.chunk_by(|a, b| Rc::ptr_eq(&a.layers, &b.layers)) {
            let defined = |leaf: &Tensor| Some(leaf.grad()).filter(Tensor::defined);
            let gradients: Vec<QueryGradient<'_>> = same_layers
                .iter()
                .map(|query| QueryGradient {
                    query,
                    sigma: defined(&query.sigma),
                    color: defined(&query.color),
                })
                .filter(|gradient| gradient.sigma.is_some() || gradient.color.is_some())
                .collect();
            if gradients.is_empty() {
                continue;
            }
            let layers = &same_layers[0].layers;
            // d/dθ Σ θ·G = G for each layer tensor θ: libtorch carries it on through the projection.
            let kind = layers.texels.kind();
            let part = layers
                .tensors()
                .into_iter()
                .zip(query_backward(layers, &gradients))
                .map(|(layer, gradient)| (layer * gradient.to_kind(kind)).sum(kind))
                .reduce(|a, b| a + b)
                .expect("four layer tensors");
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

    /// The query kernels against libtorch's operators (grid_sample over the planes, the two linear layers,
    /// softplus, the colours' sigmoid) at points inside, on the edge of and outside the box, and the backward
    /// kernel with the tape against libtorch's autograd of those operators, for every parameter; with
    /// gradients on both outputs, and on the colours alone; in f64, and in f32 against the f64 reference.
    #[test]
    fn the_kernels_and_their_transpose_match_libtorch() {
        tch::manual_seed(4);
        let opts = (Kind::Double, Device::Cpu);
        // H = 20 and C = 18: one register-wide group of hidden values and of colours, and a remainder;
        // N = 600: one whole matrix product of points, then a part product of a whole block of taps and a
        // part block.
        let (f, h, c, r, n) = (3, 20, 18, 5, 600);
        let vars = nn::VarStore::new(Device::Cpu);
        let root = vars.root();
        let planes = root.var("planes", &[3, f, r, r], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let hidden = nn::linear(&root / "hidden", f, h, Default::default());
        let out = nn::linear(&root / "out", h, 1 + c, Default::default());
        let mut vars = vars;
        vars.double();
        let points = Tensor::rand([n, 3], opts) * 2.4 - 1.2;
        let _ = points.get(0).copy_(&Tensor::from_slice(&[1.0f64, -1.0, 0.999]));
        let sigma_weights = Tensor::randn([n], opts);
        let color_weights = Tensor::randn([n, c], opts);

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
        let reference = || {
            let features = planes
                .grid_sampler(&pairs, 0, 0, false)
                .sum_dim_intlist(0, false, None)
                .squeeze_dim(1)
                .transpose(0, 1);
            let raw = features.apply(&hidden).softplus().apply(&out);
            (raw.select(1, 0), raw.narrow(1, 1, c).sigmoid())
        };
        let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let gradients = |loss: Tensor| {
            for (_, v) in &named {
                let mut grad = v.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            }
            loss.backward();
            named.iter().map(|(_, v)| v.grad().copy()).collect::<Vec<_>>()
        };
        let loss = |sigma: &Tensor, color: &Tensor, with_sigma: bool| {
            let colors = (color * &color_weights).sum(Kind::Double);
            if with_sigma {
                colors + (sigma * &sigma_weights).sum(Kind::Double)
            } else {
                colors
            }
        };

        // The f32 kernels (with their fast exp, ln and f32 products) to a relative 1e-5.
        for (kind, tolerance, with_sigma) in [
            (Kind::Double, 1e-12, true),
            (Kind::Double, 1e-12, false),
            (Kind::Float, 1e-5, true),
        ] {
            let (expected_sigma, expected_color) = reference();
            let expected_gradients = gradients(loss(&expected_sigma, &expected_color, with_sigma));
            let as_kind = |linear: &nn::Linear| nn::Linear {
                ws: linear.ws.to_kind(kind),
                bs: linear.bs.as_ref().map(|bias| bias.to_kind(kind)),
            };
            let layers = QueryLayers::new(&planes.to_kind(kind), &as_kind(&hidden), &as_kind(&out));
            let mut tape = PlaneTape::new();
            let (sigma, color) = tape.query(&Rc::new(layers), &points.to_kind(kind));
            assert_eq!(color.kind(), kind);
            let within = |got: &Tensor, want: &Tensor| {
                let error = (got - want).abs().max().double_value(&[]);
                (error <= tolerance * want.abs().max().double_value(&[]).max(1.0), error)
            };
            for (got, want) in [(&sigma, &expected_sigma), (&color, &expected_color)] {
                let (close, error) = within(got, want);
                assert!(close, "{kind:?}: max |difference| to libtorch's query {error}");
            }
            let got_gradients = gradients(loss(&sigma, &color, with_sigma));
            assert!(
                got_gradients
                    .iter()
                    .all(|g| !g.defined() || g.abs().max().double_value(&[]) == 0.0),
                "before the tape's backward pass, no gradient reaches the field"
            );
            tape.backward();
            for ((name, v), want) in named.iter().zip(&expected_gradients) {
                let (close, error) = within(&v.grad(), want);
                assert!(close, "{kind:?} {name}: max |difference| to autograd {error}");
                assert!(
                    want.abs().max().double_value(&[]) > 1e-3,
                    "{name}'s gradient is not trivial"
                );
            }
        }

        let values = query_values(&QueryLayers::new(&planes, &hidden, &out), &points, Activations::Discard);
        assert!(values.activations.is_none());
        assert!((values.color - reference().1).abs().max().double_value(&[]) < 1e-12);
    }

    /// Products with either operand row-major or transposed, overwriting or adding, against a triple loop
    /// in f64.
    #[test]
    fn products_match_a_triple_loop() {
        fn check<T: Gemm>(tolerance: f64) {
            let (m, k, n) = (7, 5, 19);
            let value = |i: usize| T::of(((i * 37 + 11) % 23) as f64 / 7.0 - 1.5);
            let a_values: Vec<T> = (0..m * k).map(value).collect();
            let b_values: Vec<T> = (0..k * n).map(|i| value(i + 5)).collect();
            // The same matrices stored transposed, for the transposed views.
            let a_transposed: Vec<T> = (0..m * k).map(|i| a_values[(i % m) * k + i / m]).collect();
            let b_transposed: Vec<T> = (0..k * n).map(|i| b_values[(i % k) * n + i / k]).collect();
            let expected = |i: usize, j: usize| {
                (0..k)
                    .map(|l| a_values[i * k + l].to_f64() * b_values[l * n + j].to_f64())
                    .sum::<f64>()
            };
            for (a, b) in [
                (Matrix::rows(&a_values[..], m, k), Matrix::rows(&b_values[..], k, n)),
                (
                    Matrix::rows(&a_transposed[..], k, m).transposed(),
                    Matrix::rows(&b_transposed[..], n, k).transposed(),
                ),
            ] {
                for product in [Product::Overwrite, Product::Accumulate] {
                    let mut c = vec![T::of(0.25); m * n];
                    multiply(a, b, product, &mut c);
                    let offset = if product == Product::Accumulate { 0.25 } else { 0.0 };
                    for (index, &got) in c.iter().enumerate() {
                        let want = expected(index / n, index % n) + offset;
                        assert!((got.to_f64() - want).abs() < tolerance, "{got:?} against {want}");
                    }
                }
            }
        }
        check::<f64>(1e-12);
        check::<f32>(1e-5);
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
