//! AutoencoderKL against diffusers' AutoencoderKL, both from the same random weights, in the
//! diffusers and the LDM/CompVis key layouts, and our saved folders in diffusers' loader. References
//! come from tests/fixtures/kl_reference.py, run by each test into a temporary folder.

mod support;

use std::path::Path;

use lrf_vae::{Autoencoder, AutoencoderKL, Checkpoint, KeyLayout, KlConfig, Part};
use tch::{Device, Tensor};

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

/// [`check_case`] on the case's diffusers folder, then on its LDM-layout copy, whose architecture
/// (inferred from the keys alone) must equal the folder's config. Returns the diffusers-layout model.
fn check_both_layouts(dir: &Path, case: &str) -> AutoencoderKL {
    let model = check_case(dir, case, &dir.join(case));
    let ldm = dir.join(case).join("ldm.safetensors");
    assert_eq!(
        KeyLayout::detect(&Checkpoint::open(&ldm).unwrap()).unwrap(),
        KeyLayout::Ldm
    );
    let from_ldm = check_case(dir, case, &ldm);
    assert_eq!(
        from_ldm.config(),
        model.config(),
        "{case}: architecture inferred from the LDM keys"
    );
    model
}

#[test]
fn kl_small_c4_matches_diffusers_in_both_layouts() {
    let dir = generate("small_f8_c4");
    let model = check_both_layouts(dir.path(), "small_f8_c4");
    assert_eq!((model.latent_channels(), model.downsampling()), (4, 8));
}

#[test]
fn kl_small_c16_without_attention_or_quant_convs_matches_diffusers() {
    let dir = generate("small_f8_c16_plain");
    let model = check_case(dir.path(), "small_f8_c16_plain", &dir.path().join("small_f8_c16_plain"));
    assert!(!model.config().use_quant_conv && !model.config().mid_block_add_attention);
    assert_eq!((model.latent_channels(), model.config().norm_num_groups), (16, 8));
}

/// LDM's `attn_resolutions` (kl-f16, kl-f32): self-attention inside a down level and the up level of
/// the same resolution, diffusers' AttnDownEncoderBlock2D / AttnUpDecoderBlock2D.
#[test]
fn kl_small_with_attention_level_matches_diffusers_in_both_layouts() {
    let dir = generate("small_f8_attention_level");
    let model = check_both_layouts(dir.path(), "small_f8_attention_level");
    let config = model.config();
    assert_eq!(config.down_block_types[2], "AttnDownEncoderBlock2D");
    assert_eq!(config.up_block_types[1], "AttnUpDecoderBlock2D");
    let attention_levels = |types: &[String]| types.iter().filter(|t| t.starts_with("Attn")).count();
    assert_eq!(
        (
            attention_levels(&config.down_block_types),
            attention_levels(&config.up_block_types)
        ),
        (1, 1)
    );
}

#[test]
fn kl_sd_kl_f8_matches_diffusers_in_both_layouts() {
    let dir = generate("sd_kl_f8");
    assert_eq!(
        check_both_layouts(dir.path(), "sd_kl_f8").config(),
        &KlConfig::sd_kl_f8(4)
    );
}

#[test]
fn kl_sd_kl_f8_d16_matches_diffusers_in_both_layouts() {
    let dir = generate("sd_kl_f8_d16");
    assert_eq!(
        check_both_layouts(dir.path(), "sd_kl_f8_d16").config(),
        &KlConfig::sd_kl_f8(16)
    );
}

/// A model opened from an LDM file, changed as fine-tuning would change it and written by
/// `save_folder`, loads in diffusers' `AutoencoderKL.from_pretrained` (every tensor as saved) and
/// reproduces our encode and decode there: other tools can use the models lrf-flow fine-tunes.
#[test]
fn kl_saved_folder_loads_in_diffusers_from_pretrained() {
    let case = "small_f8_attention_level";
    let dir = generate(case);
    let model = AutoencoderKL::open(&dir.path().join(case).join("ldm.safetensors"), Device::Cpu).unwrap();
    tch::manual_seed(5);
    tch::no_grad(|| {
        for part in [Part::Encoder, Part::Decoder] {
            for (_, mut var) in model.vars(part).variables() {
                let step = var.randn_like() * 0.02;
                var += step;
            }
        }
    });
    let saved = dir.path().join("saved");
    model.save_folder(&saved).unwrap();

    let reference = Checkpoint::open(&dir.path().join(case).join("reference.safetensors")).unwrap();
    let image = reference.get("image").unwrap();
    let _guard = tch::no_grad_guard();
    let posterior = model.encode(image).unwrap();
    let decoded = model.decode(&posterior.mean).unwrap();
    assert!(
        support::relative_error(&posterior.mean, reference.get("mean").unwrap()) > 1e-3,
        "the weights were changed before saving"
    );
    let probe = dir.path().join("probe.safetensors");
    Tensor::write_safetensors(&[("image", image), ("latent", &posterior.mean)], &probe).unwrap();
    let theirs_path = dir.path().join("diffusers.safetensors");
    support::run_fixture_script(
        "kl_reference.py",
        &[Path::new("--from-pretrained"), &saved, &probe, &theirs_path],
    );
    let theirs = Checkpoint::open(&theirs_path).unwrap();
    let errors = [
        (
            "mean",
            support::relative_error(&posterior.mean, theirs.get("mean").unwrap()),
        ),
        (
            "logvar",
            support::relative_error(posterior.logvar.as_ref().unwrap(), theirs.get("logvar").unwrap()),
        ),
        (
            "decoded",
            support::relative_error(&decoded, theirs.get("decoded").unwrap()),
        ),
    ];
    println!("saved folder in diffusers: relative errors {errors:?}");
    for (what, err) in errors {
        assert!(err < 1e-4, "{what} relative error {err:.3e} ≥ 1e-4");
    }
}
