//! How far decoding a crop of a latent lies from decoding the whole latent, with and without context
//! around the crop: the measurement behind `decoder-align`'s `context` parameter.
//!
//!     cargo run -p lrf-vae --example crop_context -- IMAGE.png
//!
//! TAEF2 encodes the image (tiled, as vae-encode does) and decodes it whole; then square windows of the
//! latent at nine places are decoded with `context` latent pixels around them (fewer at the edges). It
//! prints the PSNR of each window's decoding against the whole decoding of the same region, and how much
//! closer to or further from the image it is, averaged over the nine places.

use lrf_vae::{Autoencoder, TilePlan, TinyAutoencoder, decode_tiled, encode_tiled, metrics::psnr};
use tch::{Device, Kind};
fn main() {
    tch::set_num_threads(1);
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: crop_context IMAGE");
        std::process::exit(2);
    };
    let img = tch::vision::image::load(&path)
        .expect("reading the image")
        .to_kind(Kind::Float)
        / 255.0;
    let (h, w) = (img.size()[1] / 8 * 8, img.size()[2] / 8 * 8);
    let img = img.narrow(1, 0, h).narrow(2, 0, w);
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let _g = tch::no_grad_guard();
    let range = model.input_range();
    let z = encode_tiled(&model, &range.from_unit(&img.unsqueeze(0)), TilePlan::default())
        .unwrap()
        .mean;
    let full = range
        .to_unit(&decode_tiled(&model, &z, TilePlan::default()).unwrap())
        .clamp(0.0, 1.0);
    println!(
        "image {h}x{w}: full AE psnr {:.2}",
        psnr(&full, &img.unsqueeze(0)).unwrap()
    );
    let (lh, lw) = (h / 8, w / 8);
    for (win, ctx) in [(16i64, 0i64), (16, 4), (16, 8), (16, 16), (32, 0), (32, 8)] {
        let (mut to_full, mut to_image, mut n) = (0.0, 0.0, 0);
        for t in [lh / 2 - win / 2, 20, 5].map(|t: i64| t.clamp(0, lh - win)) {
            for l in [lw / 2 - win / 2, 10, lw - win - 12].map(|l: i64| l.clamp(0, lw - win)) {
                let (ct, cl) = ((t - ctx).max(0), (l - ctx).max(0));
                let (cb, cr) = ((t + win + ctx).min(lh), (l + win + ctx).min(lw));
                let crop = z.narrow(2, ct, cb - ct).narrow(3, cl, cr - cl);
                let decoded = range.to_unit(&model.decode(&crop).unwrap()).clamp(0.0, 1.0);
                let inner = decoded
                    .narrow(2, (t - ct) * 8, win * 8)
                    .narrow(3, (l - cl) * 8, win * 8);
                let whole = full.narrow(2, t * 8, win * 8).narrow(3, l * 8, win * 8);
                let truth = img.unsqueeze(0).narrow(2, t * 8, win * 8).narrow(3, l * 8, win * 8);
                to_full += psnr(&inner, &whole).unwrap();
                to_image += psnr(&inner, &truth).unwrap() - psnr(&whole, &truth).unwrap();
                n += 1;
            }
        }
        println!(
            "window {win} context {ctx}: {:.2} dB from the whole decoding; {:+.2} dB against the image",
            to_full / n as f64,
            to_image / n as f64
        );
    }
}
