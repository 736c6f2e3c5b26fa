//! Latent operations several stages share: encoding one view, and sampling latents at image pixels.

use anyhow::{Context, bail};
use lrf_formats::image::ImageF32;
use lrf_formats::shard::ShardReader;
use lrf_formats::views::read_image;
use lrf_vae::{Autoencoder, TilePlan, decode_tiled, encode_tiled};
use tch::{Kind, Tensor};

/// The `[C, h, w]` latent of view `index`.
pub fn encode_view(model: &dyn Autoencoder, images: &ShardReader, index: usize) -> anyhow::Result<Tensor> {
    let image = read_image(images, index)?;
    let f = model.downsampling() as u32;
    if image.width % f != 0 || image.height % f != 0 {
        bail!(
            "view {index} is {}×{}, not a multiple of the autoencoder's factor {f}; ingest with `multiple: {f}`",
            image.width,
            image.height
        );
    }
    let pixels = image_tensor(&image).unsqueeze(0);
    let posterior = encode_tiled(model, &model.input_range().from_unit(&pixels), TilePlan::default())
        .with_context(|| format!("encoding view {index}"))?;
    Ok(posterior.mean.squeeze_dim(0).to_kind(Kind::Float))
}

/// An image as a `[C, H, W]` f32 tensor.
pub fn image_tensor(image: &lrf_formats::image::ImageF32) -> Tensor {
    Tensor::from_slice(&image.data).view([image.channels as i64, image.height as i64, image.width as i64])
}

/// Bilinear samples of a `[C, h, w]` latent at `[M, 2]` image-pixel positions (x, y), taken at x/`downsampling`
/// in latent pixels with centres at +0.5 and clamped to the border (as `ImageF32::sample_bilinear`): `[M, C]`,
/// differentiable in `latent`.
pub fn sample_latents(latent: &Tensor, pixels: &Tensor, downsampling: f64) -> Tensor {
    let [c, h, w] = latent.size()[..] else {
        panic!("sample_latents: latent must be [C, h, w], got {:?}", latent.size());
    };
    let m = pixels.size()[0];
    // align_corners = false: normalised −1 and 1 are the outer edges, so u latent pixels ↦ 2u/w − 1.
    let scale = Tensor::from_slice(&[2.0 / (downsampling * w as f64), 2.0 / (downsampling * h as f64)])
        .to_kind(latent.kind())
        .to_device(latent.device());
    let grid = (pixels.to_kind(latent.kind()).to_device(latent.device()) * scale - 1.0).view([1, 1, m, 2]);
    // Bilinear (0), border padding (1).
    let sampled = latent.unsqueeze(0).grid_sampler(&grid, 0, 1, false);
    sampled.view([c, m]).transpose(0, 1)
}

/// Pixel positions as the `[M, 2]` f32 tensor [`sample_latents`] takes.
pub fn pixels_tensor(pixels: &[[f32; 2]]) -> Tensor {
    let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
    Tensor::from_slice(&flat)
        .view([pixels.len() as i64, 2])
        .to_kind(Kind::Float)
}

/// `[C, h, w]` raw latent → `[3, H, W]` image in [0, 1].
pub fn decode_latent(model: &dyn Autoencoder, latent: &Tensor) -> anyhow::Result<Tensor> {
    let decoded = decode_tiled(model, &latent.unsqueeze(0), TilePlan::default())?;
    Ok(model.input_range().to_unit(&decoded).squeeze_dim(0).clamp(0.0, 1.0))
}

/// The first three channels of a normalised latent, clamped to [0, 1] and enlarged (nearest) to `height`.
pub fn false_color(normalized: &Tensor, height: i64) -> Tensor {
    let channels = normalized.size()[0].min(3);
    let mut rgb = normalized.narrow(0, 0, channels).clamp(0.0, 1.0);
    if channels < 3 {
        rgb = Tensor::cat(
            &[&rgb, &rgb.zeros_like().narrow(0, 0, 1).repeat([3 - channels, 1, 1])],
            0,
        );
    }
    let factor = height / normalized.size()[1].max(1);
    rgb.repeat_interleave_self_int(factor, 1, None)
        .repeat_interleave_self_int(factor, 2, None)
}

/// Panels `[3, H, W]` of one height, left to right.
pub fn side_by_side(panels: &[&Tensor]) -> anyhow::Result<ImageF32> {
    let joined = Tensor::cat(panels, 2).contiguous();
    let size = joined.size();
    Ok(ImageF32 {
        channels: 3,
        width: size[2] as u32,
        height: size[1] as u32,
        data: Vec::<f32>::try_from(joined.view([-1]))?,
    })
}
