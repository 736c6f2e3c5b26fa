//! Writing a scene folder in the COLMAP / 3DGS layout, staged and renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use image::{ImageEncoder, RgbImage};
use lrf_formats::atomic::write_atomic;
use lrf_formats::colmap::{
    CameraModel, ColmapCamera, ColmapImage, ColmapModel, ModelFormat, Point2D, Point3D, TrackElement,
};
use lrf_formats::shard::{ShardTensor, write_shard};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::points::sample_points;
use crate::render::{downsample, render_view};
use crate::{CameraPath, GeneratedScene, Progress, Scene, SynthError, SynthOptions};

/// Downsampled image folders, `images_<factor>`.
const FACTORS: [u32; 3] = [2, 4, 8];

/// Written as the depth shards' only metadata entry (safetensors stores metadata from a hash map,
/// so more than one entry would come out in varying order and break byte-identical output).
const DEPTH_CONVENTION: &str =
    "z along the camera's optical axis, world units, at full-resolution pixel centres (x + 0.5, y + 0.5); +inf: sky";

/// `synth.json`: how a scene was made. Its presence also marks a folder lrf-synth may replace.
#[derive(Serialize)]
struct Provenance<'a> {
    generator: &'a str,
    seed: u64,
    scene_index: usize,
    camera_path: CameraPath,
    views: usize,
    width: u32,
    height: u32,
    points_requested: usize,
    points: usize,
    depth: &'a str,
}

const GENERATOR: &str = "lrf-synth";
const PROVENANCE: &str = "synth.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An error unless `dir` is absent or a scene lrf-synth wrote.
pub(crate) fn check_replaceable(dir: &Path) -> Result<(), SynthError> {
    if !dir.exists() {
        return Ok(());
    }
    let ours = std::fs::read(dir.join(PROVENANCE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|json| json["generator"] == GENERATOR);
    if ours {
        Ok(())
    } else {
        Err(SynthError::NotGenerated {
            path: dir.to_path_buf(),
        })
    }
}

pub(crate) fn write_scene(
    out: &Path,
    scene: &Scene,
    options: &SynthOptions,
    index: usize,
    rng: &mut ChaCha8Rng,
    progress: &impl Fn(Progress<'_>),
) -> Result<GeneratedScene, SynthError> {
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.partial-", scene.name))
        .tempdir_in(out)
        .map_err(io(out))?;
    let root = staging.path();
    let folders = std::iter::once("images".to_string())
        .chain(FACTORS.map(|f| format!("images_{f}")))
        .chain(["depth".into()]);
    for folder in folders {
        std::fs::create_dir(root.join(&folder)).map_err(io(&root.join(folder)))?;
    }
    for (i, view) in scene.views.iter().enumerate() {
        let rendered = render_view(scene, &view.camera);
        write_png(&root.join("images").join(&view.name), &rendered.image)?;
        for factor in FACTORS {
            write_png(
                &root.join(format!("images_{factor}")).join(&view.name),
                &downsample(&rendered.image, factor),
            )?;
        }
        let stem = view.name.trim_end_matches(".png");
        let shape = vec![view.camera.height as usize, view.camera.width as usize];
        let metadata = HashMap::from([("depth".to_string(), DEPTH_CONVENTION.to_string())]);
        write_shard(
            &root.join("depth").join(format!("{stem}.safetensors")),
            &[ShardTensor {
                name: "depth",
                shape,
                data: &rendered.depth,
            }],
            &metadata,
        )?;
        progress(Progress::View {
            scene: &scene.name,
            view: i,
            views: scene.views.len(),
        });
    }

    let points = sample_points(&scene.world, &scene.views, options.points_per_scene, rng);
    let model = colmap_model(scene, &points);
    model.write(&root.join("sparse").join("0"), ModelFormat::Binary)?;
    let provenance = Provenance {
        generator: GENERATOR,
        seed: options.seed,
        scene_index: index,
        camera_path: scene.camera_path,
        views: scene.views.len(),
        width: options.width,
        height: options.height,
        points_requested: options.points_per_scene,
        points: points.len(),
        depth: DEPTH_CONVENTION,
    };
    let json = serde_json::to_vec_pretty(&provenance).expect("plain struct serialises");
    write_atomic(&root.join(PROVENANCE), &json)?;

    let destination = out.join(&scene.name);
    check_replaceable(&destination)?;
    if destination.exists() {
        // Move the old scene into a hidden folder that is deleted when it drops.
        let old = tempfile::Builder::new()
            .prefix(&format!(".{}.old-", scene.name))
            .tempdir_in(out)
            .map_err(io(out))?;
        std::fs::rename(&destination, old.path().join(&scene.name)).map_err(io(&destination))?;
    }
    std::fs::rename(root, &destination).map_err(io(&destination))?;
    let _moved = staging.keep();
    Ok(GeneratedScene {
        name: scene.name.clone(),
        path: destination,
        camera_path: scene.camera_path,
        views: scene.views.len(),
        points: points.len(),
        observations: points.iter().map(|p| p.observations.len()).sum(),
    })
}

fn write_png(path: &Path, image: &RgbImage) -> Result<(), SynthError> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| SynthError::Png {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(write_atomic(path, &bytes)?)
}

/// One PINHOLE camera shared by all images; keypoints are exactly the track observations.
fn colmap_model(scene: &Scene, points: &[crate::points::SampledPoint]) -> ColmapModel {
    let first = &scene.views[0].camera;
    let camera = ColmapCamera {
        id: 1,
        model: CameraModel::Pinhole,
        width: u64::from(first.width),
        height: u64::from(first.height),
        params: vec![first.fx, first.fy, first.cx, first.cy],
    };
    let mut images: BTreeMap<u32, ColmapImage> = scene
        .views
        .iter()
        .enumerate()
        .map(|(i, view)| {
            let id = i as u32 + 1;
            let image = ColmapImage {
                id,
                qvec: view.qvec,
                tvec: view.camera.translation.to_array(),
                camera_id: 1,
                name: view.name.clone(),
                points2d: Vec::new(),
            };
            (id, image)
        })
        .collect();
    let points: BTreeMap<u64, Point3D> = points
        .iter()
        .enumerate()
        .map(|(k, point)| {
            let id = k as u64 + 1;
            let track = point
                .observations
                .iter()
                .map(|&(view, xy)| {
                    let image_id = view as u32 + 1;
                    let keypoints = &mut images.get_mut(&image_id).expect("one image per view").points2d;
                    keypoints.push(Point2D {
                        xy: xy.to_array(),
                        point3d_id: Some(id),
                    });
                    TrackElement {
                        image_id,
                        point2d_index: (keypoints.len() - 1) as u32,
                    }
                })
                .collect();
            let point = Point3D {
                id,
                xyz: point.position.to_array(),
                rgb: point.rgb,
                error: 0.0,
                track,
            };
            (id, point)
        })
        .collect();
    ColmapModel {
        cameras: BTreeMap::from([(1, camera)]),
        images,
        points,
    }
}
