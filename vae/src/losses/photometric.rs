//! 3DGS's photometric loss (1−λ)·L1 + λ·(1 − SSIM) with its gradient, computed on the host in one fused pass
//! per channel: separable 11-tap Gaussian blurs (22 multiply-adds per pixel where libtorch's depthwise
//! convolution spends 121) for the five forward statistics and the three backward ones, rayon over channels.
//! The planes are laid out in zero-padded blocks of 16 columns, so every pass is branch-free lane arithmetic
//! with its sums in registers, compiled for the CPU's widest vectors.
//! The result is a tensor whose gradient with respect to the image is the computed one, so it drops into
//! any autograd graph. The SSIM is [`crate::metrics::ssim`]'s, which the tests hold it to.

use rayon::prelude::*;
use tch::{Kind, Tensor};

use crate::error::{Result, VaeError};
use crate::metrics::{SSIM_C1, SSIM_C2, ssim_window_1d};

/// (1−λ)·mean|image − target| + λ·(1 − SSIM(image, target)) for `[C, H, W]` images, differentiable in
/// `image` (the target is a constant). λ is `dssim_weight`, in [0, 1].
pub fn l1_dssim(image: &Tensor, target: &Tensor, dssim_weight: f64) -> Result<Tensor> {
    let size = image.size();
    let [channels, height, width] = size[..] else {
        return Err(VaeError::input(
            "l1_dssim",
            format!("images must be [C, H, W], got {size:?}"),
        ));
    };
    if target.size() != size {
        return Err(VaeError::input(
            "l1_dssim",
            format!("image {size:?} and target {:?} differ in shape", target.size()),
        ));
    }
    if !(0.0..=1.0).contains(&dssim_weight) {
        return Err(VaeError::input(
            "l1_dssim",
            format!("dssim_weight {dssim_weight} is not in [0, 1]"),
        ));
    }
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).contiguous().view([-1]))
            .map_err(|e| VaeError::input("l1_dssim", e.to_string()))
    };
    let (a, b) = (host(image)?, host(target)?);
    let shape = Plane {
        width: width as usize,
        height: height as usize,
    };
    let (value, gradient) = evaluate(&a, &b, channels as usize, shape, dssim_weight);
    let gradient = Tensor::from_slice(&gradient)
        .view([channels, height, width])
        .to_kind(image.kind())
        .to_device(image.device());
    // ⟨image, g⟩ has gradient g; the constant brings the value to the loss.
    let linear = (image * &gradient).sum(Kind::Double);
    let offset = value - linear.double_value(&[]);
    Ok((linear + offset).to_kind(image.kind()))
}

#[derive(Clone, Copy)]
struct Plane {
    width: usize,
    height: usize,
}

impl Plane {
    fn len(&self) -> usize {
        self.width * self.height
    }
}

/// The loss and its gradient with respect to `a`, for `channels` planes of `a` and `b`.
fn evaluate(a: &[f32], b: &[f32], channels: usize, plane: Plane, dssim_weight: f64) -> (f64, Vec<f32>) {
    let count = (channels * plane.len()) as f64;
    let mut gradient = vec![0f32; a.len()];
    let window = ssim_window_1d().map(|v| v as f32);
    let sums: Vec<(f64, f64)> = gradient
        .par_chunks_mut(plane.len())
        .zip(a.par_chunks(plane.len()).zip(b.par_chunks(plane.len())))
        .map(|(gradient, (a, b))| {
            lrf_simd::dispatch(Channel {
                a,
                b,
                plane,
                window: &window,
                weights: Weights {
                    l1: ((1.0 - dssim_weight) / count) as f32,
                    ssim: (dssim_weight / count) as f32,
                },
                gradient,
            })
        })
        .collect();
    let (l1, ssim) = sums.iter().fold((0.0, 0.0), |(l, s), &(a, b)| (l + a, s + b));
    let value = (1.0 - dssim_weight) * l1 / count + dssim_weight * (1.0 - ssim / count);
    (value, gradient)
}

