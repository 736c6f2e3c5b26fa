//! Scenes in the 3DGS folder layout: `images/` (or `images_N/`) beside `sparse/0/` (or `sparse/`).
//!
//! Intrinsics are rescaled by the actual image size over the COLMAP camera size, separately in x
//! and y, because image folders are often not the camera's resolution (the fern scene's `images/`
//! are 1/4 of its camera, and some scenes have non-integer factors such as 1/1.25). Views are
//! sorted by image name; every `test_every`-th (0, 8, 16, … with the default 8) is a test view.

use std::path::{Path, PathBuf};

use glam::DVec2;
use serde::{Deserialize, Serialize};

use crate::camera::Camera;
use crate::colmap::{ColmapImage, ColmapModel, model_file};
use crate::distortion::{Distortion, Intrinsics, undistort_image, undistort_pixel, undistorted_intrinsics};
use crate::image::{ImageF32, image_size, read_rgb};
use crate::{FormatError, Result};

/// What to do with cameras that have lens distortion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistortionPolicy {
    /// Resample images to an ideal pinhole camera (same size; focal chosen so no pixel is blank).
    #[default]
    Undistort,
    /// Use the camera as if it were a pinhole, dropping the distortion parameters. This is what
    /// the official LRF/3DGS code does with SIMPLE_RADIAL; use it to reproduce their numbers.
    Ignore,
    /// Refuse scenes with distortion.
    Reject,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneOptions {
    /// Image folder inside the scene: `images`, `images_2`, `images_8`, ...
    pub images: String,
    pub distortion: DistortionPolicy,
    /// Every `test_every`-th view in name order is held out for testing; 0 holds out none.
    pub test_every: usize,
}

