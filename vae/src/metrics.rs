//! Image-quality metrics as the LRF and 3DGS evaluations compute them.

use tch::{Kind, Tensor};

use crate::error::{Result, VaeError};

/// Adds the batch axis to a single `C×H×W` image and checks that two batches are comparable.
fn batched(what: &str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let add_batch = |t: &Tensor| {
        if t.dim() == 3 {
            t.unsqueeze(0)
        } else {
            t.shallow_clone()
        }
    };
    let (a, b) = (add_batch(a), add_batch(b));
    if a.dim() != 4 || a.size() != b.size() {
        return Err(VaeError::input(
            what,
            format!(
                "expected two equal N×C×H×W shapes, got {:?} and {:?}",
                a.size(),
                b.size()
            ),
        ));
    }
    Ok((a, b))
}

/// PSNR in dB for images in [0, 1]: the mean over the batch of each image's 20·log10(1/√MSE), as
/// LRF's metrics.py averages per-image values. An exact match gives +∞.
pub fn psnr(rendered: &Tensor, reference: &Tensor) -> Result<f64> {
    let (a, b) = batched("psnr", rendered, reference)?;
    let mse = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .square()
        .mean_dim(&[1i64, 2, 3][..], false, None);
    let per_image = mse.sqrt().reciprocal().log10() * 20.0;
    Ok(per_image.mean(None).double_value(&[]))
}

const SSIM_WINDOW: i64 = 11;
const SSIM_SIGMA: f64 = 1.5;

/// SSIM's stabilising constants C1 = 0.01², C2 = 0.03² (for values in [0, 1]).
pub(crate) const SSIM_C1: f64 = 0.01 * 0.01;
pub(crate) const SSIM_C2: f64 = 0.03 * 0.03;

/// The normalised 11-tap Gaussian (σ 1.5) whose outer product is SSIM's window.
pub(crate) fn ssim_window_1d() -> [f64; SSIM_WINDOW as usize] {
    let half = (SSIM_WINDOW / 2) as f64;
    let g: [f64; SSIM_WINDOW as usize] =
        std::array::from_fn(|x| (-((x as f64 - half).powi(2)) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp());
    let total: f64 = g.iter().sum();
    g.map(|v| v / total)
}

/// The normalised 11×11 Gaussian window (σ 1.5) as a depthwise kernel for `channels` channels.
fn ssim_window(channels: i64, like: &Tensor) -> Tensor {
    let g = Tensor::from_slice(&ssim_window_1d())
        .to_kind(like.kind())
        .to_device(like.device());
    g.outer(&g)
        .expand([channels, 1, SSIM_WINDOW, SSIM_WINDOW], false)
        .contiguous()
}

/// SSIM as in 3DGS (`utils/loss_utils.py`): 11×11 Gaussian window, σ 1.5, per channel, zero padding,
/// C1 = 0.01², C2 = 0.03², averaged over every pixel, channel and image. Differentiable; any channel
/// count (RGB images or latent images). For a metric take `.double_value(&[])`.
pub fn ssim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = batched("ssim", a, b)?;
    let channels = a.size()[1];
    let window = ssim_window(channels, &a);
    let blur = |x: &Tensor| x.conv2d::<Tensor>(&window, None, [1, 1], [SSIM_WINDOW / 2; 2], [1, 1], channels);
    let (mu_a, mu_b) = (blur(&a), blur(&b));
    let (mu_aa, mu_bb, mu_ab) = (mu_a.square(), mu_b.square(), &mu_a * &mu_b);
    let var_a = blur(&(&a * &a)) - &mu_aa;
    let var_b = blur(&(&b * &b)) - &mu_bb;
    let cov = blur(&(&a * &b)) - &mu_ab;
    let (c1, c2) = (SSIM_C1, SSIM_C2);
    let map = (mu_ab * 2.0 + c1) * (cov * 2.0 + c2) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2));
    Ok(map.mean(None))
}

/// A metric that may not be computable, such as LPIPS without user-supplied weights: reports print
/// "unavailable", never a number that could be mistaken for a score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MetricValue {
    Value(f64),
    #[default]
    Unavailable,
}

impl std::fmt::Display for MetricValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricValue::Value(v) => write!(f, "{v:.4}"),
            MetricValue::Unavailable => f.write_str("unavailable"),
        }
    }
}

impl serde::Serialize for MetricValue {
    /// A number, or the string "unavailable".
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MetricValue::Value(v) => serializer.serialize_f64(*v),
            MetricValue::Unavailable => serializer.serialize_str("unavailable"),
        }
    }
}

/// Mean LPIPS over the batch of [0, 1] images, or [`MetricValue::Unavailable`] without a model.
pub fn lpips(model: Option<&crate::Lpips>, a: &Tensor, b: &Tensor) -> Result<MetricValue> {
    match model {
        Some(m) => Ok(MetricValue::Value(m.distance(a, b)?.mean(None).double_value(&[]))),
        None => Ok(MetricValue::Unavailable),
    }
}
