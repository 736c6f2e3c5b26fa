//! A fitted field of any representation opened for frames at any camera: what `render`, `render-path` and
//! `lrf-flow view` share. A latent field renders at latent resolution (fast: the viewer's preview) and
//! decodes to an image (slow); an RGB field renders at full resolution.

use std::path::Path;

use anyhow::bail;
use lrf_formats::Camera;
use lrf_nerf::TriPlaneNerf;
use lrf_splat::{Gaussians, RenderOptions, render};
use tch::{Kind, Tensor};

use crate::artifacts::{Field, FieldInfo, FieldModel, FieldSpace, Normalization};
use crate::autoencoder::AutoencoderSource;
use crate::latents::{decode_latent, false_color};
use lrf_vae::{Autoencoder, Part};

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
#[derive(Clone)]
pub struct DecoderSource {
    source: AutoencoderSource,
    normalization: Normalization,
}

/// The decoder of a latent field's renders.
pub struct FrameDecoder {
    model: Box<dyn Autoencoder>,
    normalization: Normalization,
    precision: DecodePrecision,
}

/// The number format a [`FrameDecoder`] computes in.
///
/// bfloat16 halves a TAEF2 decode on CPUs with native bf16 dot products (AVX-512 BF16). Its images are
/// 52.7–55.3 dB PSNR from the f32 decode (one photo of each `real_train` scene), far above the autoencoder's
/// own 30–34 dB on them, so an interactive viewer uses it. Stages that score or store images decode in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodePrecision {
    F32,
    Bf16,
}

impl DecodePrecision {
    pub fn name(&self) -> &'static str {
        match self {
            DecodePrecision::F32 => "f32",
            DecodePrecision::Bf16 => "bf16",
        }
    }

    /// bfloat16 where this CPU computes it natively, else f32: emulated bfloat16 is slower than f32.
    pub fn fastest() -> Self {
        if native_bf16() {
            DecodePrecision::Bf16
        } else {
            DecodePrecision::F32
        }
    }
}

fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl DecoderSource {
    pub fn open(self, precision: DecodePrecision) -> anyhow::Result<FrameDecoder> {
        let mut model = self.source.open()?;
        if precision == DecodePrecision::Bf16 {
            model.vars_mut(Part::Decoder).bfloat16();
        }
        Ok(FrameDecoder {
            model,
            normalization: self.normalization,
            precision,
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
        let latent = self.normalization.denormalize(&frame.image);
        let latent = match self.precision {
            DecodePrecision::F32 => latent,
            DecodePrecision::Bf16 => latent.to_kind(Kind::BFloat16),
        };
        let image = decode_latent(self.model.as_ref(), &latent)?;
        if image.isnan().any().int64_value(&[]) != 0 {
            bail!("the decoded frame holds NaN: the field or the decoder is broken");
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoencoder::BUNDLED;

    /// A bfloat16 decode runs in bfloat16 (it differs from f32) and stays far below what a viewer's user can
    /// see: TAEF2 on a textured image's latents.
    #[test]
    fn a_bf16_decode_is_close_to_the_f32_decode() {
        let source = AutoencoderSource::resolve(BUNDLED, Path::new(".")).unwrap();
        let model = source.open().unwrap();
        let y = Tensor::arange(96, (Kind::Float, tch::Device::Cpu)).view([1, 96, 1]) / 96.0;
        let x = Tensor::arange(128, (Kind::Float, tch::Device::Cpu)).view([1, 1, 128]) / 128.0;
        let image = Tensor::cat(
            &[
                (&x * 2.0 + &y).sin() * 0.4 + 0.5,
                ((&x * 25.0).sin() * (&y * 19.0).cos()) * 0.3 + 0.5,
                (&y * 0.8 + &x * 0.2 + (&x * 60.0).sin().gt(0.3).to_kind(Kind::Float) * 0.3).clamp(0.0, 1.0),
            ],
            0,
        );
        let latent = tch::no_grad(|| model.encode_unit(&image.unsqueeze(0)).unwrap().mean.squeeze_dim(0));
        let normalization = Normalization::over(&[&latent]).unwrap();
        let frame = RawFrame {
            image: normalization.normalize(&latent),
            factor: 8,
        };
        let decoder = DecoderSource { source, normalization };
        let decode = |precision| decoder.clone().open(precision).unwrap().decode(&frame).unwrap();
        let (full, half) = (decode(DecodePrecision::F32), decode(DecodePrecision::Bf16));
        assert_eq!(half.kind(), Kind::Float);
        let psnr = lrf_vae::metrics::psnr(&half.unsqueeze(0), &full.unsqueeze(0)).unwrap();
        assert!(psnr.is_finite() && psnr > 35.0, "bf16 against f32 decode: {psnr:.2} dB");
        eprintln!("bf16 against f32 decode: {psnr:.2} dB PSNR");
    }
}
