//! A fitted field opened for frames at any camera: what `render-path` and `lrf-flow view` share. A latent
//! field renders at latent resolution (fast: the viewer's preview) and decodes to an image (slow); an RGB
//! field renders at full resolution.

use std::path::Path;

use anyhow::{Context, bail};
use lrf_formats::Camera;
use lrf_splat::train::GaussianField;
use lrf_splat::{Gaussians, RenderOptions, render};
use tch::Tensor;

use crate::artifacts::{FIELD_FILE, FIELD_INFO, FieldInfo, FieldSpace, Normalization, read_json};
use crate::autoencoder::AutoencoderSource;
use crate::latents::{decode_latent, false_color};
use lrf_vae::Autoencoder;

/// The field's Gaussians and how to turn a render into an image.
pub struct FieldFrames {
    pub info: FieldInfo,
    gaussians: Gaussians,
    options: RenderOptions,
}

/// Which model decodes a latent field's renders, not yet loaded: it can move to the thread that will
/// own the model (models are not `Send`).
pub struct DecoderSource {
    source: AutoencoderSource,
    normalization: Normalization,
}

/// The decoder of a latent field's renders.
pub struct FrameDecoder {
    model: Box<dyn Autoencoder>,
    normalization: Normalization,
}

impl DecoderSource {
    pub fn open(self) -> anyhow::Result<FrameDecoder> {
        Ok(FrameDecoder {
            model: self.source.open()?,
            normalization: self.normalization,
        })
    }
}

/// One rendered frame: the field's channels at the render's resolution, in [0, 1].
pub struct RawFrame {
    pub image: Tensor,
    /// Image pixels per render pixel (the field's downsampling for latent fields, else 1).
    pub factor: u32,
}

impl FieldFrames {
    /// Opens the field in `field_dir`, with its decoder when it is latent: the one it was fitted with, or
    /// `decoder` (e.g. an aligned one) when given.
    pub fn open(
        field_dir: &Path,
        decoder: Option<AutoencoderSource>,
    ) -> anyhow::Result<(FieldFrames, Option<DecoderSource>)> {
        let info: FieldInfo = read_json(&field_dir.join(FIELD_INFO))?;
        let field = GaussianField::load(&field_dir.join(FIELD_FILE))
            .with_context(|| format!("loading the field in {}", field_dir.display()))?;
        if let Some(group) = field.non_finite_group() {
            bail!(
                "the field in {} holds NaN or infinite `{group}` parameters",
                field_dir.display()
            );
        }
        let decoder = match &info.space {
            FieldSpace::Latent {
                autoencoder,
                normalization,
            } => Some(DecoderSource {
                source: decoder.unwrap_or_else(|| autoencoder.clone()),
                normalization: normalization.clone(),
            }),
            FieldSpace::Rgb if decoder.is_some() => bail!("a decoder was given, but the field is RGB"),
            FieldSpace::Rgb => None,
        };
        let frames = FieldFrames {
            gaussians: field.detached(),
            options: RenderOptions {
                color_offset_clamp: true,
                ..RenderOptions::default()
            },
            info,
        };
        Ok((frames, decoder))
    }

    /// Image pixels per render pixel.
    pub fn factor(&self) -> u32 {
        match self.info.space {
            FieldSpace::Latent { .. } => self.info.downsampling as u32,
            FieldSpace::Rgb => 1,
        }
    }

    /// Renders `camera` (at image size; a latent field renders at 1/factor of it, rounded down).
    pub fn render(&self, camera: &Camera) -> anyhow::Result<RawFrame> {
        let factor = self.factor();
        let (w, h) = (camera.width / factor, camera.height / factor);
        if w == 0 || h == 0 {
            bail!(
                "a {}x{} frame is smaller than the field's {factor}× downsampling",
                camera.width,
                camera.height
            );
        }
        let _guard = tch::no_grad_guard();
        let image = render(&self.gaussians, &camera.resized(w, h), &self.options)?
            .image
            .clamp(0.0, 1.0);
        Ok(RawFrame { image, factor })
    }
}

impl RawFrame {
    /// What to show before (or instead of) decoding: RGB as it is, a latent's channels 0–2 as false colour,
    /// enlarged to image size.
    pub fn preview(&self) -> Tensor {
        match self.factor {
            1 => self.image.shallow_clone(),
            f => false_color(&self.image, self.image.size()[1] * f as i64),
        }
    }
}

impl FrameDecoder {
    /// The decoded image `[3, H, W]` in [0, 1]; NaN is an error.
    pub fn decode(&self, frame: &RawFrame) -> anyhow::Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let image = decode_latent(self.model.as_ref(), &self.normalization.denormalize(&frame.image))?;
        if image.isnan().any().int64_value(&[]) != 0 {
            bail!("the decoded frame holds NaN: the field or the decoder is broken");
        }
        Ok(image)
    }
}
