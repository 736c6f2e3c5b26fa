//! `render-path`: a field rendered along a camera path, as PNG frames and MP4 videos (nerfstudio's
//! `ns-render`). The path interpolates the training views (`interpolate`), circles the sparse points' centre
//! (`orbit`, for object captures), or is read from a `camera_path.json` the user edited (see
//! [`lrf_formats::camera_path`]); the path used is written beside the frames, ready to edit. Latent frames
//! are rendered at latent resolution and decoded (tiled); the side-by-side video shows decoded render |
//! latent channels 0–2 as false colour. Rendering and decoding speeds are recorded separately.
//!
//! ```text
//! video/
//!   camera_path.json   the path rendered
//!   frames/00000.png   decoded (or RGB) frames
//!   path.mp4           those frames as H.264 (ffmpeg)
//!   side_by_side.mp4   decoded | latent false colour (latent fields)
//!   path.json          frames, fps, sizes, seconds per frame for the latent render and the decode
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use glam::DVec3;
use lrf_formats::camera_path::CameraPath;
use lrf_formats::image::write_png;
use lrf_formats::scene::Split;
use lrf_formats::video::VideoWriter;
use lrf_formats::views::{Points, ViewSet};
use lrf_graph::key::hash_file;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};

use crate::artifacts::{input_dir, output_dir, write_json};
use crate::autoencoder::DecodeWith;
use crate::frames::{DecodePrecision, FieldFrames};
use crate::latents::side_by_side;

/// The port type of a rendered path.
pub const PATH_RENDER_TYPE: &str = "path-render";
pub const PATH_VIDEO_FILE: &str = "path.mp4";
pub const SIDE_BY_SIDE_VIDEO_FILE: &str = "side_by_side.mp4";
pub const CAMERA_PATH_FILE: &str = "camera_path.json";
pub const PATH_INFO_FILE: &str = "path.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderPath {
    /// `interpolate`, `orbit`, or a camera path JSON file relative to the pipeline file.
    pub path: String,
    /// Frames sampled along the path.
    pub frames: usize,
    pub fps: f64,
    /// `interpolate`: at most this many training views, evenly spaced in name order, as key frames.
    pub keyframes: usize,
    /// Encode the frames as MP4 (needs ffmpeg); the PNG frames are written either way.
    pub video: bool,
    /// `field` (default) or `input`: decode with the model on the `autoencoder` port.
    #[serde(skip_serializing_if = "DecodeWith::is_field")]
    pub autoencoder: DecodeWith,
    /// The path file's content hash, so that editing it makes a new video.
    #[serde(skip_deserializing)]
    pub path_content: Option<String>,
    #[serde(skip)]
    path_file: Option<PathBuf>,
}

impl Default for RenderPath {
    fn default() -> Self {
        RenderPath {
            path: "interpolate".into(),
            frames: 120,
            fps: 30.0,
            keyframes: 12,
            video: true,
            autoencoder: DecodeWith::Field,
            path_content: None,
            path_file: None,
        }
    }
}

/// `path.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathRenderInfo {
    pub frames: usize,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    /// Rendering the field (latent resolution for latent fields), per frame.
    pub render_seconds_per_frame: f64,
    /// Decoding a latent frame to an image (0 for RGB fields).
    pub decode_seconds_per_frame: f64,
    pub videos: Vec<String>,
}

impl StageKind for RenderPath {
    const KIND: &'static str = "render-path";
    const VERSION: u32 = 1;

    fn resolve_paths(&mut self, base_dir: &Path) -> Result<(), String> {
        if matches!(self.path.as_str(), "interpolate" | "orbit") {
            return Ok(());
        }
        let file = base_dir.join(&self.path);
        // Checked now, so a bad file stops the run before anything is rendered.
        CameraPath::read(&file).map_err(|e| e.to_string())?;
        let hash = hash_file(&file).map_err(|e| format!("camera path {}: {e}", file.display()))?;
        self.path_content = Some(hash.to_hex().to_string());
        self.path_file = Some(file);
        Ok(())
    }

