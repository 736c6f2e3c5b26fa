//! 3DGS's photometric loss (1−λ)·L1 + λ·(1 − SSIM) with its gradient, computed on the host in one fused pass
//! per channel: separable 11-tap Gaussian blurs (22 multiply-adds per pixel where libtorch's depthwise
//! convolution spends 121) for the five forward statistics and the three backward ones, rayon over channels.
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
            channel(
                a,
                b,
                plane,
                &window,
                Weights {
                    l1: ((1.0 - dssim_weight) / count) as f32,
                    ssim: (dssim_weight / count) as f32,
                },
                gradient,
            )
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

/// One channel: writes its gradient and returns (Σ|a − b|, Σ SSIM map).
fn channel(
    a: &[f32],
    b: &[f32],
    plane: Plane,
    window: &[f32; 11],
    weights: Weights,
    gradient: &mut [f32],
) -> (f64, f64) {
    let n = plane.len();
    let product = |x: &[f32], y: &[f32]| -> Vec<f32> { x.iter().zip(y).map(|(x, y)| x * y).collect() };
    let mu_a = blur(a, plane, window);
    let mu_b = blur(b, plane, window);
    let s_aa = blur(&product(a, a), plane, window);
    let s_bb = blur(&product(b, b), plane, window);
    let s_ab = blur(&product(a, b), plane, window);
    // Per pixel: the map and its partial derivatives in μa, E[a²] and E[ab] (μb, E[b²] are constants).
    let (mut d_mu, mut d_aa, mut d_ab) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let mut ssim_sum = 0f64;
    for p in 0..n {
        let (ma, mb) = (mu_a[p], mu_b[p]);
        let a1 = 2.0 * ma * mb + SSIM_C1 as f32;
        let a2 = 2.0 * (s_ab[p] - ma * mb) + SSIM_C2 as f32;
        let b1 = ma * ma + mb * mb + SSIM_C1 as f32;
        let b2 = (s_aa[p] - ma * ma) + (s_bb[p] - mb * mb) + SSIM_C2 as f32;
        let denominator = b1 * b2;
        let s = a1 * a2 / denominator;
        ssim_sum += s as f64;
        // The loss holds −λ/M · S.
        let scale = -weights.ssim;
        d_mu[p] = scale * ((2.0 * mb * a2 - 2.0 * mb * a1) / denominator - s * (2.0 * ma / b1 - 2.0 * ma / b2));
        d_aa[p] = scale * (-s / b2);
        d_ab[p] = scale * (2.0 * a1 / denominator);
    }
    // The blur is symmetric with zero padding, so it is its own adjoint.
    let (g_mu, g_aa, g_ab) = (
        blur(&d_mu, plane, window),
        blur(&d_aa, plane, window),
        blur(&d_ab, plane, window),
    );
    let mut l1_sum = 0f64;
    for p in 0..n {
        let difference = a[p] - b[p];
        l1_sum += difference.abs() as f64;
        // d|x|/dx at 0 is 0, as libtorch's.
        let sign = if difference > 0.0 {
            1.0
        } else if difference < 0.0 {
            -1.0
        } else {
            0.0
        };
        gradient[p] = weights.l1 * sign + g_mu[p] + 2.0 * a[p] * g_aa[p] + b[p] * g_ab[p];
    }
    (l1_sum, ssim_sum)
}

/// The 11×11 Gaussian window as two 11-tap passes, zero outside the plane.
fn blur(x: &[f32], plane: Plane, window: &[f32; 11]) -> Vec<f32> {
    let (w, h) = (plane.width, plane.height);
    const HALF: usize = 5;
    // Tap by tap over whole rows, so the inner loops are plain multiply-adds the compiler vectorises.
    let mut rows = vec![0f32; w * h];
    for (input, output) in x.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        for (t, &weight) in window.iter().enumerate() {
            // output[c] += weight · input[c + t − HALF] where that column exists.
            let (out_start, in_start) = if t < HALF { (HALF - t, 0) } else { (0, t - HALF) };
            let len = w.saturating_sub(out_start.max(in_start));
            if len == 0 {
                continue;
            }
            for (o, v) in output[out_start..out_start + len]
                .iter_mut()
                .zip(&input[in_start..in_start + len])
            {
                *o += weight * v;
            }
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let first = y.saturating_sub(HALF);
        let last = (y + HALF).min(h - 1);
        let output = &mut out[y * w..(y + 1) * w];
        for i in first..=last {
            let weight = window[i + HALF - y];
            for (o, v) in output.iter_mut().zip(&rows[i * w..(i + 1) * w]) {
                *o += weight * v;
            }
        }
    }
    out
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
