//! A fitted field of any representation opened for frames at any camera: what `render`, `render-path` and
//! `lrf-flow view` share. A latent field renders at latent resolution (fast: the viewer's preview) and
//! decodes to an image (slow); an RGB field renders at full resolution.

use std::path::Path;

use anyhow::bail;
use lrf_formats::Camera;
use lrf_nerf::TriPlaneNerf;
use lrf_splat::{Gaussians, RenderOptions, render};
use tch::Tensor;

use crate::artifacts::{Field, FieldInfo, FieldModel, FieldSpace, Normalization};
use crate::autoencoder::AutoencoderSource;
use crate::latents::{decode_latent, false_color};
use lrf_vae::Autoencoder;

/// The field, ready to render, and how to turn a render into an image.
pub struct FieldFrames {
    pub info: FieldInfo,
    renderer: Renderer,
}

enum Renderer {
    Gaussians {
        gaussians: Gaussians,
        options: RenderOptions,
    },
    TriPlane(TriPlaneNerf),
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
        let Field { info, model } = Field::open(field_dir)?;
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
        let renderer = match model {
            FieldModel::Gaussians(field) => Renderer::Gaussians {
                gaussians: field.detached(),
                options: RenderOptions {
                    color_offset_clamp: true,
                    ..RenderOptions::default()
                },
            },
            FieldModel::TriPlane(nerf) => Renderer::TriPlane(nerf),
        };
        let frames = FieldFrames { info, renderer };
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
        Ok(RawFrame {
            image: self.render_at(&camera.resized(w, h))?,
            factor,
        })
    }

    /// The field's channels `[C, h, w]` at exactly `camera`'s size, clamped to [0, 1].
    pub fn render_at(&self, camera: &Camera) -> anyhow::Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let image = match &self.renderer {
            Renderer::Gaussians { gaussians, options } => render(gaussians, camera, options)?.image,
            Renderer::TriPlane(nerf) => nerf.render_view(camera)?,
        };
        Ok(image.clamp(0.0, 1.0))
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