    fn signature(&self) -> Signature {
        let mut inputs = vec![Port::new("field", "field"), Port::new("views", "views")];
        inputs.extend(self.autoencoder.port());
        Signature {
            scope: Scope::PerScene,
            inputs,
            outputs: vec![Port::new("video", PATH_RENDER_TYPE)],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.frames < 2 || self.frames > 100_000 {
            return Err(format!("frames = {} is outside 2..=100000", self.frames));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(format!("fps = {} must be positive", self.fps));
        }
        if self.keyframes < 2 {
            return Err("keyframes must be at least 2".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let decoder = self.autoencoder.input_model(job)?;
        let (field, decoder) = FieldFrames::open(input_dir(job, "field")?, decoder)?;
        let decoder = decoder.map(|d| d.open(DecodePrecision::F32)).transpose()?;
        let views_dir = input_dir(job, "views")?;
        let views = ViewSet::read(views_dir)?;
        let path = self.camera_path(&views, views_dir)?;
        let factor = field.factor();
        let (width, height) = (path.width / factor * factor, path.height / factor * factor);
        if width == 0 || height == 0 {
            bail!(
                "a {}x{} path is smaller than the field's {factor}× downsampling",
                path.width,
                path.height
            );
        }
        let out = output_dir(job, "video")?;
        path.write(&out.join(CAMERA_PATH_FILE))?;
        let frames_dir = out.join("frames");
        std::fs::create_dir_all(&frames_dir)?;
        let mut video = match self.video {
            true => Some(VideoWriter::create(
                &out.join(PATH_VIDEO_FILE),
                width,
                height,
                path.fps,
            )?),
            false => None,
        };
        let mut side_video = match (self.video, &decoder) {
            (true, Some(_)) => Some(VideoWriter::create(
                &out.join(SIDE_BY_SIDE_VIDEO_FILE),
                2 * width,
                height,
                path.fps,
            )?),
            _ => None,
        };
        let (mut render_seconds, mut decode_seconds) = (0.0, 0.0);
        let cameras = path.cameras();
        for (i, camera) in cameras.iter().enumerate() {
            job.status(&format!("frame {}/{}", i + 1, cameras.len()));
            let started = Instant::now();
            let raw = field
                .render(&camera.resized(width, height))
                .with_context(|| format!("rendering frame {i}"))?;
            render_seconds += started.elapsed().as_secs_f64();
            let started = Instant::now();
            let frame = match &decoder {
                Some(decoder) => decoder.decode(&raw).with_context(|| format!("frame {i}"))?,
                None => raw.image.shallow_clone(),
            };
            decode_seconds += started.elapsed().as_secs_f64();
            let frame_image = side_by_side(&[&frame])?;
            write_png(&frames_dir.join(format!("{i:05}.png")), &frame_image)?;
            if let Some(video) = &mut video {
                video.push(&frame_image)?;
            }
            if let Some(video) = &mut side_video {
                video.push(&side_by_side(&[&frame, &raw.preview()])?)?;
            }
        }
        let mut videos = Vec::new();
        if let Some(video) = video {
            video.finish()?;
            videos.push(PATH_VIDEO_FILE.to_string());
        }
        if let Some(video) = side_video {
            video.finish()?;
            videos.push(SIDE_BY_SIDE_VIDEO_FILE.to_string());
        }
        let n = cameras.len() as f64;
        write_json(
            &out.join(PATH_INFO_FILE),
            &PathRenderInfo {
                frames: cameras.len(),
                fps: path.fps,
                width,
                height,
                render_seconds_per_frame: render_seconds / n,
                decode_seconds_per_frame: if decoder.is_some() { decode_seconds / n } else { 0.0 },
                videos,
            },
        )
    }
}

impl RenderPath {
    fn camera_path(&self, views: &ViewSet, views_dir: &Path) -> anyhow::Result<CameraPath> {
        let train: Vec<_> = views
            .views
            .iter()
            .filter(|v| v.split == Split::Train)
            .map(|v| v.camera.clone())
            .collect();
        let path = match self.path.as_str() {
            "interpolate" => {
                if train.len() < 2 {
                    bail!(
                        "`path: interpolate` needs at least 2 training views; the scene has {}",
                        train.len()
                    );
                }
                let keys = self.keyframes.min(train.len());
                let chosen: Vec<_> = (0..keys)
                    .map(|k| train[k * (train.len() - 1) / (keys - 1)].clone())
                    .collect();
                CameraPath::through(&chosen, self.frames, self.fps)
            }
            "orbit" => {
                let points = Points::read(views_dir)?;
                if points.positions.is_empty() {
                    bail!(
                        "`path: orbit` circles the sparse points' centre, and this scene has none; use `interpolate`"
                    );
                }
                CameraPath::orbit(median(&points.positions), &train, self.frames, self.fps)
            }
            _ => {
                let file = self
                    .path_file
                    .as_ref()
                    .context("the camera path file was not resolved")?;
                return Ok(CameraPath::read(file)?);
            }
        };
        path.validate()
            .map_err(|e| anyhow::anyhow!("the `{}` path of this scene's views: {e}", self.path))?;
        Ok(path)
    }
}

/// The per-axis median: a centre that stray points do not drag.
fn median(points: &[[f64; 3]]) -> DVec3 {
    let axis = |a: usize| {
        let mut values: Vec<f64> = points.iter().map(|p| p[a]).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    DVec3::new(axis(0), axis(1), axis(2))
}
