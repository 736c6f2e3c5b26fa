//! The manifests the stages hand each other (JSON beside the shards), and the few helpers every stage uses to
//! find its inputs and make its outputs.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lrf_formats::atomic::write_atomic;
use lrf_formats::shard::ShardReader;
use lrf_formats::views::{ViewSet, open_images};
use lrf_graph::{Input, Job};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::autoencoder::AutoencoderSource;

/// `latents/latents.json`: how the latents were made and the LRF normalisation over the training views.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatentsInfo {
    pub autoencoder: AutoencoderSource,
    pub channels: usize,
    pub downsampling: usize,
    pub normalization: Normalization,
}

/// Per-channel min and max over every pixel of every training-view latent: z_n = (z − min)/(max − min).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// What a field's channels hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FieldSpace {
    /// Normalised latents of an autoencoder; rendering denormalises before decoding.
    Latent {
        autoencoder: AutoencoderSource,
        normalization: Normalization,
    },
    /// RGB in [0, 1].
    Rgb,
}

/// `field/field.json`: the fitted field, how it was fitted, and its training record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldInfo {
    pub space: FieldSpace,
    pub channels: usize,
    /// Image pixels per trained-render pixel (8 for latent fields and 3DGS/8, 1 for full-resolution RGB).
    pub downsampling: usize,
    pub gaussians: usize,
    pub iterations: u32,
    pub seconds: f64,
    pub seconds_per_iteration: f64,
    /// Peak resident memory of the process during the fit, in MiB (Linux; `None` elsewhere).
    pub peak_memory_mib: Option<f64>,
    /// (iteration, mean loss since the previous entry).
    pub loss_curve: Vec<(u32, f64)>,
    /// (iteration, Gaussian count after densifying), one entry per densification.
    pub gaussian_curve: Vec<(u32, usize)>,
}

/// `renders/renders.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RendersInfo {
    pub field: FieldInfo,
    /// Indices into the scene's views of the views rendered, in shard-name order.
    pub views: Vec<usize>,
    /// Image pixels per render pixel.
    pub downsampling: usize,
    pub seconds_per_view: f64,
}

/// The folder of a per-scene input on `port` (per-scene stages get one path per port).
pub fn input_dir<'a>(job: &'a Job, port: &str) -> anyhow::Result<&'a Path> {
    match job.input(port)? {
        Input::One(path) => Ok(path),
        Input::PerScene(_) => bail!(
            "stage `{}`: input `{port}` must come from a per-scene stage",
            job.stage_id
        ),
    }
}

/// The `views` input of a per-scene stage: the view set and its images.
pub fn views_input(job: &Job) -> anyhow::Result<(ViewSet, ShardReader)> {
    let dir = input_dir(job, "views")?;
    Ok((ViewSet::read(dir)?, open_images(dir)?))
}

/// Creates and returns the folder of output port `port`.
pub fn output_dir(job: &Job, port: &str) -> anyhow::Result<PathBuf> {
    let dir = job.out.join(port);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The process's peak resident set size in MiB, from /proc (Linux).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
