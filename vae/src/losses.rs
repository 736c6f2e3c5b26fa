//! Losses for fitting latent fields and fine-tuning autoencoders. All return scalar tensors with
//! gradients; the PatchGAN losses are on [`crate::PatchGan`].

use tch::Tensor;

use crate::error::{Result, VaeError};
use crate::metrics::ssim;

/// Mean absolute error.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("l1", a, b)?;
    Ok((a - b).abs().mean(None))
}

/// 1 − SSIM (3DGS's SSIM; see [`crate::metrics::ssim`]), the structural term of Stage II's
/// 0.8·L1 + 0.2·D-SSIM.
pub fn dssim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(1.0 - ssim(a, b)?)
}

/// A diagonal Gaussian over `N×…` latents by its mean and log-variance.
#[derive(Debug, Clone, Copy)]
pub struct DiagonalGaussian<'a> {
    pub mean: &'a Tensor,
    pub logvar: &'a Tensor,
}

/// Closed-form KL(p ‖ q) between diagonal Gaussians, summed over each sample's elements and averaged
/// over the batch (LDM's `posterior.kl(other)` then `sum / N`). With `q = None`, q is the standard
/// normal: the KL term of VAE training. With q the frozen original encoder's posterior it is
/// Stage I's L_reg.
pub fn kl_diagonal(p: DiagonalGaussian, q: Option<DiagonalGaussian>) -> Result<Tensor> {
    same_shape("kl_diagonal p", p.mean, p.logvar)?;
    let per_element = match q {
        None => p.mean.square() + p.logvar.exp() - 1.0 - p.logvar,
        Some(q) => {
            same_shape("kl_diagonal q", p.mean, q.mean)?;
            same_shape("kl_diagonal q", q.mean, q.logvar)?;
            (p.mean - q.mean).square() / q.logvar.exp() + (p.logvar - q.logvar).exp() - 1.0 - p.logvar + q.logvar
        }
    };
    let dims: Vec<i64> = (1..per_element.dim() as i64).collect();
    Ok((per_element.sum_dim_intlist(&dims[..], false, None) * 0.5).mean(None))
}

fn same_shape(what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.size() == b.size() {
        Ok(())
    } else {
        Err(VaeError::input(
            what,
            format!("shapes differ: {:?} and {:?}", a.size(), b.size()),
        ))
    }
}
