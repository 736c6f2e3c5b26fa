//! A scene as the stages use it, written once by ingest: every view's pinhole camera (already cropped to the
//! autoencoder's multiple) and split, its 8-bit image, and the sparse points with their tracks in the cropped
//! images' pixel coordinates.
//!
//! ```text
//! views/
//!   views.json          ViewSet: scene name, image folder, per view {name, split, camera}
//!   images.safetensors  one u8 [3, H, W] tensor per view, named by the view's index ("0000", "0001", ...)
//!   points.safetensors  positions f64 [P, 3], colors u8 [P, 3];
//!                       track_point i64 [M], track_view i64 [M], track_pixel f32 [M, 2] (x, y in pixels)
//! ```
//!
//! In `views.json`, a camera's `rotation` is the world-to-camera rotation R (`x_cam = R x_world +
//! translation`) as glam serialises a matrix: nine numbers in **column-major** order, so the first three
//! are R's first column (R₀₀, R₁₀, R₂₀), not its first row. `translation` is t, and `fx fy cx cy` are in
//! pixels of the ingested image (`width` × `height`), origin at the top-left corner of the first pixel.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::camera::Camera;
use crate::image::ImageF32;
use crate::scene::Split;
use crate::shard::ShardReader;
use crate::{FormatError, Result};

pub const VIEWS_FILE: &str = "views.json";
pub const IMAGES_FILE: &str = "images.safetensors";
pub const POINTS_FILE: &str = "points.safetensors";

/// One view of an ingested scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewRecord {
    pub name: String,
    pub split: Split,
    pub camera: Camera,
}

/// The `views.json` of an ingested scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewSet {
    pub scene: String,
    /// The image folder the views came from (`images_8`, ...).
    pub images: String,
    pub views: Vec<ViewRecord>,
}

/// Sparse points with their observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Points {
    pub positions: Vec<[f64; 3]>,
    pub colors: Vec<[u8; 3]>,
    /// One entry per observation: which point, seen in which view (index into `ViewSet::views`), where.
    pub track_point: Vec<i64>,
    pub track_view: Vec<i64>,
    pub track_pixel: Vec<[f32; 2]>,
}

/// The tensor name of view `index` in a per-view shard.
pub fn view_key(index: usize) -> String {
    format!("{index:04}")
}

impl ViewSet {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(VIEWS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| FormatError::io(&path, e))?;
        let set: ViewSet =
            serde_json::from_str(&text).map_err(|e| FormatError::invalid(&path, "views", e.to_string()))?;
        if set.views.is_empty() {
            return Err(FormatError::invalid(&path, "views", "the scene has no views"));
        }
        Ok(set)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(VIEWS_FILE);
        let text =
            serde_json::to_string_pretty(self).map_err(|e| FormatError::invalid(&path, "views", e.to_string()))?;
        write_atomic(&path, text.as_bytes())
    }

    /// Indices of the views in `split`.
    pub fn indices(&self, split: Split) -> Vec<usize> {
        (0..self.views.len())
            .filter(|&i| self.views[i].split == split)
            .collect()
    }
}

/// The image shard of an ingested scene folder.
pub fn open_images(dir: &Path) -> Result<ShardReader> {
    ShardReader::open(&dir.join(IMAGES_FILE))
}

/// Writes the views' images as 8-bit (they came from 8-bit files, so nothing is lost).
pub fn write_images(dir: &Path, images: &[ImageF32]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .map(|image| {
            image
                .data
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect()
        })
        .collect();
    let names: Vec<String> = (0..images.len()).map(view_key).collect();
    let tensors: Vec<safetensors::tensor::TensorView<'_>> = images
        .iter()
        .zip(&bytes)
        .map(|(image, data)| {
            view(
                safetensors::Dtype::U8,
                vec![image.channels, image.height as usize, image.width as usize],
                data,
            )
        })
        .collect();
    crate::shard::write_views(
        &dir.join(IMAGES_FILE),
        names.iter().map(String::as_str).zip(tensors).collect(),
        &HashMap::new(),
    )
}

/// A tensor over bytes this module laid out itself, so shape and length agree by construction.
fn view(dtype: safetensors::Dtype, shape: Vec<usize>, data: &[u8]) -> safetensors::tensor::TensorView<'_> {
    safetensors::tensor::TensorView::new(dtype, shape, data).expect("shape matches the data")
}

/// Reads view `index`'s image as [0, 1] floats.
pub fn read_image(images: &ShardReader, index: usize) -> Result<ImageF32> {
    let name = view_key(index);
    let shape = images.shape(&name)?.to_vec();
    let [channels, height, width] = shape[..] else {
        return Err(FormatError::invalid(
            images.path(),
            name,
            format!("expected [3, H, W], got {shape:?}"),
        ));
    };
    let bytes = images.values::<u8>(&name)?;
    let mut image = ImageF32::new(channels, width as u32, height as u32);
    for (out, &b) in image.data.iter_mut().zip(bytes) {
        *out = b as f32 / 255.0;
    }
    Ok(image)
}