/// The gradient's scales: (1−λ)/M on the L1 term, λ/M on the SSIM term, for M values.
#[derive(Clone, Copy)]
struct Weights {
    l1: f32,
    ssim: f32,
}

/// Taps of the separable window, and its half-width.
const TAPS: usize = 11;
const HALF: usize = TAPS / 2;
/// Columns per block of the blur and the pointwise passes: one zmm register, two ymm. Planes are laid out in
/// whole blocks, so every pass is fixed-width lane arithmetic the compiler vectorises.
const LANES: usize = 16;

/// One channel's loss terms: writes its gradient and returns (Σ|a − b|, Σ SSIM map). Run through
/// [`lrf_simd::dispatch`], so its loops are compiled for the CPU's widest vectors with fused multiply-adds.
struct Channel<'a> {
    a: &'a [f32],
    b: &'a [f32],
    plane: Plane,
    window: &'a [f32; TAPS],
    weights: Weights,
    gradient: &'a mut [f32],
}

/// A channel's planes in the blurs' layout. Rows of `padded_width` values hold `HALF` zeros, the row, and zeros
/// to the end (the horizontal pass's input); rows of `stride` values (the width rounded up to whole blocks)
/// are the horizontal pass's output, with `HALF` zero rows above and below (the vertical pass's input). The
/// zeros are the window's zero padding, so no pass tests an edge.
#[derive(Clone, Copy)]
struct Layout {
    width: usize,
    height: usize,
    stride: usize,
    padded_width: usize,
}

impl Layout {
    #[inline(always)]
    fn new(plane: Plane) -> Self {
        let stride = plane.width.div_ceil(LANES) * LANES;
        Layout {
            width: plane.width,
            height: plane.height,
            stride,
            padded_width: stride + 2 * HALF,
        }
    }

    /// Zeroed planes for the horizontal pass's output.
    fn blurred_rows(&self) -> Vec<f32> {
        vec![0.0; (self.height + 2 * HALF) * self.stride]
    }

    /// Block `block` of row `y`'s pixels of a `[height, width]` plane, zero past the width.
    #[inline(always)]
    fn load(&self, plane: &[f32], y: usize, block: usize) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        let (start, len) = self.span(y, block);
        out[..len].copy_from_slice(&plane[start..start + len]);
        out
    }

    /// Where block `block` of row `y` lies in a `[height, width]` plane, and how many of its lanes are pixels.
    #[inline(always)]
    fn span(&self, y: usize, block: usize) -> (usize, usize) {
        let x = block * LANES;
        (y * self.width + x, LANES.min(self.width - x))
    }
}

/// Row-blurs `line` (`padded_width` values) into `out` (`stride` values).
#[inline(always)]
fn horizontal(line: &[f32], out: &mut [f32], window: &[f32; TAPS]) {
    for (block, out) in out.chunks_exact_mut(LANES).enumerate() {
        let mut sum = [0f32; LANES];
        for (t, &weight) in window.iter().enumerate() {
            let x = block * LANES + t;
            let Some(input) = line[x..].first_chunk::<LANES>() else {
                unreachable!("a padded row holds every tap of its blocks")
            };
            for (sum, &input) in sum.iter_mut().zip(input) {
                *sum = weight.mul_add(input, *sum);
            }
        }
        out.copy_from_slice(&sum);
    }
}

/// Column-blurs block `block` of output row `y` from row-blurred planes (see [`Layout`]).
#[inline(always)]
fn vertical(rows: &[f32], layout: Layout, y: usize, block: usize, window: &[f32; TAPS]) -> [f32; LANES] {
    let mut sum = [0f32; LANES];
    for (t, &weight) in window.iter().enumerate() {
        let start = (y + t) * layout.stride + block * LANES;
        let Some(input) = rows[start..].first_chunk::<LANES>() else {
            unreachable!("padded planes hold every tap of their rows")
        };
        for (sum, &input) in sum.iter_mut().zip(input) {
            *sum = weight.mul_add(input, *sum);
        }
    }
    sum
}

