//! PSNR, SSIM, L1, D-SSIM and the KL divergences against tests/fixtures/metrics_reference.py
//! (numpy, scipy.ndimage and torch.distributions: implementations independent of this crate's).

mod support;

use lrf_vae::Checkpoint;
use lrf_vae::losses::{DiagonalGaussian, dssim, kl_diagonal, l1};
use lrf_vae::metrics::{psnr, ssim};
use tch::{Device, Kind, Tensor};

fn scalar(reference: &Checkpoint, key: &str) -> f64 {
    reference
        .get(key)
        .unwrap_or_else(|| panic!("reference lacks {key}"))
        .double_value(&[0])
}

#[test]
fn metrics_and_losses_match_numpy_scipy_and_torch_distributions() {
    tch::manual_seed(5);
    let opts = (Kind::Float, Device::Cpu);
    // A reference image and a noisy, blurred rendition of it, as a decoded render would be.
    let b = Tensor::rand([2, 3, 40, 48], opts);
    let a = (b.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
        + Tensor::randn([2, 3, 40, 48], opts) * 0.05)
        .clamp(0.0, 1.0);
    let latent_b = Tensor::randn([1, 4, 24, 20], opts);
    let latent_a = &latent_b * 0.8 + Tensor::randn([1, 4, 24, 20], opts) * 0.3;
    let gaussians: Vec<Tensor> = (0..4).map(|_| Tensor::randn([2, 4, 5, 6], opts)).collect();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    let named = [
        ("a", &a),
        ("b", &b),
        ("latent_a", &latent_a),
        ("latent_b", &latent_b),
        ("mean_p", &gaussians[0]),
        ("logvar_p", &gaussians[1]),
        ("mean_q", &gaussians[2]),
        ("logvar_q", &gaussians[3]),
    ];
    Tensor::write_safetensors(&named, &input).unwrap();
    support::run_fixture_script("metrics_reference.py", &[&input, &output]);
    let reference = Checkpoint::open(&output).unwrap();

    let p = DiagonalGaussian {
        mean: &gaussians[0],
        logvar: &gaussians[1],
    };
    let q = DiagonalGaussian {
        mean: &gaussians[2],
        logvar: &gaussians[3],
    };
    let ssim_rgb = ssim(&a, &b).unwrap().double_value(&[]);
    let checks = [
        ("psnr", psnr(&a, &b).unwrap(), scalar(&reference, "psnr"), 1e-6),
        ("ssim_rgb", ssim_rgb, scalar(&reference, "ssim_rgb"), 1e-5),
        (
            "ssim_latent",
            ssim(&latent_a, &latent_b).unwrap().double_value(&[]),
            scalar(&reference, "ssim_latent"),
            1e-5,
        ),
        (
            "dssim",
            dssim(&a, &b).unwrap().double_value(&[]),
            1.0 - scalar(&reference, "ssim_rgb"),
            1e-5,
        ),
        (
            "l1",
            l1(&a, &b).unwrap().double_value(&[]),
            scalar(&reference, "l1"),
            1e-6,
        ),
        (
            "kl_standard",
            kl_diagonal(p, None).unwrap().double_value(&[]),
            scalar(&reference, "kl_standard"),
            1e-5,
        ),
        (
            "kl_pq",
            kl_diagonal(p, Some(q)).unwrap().double_value(&[]),
            scalar(&reference, "kl_pq"),
            1e-5,
        ),
    ];
    for (name, ours, theirs, tolerance) in checks {
        let relative = (ours - theirs).abs() / theirs.abs().max(1e-12);
        println!("{name}: ours {ours:.8} reference {theirs:.8} relative error {relative:.2e}");
        assert!(
            relative < tolerance,
            "{name}: ours {ours} vs reference {theirs} (relative {relative:.2e})"
        );
    }
}

#[test]
fn metrics_known_values_and_shape_errors() {
    let opts = (Kind::Float, Device::Cpu);
    let image = Tensor::rand([3, 16, 16], opts);
    assert!((ssim(&image, &image).unwrap().double_value(&[]) - 1.0).abs() < 1e-6);
    assert_eq!(psnr(&image, &image).unwrap(), f64::INFINITY);
    // A uniform error of 0.1 is 20 dB.
    assert!((psnr(&(&image * 0.0), &(&image * 0.0 + 0.1)).unwrap() - 20.0).abs() < 1e-5);
    assert!(ssim(&image, &Tensor::rand([3, 16, 8], opts)).is_err());
    assert!(l1(&image, &Tensor::rand([3, 16, 8], opts)).is_err());
    let mean = Tensor::randn([1, 4, 2, 2], opts);
    let logvar = Tensor::randn([1, 4, 2, 2], opts);
    let p = DiagonalGaussian {
        mean: &mean,
        logvar: &logvar,
    };
    assert!(kl_diagonal(p, Some(p)).unwrap().double_value(&[]).abs() < 1e-6);
}
