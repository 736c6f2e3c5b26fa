//! The artifact contracts the stages hand each other: file names, the JSON indexes beside the shards, and
//! one reader for every index-plus-shard artifact; and the few helpers every stage uses to find its inputs
//! and make its outputs. Stages read each other's outputs through this module only.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lrf_formats::atomic::write_atomic;
use lrf_formats::scene::Split;
use lrf_formats::shard::ShardReader;
use lrf_formats::views::{ViewSet, open_images, view_key};
use lrf_graph::{Input, Job};
use lrf_nerf::{TriPlaneLayout, TriPlaneNerf};
use lrf_splat::train::GaussianField;
use lrf_vae::metrics::MetricValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::autoencoder::AutoencoderSource;

pub const LATENTS_FILE: &str = "latents.safetensors";
pub const LATENTS_INFO: &str = "latents.json";
pub const RENDERS_FILE: &str = "renders.safetensors";
pub const RENDERS_INFO: &str = "renders.json";
pub const FIELD_FILE: &str = "field.safetensors";
pub const FIELD_INFO: &str = "field.json";
pub const PLY_FILE: &str = "point_cloud.ply";
pub const METRICS_FILE: &str = "metrics.json";
/// The port type of a `correspondences` artifact.
pub const CORRESPONDENCES_TYPE: &str = "correspondences";
pub const PAIRS_FILE: &str = "pairs.safetensors";
pub const PAIRS_INFO: &str = "pairs.json";
/// The port type of a `pairs` artifact.
pub const PAIRS_TYPE: &str = "pairs";

/// Whether a pair's view was one the field was fitted to, or a held-out one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairKind {
    Train,
    /// A test-split view, which the field never saw.
    Novel,
}

/// One entry of `pairs.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairRecord {
    /// The view's image name and its index in the scene's views.
    pub name: String,
    pub view: usize,
    pub kind: PairKind,
    /// `[C, h, w]` and `[3, H, W]`.
    pub latent_shape: Vec<i64>,
    pub image_shape: Vec<i64>,
}

/// `pairs/pairs.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairsInfo {
    pub scene: String,
    /// The autoencoder whose latent space the field was fitted in.
    pub autoencoder: AutoencoderSource,
    pub channels: usize,
    /// Image pixels per latent pixel.
    pub downsampling: usize,
    pub pairs: Vec<PairRecord>,
}

/// An artifact that is a JSON index beside one safetensors shard (latents, renders, pairs): the index in
/// memory, the tensors memory-mapped. One reader serves every such contract.
pub struct ShardArtifact<I> {
    pub info: I,
    pub shard: ShardReader,
}

impl<I: DeserializeOwned> ShardArtifact<I> {
    fn open_files(dir: &Path, info: &str, shard: &str) -> anyhow::Result<Self> {
        Ok(ShardArtifact {
            info: read_json(&dir.join(info))?,
            shard: ShardReader::open(&dir.join(shard))?,
        })
    }
}

/// A `latents` artifact: each view's latent, raw scale, and the normalization over the training views.
pub type Latents = ShardArtifact<LatentsInfo>;

impl Latents {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_files(dir, LATENTS_INFO, LATENTS_FILE)
    }

    /// View `index`'s latent, raw scale, `[C, h, w]`.
    pub fn raw(&self, index: usize) -> anyhow::Result<Tensor> {
        Ok(self.shard.tensor(&view_key(index))?)
    }

    /// View `index`'s latent normalized to the training views' range.
    pub fn normalized(&self, index: usize) -> anyhow::Result<Tensor> {
        Ok(self.info.normalization.normalize(&self.raw(index)?))
    }
}

/// A `renders` artifact: one render per rendered view.
pub type Renders = ShardArtifact<RendersInfo>;

impl Renders {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_files(dir, RENDERS_INFO, RENDERS_FILE)
    }

    /// View `index`'s render (`[C, h, w]`; raw latent scale for latent fields).
    pub fn get(&self, index: usize) -> anyhow::Result<Tensor> {
        Ok(self.shard.tensor(&view_key(index))?)
    }
}

/// A `pairs` artifact: (rendered latent, real image) pairs for `decoder-align`.
pub type Pairs = ShardArtifact<PairsInfo>;

