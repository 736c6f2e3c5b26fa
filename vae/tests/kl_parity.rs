//! AutoencoderKL against diffusers' AutoencoderKL, both from the same random weights, in the
//! diffusers and the LDM/CompVis key layouts. References come from tests/fixtures/kl_reference.py,
//! run once per test process into a temporary folder.

mod support;

use std::path::Path;

use lrf_vae::{Autoencoder, AutoencoderKL, Checkpoint, KeyLayout, KlConfig};
use tch::Device;

/// Generates one case's models and reference outputs into a temporary folder (removed on drop).
fn generate(case: &str) -> tempfile::TempDir {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    support::run_fixture_script("kl_reference.py", &[dir.path(), Path::new(case)]);
    dir
}

/// Loads `weights` (a diffusers folder or an LDM file) and checks encode mean, log-variance and
/// decode against the case's reference within 1e-4 relative.
fn check_case(dir: &Path, case: &str, weights: &Path) -> AutoencoderKL {
    let model = AutoencoderKL::open(weights, Device::Cpu).unwrap();
    let reference = Checkpoint::open(&dir.join(case).join("reference.safetensors")).unwrap();
    let _guard = tch::no_grad_guard();
    let posterior = model.encode(reference.get("image").unwrap()).unwrap();
    let decoded = model.decode(reference.get("mean").unwrap()).unwrap();
    let errors = [
        (
            "mean",
            support::relative_error(&posterior.mean, reference.get("mean").unwrap()),
        ),
        (
            "logvar",
            support::relative_error(posterior.logvar.as_ref().unwrap(), reference.get("logvar").unwrap()),
        ),
        (
            "decoded",
            support::relative_error(&decoded, reference.get("decoded").unwrap()),
        ),
    ];
    println!("{case} ({}): relative errors {errors:?}", weights.display());
    for (what, err) in errors {
        assert!(err < 1e-4, "{case}: {what} relative error {err:.3e} ≥ 1e-4");
    }
    model
}

#[test]
fn kl_small_c4_matches_diffusers_in_both_layouts() {
    let dir = generate("small_f8_c4");
    let model = check_case(dir.path(), "small_f8_c4", &dir.path().join("small_f8_c4"));
    assert_eq!((model.latent_channels(), model.downsampling()), (4, 8));
    let ldm = dir.path().join("small_f8_c4/ldm.safetensors");
    assert_eq!(
        KeyLayout::detect(&Checkpoint::open(&ldm).unwrap()).unwrap(),
        KeyLayout::Ldm
    );
    let from_ldm = check_case(dir.path(), "small_f8_c4", &ldm);
    assert_eq!(
        from_ldm.config(),
        model.config(),
        "architecture inferred from the LDM keys"
    );
}

#[test]
fn kl_small_c16_without_attention_or_quant_convs_matches_diffusers() {
    let dir = generate("small_f8_c16_plain");
    let model = check_case(dir.path(), "small_f8_c16_plain", &dir.path().join("small_f8_c16_plain"));
    assert!(!model.config().use_quant_conv && !model.config().mid_block_add_attention);
    assert_eq!((model.latent_channels(), model.config().norm_num_groups), (16, 8));
}

#[test]
fn kl_sd_kl_f8_matches_diffusers_in_both_layouts() {
    let dir = generate("sd_kl_f8");
    let model = check_case(dir.path(), "sd_kl_f8", &dir.path().join("sd_kl_f8"));
    assert_eq!(model.config(), &KlConfig::sd_kl_f8(4));
    let from_ldm = check_case(dir.path(), "sd_kl_f8", &dir.path().join("sd_kl_f8/ldm.safetensors"));
    assert_eq!(from_ldm.config(), &KlConfig::sd_kl_f8(4));
}

#[test]
fn kl_sd_kl_f8_d16_matches_diffusers() {
    let dir = generate("sd_kl_f8_d16");
    let model = check_case(dir.path(), "sd_kl_f8_d16", &dir.path().join("sd_kl_f8_d16"));
    assert_eq!(model.config(), &KlConfig::sd_kl_f8(16));
}
