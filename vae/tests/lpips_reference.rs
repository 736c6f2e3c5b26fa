//! LPIPS (VGG16 and AlexNet) against the `lpips` pip package with the same random backbone weights
//! (tests/fixtures/lpips_reference.py).

mod support;

use lrf_vae::metrics::{MetricValue, lpips};
use lrf_vae::{Checkpoint, Lpips, LpipsNet};
use tch::Device;

#[test]
fn lpips_vgg_and_alex_match_the_lpips_package() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    support::run_fixture_script("lpips_reference.py", &[dir.path()]);
    let reference = Checkpoint::open(&dir.path().join("reference.safetensors")).unwrap();
    let (a, b) = (reference.get("a").unwrap(), reference.get("b").unwrap());
    let _guard = tch::no_grad_guard();
    for (net, name) in [(LpipsNet::Vgg16, "vgg"), (LpipsNet::Alex, "alex")] {
        let model = Lpips::open(net, &dir.path().join(format!("lpips_{name}.safetensors")), Device::Cpu).unwrap();
        let normalized = model.distance(a, b).unwrap();
        let raw = model.distance_3dgs(a, b).unwrap();
        let e1 = support::relative_error(&normalized, reference.get(&format!("{name}_normalized")).unwrap());
        let e2 = support::relative_error(&raw, reference.get(&format!("{name}_raw")).unwrap());
        println!("LPIPS {name}: {normalized:?} relative errors {e1:.2e} (normalized), {e2:.2e} (raw)");
        assert!(e1 < 1e-5 && e2 < 1e-5, "{name}: relative errors {e1}, {e2}");
        let MetricValue::Value(mean) = lpips(Some(&model), a, b).unwrap() else {
            panic!("a model gives a value")
        };
        assert!((mean - normalized.mean(None).double_value(&[])).abs() < 1e-7);
    }
}

#[test]
fn lpips_without_weights_is_unavailable_never_zero() {
    let image = tch::Tensor::rand([1, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    let value = lpips(None, &image, &image).unwrap();
    assert_eq!(value, MetricValue::Unavailable);
    assert_eq!(value.to_string(), "unavailable");
    assert_eq!(serde_json::to_string(&value).unwrap(), "\"unavailable\"");
    assert_eq!(serde_json::to_string(&MetricValue::Value(0.25)).unwrap(), "0.25");
}