impl Pairs {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_files(dir, PAIRS_INFO, PAIRS_FILE)
    }

    /// Pair `k`'s latent, `[C, h, w]`, raw scale.
    pub fn latent(&self, k: usize) -> anyhow::Result<Tensor> {
        Ok(self.shard.tensor(&format!("latent_{k:04}"))?)
    }

    /// Pair `k`'s image, `[3, H, W]` f32 in [0, 1].
    pub fn image(&self, k: usize) -> anyhow::Result<Tensor> {
        Ok(self.shard.tensor(&format!("image_{k:04}"))?.to_kind(Kind::Float) / 255.0)
    }
}

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

impl Normalization {
    /// Per-channel min and max over every pixel of `latents` (`[C, h, w]` each; LRF's `find_scene_scales`).
    pub fn over(latents: &[&Tensor]) -> anyhow::Result<Normalization> {
        if latents.is_empty() {
            bail!("no latents to normalise over");
        }
        let flat: Vec<Tensor> = latents.iter().map(|l| l.flatten(1, 2)).collect();
        let all = Tensor::cat(&flat, 1);
        let to_vec = |t: Tensor| Vec::<f32>::try_from(t).context("reading latent statistics");
        let min = to_vec(all.amin(1, false))?;
        let max = to_vec(all.amax(1, false))?;
        if min.iter().zip(&max).any(|(a, b)| !(b - a).is_normal() || b <= a) {
            bail!("a latent channel is constant or not finite (min {min:?}, max {max:?})");
        }
        Ok(Normalization { min, max })
    }

    fn scales(&self) -> (Tensor, Tensor) {
        let c = self.min.len() as i64;
        let min = Tensor::from_slice(&self.min).view([c, 1, 1]);
        let range = Tensor::from_slice(&self.max).view([c, 1, 1]) - &min;
        (min, range)
    }

    /// `[C, h, w]` raw → normalised.
    pub fn normalize(&self, latent: &Tensor) -> Tensor {
        let (min, range) = self.scales();
        (latent - min) / range
    }

    /// `[C, h, w]` normalised → raw.
    pub fn denormalize(&self, latent: &Tensor) -> Tensor {
        let (min, range) = self.scales();
        latent * range + min
    }
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

/// How a field represents its scene: what `field.safetensors` holds and which reader opens it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Representation {
    /// 3D Gaussians (`lrf_splat::train::GaussianField`), with a `point_cloud.ply` beside them.
    #[default]
    Gaussians,
    /// A latent Tri-Plane NeRF (`lrf_nerf::TriPlaneNerf`) of this layout.
    TriPlane(TriPlaneLayout),
}

impl Representation {
    pub fn is_gaussians(&self) -> bool {
        *self == Representation::Gaussians
    }

    /// Its name in messages and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Representation::Gaussians => "3D Gaussians",
            Representation::TriPlane(_) => "Tri-Plane NeRF",
        }
    }
}

/// `field/field.json`: the fitted field, how it was fitted, and its training record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldInfo {
    pub space: FieldSpace,
    /// Absent for Gaussians, so that the JSON of Gaussian fields is what it was before other field types.
    #[serde(default, skip_serializing_if = "Representation::is_gaussians")]
    pub representation: Representation,
    pub channels: usize,
    /// Image pixels per trained-render pixel (8 for latent fields and 3DGS/8, 1 for full-resolution RGB).
    pub downsampling: usize,
    /// 0 for fields of other types.
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

/// The model a `field` artifact holds.
pub enum FieldModel {
    Gaussians(GaussianField),
    TriPlane(TriPlaneNerf),
}

impl FieldModel {
    pub fn representation(&self) -> Representation {
        match self {
            FieldModel::Gaussians(_) => Representation::Gaussians,
            FieldModel::TriPlane(nerf) => Representation::TriPlane(nerf.layout()),
        }
    }
}

/// A `field` artifact: its description and its model.
pub struct Field {
    pub info: FieldInfo,
    pub model: FieldModel,
}

