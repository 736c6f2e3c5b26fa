//! The 4- and 16-channel TAESD layouts (no pooled blocks) against the torch transcription of
//! madebyollin/taesd (tests/fixtures/taesd_reference.py), with random weights.

mod support;

use lrf_vae::{Autoencoder, Checkpoint, TinyAutoencoder};
use tch::Device;

#[test]
fn taesd_4_and_16_channel_layouts_match_the_reference_code_and_mismatched_halves_are_refused() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    support::run_fixture_script("taesd_reference.py", &[dir.path()]);
    for channels in [4, 16] {
        let file = |part: &str| dir.path().join(format!("taesd_c{channels}_{part}.safetensors"));
        let model = TinyAutoencoder::open(&file("encoder"), &file("decoder"), Device::Cpu).unwrap();
        assert_eq!(model.latent_channels(), channels);
        let reference = Checkpoint::open(&file("reference")).unwrap();
        let _guard = tch::no_grad_guard();
        let latent = model.encode(reference.get("image").unwrap()).unwrap().mean;
        let decoded = model.decode(reference.get("latent").unwrap()).unwrap();
        let e1 = support::relative_error(&latent, reference.get("latent").unwrap());
        let e2 = support::relative_error(&decoded, reference.get("decoded").unwrap());
        println!("TAESD {channels} channels: relative errors latent {e1:.2e}, decoded {e2:.2e}");
        assert!(e1 < 1e-5 && e2 < 1e-5, "{channels} channels: {e1}, {e2}");
    }
    // An encoder and a decoder of different latent widths do not make a model.
    let file = |c: i64, part: &str| dir.path().join(format!("taesd_c{c}_{part}.safetensors"));
    let err = TinyAutoencoder::open(&file(4, "encoder"), &file(16, "decoder"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("taesd_c16_decoder.safetensors") && err.contains("1.weight"),
        "{err}"
    );
}