impl Points {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let positions: Vec<f64> = self.positions.iter().flatten().copied().collect();
        let colors: Vec<u8> = self.colors.iter().flatten().copied().collect();
        let pixels: Vec<f32> = self.track_pixel.iter().flatten().copied().collect();
        let (p, m) = (self.positions.len(), self.track_point.len());
        use safetensors::Dtype;
        crate::shard::write_views(
            &dir.join(POINTS_FILE),
            vec![
                (
                    "positions",
                    view(Dtype::F64, vec![p, 3], bytemuck::cast_slice(&positions)),
                ),
                ("colors", view(Dtype::U8, vec![p, 3], &colors)),
                (
                    "track_point",
                    view(Dtype::I64, vec![m], bytemuck::cast_slice(&self.track_point)),
                ),
                (
                    "track_view",
                    view(Dtype::I64, vec![m], bytemuck::cast_slice(&self.track_view)),
                ),
                (
                    "track_pixel",
                    view(Dtype::F32, vec![m, 2], bytemuck::cast_slice(&pixels)),
                ),
            ],
            &HashMap::new(),
        )
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let shard = ShardReader::open(&dir.join(POINTS_FILE))?;
        let positions = shard.values::<f64>("positions")?;
        let colors = shard.values::<u8>("colors")?;
        let pixels = shard.f32("track_pixel")?;
        let points = Points {
            positions: positions.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            colors: colors.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            track_point: shard.values::<i64>("track_point")?.to_vec(),
            track_view: shard.values::<i64>("track_view")?.to_vec(),
            track_pixel: pixels.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        };
        let m = points.track_point.len();
        let p = points.positions.len() as i64;
        if points.colors.len() != points.positions.len()
            || points.track_view.len() != m
            || points.track_pixel.len() != m
            || points.track_point.iter().any(|&i| !(0..p).contains(&i))
        {
            return Err(FormatError::invalid(
                shard.path(),
                "points",
                "positions, colors and tracks disagree in length or a track names a missing point",
            ));
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::DVec3;

    /// Found by fuzzing (`views_json`): serde_json's default float parser may be one ulp off, so a real
    /// scene's cameras changed in a write-then-read. Every f64 must come back bit for bit.
    #[test]
    fn camera_numbers_survive_writing_and_reading_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = 0x9e3779b97f4a7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let views = (0..200)
            .map(|k| {
                let eye = DVec3::new(next(), next(), next() - 3.0) * 5.0;
                let mut camera =
                    Camera::look_at(eye, DVec3::ZERO, DVec3::NEG_Y, 450.0 + next(), 450.0 + next(), 288, 512);
                camera.translation += DVec3::new(next(), next(), next()) * 1e-3;
                ViewRecord {
                    name: format!("{k:04}.jpg"),
                    split: Split::Train,
                    camera,
                }
            })
            .collect();
        let set = ViewSet {
            scene: "s".into(),
            images: "images".into(),
            views,
        };
        set.write(dir.path()).unwrap();
        let back = ViewSet::read(dir.path()).unwrap();
        for (a, b) in set.views.iter().zip(&back.views) {
            let bits = |c: &Camera| {
                let mut v: Vec<u64> = c.rotation.to_cols_array().iter().map(|x| x.to_bits()).collect();
                v.extend(c.translation.to_array().iter().map(|x| x.to_bits()));
                v.extend([c.fx, c.fy, c.cx, c.cy].iter().map(|x| x.to_bits()));
                v
            };
            assert_eq!(bits(&a.camera), bits(&b.camera), "view {}", a.name);
        }
    }

    #[test]
    fn views_images_and_points_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let camera = Camera::look_at(DVec3::new(0.0, 0.0, -3.0), DVec3::ZERO, DVec3::NEG_Y, 20.0, 20.0, 8, 16);
        let set = ViewSet {
            scene: "s".into(),
            images: "images_8".into(),
            views: vec![
                ViewRecord {
                    name: "a.png".into(),
                    split: Split::Test,
                    camera: camera.clone(),
                },
                ViewRecord {
                    name: "b.png".into(),
                    split: Split::Train,
                    camera: camera.resized(16, 8),
                },
            ],
        };
        set.write(dir.path()).unwrap();
        assert_eq!(ViewSet::read(dir.path()).unwrap(), set);
        assert_eq!(set.indices(Split::Train), [1]);

        let mut a = ImageF32::new(3, 8, 16);
        a.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 256) as f32 / 255.0);
        let b = ImageF32::new(3, 16, 8);
        write_images(dir.path(), &[a.clone(), b]).unwrap();
        let shard = ShardReader::open(&dir.path().join(IMAGES_FILE)).unwrap();
        assert_eq!(read_image(&shard, 0).unwrap(), a);
        assert_eq!(read_image(&shard, 1).unwrap().width, 16);

        let points = Points {
            positions: vec![[1.0, 2.0, 3.5], [0.1, 0.2, 0.3]],
            colors: vec![[1, 2, 3], [255, 0, 9]],
            track_point: vec![0, 1, 1],
            track_view: vec![1, 0, 1],
            track_pixel: vec![[0.5, 1.5], [2.0, 3.0], [7.25, 1.0]],
        };
        points.write(dir.path()).unwrap();
        assert_eq!(Points::read(dir.path()).unwrap(), points);
    }

    #[test]
    fn a_track_naming_a_missing_point_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Points {
            positions: vec![[0.0; 3]],
            colors: vec![[0; 3]],
            track_point: vec![3],
            track_view: vec![0],
            track_pixel: vec![[0.0, 0.0]],
        }
        .write(dir.path())
        .unwrap();
        let error = Points::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains(POINTS_FILE), "{error}");
    }
}
