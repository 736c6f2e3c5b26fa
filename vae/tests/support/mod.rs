//! Shared by the tests that compare with independent Python implementations.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use lrf_vae::{Autoencoder, Part};
use tch::Tensor;

/// The interpreter with the reference packages, checked once (see `lrf_tests::python_with`).
pub fn python() -> PathBuf {
    lrf_tests::python_with(&["torch", "numpy", "scipy", "diffusers", "lpips", "stlpips_pytorch"])
}

/// Runs `tests/fixtures/<script>` with `args`; a missing interpreter or package fails the test with
/// the script's own message (these references are required, never skipped).
pub fn run_fixture_script(script: &str, args: &[&Path]) {
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let python = python();
    let output = Command::new(&python)
        .arg(&script_path)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (set LRF_PYTHON to an interpreter with torch): {e}",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        python.display(),
        script_path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// max |a − b| / max |b|: the error relative to the reference's scale.
pub fn relative_error(actual: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(actual.size(), reference.size(), "shapes differ");
    let scale = reference.abs().max().double_value(&[]).max(1e-12);
    (actual - reference).abs().max().double_value(&[]) / scale
}

/// The distinct scales of a decoder's parameters (`Autoencoder::decoder_scale`), each of which must have one.
pub fn decoder_scales(model: &dyn Autoencoder) -> Vec<i64> {
    let mut scales: Vec<i64> = model
        .vars(Part::Decoder)
        .variables()
        .keys()
        .map(|name| {
            model
                .decoder_scale(name)
                .unwrap_or_else(|| panic!("{name} has no scale"))
        })
        .collect();
    scales.sort();
    scales.dedup();
    scales
}
