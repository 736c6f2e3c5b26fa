//! `colmap-ingest`: a COLMAP scene folder becomes the views every later stage reads: pinhole cameras and
//! images centre-cropped to a multiple of the autoencoder's factor, the train/test split, and the sparse
//! points with their tracks in the cropped images.

use std::collections::HashMap;

use anyhow::{Context, bail};
use glam::DVec2;
use lrf_formats::scene::{DistortionPolicy, Scene, SceneOptions};
use lrf_formats::views::{Points, ViewRecord, ViewSet, write_images};
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};

use crate::artifacts::{input_dir, output_dir};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColmapIngest {
    /// Image folder inside the scene (`images`, `images_8`, ...), or a list of them in order of preference:
    /// each scene uses the first it has (corpora rarely share one set of downsampled folders).
    pub images: ImageFolders,
    /// Instead of `images`: the largest `images*` folder whose images' longer side is at most this many
    /// pixels, so scenes of different native sizes come in at comparable sizes.
    pub max_size: Option<u32>,
    /// What to do with distorted cameras: `undistort`, `ignore` (the official LRF code's choice) or `reject`.
    pub distortion: DistortionPolicy,
    /// Every `test_every`-th view in name order is a test view (LLFF's hold-out 8); 0 holds out none.
    pub test_every: usize,
    /// Images are centre-cropped so width and height are multiples of this (the autoencoder's factor).
    pub multiple: u32,
}

impl Default for ColmapIngest {
    fn default() -> Self {
        ColmapIngest {
            images: ImageFolders::One("images".into()),
            max_size: None,
            distortion: DistortionPolicy::Undistort,
            test_every: 8,
            multiple: 8,
        }
    }
}

/// One image folder name, or several in order of preference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageFolders {
    One(String),
    FirstOf(Vec<String>),
}

impl ImageFolders {
    fn names(&self) -> &[String] {
        match self {
            ImageFolders::One(name) => std::slice::from_ref(name),
            ImageFolders::FirstOf(names) => names,
        }
    }

    /// The first folder `root` has; the error lists what was looked for.
    fn pick(&self, root: &std::path::Path) -> anyhow::Result<String> {
        let names = self.names();
        match names.iter().find(|name| root.join(name).is_dir()) {
            Some(name) => Ok(name.clone()),
            None if names.len() == 1 => Ok(names[0].clone()), // Scene::load names the missing folder.
            None => bail!("{} has none of the image folders {names:?}", root.display()),
        }
    }
}

/// The `images*` folder of `root` with the largest images whose longer side is at most `limit`.
fn largest_folder_within(root: &std::path::Path, limit: u32) -> anyhow::Result<String> {
    let mut best: Option<(u32, String)> = None;
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("images") || !entry.path().is_dir() {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(entry.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        files.sort();
        let Some(size) = files.iter().find_map(|f| lrf_formats::image::image_size(f).ok()) else {
            continue;
        };
        let side = size.0.max(size.1);
        seen.push(format!("{name} ({}×{})", size.0, size.1));
        if side <= limit && best.as_ref().is_none_or(|(b, _)| side > *b) {
            best = Some((side, name));
        }
    }
    match best {
        Some((_, name)) => Ok(name),
        None => bail!(
            "{}: no image folder has images of at most {limit} pixels on the longer side (found: {})",
            root.display(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ),
    }
}

impl StageKind for ColmapIngest {
    const KIND: &'static str = "colmap-ingest";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![Port::new("scene", lrf_graph::stage::SCENE_TYPE)],
            outputs: vec![Port::new("views", "views")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.multiple) {
            return Err(format!("multiple = {} is out of range 1..=64", self.multiple));
        }
        let names = self.images.names();
        // Scene keys hash the scene folder without hidden entries: `..` or a hidden folder would be read
        // without being keyed.
        if names.is_empty()
            || names
                .iter()
                .any(|n| n.is_empty() || n.starts_with('.') || n.contains(['/', '\\']))
        {
            return Err(format!(
                "images = {names:?} must be folder names inside the scene, not hidden (no leading `.`)"
            ));
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let root = input_dir(job, "scene")?;
        let images_folder = match self.max_size {
            Some(limit) => largest_folder_within(root, limit)?,
            None => self.images.pick(root)?,
        };
        let options = SceneOptions {
            images: images_folder.clone(),
            distortion: self.distortion,
            test_every: self.test_every,
        };
        let scene = Scene::load(root, &options)?;
        let m = self.multiple;
        let mut images = Vec::with_capacity(scene.views.len());
        let mut records = Vec::with_capacity(scene.views.len());
        let mut offsets = HashMap::new();
        for (index, view) in scene.views.iter().enumerate() {
            let (w, h) = (view.camera.width, view.camera.height);
            if w < m || h < m {
                bail!(
                    "{}: {w}×{h} is smaller than one {m}×{m} autoencoder cell; use a larger image folder",
                    view.image_path.display()
                );
            }
            let (cw, ch) = (w - w % m, h - h % m);
            let (left, top) = ((w - cw) / 2, (h - ch) / 2);
            let image = scene.load_image(view)?.crop(left, top, cw, ch);
            images.push(image);
            records.push(ViewRecord {
                name: view.name.clone(),
                split: view.split,
                camera: view.camera.cropped(left, top, cw, ch),
            });
            offsets.insert(view.image_id, (index, DVec2::new(left as f64, top as f64)));
        }
        let mut points = Points::default();
        for point in scene.model.points.values() {
            let index = points.positions.len() as i64;
            points.positions.push(point.xyz);
            points.colors.push(point.rgb);
            for element in &point.track {
                let Some(&(view_index, offset)) = offsets.get(&element.image_id) else {
                    continue;
                };
                let view = &scene.views[view_index];
                let keypoint = (scene.model.images.get(&element.image_id))
                    .and_then(|image| image.points2d.get(element.point2d_index as usize));
                let Some(keypoint) = keypoint else {
                    continue;
                };
                let pixel = scene.keypoint_pixel(view, DVec2::from(keypoint.xy)) - offset;
                if records[view_index].camera.contains(pixel) {
                    points.track_point.push(index);
                    points.track_view.push(view_index as i64);
                    points.track_pixel.push([pixel.x as f32, pixel.y as f32]);
                }
            }
        }
        let out = output_dir(job, "views")?;
        ViewSet {
            scene: scene.name.clone(),
            images: images_folder,
            views: records,
        }
        .write(&out)?;
        write_images(&out, &images).context("writing the view images")?;
        points.write(&out)?;
        tracing::info!(
            scene = scene.name,
            views = images.len(),
            points = points.positions.len(),
            observations = points.track_point.len(),
            "ingested"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use lrf_graph::StageKind;

    use super::ColmapIngest;

    #[test]
    fn image_folders_outside_the_scene_or_hidden_are_refused() {
        for images in [r#"".""#, r#""..""#, r#"".images""#, r#""a/b""#, r#"["images", "../x"]"#] {
            let params: ColmapIngest = serde_json::from_str(&format!(r#"{{"images": {images}}}"#)).unwrap();
            let error = params.validate().expect_err(images);
            assert!(error.contains("must be folder names inside the scene"), "{error}");
        }
        let params: ColmapIngest = serde_json::from_str(r#"{"images": ["images_8", "images"]}"#).unwrap();
        params.validate().expect("plain folder names");
    }
}
