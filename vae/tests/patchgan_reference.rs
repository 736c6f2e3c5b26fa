//! PatchGAN against taming's NLayerDiscriminator rebuilt in torch (tests/fixtures/patchgan_reference.py):
//! the LDM key layout, logits, hinge loss and adaptive weight; and the start-step schedule.

mod support;

use lrf_vae::{Checkpoint, GanConfig, PatchGan};
use tch::{Device, Kind, Tensor};

#[test]
fn patchgan_matches_taming_discriminator_hinge_and_adaptive_weight() {
    tch::set_num_threads(2);
    tch::manual_seed(9);
    let opts = (Kind::Float, Device::Cpu);
    let gan = PatchGan::new(GanConfig::default(), Device::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("disc.safetensors");
    gan.save(&weights).unwrap();
    // Reopening checks save/open round trip through LDM's key names.
    let gan = PatchGan::open(GanConfig::default(), &weights, Device::Cpu).unwrap();

    let (real, fake) = (
        Tensor::rand([2, 3, 64, 64], opts) * 2.0 - 1.0,
        Tensor::rand([2, 3, 64, 64], opts) * 2.0 - 1.0,
    );
    let last = (Tensor::randn([3, 8, 3, 3], opts) * 0.1).set_requires_grad(true);
    let (hidden, target) = (Tensor::randn([2, 8, 64, 64], opts), Tensor::rand([2, 3, 64, 64], opts));
    let saved = Checkpoint::open(&weights).unwrap();
    let mut named: Vec<(String, Tensor)> = saved
        .keys()
        .map(|k| (format!("disc.{k}"), saved.get(k).unwrap().shallow_clone()))
        .collect();
    for (k, t) in [
        ("real", &real),
        ("fake", &fake),
        ("last", &last.detach()),
        ("hidden", &hidden),
        ("target", &target),
    ] {
        named.push((k.to_string(), t.shallow_clone()));
    }
    let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    Tensor::write_safetensors(&named, &input).unwrap();
    support::run_fixture_script("patchgan_reference.py", &[&input, &output]);
    let reference = Checkpoint::open(&output).unwrap();

    let logits_real = gan.logits(&real, false).unwrap();
    assert_eq!(
        logits_real.size(),
        [2, 1, 6, 6],
        "6×6 logits for a 64×64 image, each seeing a 70×70 patch"
    );
    let step = 600;
    let d_loss = gan.discriminator_loss(&logits_real, &gan.logits(&fake, false).unwrap(), step);
    let decoded = hidden.conv2d::<Tensor>(&last, None, [1, 1], [1, 1], [1, 1], 1);
    let reconstruction = (&decoded - &target).abs().mean(None);
    let g_term = gan
        .generator_loss(&reconstruction, &gan.logits(&decoded, false).unwrap(), &last, step)
        .unwrap();
    let errors = [
        (
            "logits",
            support::relative_error(&logits_real, reference.get("logits_real").unwrap()),
        ),
        (
            "d_loss",
            support::relative_error(&d_loss.reshape([1]), reference.get("d_loss").unwrap()),
        ),
        (
            "g_term",
            support::relative_error(&g_term.reshape([1]), reference.get("g_term").unwrap()),
        ),
    ];
    println!("PatchGAN relative errors {errors:?}");
    for (what, err) in errors {
        assert!(err < 1e-5, "{what}: relative error {err:.3e}");
    }
    // Before the start step both adversarial terms vanish, with their graphs intact.
    assert_eq!(
        gan.discriminator_loss(&logits_real, &logits_real, 500)
            .double_value(&[]),
        0.0
    );
    let early = gan
        .generator_loss(&reconstruction, &gan.logits(&decoded, false).unwrap(), &last, 500)
        .unwrap();
    assert_eq!(early.double_value(&[]), 0.0);
    assert!(early.requires_grad());
}
