//! Losses for fitting latent fields and fine-tuning autoencoders. All return scalar tensors with
//! gradients; the PatchGAN losses are on [`crate::PatchGan`].

use tch::Tensor;

use crate::error::{Result, VaeError};
use crate::metrics::ssim;

mod photometric;
pub use photometric::l1_dssim;

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

/// An autoencoder's own reconstruction loss, LDM's `LPIPSWithDiscriminator` without its variance
/// term: L1 + `perceptual_weight`·LPIPS, plus the adaptively weighted PatchGAN generator term from the
/// discriminator's start step. Terms are means over pixels (LDM sums them; with its learnable log-variance
/// fixed at 0 that only rescales every weight), so they sit on the scale of the other stage losses.
pub struct AutoencoderLoss {
    /// LPIPS and its weight (LDM: 1.0).
    pub perceptual: Option<(crate::Lpips, f64)>,
    pub gan: Option<crate::PatchGan>,
}

/// One evaluation of [`AutoencoderLoss::generator`]: the total and its parts (the parts detached).
pub struct AutoencoderTerms {
    pub total: Tensor,
    pub l1: f64,
    /// `None` without LPIPS weights.
    pub perceptual: Option<f64>,
    /// `None` without a discriminator or before its start step.
    pub adversarial: Option<f64>,
}

impl AutoencoderLoss {
    /// The loss of `reconstructed` against `target`, both N×3×H×W in `range`. The adversarial weight
    /// balances gradient norms at `balance_at`, any tensor with a gradient that both terms depend on
    /// (LDM: the decoder's last layer; with a frozen decoder, e.g. the latent).
    pub fn generator(
        &self,
        reconstructed: &Tensor,
        target: &Tensor,
        range: crate::InputRange,
        balance_at: &Tensor,
        step: i64,
    ) -> Result<AutoencoderTerms> {
        let l1 = l1(reconstructed, target)?;
        // New tensors at each step, never `+=`: in-place adds would write through to `l1`'s storage.
        let mut reconstruction = l1.shallow_clone();
        let mut perceptual = None;
        if let Some((lpips, weight)) = &self.perceptual {
            let distance = lpips
                .distance(&range.to_unit(reconstructed), &range.to_unit(target))?
                .mean(None);
            perceptual = Some(distance.double_value(&[]));
            reconstruction = &reconstruction + distance * *weight;
        }
        let mut total = reconstruction.shallow_clone();
        let mut adversarial = None;
        if let Some(gan) = self.gan.as_ref().filter(|gan| gan.factor_at(step) > 0.0) {
            let fake = gan.logits(reconstructed, true)?;
            let term = gan.generator_loss(&reconstruction, &fake, balance_at, step)?;
            adversarial = Some(term.double_value(&[]));
            total = &total + term;
        }
        Ok(AutoencoderTerms {
            total,
            l1: l1.double_value(&[]),
            perceptual,
            adversarial,
        })
    }

    /// The discriminator's hinge loss on real and (detached) reconstructed images; `None` without a
    /// discriminator or before its start step, when it does not train.
    pub fn discriminator(&self, reconstructed: &Tensor, target: &Tensor, step: i64) -> Result<Option<Tensor>> {
        let Some(gan) = self.gan.as_ref().filter(|gan| gan.factor_at(step) > 0.0) else {
            return Ok(None);
        };
        let real = gan.logits(target, true)?;
        let fake = gan.logits(&reconstructed.detach(), true)?;
        Ok(Some(gan.discriminator_loss(&real, &fake, step)))
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::{GanConfig, InputRange, PatchGan};

    #[test]
    fn the_adversarial_terms_start_at_their_step_and_train_through_the_balance_tensor() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let config = GanConfig {
            start_step: 5,
            ..GanConfig::default()
        };
        let loss = AutoencoderLoss {
            perceptual: None,
            gan: Some(PatchGan::new(config, Device::Cpu)),
        };
        let latent = Tensor::randn([1, 4, 16, 16], opts).set_requires_grad(true);
        let decoded = latent
            .upsample_nearest2d([64, 64], None, None)
            .narrow(1, 0, 3)
            .sigmoid();
        let target = Tensor::rand([1, 3, 64, 64], opts);
        let before = loss.generator(&decoded, &target, InputRange::Unit, &latent, 4).unwrap();
        assert!(before.adversarial.is_none() && before.perceptual.is_none());
        assert_eq!(before.total.double_value(&[]), before.l1);
        assert!(loss.discriminator(&decoded, &target, 4).unwrap().is_none());

        let after = loss.generator(&decoded, &target, InputRange::Unit, &latent, 5).unwrap();
        let adversarial = after.adversarial.expect("started");
        assert!(adversarial != 0.0 && adversarial.is_finite());
        // f32 sums: compare relatively (the adaptive weight can make the adversarial term large).
        let total = after.total.double_value(&[]);
        let parts = after.l1 + adversarial;
        assert!(
            (total - parts).abs() <= 1e-5 * total.abs().max(1.0),
            "total {total} vs l1 + adversarial {parts}"
        );
        after.total.backward();
        assert!(latent.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let hinge = loss.discriminator(&decoded, &target, 5).unwrap().expect("started");
        assert!(hinge.double_value(&[]) > 0.0);
    }
}
