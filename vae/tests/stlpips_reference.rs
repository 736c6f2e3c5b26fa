//! ST-LPIPS against the `stlpips_pytorch` package with the weights its wheel ships, and LPIPS built from a
//! torchvision-layout backbone plus the `lpips` wheel's heads against the `lpips` package
//! (tests/fixtures/stlpips_reference.py). The shipped weights are those `scripts/setup.sh` converts.

mod support;

use lrf_vae::{Checkpoint, Lpips, LpipsNet};
use tch::Device;

#[test]
fn st_lpips_and_lpips_from_a_backbone_match_their_packages() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    support::run_fixture_script("stlpips_reference.py", &[dir.path()]);
    let reference = Checkpoint::open(&dir.path().join("reference.safetensors")).unwrap();
    let (a, b) = (reference.get("a").unwrap(), reference.get("b").unwrap());
    let _guard = tch::no_grad_guard();
    let nets = [
        (LpipsNet::Vgg16ShiftTolerant, LpipsNet::Vgg16, "vgg"),
        (LpipsNet::AlexShiftTolerant, LpipsNet::Alex, "alex"),
    ];
    for (shift_tolerant, plain, name) in nets {
        let model = Lpips::shift_tolerant(shift_tolerant, Device::Cpu).unwrap();
        let distance = model.distance(a, b).unwrap();
        let error = support::relative_error(&distance, reference.get(&format!("st_{name}")).unwrap());
        println!("ST-LPIPS {name}: {distance:?}, relative error {error:.2e}");
        assert!(error < 1e-5, "ST-LPIPS {name}: relative error {error}");
        // Distinct images are a positive distance: a network left with zeros would give 0 here.
        assert!(distance.min().double_value(&[]) > 1e-3);

        let backbone = dir.path().join(format!("torchvision_{name}.safetensors"));
        let model = Lpips::with_backbone(plain, &backbone, Device::Cpu).unwrap();
        let distance = model.distance(a, b).unwrap();
        let error = support::relative_error(&distance, reference.get(&format!("lpips_{name}")).unwrap());
        println!("LPIPS {name} (torchvision backbone + shipped heads): relative error {error:.2e}");
        assert!(error < 1e-5, "LPIPS {name}: relative error {error}");
    }
}

#[test]
fn a_shift_tolerant_network_is_refused_for_lpips_and_the_converse() {
    let error = Lpips::shift_tolerant(LpipsNet::Vgg16, Device::Cpu).err().unwrap();
    assert!(error.to_string().contains("not a shift-tolerant network"), "{error}");
}
