//! A fixed scene and its reference render (computed in f64, stored as f32) in a small safetensors fixture:
//! the Gaussians and camera are stored too, so the test does not depend on the random generator. Regenerate
//! with `LRF_SPLAT_BLESS=1 cargo test -p lrf-splat golden`.

use super::scenes::*;
use crate::cpu::Cutoff;
use crate::options::RenderOptions;
use crate::{Gaussians, reference};
use glam::{DMat3, DVec3};
use lrf_formats::Camera;
use lrf_formats::shard::ShardReader;
use lrf_formats::shard::write_tch_shard;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

const NAMES: [&str; 5] = ["means", "log_scales", "quats", "opacity_logits", "colors"];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_render.safetensors")
}

fn options() -> RenderOptions {
    RenderOptions {
        background: vec![0.1, -0.2, 0.3, 0.0],
        ..Default::default()
    }
}

fn camera_values(c: &Camera) -> Vec<f64> {
    let mut v = c.rotation.to_cols_array().to_vec();
    v.extend(c.translation.to_array());
    v.extend([c.fx, c.fy, c.cx, c.cy, c.width as f64, c.height as f64]);
    v
}

fn camera_from(v: &[f64]) -> Camera {
    Camera {
        rotation: DMat3::from_cols_slice(&v[..9]),
        translation: DVec3::from_slice(&v[9..12]),
        fx: v[12],
        fy: v[13],
        cx: v[14],
        cy: v[15],
        width: v[16] as u32,
        height: v[17] as u32,
    }
}

fn bless() {
    let spec = SceneSpec {
        width: 40,
        height: 28,
        ..SceneSpec::new(500, 160, 4, Some(2))
    };
    let camera = camera(&spec);
    let g64 = to_gaussians(&scene_arrays(&spec), &spec, Kind::Double);
    let out = reference::render(&g64, &camera, &options()).unwrap();
    let g32 = g64.tensors().map(|t| t.to_kind(Kind::Float));
    let cam = Tensor::from_slice(&camera_values(&camera));
    let (image, alpha) = (out.image.to_kind(Kind::Float), out.alpha.to_kind(Kind::Float));
    let mut tensors: Vec<(&str, &Tensor)> = NAMES.iter().copied().zip(g32.iter()).collect();
    tensors.extend([("camera", &cam), ("image", &image), ("alpha", &alpha)]);
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    let meta = HashMap::from([("source".to_string(), "lrf-splat reference rasterizer, f64".to_string())]);
    write_tch_shard(&fixture(), &tensors, &meta).unwrap();
}

#[test]
fn golden_render_is_reproduced_by_cpu_and_reference() {
    if std::env::var("LRF_SPLAT_BLESS").is_ok_and(|v| v == "1") {
        bless();
    }
    let shard = ShardReader::open(&fixture()).expect("fixture missing: run with LRF_SPLAT_BLESS=1");
    let [means, log_scales, quats, opacity_logits, colors] = NAMES.map(|n| shard.tensor(n).unwrap());
    let g = Gaussians {
        means,
        log_scales,
        quats,
        opacity_logits,
        colors,
    };
    let camera = camera_from(&tensor_f64(&shard.tensor("camera").unwrap()));
    let want_image = tensor_f64(&shard.tensor("image").unwrap());
    let want_alpha = tensor_f64(&shard.tensor("alpha").unwrap());
    let options = options();
    let frame = Host::<f32>::of(&g, &options).render(&camera, &options, Cutoff::Hard);
    let cpu = max_abs_diff(&to_f64(&frame.image), &want_image).max(max_abs_diff(&to_f64(&frame.alpha), &want_alpha));
    let out = reference::render(&g, &camera, &options).unwrap();
    let refr =
        max_abs_diff(&tensor_f64(&out.image), &want_image).max(max_abs_diff(&tensor_f64(&out.alpha), &want_alpha));
    println!("golden: cpu {cpu:.2e}, reference f32 {refr:.2e}");
    assert!(
        cpu <= 1e-5 && refr <= 1e-5,
        "golden render changed: cpu {cpu}, reference {refr}"
    );
    assert!(
        want_alpha.iter().any(|&a| a > 0.5),
        "the fixture scene should cover part of the image"
    );
}
