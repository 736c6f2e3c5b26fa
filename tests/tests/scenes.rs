//! Scene loading on the real scenes of `LRF_DATA`: intrinsics rescaling (integer and non-integer
//! factors, mixed orientations), train/test split, distortion handled as documented, and lens
//! distortion checked against pycolmap.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use glam::DVec2;
use lrf_formats::colmap::{CameraModel, ColmapCamera};
use lrf_formats::distortion::Distortion;
use lrf_formats::scene::{DistortionPolicy, Scene, SceneOptions, Split};
use lrf_tests::{data_dir, python, python_script};

fn scene(group: &str, name: &str) -> PathBuf {
    data_dir().join(group).join(name)
}

fn options(images: &str, distortion: DistortionPolicy) -> SceneOptions {
    SceneOptions {
        images: images.into(),
        distortion,
        test_every: 8,
    }
}

/// Every real scene at every image folder loads, with intrinsics scaled by file size over camera
/// size in x and y (checked against the camera record with the `ignore` policy, which keeps them).
#[test]
fn every_real_scene_and_image_folder_loads_with_rescaled_intrinsics() {
    let mut loaded = 0;
    for group in ["real", "real_train"] {
        for entry in std::fs::read_dir(data_dir().join(group)).unwrap() {
            let root = entry.unwrap().path();
            if !root.join("sparse").is_dir() {
                continue;
            }
            for folder in std::fs::read_dir(&root).unwrap() {
                let folder = folder.unwrap().file_name().to_string_lossy().into_owned();
                if !folder.starts_with("images") {
                    continue;
                }
                let scene = Scene::load(&root, &options(&folder, DistortionPolicy::Ignore))
                    .unwrap_or_else(|e| panic!("{} {folder}: {e}", root.display()));
                assert_eq!(scene.views.len(), scene.model.images.len());
                let names: Vec<_> = scene.views.iter().map(|v| v.name.clone()).collect();
                assert!(names.windows(2).all(|w| w[0] < w[1]), "views sorted by name");
                assert_eq!(scene.views_in(Split::Test).count(), scene.views.len().div_ceil(8));
                assert_eq!(scene.views[0].split, Split::Test);
                assert_eq!(scene.views[1].split, Split::Train);
                for view in &scene.views {
                    let image = &scene.model.images[&view.image_id];
                    let camera = &scene.model.cameras[&image.camera_id];
                    let (fx, fy, cx, cy) = camera.intrinsics().unwrap();
                    let sx = view.camera.width as f64 / camera.width as f64;
                    let sy = view.camera.height as f64 / camera.height as f64;
                    let c = &view.camera;
                    for (got, want) in [(c.fx, fx * sx), (c.fy, fy * sy), (c.cx, cx * sx), (c.cy, cy * sy)] {
                        assert!(
                            (got - want).abs() < 1e-9,
                            "{} {}: {got} vs {want}",
                            scene.name,
                            view.name
                        );
                    }
                }
                loaded += 1;
            }
        }
    }
    assert!(
        loaded >= 15,
        "expected the six real scenes with their image folders, loaded {loaded}"
    );
}

#[test]
fn documented_scale_factors_of_the_real_scenes() {
    // fern: images/ is 1/4 and images_8/ is 1/8 of its 4032-wide camera.
    let fern = scene("real", "llff_fern");
    for (folder, factor) in [("images", 4.0), ("images_8", 8.0)] {
        let s = Scene::load(&fern, &options(folder, DistortionPolicy::Ignore)).unwrap();
        assert!(
            (s.views[0].camera.fx - 3260.5263328805895 / factor).abs() < 1e-9,
            "{folder}"
        );
        assert_eq!(s.views[0].camera.width as f64, 4032.0 / factor);
    }
    // beer can: images are 1/1.25 of the camera, a non-integer factor.
    let can = Scene::load(
        &scene("real_train", "beer_can"),
        &options("images", DistortionPolicy::Ignore),
    )
    .unwrap();
    let view = &can.views[0];
    let camera = &can.model.cameras[&can.model.images[&view.image_id].camera_id];
    assert!((view.camera.fx - camera.params[0] / 1.25).abs() < 1e-9);
    assert_eq!((view.camera.width, view.camera.height), (576, 1024));
    // computer mouse: portrait and landscape views side by side.
    let mouse = Scene::load(
        &scene("real_train", "computer_mouse"),
        &options("images_4", DistortionPolicy::Ignore),
    )
    .unwrap();
    let sizes: std::collections::BTreeSet<_> = mouse.views.iter().map(|v| (v.camera.width, v.camera.height)).collect();
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![(180, 240), (240, 180)]);
}

/// Mean reprojection error, in pixels of the loaded images, of every observation of the model
/// against the scene's pinhole cameras, with keypoints mapped by `Scene::keypoint_pixel`.
fn mean_reprojection_error(scene: &Scene) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    for view in &scene.views {
        let image = &scene.model.images[&view.image_id];
        for keypoint in &image.points2d {
            let Some(id) = keypoint.point3d_id else { continue };
            let point = glam::DVec3::from_array(scene.model.points[&id].xyz);
            let (projected, _) = view.camera.project(point).unwrap();
            total += (projected - scene.keypoint_pixel(view, DVec2::from_array(keypoint.xy))).length();
            count += 1;
        }
    }
    total / count as f64
}