impl Field {
    /// Opens the field in `dir`, of whichever representation its JSON names; a parameter holding NaN or an
    /// infinity is refused.
    pub fn open(dir: &Path) -> anyhow::Result<Field> {
        let info: FieldInfo = read_json(&dir.join(FIELD_INFO))?;
        let file = dir.join(FIELD_FILE);
        let model = match &info.representation {
            Representation::Gaussians => {
                let field =
                    GaussianField::load(&file).with_context(|| format!("loading the field in {}", dir.display()))?;
                if let Some(group) = field.non_finite_group() {
                    bail!(
                        "the field in {} holds NaN or infinite `{group}` parameters",
                        dir.display()
                    );
                }
                FieldModel::Gaussians(field)
            }
            Representation::TriPlane(layout) => FieldModel::TriPlane(
                TriPlaneNerf::load(*layout, &file)
                    .with_context(|| format!("loading the field in {}", dir.display()))?,
            ),
        };
        Ok(Field { info, model })
    }
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

/// Scores of one image against its ground truth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    /// +∞ for an exact match, stored as "inf" (JSON has no infinity).
    #[serde(with = "decibels")]
    pub psnr: f64,
    pub ssim: f64,
    /// LPIPS (VGG or AlexNet, as `evaluate` was configured), when the user gave backbone weights.
    #[serde(with = "metric_value")]
    pub lpips: MetricValue,
    /// ST-LPIPS, the shift-tolerant LPIPS whose weights ship with the project's setup; absent from
    /// evaluations made before it existed.
    #[serde(with = "metric_value", default)]
    pub st_lpips: MetricValue,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewScores {
    pub name: String,
    pub split: Split,
    pub render: Scores,
    /// The autoencoder's reconstruction of the real image (latent fields only).
    pub reconstruction: Option<Scores>,
    /// PSNR of the normalised latent render against the normalised encoding of the real image, both
    /// clamped to [0, 1] (latent fields only; IG-AE's Table 6 and latent-nerfstudio's `metrics_e`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_psnr: Option<f64>,
}

/// Means over the views of one split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitSummary {
    pub split: Split,
    pub views: usize,
    pub render: Scores,
    pub reconstruction: Option<Scores>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_psnr: Option<f64>,
}

/// `evaluation/metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub scene: String,
    /// `latent` or `rgb`, and how far below image resolution the field was fitted.
    pub field: String,
    pub field_downsampling: usize,
    /// The field's representation (absent for Gaussians, as in `field.json`).
    #[serde(default, skip_serializing_if = "Representation::is_gaussians")]
    pub representation: Representation,
    /// 0 for fields of other representations.
    pub gaussians: usize,
    pub fit_seconds: f64,
    pub fit_seconds_per_iteration: f64,
    pub fit_iterations: u32,
    pub fit_peak_memory_mib: Option<f64>,
    /// The fit's training record (see [`FieldInfo`]), for the report's plots.
    #[serde(default)]
    pub loss_curve: Vec<(u32, f64)>,
    #[serde(default)]
    pub gaussian_curve: Vec<(u32, usize)>,
    #[serde(default)]
    pub render_seconds_per_view: f64,
    pub summary: Vec<SplitSummary>,
    pub views: Vec<ViewScores>,
}

/// The panels of `evaluate`'s side-by-side PNGs, left to right (the last only for latent fields).
pub const SIDE_BY_SIDE_PANELS: [&str; 5] = [
    "ground truth",
    "decoded render",
    "autoencoder reconstruction",
    "render error (|render − truth|, ×4)",
    "latent channels 0–2",
];

/// PSNR in dB as a number, or "inf" for an exact match, both ways (serde_json would write +∞ as null,
/// which reads back as nothing).
mod decibels {
    use serde::{Deserialize, Deserializer, Serializer};

    const INFINITE: &str = "inf";

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        match *value {
            v if v.is_finite() => serializer.serialize_f64(v),
            v if v == f64::INFINITY => serializer.serialize_str(INFINITE),
            v => Err(serde::ser::Error::custom(format!("PSNR {v} cannot be stored"))),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Number(f64),
            Text(String),
        }
        match Option::<Stored>::deserialize(deserializer)? {
            Some(Stored::Number(v)) => Ok(v),
            Some(Stored::Text(t)) if t == INFINITE => Ok(f64::INFINITY),
            Some(Stored::Text(t)) => Err(serde::de::Error::custom(format!(
                "PSNR {t:?} is neither a number nor \"{INFINITE}\""
            ))),
            None => Err(serde::de::Error::custom(
                "PSNR is null: an older lrf-flow wrote an infinite PSNR so; rerun evaluate",
            )),
        }
    }
}

/// [`MetricValue`] as a number or "unavailable", both ways.
mod metric_value {
    use lrf_vae::metrics::MetricValue;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &MetricValue, serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<MetricValue, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Number(f64),
            Text(String),
        }
        match Stored::deserialize(deserializer)? {
            Stored::Number(v) => Ok(MetricValue::Value(v)),
            Stored::Text(t) if t == "unavailable" => Ok(MetricValue::Unavailable),
            Stored::Text(t) => Err(serde::de::Error::custom(format!(
                "perceptual metric {t:?} is neither a number nor \"unavailable\""
            ))),
        }
    }
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
