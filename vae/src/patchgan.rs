//! LDM's PatchGAN discriminator (taming-transformers' `NLayerDiscriminator`) with the hinge loss and
//! the adaptive generator weight of `LPIPSWithDiscriminator`, for fine-tuning decoders.

use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::checkpoint::{Checkpoint, write_vars};
use crate::error::{Result, VaeError};

/// When and how strongly the adversarial term enters the autoencoder's loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GanConfig {
    /// First training step with the adversarial term (LRF's Stage I: 501; LDM's kl-f8 config: 50001).
    pub start_step: i64,
    /// Multiplies the adaptive weight (LDM's `disc_weight`, 0.5).
    pub weight: f64,
    /// Multiplies both losses once started (LDM's `disc_factor`, 1).
    pub factor: f64,
    /// Stride-2 layers after the first (3 in LDM: 70×70 patches).
    pub layers: i64,
    /// Width of the first layer (64).
    pub channels: i64,
}

impl Default for GanConfig {
    fn default() -> Self {
        GanConfig {
            start_step: 501,
            weight: 0.5,
            factor: 1.0,
            layers: 3,
            channels: 64,
        }
    }
}

#[derive(Debug)]
enum Layer {
    Conv(nn::Conv2D),
    Norm(nn::BatchNorm),
    LeakyRelu,
}

/// The discriminator and its loss schedule. Parameters are named as in LDM (`main.N.weight`), so a
/// checkpoint's `loss.discriminator.*` tensors, prefix removed, load directly.
pub struct PatchGan {
    config: GanConfig,
    vars: nn::VarStore,
    layers: Vec<Layer>,
}

impl PatchGan {
    /// A fresh discriminator with LDM's initialisation (conv weights N(0, 0.02), norm scales N(1, 0.02)).
    pub fn new(config: GanConfig, device: Device) -> Self {
        let vars = nn::VarStore::new(device);
        let main = vars.root() / "main";
        let conv_init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let mut layers = Vec::new();
        let push_conv = |layers: &mut Vec<Layer>, cin: i64, cout: i64, stride: i64, bias: bool| {
            let index = layers.len();
            let cfg = nn::ConvConfig {
                stride,
                padding: 1,
                bias,
                ws_init: conv_init,
                ..Default::default()
            };
            layers.push(Layer::Conv(nn::conv2d(&main / index, cin, cout, 4, cfg)));
        };
        let push_norm = |layers: &mut Vec<Layer>, channels: i64| {
            let index = layers.len();
            let cfg = nn::BatchNormConfig {
                ws_init: nn::Init::Randn { mean: 1.0, stdev: 0.02 },
                ..Default::default()
            };
            layers.push(Layer::Norm(nn::batch_norm2d(&main / index, channels, cfg)));
        };
        let ndf = config.channels;
        push_conv(&mut layers, 3, ndf, 2, true);
        layers.push(Layer::LeakyRelu);
        let mut width = ndf;
        for n in 1..=config.layers {
            let out = ndf * (1 << n.min(3));
            // The last of these keeps the resolution (stride 1), as in taming's NLayerDiscriminator.
            push_conv(&mut layers, width, out, if n < config.layers { 2 } else { 1 }, false);
            push_norm(&mut layers, out);
            layers.push(Layer::LeakyRelu);
            width = out;
        }
        push_conv(&mut layers, width, 1, 1, true);
        PatchGan { config, vars, layers }
    }

    /// Loads weights saved by [`PatchGan::save`] or taken from an LDM checkpoint (keys `main.N.*`).
    pub fn open(config: GanConfig, path: &Path, device: Device) -> Result<Self> {
        let gan = Self::new(config, device);
        let ckpt = Checkpoint::open(path)?;
        // PyTorch counts BatchNorm updates; the momentum update used here does not need it.
        ckpt.load_into(
            &[&gan.vars],
            |name| vec![name.to_string()],
            |k| k.ends_with(".num_batches_tracked"),
        )?;
        Ok(gan)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_vars(&[&self.vars], path)
    }

    pub fn config(&self) -> &GanConfig {
        &self.config
    }

    /// The discriminator's parameters, for its own optimiser.
    pub fn vars(&self) -> &nn::VarStore {
        &self.vars
    }

    /// Patch logits (N×1×h×w) for images in the autoencoder's range; `train` updates BatchNorm's
    /// running statistics and normalises with the batch's.
    pub fn logits(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        crate::check_nchw("PatchGan::logits images", images, 3, 1)?;
        Ok(self.layers.iter().fold(images.shallow_clone(), |x, layer| match layer {
            Layer::Conv(c) => x.apply(c),
            Layer::Norm(n) => x.apply_t(n, train),
            Layer::LeakyRelu => x.maximum(&(&x * 0.2)),
        }))
    }

    /// `factor` from `start_step` on, 0 before (LDM's `adopt_weight`).
    pub fn factor_at(&self, step: i64) -> f64 {
        if step < self.config.start_step {
            0.0
        } else {
            self.config.factor
        }
    }

    /// The discriminator's hinge loss, ½(mean relu(1 − real) + mean relu(1 + fake)), scaled by the
    /// schedule's factor at `step`.
    pub fn discriminator_loss(&self, real_logits: &Tensor, fake_logits: &Tensor, step: i64) -> Tensor {
        let hinge = ((-real_logits + 1.0).relu().mean(None) + (fake_logits + 1.0).relu().mean(None)) * 0.5;
        hinge * self.factor_at(step)
    }

    /// The adversarial term of the autoencoder's loss: −mean(fake logits), weighted by
    /// ‖∇ reconstruction‖ / (‖∇ adversarial‖ + 1e-4) at `last_layer` (clamped to [0, 1e4], detached,
    /// times `weight`) and by the schedule's factor at `step`. Both losses must still have their
    /// graphs; they are kept for the caller's backward pass.
    pub fn generator_loss(
        &self,
        reconstruction: &Tensor,
        fake_logits: &Tensor,
        last_layer: &Tensor,
        step: i64,
    ) -> Result<Tensor> {
        let adversarial = -fake_logits.mean(None);
        let grad_norm = |loss: &Tensor| -> Result<f64> {
            let grads = Tensor::f_run_backward(&[loss], &[last_layer], true, false).map_err(|e| {
                VaeError::input(
                    "PatchGan::generator_loss",
                    format!("no gradient at the last layer: {e}"),
                )
            })?;
            Ok(grads[0].norm().double_value(&[]))
        };
        let weight =
            (grad_norm(reconstruction)? / (grad_norm(&adversarial)? + 1e-4)).clamp(0.0, 1e4) * self.config.weight;
        Ok(adversarial * (weight * self.factor_at(step)))
    }
}