impl Default for SceneOptions {
    fn default() -> Self {
        SceneOptions {
            images: "images".into(),
            distortion: DistortionPolicy::Undistort,
            test_every: 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// One registered image of a scene, with the pinhole camera of the image as loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct SceneView {
    pub image_id: u32,
    pub name: String,
    pub image_path: PathBuf,
    /// The pinhole camera of [`Scene::load_image`]'s result.
    pub camera: Camera,
    pub split: Split,
    /// Intrinsics of the file on disk (at its resolution, before undistortion).
    file_intrinsics: Intrinsics,
    /// Distortion still to remove when loading (`None` once ignored or absent).
    distortion: Distortion,
    /// Image-file pixels per COLMAP-camera pixel, in x and y.
    scale: DVec2,
}

/// A COLMAP scene ready for training and evaluation.
#[derive(Clone, Debug)]
pub struct Scene {
    pub name: String,
    pub root: PathBuf,
    /// Views in image-name order.
    pub views: Vec<SceneView>,
    pub model: ColmapModel,
}

impl Scene {
    /// Loads the model and checks every view's image file (its header only) without decoding
    /// pixels.
    pub fn load(root: &Path, options: &SceneOptions) -> Result<Scene> {
        let sparse = ["sparse/0", "sparse"]
            .iter()
            .map(|s| root.join(s))
            .find(|p| p.join("cameras.bin").exists() || p.join("cameras.txt").exists())
            .ok_or_else(|| {
                FormatError::invalid(
                    root,
                    "scene",
                    "no COLMAP model: expected sparse/0/cameras.bin (or .txt) inside the scene folder",
                )
            })?;
        let image_dir = root.join(&options.images);
        if !image_dir.is_dir() {
            let mut available: Vec<String> = std::fs::read_dir(root)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with("images"))
                        .collect()
                })
                .unwrap_or_default();
            available.sort();
            return Err(FormatError::invalid(
                &image_dir,
                "scene",
                format!(
                    "image folder {:?} does not exist; this scene has: {}",
                    options.images,
                    if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    }
                ),
            ));
        }
        let model = ColmapModel::read(&sparse)?;
        let mut images: Vec<&ColmapImage> = model.images.values().collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        let images_file = model_file(&sparse, "images");
        let cameras_file = model_file(&sparse, "cameras");
        let mut views = Vec::with_capacity(images.len());
        for (index, image) in images.into_iter().enumerate() {
            let record = format!("image {} {:?}", image.id, image.name);
            let colmap_camera = &model.cameras[&image.camera_id];
            // Scene keys hash the scene folder without hidden entries: a name reaching outside it, or
            // hidden, would be read without being keyed, and an edit to it never noticed.
            let inside = std::path::Path::new(&image.name).components().all(|c| match c {
                std::path::Component::Normal(part) => !part.to_string_lossy().starts_with('.'),
                _ => false,
            });
            if !inside || image.name.is_empty() {
                return Err(FormatError::invalid(
                    &images_file,
                    record,
                    "the image name must be a relative path inside the images folder, without `..`, `.` or \
                     hidden (dot) parts; rename the file and its entry",
                ));
            }
            let image_path = image_dir.join(&image.name);
            if !image_path.is_file() {
                return Err(FormatError::invalid(
                    &images_file,
                    record,
                    format!("no image file {}", image_path.display()),
                ));
            }
            let (width, height) = image_size(&image_path)?;
            let sx = width as f64 / colmap_camera.width as f64;
            let sy = height as f64 / colmap_camera.height as f64;
            // Each side is rounded to whole pixels when downsampling, so the two factors may differ
            // by up to a pixel's worth; more than that is a different aspect ratio.
            if (colmap_camera.height as f64 * sx - height as f64).abs() > 1.0 + 1e-9 {
                return Err(FormatError::invalid(
                    &image_path,
                    record,
                    format!(
                        "image is {width}x{height} but its camera {} is {}x{}: the aspect ratio differs (rotated image, or the wrong file?)",
                        colmap_camera.id, colmap_camera.width, colmap_camera.height
                    ),
                ));
            }
            let Some((fx, fy, cx, cy)) = colmap_camera.intrinsics() else {
                return Err(FormatError::invalid(
                    &images_file,
                    record,
                    format!(
                        "camera model {} has no focal length; lrf-flow needs perspective cameras",
                        colmap_camera.model.name()
                    ),
                ));
            };
            let file_intrinsics = Intrinsics {
                fx: fx * sx,
                fy: fy * sy,
                cx: cx * sx,
                cy: cy * sy,
            };
            let lens = Distortion::of_camera(colmap_camera).map_err(|message| {
                FormatError::invalid(&cameras_file, format!("camera {}", colmap_camera.id), message)
            })?;
            let distortion = match (options.distortion, lens) {
                (_, Distortion::None) | (DistortionPolicy::Ignore, _) => Distortion::None,
                (DistortionPolicy::Undistort, lens) => lens,
                (DistortionPolicy::Reject, _) => {
                    return Err(FormatError::invalid(
                        &cameras_file,
                        format!("camera {}", colmap_camera.id),
                        format!(
                            "{} camera has distortion parameters {:?}; use distortion policy `undistort` (resample to PINHOLE) or `ignore` (treat as PINHOLE, as the official LRF code does)",
                            colmap_camera.model.name(),
                            colmap_camera.distortion_params()
                        ),
                    ));
                }
            };
            let ideal = undistorted_intrinsics(file_intrinsics, &distortion, width, height);
            let camera = Camera::from_colmap(
                image.qvec, image.tvec, ideal.fx, ideal.fy, ideal.cx, ideal.cy, width, height,
            );
            let split = if options.test_every > 0 && index % options.test_every == 0 {
                Split::Test
            } else {
                Split::Train
            };
            views.push(SceneView {
                image_id: image.id,
                name: image.name.clone(),
                image_path,
                camera,
                split,
                file_intrinsics,
                distortion,
                scale: DVec2::new(sx, sy),
            });
        }
        if views.is_empty() {
            return Err(FormatError::invalid(
                images_file,
                "scene",
                "the model has no registered images",
            ));
        }
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| root.display().to_string());
        Ok(Scene {
            name,
            root: root.to_path_buf(),
            views,
            model,
        })
    }

    pub fn views_in(&self, split: Split) -> impl Iterator<Item = &SceneView> {
        self.views.iter().filter(move |v| v.split == split)
    }

    /// Decodes a view's image as RGB in [0, 1], undistorted to its pinhole camera when needed.
    pub fn load_image(&self, view: &SceneView) -> Result<ImageF32> {
        let image = read_rgb(&view.image_path)?;
        if (image.width, image.height) != (view.camera.width, view.camera.height) {
            return Err(FormatError::invalid(
                &view.image_path,
                format!("image {} {:?}", view.image_id, view.name),
                "image size changed since the scene was loaded",
            ));
        }
        if matches!(view.distortion, Distortion::None) {
            return Ok(image);
        }
        Ok(undistort_image(
            &image,
            view.file_intrinsics,
            &view.distortion,
            self.pinhole_intrinsics(view),
        ))
    }

    /// Where a COLMAP keypoint (in the camera's own pixel coordinates, as stored in images.bin)
    /// lies in the view's loaded, undistorted image.
    pub fn keypoint_pixel(&self, view: &SceneView, keypoint: DVec2) -> DVec2 {
        let in_file = keypoint * view.scale;
        undistort_pixel(
            in_file,
            view.file_intrinsics,
            &view.distortion,
            self.pinhole_intrinsics(view),
        )
    }

    fn pinhole_intrinsics(&self, view: &SceneView) -> Intrinsics {
        let c = &view.camera;
        Intrinsics {
            fx: c.fx,
            fy: c.fy,
            cx: c.cx,
            cy: c.cy,
        }
    }
}