impl lrf_simd::SimdTask for Channel<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn run(self) -> (f64, f64) {
        let Channel {
            a,
            b,
            plane,
            window,
            weights,
            gradient,
        } = self;
        let layout = Layout::new(plane);
        let (width, height, stride) = (layout.width, layout.height, layout.stride);
        let blocks = stride / LANES;
        // Forward: the five statistics' row blurs (μa, μb, E[a²], E[b²], E[ab] before the column pass).
        let mut statistics: [Vec<f32>; 5] = std::array::from_fn(|_| layout.blurred_rows());
        let mut lines: [Vec<f32>; 5] = std::array::from_fn(|_| vec![0f32; layout.padded_width]);
        for y in 0..height {
            let (ra, rb) = (&a[y * width..][..width], &b[y * width..][..width]);
            let [la, lb, laa, lbb, lab] = &mut lines;
            for (x, (&va, &vb)) in ra.iter().zip(rb).enumerate() {
                (la[HALF + x], lb[HALF + x]) = (va, vb);
                (laa[HALF + x], lbb[HALF + x], lab[HALF + x]) = (va * va, vb * vb, va * vb);
            }
            for (line, rows) in lines.iter().zip(&mut statistics) {
                horizontal(line, &mut rows[(y + HALF) * stride..][..stride], window);
            }
        }
        // Per pixel: the map and its partial derivatives in μa, E[a²] and E[ab] (μb, E[b²] are constants),
        // as rows for the backward's row blurs; zero past the width, where the window's padding is.
        let mut partials: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0f32; height * layout.padded_width]);
        let mut ssim_sum = [0f64; LANES];
        let (c1, c2) = (SSIM_C1 as f32, SSIM_C2 as f32);
        // The loss holds −λ/M · S.
        let scale = -weights.ssim;
        for y in 0..height {
            for block in 0..blocks {
                // No closures here: one is compiled without the dispatch's target features, and its
                // multiply-adds would be library calls.
                let [mu_a, mu_b, s_aa, s_bb, s_ab] = &statistics;
                let mu_a = vertical(mu_a, layout, y, block, window);
                let mu_b = vertical(mu_b, layout, y, block, window);
                let s_aa = vertical(s_aa, layout, y, block, window);
                let s_bb = vertical(s_bb, layout, y, block, window);
                let s_ab = vertical(s_ab, layout, y, block, window);
                let valid = layout.span(y, block).1;
                let (mut d_mu, mut d_aa, mut d_ab) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
                for l in 0..LANES {
                    let (ma, mb) = (mu_a[l], mu_b[l]);
                    let a1 = 2.0 * ma * mb + c1;
                    let a2 = 2.0 * (s_ab[l] - ma * mb) + c2;
                    let b1 = ma * ma + mb * mb + c1;
                    let b2 = (s_aa[l] - ma * ma) + (s_bb[l] - mb * mb) + c2;
                    let denominator = b1 * b2;
                    let s = a1 * a2 / denominator;
                    let inside = l < valid;
                    ssim_sum[l] += if inside { s as f64 } else { 0.0 };
                    let mask = if inside { scale } else { 0.0 };
                    d_mu[l] =
                        mask * ((2.0 * mb * a2 - 2.0 * mb * a1) / denominator - s * (2.0 * ma / b1 - 2.0 * ma / b2));
                    d_aa[l] = mask * (-s / b2);
                    d_ab[l] = mask * (2.0 * a1 / denominator);
                }
                let at = y * layout.padded_width + HALF + block * LANES;
                for (plane, values) in partials.iter_mut().zip([d_mu, d_aa, d_ab]) {
                    plane[at..at + LANES].copy_from_slice(&values);
                }
            }
        }
        drop(statistics);
        // Backward: the blur is symmetric with zero padding, so it is its own adjoint.
        let mut blurred: [Vec<f32>; 3] = std::array::from_fn(|_| layout.blurred_rows());
        for y in 0..height {
            for (plane, rows) in partials.iter().zip(&mut blurred) {
                horizontal(
                    &plane[y * layout.padded_width..][..layout.padded_width],
                    &mut rows[(y + HALF) * stride..][..stride],
                    window,
                );
            }
        }
        let mut l1_sum = [0f64; LANES];
        for y in 0..height {
            for block in 0..blocks {
                let [g_mu, g_aa, g_ab] = &blurred;
                let g_mu = vertical(g_mu, layout, y, block, window);
                let g_aa = vertical(g_aa, layout, y, block, window);
                let g_ab = vertical(g_ab, layout, y, block, window);
                let (va, vb) = (layout.load(a, y, block), layout.load(b, y, block));
                let mut out = [0f32; LANES];
                for l in 0..LANES {
                    let difference = va[l] - vb[l];
                    // Lanes past the width read zeros here, and add nothing.
                    l1_sum[l] += difference.abs() as f64;
                    // d|x|/dx at 0 is 0, as libtorch's.
                    let sign = if difference > 0.0 {
                        1.0
                    } else if difference < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    out[l] = weights.l1 * sign + g_mu[l] + 2.0 * va[l] * g_aa[l] + vb[l] * g_ab[l];
                }
                let (start, len) = layout.span(y, block);
                gradient[start..start + len].copy_from_slice(&out[..len]);
            }
        }
        (l1_sum.iter().sum(), ssim_sum.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::{dssim, l1};

    /// libtorch's autograd through [`l1`] and [`dssim`] (a 2D convolution), in f64: the reference.
    fn reference(a: &Tensor, b: &Tensor, weight: f64) -> (f64, Tensor) {
        let a = a.to_kind(Kind::Double).detach().set_requires_grad(true);
        let b = b.to_kind(Kind::Double);
        let loss = l1(&a, &b).unwrap() * (1.0 - weight) + dssim(&a, &b).unwrap() * weight;
        loss.backward();
        (loss.double_value(&[]), a.grad())
    }

    #[test]
    fn value_and_gradient_match_libtorch_autograd_through_the_2d_window() {
        tch::manual_seed(5);
        // Planes smaller than the window on one side, larger on the other; ties in L1 (equal pixels).
        for (channels, height, width) in [(3, 20, 17), (32, 7, 40), (1, 1, 1)] {
            let opts = (Kind::Float, tch::Device::Cpu);
            let a = Tensor::rand([channels, height, width], opts);
            let b = (&a * 0.7 + Tensor::rand([channels, height, width], opts) * 0.3)
                .where_self(&Tensor::rand([channels, height, width], opts).gt(0.1), &a);
            for weight in [0.0, 0.2, 1.0] {
                let image = a.detach().set_requires_grad(true);
                let loss = l1_dssim(&image, &b, weight).unwrap();
                loss.backward();
                let (want, want_grad) = reference(&a, &b, weight);
                let got = loss.double_value(&[]);
                assert!(
                    (got - want).abs() < 1e-5,
                    "{channels}×{height}×{width}, λ {weight}: {got} vs {want}"
                );
                let scale = want_grad.abs().max().double_value(&[]).max(1e-12);
                let error = (image.grad().to_kind(Kind::Double) - &want_grad)
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(
                    error < 1e-4 * scale,
                    "{channels}×{height}×{width}, λ {weight}: gradient off by {error} (largest {scale})"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_and_weights_are_errors() {
        let opts = (Kind::Float, tch::Device::Cpu);
        let a = Tensor::zeros([2, 4, 4], opts);
        assert!(l1_dssim(&a, &Tensor::zeros([2, 4, 5], opts), 0.2).is_err());
        assert!(l1_dssim(&Tensor::zeros([4, 4], opts), &Tensor::zeros([4, 4], opts), 0.2).is_err());
        assert!(l1_dssim(&a, &a, 1.5).is_err());
    }
}
