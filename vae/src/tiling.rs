//! Tiled encoding and decoding: an image larger than a budget goes through the model tile by tile,
//! and overlapping tiles are blended with linear ramps, so memory is bounded by one tile's
//! activations plus the output, and seams do not show.

use tch::{Kind, Tensor};

use crate::error::{Result, VaeError};
use crate::{Autoencoder, Posterior, check_nchw};

/// Tile size and overlap, both in latent pixels (image pixels are f times these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    pub tile: i64,
    pub overlap: i64,
}

impl Default for TilePlan {
    /// 512-pixel tiles with 128 pixels of overlap at f = 8: TAEF2's decoder sees about ±17 latent
    /// pixels, and less overlap leaves visible seams (tests/tiling.rs measures it).
    fn default() -> Self {
        TilePlan { tile: 64, overlap: 16 }
    }
}

impl TilePlan {
    fn check(self) -> Result<()> {
        if self.tile > 0 && self.overlap >= 0 && self.overlap < self.tile {
            Ok(())
        } else {
            Err(VaeError::input(
                "TilePlan",
                format!("need 0 ≤ overlap < tile, got {self:?}"),
            ))
        }
    }
}

/// Tile origins along an axis of `length`: every `tile − overlap`, the last one flush with the end.
fn tile_starts(length: i64, tile: i64, overlap: i64) -> Vec<i64> {
    if length <= tile {
        return vec![0];
    }
    let mut starts: Vec<i64> = (0..)
        .map(|i| i * (tile - overlap))
        .take_while(|&s| s + tile < length)
        .collect();
    starts.push(length - tile);
    starts
}

/// Blending weights along one axis of an output tile of `size`, by distance from each side that
/// overlaps a neighbour: 0 over the outer quarter of the overlap (where the model saw the tile's
/// zero padding), a linear ramp over its middle half, 1 beyond. Two neighbours' weights sum to 1.
fn ramp_weights(size: i64, overlap: i64, before: bool, after: bool) -> Vec<f32> {
    let side = |distance: f32| ((distance - overlap as f32 / 4.0) / (overlap as f32 / 2.0)).clamp(0.0, 1.0);
    (0..size)
        .map(|x| {
            let before = if before && overlap > 0 {
                side(x as f32 + 0.5)
            } else {
                1.0
            };
            let after = if after && overlap > 0 {
                side((size - x) as f32 - 0.5)
            } else {
                1.0
            };
            before.min(after)
        })
        .collect()
}

/// Runs `model_fn` over overlapping tiles of `input` (`tile`, `overlap` in input pixels) and
/// blends the results; the output is `scale_num / scale_den` times the input's spatial size.
fn blend_tiles(
    input: &Tensor,
    tile: i64,
    overlap: i64,
    (scale_num, scale_den): (i64, i64),
    out_channels: i64,
    model_fn: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (n, _, h, w) = input.size4().expect("checked NCHW");
    let to_out = |x: i64| x * scale_num / scale_den;
    let options = (Kind::Float, input.device());
    let out = Tensor::zeros([n, out_channels, to_out(h), to_out(w)], options);
    let weight_sum = Tensor::zeros([1, 1, to_out(h), to_out(w)], options);
    let (ys, xs) = (tile_starts(h, tile, overlap), tile_starts(w, tile, overlap));
    for &y in &ys {
        for &x in &xs {
            let (th, tw) = (tile.min(h), tile.min(w));
            let result = model_fn(&input.narrow(2, y, th).narrow(3, x, tw))?.to_kind(Kind::Float);
            let ramp = to_out(overlap);
            let wy = ramp_weights(to_out(th), ramp, y > 0, y + th < h);
            let wx = ramp_weights(to_out(tw), ramp, x > 0, x + tw < w);
            let weights = Tensor::from_slice(&wy)
                .to_device(input.device())
                .outer(&Tensor::from_slice(&wx).to_device(input.device()));
            let region = |t: &Tensor| t.narrow(2, to_out(y), to_out(th)).narrow(3, to_out(x), to_out(tw));
            let (mut out_view, mut weight_view) = (region(&out), region(&weight_sum));
            out_view += result * &weights;
            weight_view += &weights;
        }
    }
    Ok(out / weight_sum)
}

/// Decodes latents tile by tile (inference only: no gradients are recorded). A latent no larger
/// than one tile is decoded in one call, with the same result as [`Autoencoder::decode`].
pub fn decode_tiled(model: &dyn Autoencoder, latents: &Tensor, plan: TilePlan) -> Result<Tensor> {
    plan.check()?;
    check_nchw("decode_tiled latents", latents, model.latent_channels(), 1)?;
    let f = model.downsampling();
    tch::no_grad(|| blend_tiles(latents, plan.tile, plan.overlap, (f, 1), 3, |t| model.decode(t)))
}

/// Encodes images tile by tile (inference only), blending means and log-variances alike.
pub fn encode_tiled(model: &dyn Autoencoder, images: &Tensor, plan: TilePlan) -> Result<Posterior> {
    plan.check()?;
    let f = model.downsampling();
    check_nchw("encode_tiled images", images, 3, f)?;
    let c = model.latent_channels();
    let has_logvar = std::cell::Cell::new(false);
    let blended = tch::no_grad(|| {
        blend_tiles(images, plan.tile * f, plan.overlap * f, (1, f), 2 * c, |t| {
            let p = model.encode(t)?;
            has_logvar.set(p.logvar.is_some());
            let logvar = p.logvar.unwrap_or_else(|| p.mean.zeros_like());
            Ok(Tensor::cat(&[p.mean, logvar], 1))
        })
    })?;
    let halves = blended.chunk(2, 1);
    Ok(Posterior {
        mean: halves[0].shallow_clone(),
        logvar: has_logvar.get().then(|| halves[1].shallow_clone()),
    })
}
