//! lrf-flow's autoencoders in tch: [`AutoencoderKL`] (diffusers and LDM/CompVis checkpoints),
//! [`TinyAutoencoder`] (the TAESD family, with the bundled TAEF2 as the default), tiled encoding and
//! decoding for large images, and the losses and metrics the method's stages and reports use.

mod allocator;
mod checkpoint;
mod error;
mod kl;
mod layers;
pub mod losses;
mod lpips;
pub mod metrics;
mod patchgan;
mod tiling;
mod tiny;

pub use allocator::retain_freed_memory;
pub use checkpoint::Checkpoint;
pub use error::{KeyReport, Result, VaeError};
pub use kl::{AutoencoderKL, KeyLayout, KlConfig};
pub use lpips::{Lpips, LpipsNet, PERCEPTUAL_WEIGHTS_ENV, perceptual_weights_dir};
pub use patchgan::{GanConfig, PatchGan};
pub use tiling::{TilePlan, decode_tiled, encode_tiled};
pub use tiny::TinyAutoencoder;

use std::path::Path;

use tch::{Device, Tensor, nn};

/// The value range an autoencoder expects its images in (and returns them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRange {
    /// [-1, 1]: KL autoencoders (Stable Diffusion, LDM).
    Symmetric,
    /// [0, 1]: the TAESD family.
    Unit,
}

impl InputRange {
    /// Maps an image in [0, 1] (lrf-flow's convention) into this range.
    pub fn from_unit(self, images: &Tensor) -> Tensor {
        match self {
            InputRange::Symmetric => images * 2.0 - 1.0,
            InputRange::Unit => images.shallow_clone(),
        }
    }

    /// Maps a decoder output in this range back to [0, 1], unclamped.
    pub fn to_unit(self, images: &Tensor) -> Tensor {
        match self {
            InputRange::Symmetric => (images + 1.0) * 0.5,
            InputRange::Unit => images.shallow_clone(),
        }
    }
}

/// The two halves of an autoencoder, whose parameters are trained or frozen separately
/// (Stage I trains the encoder, Stage III the decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The encoder and, for KL autoencoders, `quant_conv`.
    Encoder,
    /// `post_quant_conv` where present, and the decoder.
    Decoder,
}

/// What an encoder returns: a diagonal Gaussian for KL autoencoders, a point for deterministic ones.
#[derive(Debug)]
pub struct Posterior {
    /// The posterior mean (the latent itself for deterministic encoders). LRF encodes with this mode.
    pub mean: Tensor,
    /// The log-variance, clamped to [-30, 20] as diffusers and LDM do; `None` for deterministic encoders.
    pub logvar: Option<Tensor>,
}

impl Posterior {
    /// A reparameterised sample (differentiable in mean and log-variance); the mean when deterministic.
    pub fn sample(&self) -> Tensor {
        match &self.logvar {
            Some(logvar) => &self.mean + (logvar * 0.5).exp() * self.mean.randn_like(),
            None => self.mean.shallow_clone(),
        }
    }
}

/// An image autoencoder: images `N×3×H×W` in [`Autoencoder::input_range`] with H and W multiples of
/// the downsampling factor, latents `N×C×H/f×W/f` at the model's raw scale (no scaling factor).
pub trait Autoencoder {
    fn latent_channels(&self) -> i64;
    /// Spatial downsampling factor f (8 for every model here).
    fn downsampling(&self) -> i64;
    fn input_range(&self) -> InputRange;
    fn encode(&self, images: &Tensor) -> Result<Posterior>;
    fn decode(&self, latents: &Tensor) -> Result<Tensor>;
    /// The parameters of one half, to freeze (`freeze`) or to hand to an optimiser.
    fn vars(&self, part: Part) -> &nn::VarStore;
    fn vars_mut(&mut self, part: Part) -> &mut nn::VarStore;
    /// The weight of the decoder's last convolution, where [`PatchGan::generator_loss`] balances
    /// the reconstruction and adversarial gradients.
    fn decoder_output_weight(&self) -> Tensor;
    /// The resolution, as a multiple of the latent's, at which the decoder parameter `name` (as
    /// [`Autoencoder::vars`] names it) acts: 1 before the decoder's first upsampling, 2 after it, and so on
    /// up to the downsampling factor. `None` for a name the decoder does not hold. Lets training pick the
    /// latent-side or the image-side layers of a decoder whatever its architecture.
    fn decoder_scale(&self, name: &str) -> Option<i64>;
    /// Writes the model into `dir` in a layout [`open_autoencoder`] reads back and other tools load (a TAESD
    /// encoder/decoder pair, a diffusers folder), e.g. after fine-tuning one half.
    fn save_folder(&self, dir: &Path) -> Result<()>;

    /// Encodes images given in [0, 1], whatever range the model wants.
    fn encode_unit(&self, images: &Tensor) -> Result<Posterior> {
        self.encode(&self.input_range().from_unit(images))
    }

    /// Decodes to images in [0, 1] (unclamped), whatever range the model produces.
    fn decode_unit(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.input_range().to_unit(&self.decode(latents)?))
    }
}

/// Opens whichever autoencoder `path` holds: a TAESD-family folder (one `<name>_encoder.safetensors`
/// and its `<name>_decoder.safetensors`, as `assets/taef2`), a diffusers folder, or a single
/// AutoencoderKL safetensors file in either key layout.
pub fn open_autoencoder(path: &Path, device: Device) -> Result<Box<dyn Autoencoder>> {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| VaeError::Io {
            path: path.into(),
            source,
        })?;
        let mut tiny_pairs = Vec::new();
        for entry in entries {
            let file = entry
                .map_err(|source| VaeError::Io {
                    path: path.into(),
                    source,
                })?
                .path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(stem) = name.strip_suffix("_encoder.safetensors") {
                let decoder = path.join(format!("{stem}_decoder.safetensors"));
                if decoder.is_file() {
                    tiny_pairs.push((file.clone(), decoder));
                }
            }
        }
        match tiny_pairs.as_slice() {
            [(encoder, decoder)] => return Ok(Box::new(TinyAutoencoder::open(encoder, decoder, device)?)),
            [] => {}
            _ => {
                return Err(VaeError::checkpoint(
                    path.display().to_string(),
                    "holds several <name>_encoder/_decoder.safetensors pairs; name the files",
                ));
            }
        }
    }
    Ok(Box::new(AutoencoderKL::open(path, device)?))
}

/// Checks an `N×C×H×W` input: its channel count, and H and W multiples of `multiple`.
pub(crate) fn check_nchw(what: &str, t: &Tensor, channels: i64, multiple: i64) -> Result<()> {
    let size = t.size();
    match size.as_slice() {
        [_, c, h, w] if *c == channels && h % multiple == 0 && w % multiple == 0 && *h > 0 && *w > 0 => Ok(()),
        _ => Err(VaeError::input(
            what,
            format!("expected N×{channels}×H×W with H and W positive multiples of {multiple}, got {size:?}"),
        )),
    }
}