/// Undistortion on a real distorted scene: COLMAP's own points reproject onto the undistorted
/// keypoints better than onto the raw ones under the "ignore" policy, and the undistorted error
/// matches COLMAP's recorded mean error (scaled to the image folder).
#[test]
fn undistortion_of_a_real_scene_reduces_reprojection_error() {
    let root = scene("real_train", "beer_can");
    let undistorted = Scene::load(&root, &options("images", DistortionPolicy::Undistort)).unwrap();
    let ignored = Scene::load(&root, &options("images", DistortionPolicy::Ignore)).unwrap();
    let with_undistortion = mean_reprojection_error(&undistorted);
    let without = mean_reprojection_error(&ignored);
    let points = &undistorted.model.points;
    let colmap_error = points.values().map(|p| p.error).sum::<f64>() / points.len() as f64 / 1.25;
    eprintln!(
        "beer_can mean reprojection error: undistorted {with_undistortion:.3} px, ignoring distortion {without:.3} px, COLMAP's (scaled) {colmap_error:.3} px"
    );
    assert!(with_undistortion < 0.75 * without);
    assert!(with_undistortion < 2.0 * colmap_error + 0.1);
    // The undistorted image is the size of the original, and decodes.
    let view = &undistorted.views[3];
    let image = undistorted.load_image(view).unwrap();
    assert_eq!((image.width, image.height), (view.camera.width, view.camera.height));
    let rejected = Scene::load(&root, &options("images", DistortionPolicy::Reject))
        .err()
        .expect("reject policy refuses distortion");
    assert!(rejected.to_string().contains("SIMPLE_RADIAL"), "{rejected}");
}

/// Our distortion formulas against pycolmap's `img_from_cam` / `cam_from_img` for every model we
/// undistort.
#[test]
fn distortion_matches_pycolmap() {
    let cameras = [
        (CameraModel::SimpleRadial, vec![812.0, 504.0, 378.0, 0.0198]),
        (CameraModel::Radial, vec![812.0, 504.0, 378.0, 0.05, -0.02]),
        (
            CameraModel::OpenCv,
            vec![800.0, 790.0, 500.0, 380.0, 0.024, -0.070, 0.003, -0.004],
        ),
        (
            CameraModel::FullOpenCv,
            vec![
                800.0, 790.0, 500.0, 380.0, 0.1, -0.05, 0.001, 0.002, 0.01, 0.02, -0.01, 0.003,
            ],
        ),
    ];
    let points: Vec<[f64; 2]> = (-6..=6)
        .flat_map(|i| (-4..=4).map(move |j| [i as f64 * 0.1, j as f64 * 0.1]))
        .collect();
    let request = serde_json::json!({
        "cameras": cameras.iter().map(|(model, params)| serde_json::json!({"model": model.name(), "width": 1008, "height": 756, "params": params})).collect::<Vec<_>>(),
        "points": points,
    });
    let mut child = Command::new(python())
        .arg(python_script("distortion_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let reference: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for ((model, params), expected) in cameras.iter().zip(reference.as_array().unwrap()) {
        let camera = ColmapCamera {
            id: 1,
            model: *model,
            width: 1008,
            height: 756,
            params: params.clone(),
        };
        let distortion = Distortion::of_camera(&camera).unwrap();
        let (fx, fy, cx, cy) = camera.intrinsics().unwrap();
        for (i, point) in points.iter().enumerate() {
            let d = distortion.distort(DVec2::from_array(*point));
            let pixel = DVec2::new(d.x * fx + cx, d.y * fy + cy);
            let want = DVec2::new(
                expected["pixels"][i][0].as_f64().unwrap(),
                expected["pixels"][i][1].as_f64().unwrap(),
            );
            assert!(
                (pixel - want).length() < 1e-9,
                "{} distort {point:?}: {pixel} vs pycolmap {want}",
                model.name()
            );
            let ideal = distortion.undistort(d);
            let want = DVec2::new(
                expected["ideal"][i][0].as_f64().unwrap(),
                expected["ideal"][i][1].as_f64().unwrap(),
            );
            assert!(
                (ideal - want).length() < 1e-8,
                "{} undistort: {ideal} vs pycolmap {want}",
                model.name()
            );
        }
    }
}

fn copy_scene(from: &Path, to: &Path, folder: &str) {
    std::fs::create_dir_all(to.join("sparse/0")).unwrap();
    for file in ["cameras.bin", "images.bin", "points3D.bin"] {
        std::fs::copy(from.join("sparse/0").join(file), to.join("sparse/0").join(file)).unwrap();
    }
    std::fs::create_dir_all(to.join(folder)).unwrap();
    for entry in std::fs::read_dir(from.join(folder)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(folder).join(entry.file_name())).unwrap();
    }
}

#[test]
fn missing_and_unreadable_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fern");
    copy_scene(&scene("real", "llff_fern"), &root, "images_8");
    let options = options("images_8", DistortionPolicy::Undistort);

    // A corrupt file: the header still parses, the pixels do not.
    let victim = root.join("images_8/IMG_4030.JPG");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::File::create(&victim)
        .unwrap()
        .write_all(&bytes[..bytes.len() / 3])
        .unwrap();
    let scene = Scene::load(&root, &options).unwrap();
    let view = scene.views.iter().find(|v| v.name == "IMG_4030.JPG").unwrap();
    let message = scene
        .load_image(view)
        .err()
        .expect("a truncated JPEG must not load")
        .to_string();
    assert!(message.contains("IMG_4030.JPG"), "{message}");

    std::fs::remove_file(root.join("images_8/IMG_4031.JPG")).unwrap();
    let message = Scene::load(&root, &options)
        .err()
        .expect("a missing image must fail the load")
        .to_string();
    assert!(
        message.contains("IMG_4031.JPG") && message.contains("images.bin") && message.contains("image "),
        "{message}"
    );

    let message = Scene::load(
        &root,
        &SceneOptions {
            images: "images_3".into(),
            ..options.clone()
        },
    )
    .err()
    .expect("no such folder")
    .to_string();
    assert!(message.contains("images_8"), "lists the folders that exist: {message}");
}
