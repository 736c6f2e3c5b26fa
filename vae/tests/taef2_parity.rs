//! TAEF2 against the reference implementation's fp32 outputs (../shared/models/taef2/parity_fp32.safetensors).

mod support;

use std::path::Path;

use lrf_vae::{Autoencoder, Checkpoint, Part, TinyAutoencoder};
use tch::{Device, Tensor};

fn fixture() -> Checkpoint {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/taef2/parity_fp32.safetensors");
    Checkpoint::open(&path).expect("the TAEF2 parity fixture (../shared/models/taef2) is readable")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn taef2_matches_reference_latent_and_decode_within_1e4() {
    tch::set_num_threads(2);
    let fixture = fixture();
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    assert_eq!(model.latent_channels(), 32);
    let _guard = tch::no_grad_guard();
    let latent = model.encode(fixture.get("image").unwrap()).unwrap().mean;
    let latent_err = max_abs(&latent, fixture.get("latent").unwrap());
    // Decode the reference latent so the two checks are independent.
    let decoded = model.decode(fixture.get("latent").unwrap()).unwrap();
    let decoded_err = max_abs(&decoded, fixture.get("decoded").unwrap());
    println!("TAEF2 parity: latent max |err| {latent_err:.3e}, decoded max |err| {decoded_err:.3e}");
    assert!(latent_err < 1e-4, "latent max abs error {latent_err}");
    assert!(decoded_err < 1e-4, "decoded max abs error {decoded_err}");
}

#[test]
fn taef2_halves_train_and_freeze_separately() {
    let mut model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    model.vars_mut(Part::Encoder).freeze();
    let image = Tensor::rand([1, 3, 16, 16], (tch::Kind::Float, Device::Cpu));
    let decoded = model.decode_unit(&model.encode_unit(&image).unwrap().mean).unwrap();
    (decoded - &image).abs().mean(None).backward();
    let params = |part| model.vars(part).trainable_variables();
    assert!(
        params(Part::Encoder)
            .iter()
            .all(|t| !t.requires_grad() && !t.grad().defined())
    );
    assert!(
        params(Part::Decoder)
            .iter()
            .all(|t| t.requires_grad() && t.grad().defined())
    );
    let last = model.decoder_output_weight();
    assert_eq!(last.size(), [3, 64, 3, 3]);
    assert!(
        last.grad().defined(),
        "the output weight is the decoder's own parameter"
    );
}

#[test]
fn open_autoencoder_recognizes_the_bundled_taef2_folder() {
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/taef2");
    let model = lrf_vae::open_autoencoder(&assets, Device::Cpu).unwrap();
    assert_eq!((model.latent_channels(), model.downsampling()), (32, 8));
    assert_eq!(model.input_range(), lrf_vae::InputRange::Unit);
    let embedded = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let latent = Tensor::randn([1, 32, 2, 3], (tch::Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    assert!(model.decode(&latent).unwrap().equal(&embedded.decode(&latent).unwrap()));
}

/// The decoder's scales follow madebyollin/taesd's TAESD decoder, which upsamples before its 7th, 12th and
/// 17th layers (indices 6, 11, 16), and every parameter has one.
#[test]
fn taef2_decoder_scales_follow_its_upsamplings() {
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    for (name, scale) in [
        ("1.weight", 1),
        ("5.conv.4.bias", 1),
        ("7.weight", 2),
        ("10.conv.0.weight", 2),
        ("12.weight", 4),
        ("15.conv.2.weight", 4),
        ("17.weight", 8),
        ("18.conv.0.weight", 8),
        ("19.bias", 8),
    ] {
        assert_eq!(model.decoder_scale(name), Some(scale), "{name}");
    }
    for unknown in ["20.weight", "weight", "x.weight"] {
        assert_eq!(model.decoder_scale(unknown), None, "{unknown}");
    }
    assert_eq!(support::decoder_scales(&model), [1, 2, 4, 8]);
}
