//! Fixtures the stages' unit tests share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glam::{DMat3, DVec3};
use lrf_formats::camera::Camera;
use lrf_formats::image::ImageF32;
use lrf_formats::scene::Split;
use lrf_formats::views::{Points, ViewRecord, ViewSet, write_images};
use lrf_graph::{Input, Job, StageKind};

/// A `views` artifact in `dir/views`: one 64×48 view per entry of `splits`, cameras stepping sideways in front
/// of smooth colour gradients (no sparse points). Returns the folder and the images.
pub(crate) fn views_fixture(dir: &Path, splits: &[Split]) -> (PathBuf, Vec<ImageF32>) {
    let views_dir = dir.join("views");
    std::fs::create_dir_all(&views_dir).unwrap();
    let (width, height) = (64u32, 48u32);
    let views = ViewSet {
        scene: "s".into(),
        images: "images".into(),
        views: splits
            .iter()
            .enumerate()
            .map(|(i, &split)| ViewRecord {
                name: format!("{i:05}.png"),
                split,
                camera: Camera {
                    rotation: DMat3::IDENTITY,
                    translation: DVec3::new(i as f64 * 0.1, 0.0, 3.0),
                    fx: 60.0,
                    fy: 60.0,
                    cx: 32.0,
                    cy: 24.0,
                    width,
                    height,
                },
            })
            .collect(),
    };
    views.write(&views_dir).unwrap();
    let images: Vec<ImageF32> = (0..splits.len())
        .map(|i| {
            let mut image = ImageF32::new(3, width, height);
            for y in 0..height {
                for x in 0..width {
                    let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
                    image.set(0, x, y, 0.2 + 0.6 * u);
                    image.set(1, x, y, 0.3 + 0.5 * v);
                    image.set(2, x, y, 0.5 + 0.3 * ((u * 6.0 + i as f32).sin() * (v * 4.0).cos()));
                }
            }
            image
        })
        .collect();
    write_images(&views_dir, &images).unwrap();
    Points::default().write(&views_dir).unwrap();
    (views_dir, images)
}

/// [`views_fixture`] with a plane of sparse points in front of the cameras (which fields start from or take
/// their box from).
pub(crate) fn views_with_points(dir: &Path, splits: &[Split]) -> PathBuf {
    let (views, _) = views_fixture(dir, splits);
    let positions: Vec<[f64; 3]> = (0..400)
        .map(|i| [(i % 20) as f64 * 0.16 - 1.6, (i / 20) as f64 * 0.12 - 1.2, 0.0])
        .collect();
    Points {
        colors: vec![[128; 3]; positions.len()],
        positions,
        ..Points::default()
    }
    .write(&views)
    .unwrap();
    views
}

/// [`views_with_points`] and their TAEF2 latents (`dir/encode/latents`).
pub(crate) fn views_and_latents(dir: &Path, splits: &[Split]) -> (PathBuf, PathBuf) {
    let views = views_with_points(dir, splits);
    let encode: crate::encode::VaeEncode = stage(serde_json::json!({}), dir);
    run_stage(&encode, &[("views", Input::One(views.clone()))], &dir.join("encode")).unwrap();
    (views, dir.join("encode").join("latents"))
}

/// A stage as the registry builds it: parameters parsed, validated and resolved.
pub(crate) fn stage<T: StageKind>(params: serde_json::Value, base: &Path) -> T {
    let mut stage: T = serde_json::from_value(params).expect("parameters");
    stage.validate().expect("valid parameters");
    stage.resolve_paths(base).expect("resolved");
    stage
}

pub(crate) fn run_stage(stage: &dyn lrf_graph::Stage, inputs: &[(&str, Input)], out: &Path) -> anyhow::Result<()> {
    let inputs: BTreeMap<String, Input> = inputs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let job = Job {
        stage_id: stage.kind(),
        scene: Some("s"),
        inputs: &inputs,
        missing: &[],
        out,
        status: &|_: &str| {},
    };
    stage.run(&job)
}
