//! Tiled encode/decode with the bundled TAEF2: identical to the plain call when one tile suffices,
//! and close to it (no visible seams) when tiles overlap.

use lrf_vae::metrics::psnr;
use lrf_vae::{Autoencoder, TilePlan, TinyAutoencoder, decode_tiled, encode_tiled};
use tch::{Device, Kind, Tensor};

/// A smooth colourful test image, N×3×H×W in [0, 1].
fn pattern(h: i64, w: i64) -> Tensor {
    let y = Tensor::arange(h, (Kind::Float, Device::Cpu)).view([h, 1]) / h as f64;
    let x = Tensor::arange(w, (Kind::Float, Device::Cpu)).view([1, w]) / w as f64;
    let r = ((&x * 9.0).sin() * (&y * 5.0).cos() + 1.0) * 0.5;
    let g = (&x * &y * 12.0).cos() * 0.4 + 0.5;
    let b = ((&x + &y) * 3.0).sin().abs();
    Tensor::stack(&[r, g, b], 0).unsqueeze(0)
}

#[test]
fn tiled_matches_plain_when_one_tile_covers_the_input() {
    tch::set_num_threads(2);
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let image = pattern(64, 96);
    let _guard = tch::no_grad_guard();
    let plain = model.encode(&image).unwrap().mean;
    let plan = TilePlan { tile: 16, overlap: 4 };
    assert!(
        encode_tiled(&model, &image, plan)
            .unwrap()
            .mean
            .allclose(&plain, 1e-6, 1e-6, false)
    );
    assert!(
        decode_tiled(&model, &plain, plan)
            .unwrap()
            .allclose(&model.decode(&plain).unwrap(), 1e-6, 1e-6, false)
    );
}

#[test]
fn tiled_decode_and_encode_blend_overlapping_tiles_without_seams() {
    tch::set_num_threads(2);
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let image = pattern(320, 448);
    let _guard = tch::no_grad_guard();
    let latent = model.encode(&image).unwrap().mean;
    let plain = model.decode(&latent).unwrap().clamp(0.0, 1.0);
    // TAEF2's decoder sees about ±17 latent pixels; tiles need overlap on that order (as the default's 16).
    let plan = TilePlan { tile: 32, overlap: 16 };
    let tiled = decode_tiled(&model, &latent, plan).unwrap().clamp(0.0, 1.0);
    let decode_psnr = psnr(&tiled, &plain).unwrap();
    let tiled_latent = encode_tiled(&model, &image, plan).unwrap();
    assert!(tiled_latent.logvar.is_none());
    let latent_err = (&tiled_latent.mean - &latent).abs().mean(None).double_value(&[]);
    let latent_scale = latent.abs().mean(None).double_value(&[]);
    println!(
        "tiled vs plain: decode PSNR {decode_psnr:.2} dB, encode mean |err| {latent_err:.4} (mean |z| {latent_scale:.3})"
    );
    assert!(decode_psnr > 32.0, "tiled decode differs from plain: {decode_psnr} dB");
    assert!(
        latent_err < 0.1 * latent_scale,
        "tiled encode differs from plain: {latent_err}"
    );
}

#[test]
fn tile_plan_is_validated() {
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let latent = Tensor::zeros([1, 32, 8, 8], (Kind::Float, Device::Cpu));
    assert!(decode_tiled(&model, &latent, TilePlan { tile: 4, overlap: 4 }).is_err());
}
