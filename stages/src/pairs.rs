//! `pair-emit` (per scene, the input side of Stage III): a latent field's renders at its training views and at
//! the held-out ("novel", test-split) views, each paired with the real image, for `decoder-align`.
//!
//! ```text
//! pairs/
//!   pairs.safetensors  per pair k: latent_{k:04} f32 [C, h, w] (raw scale, as `render` stores it),
//!                                  image_{k:04}  u8  [3, H, W] (H = f·h, W = f·w)
//!   pairs.json         PairsInfo: scene, the field's autoencoder, f, per pair {view name, view index, kind, shapes}
//! ```

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use lrf_formats::scene::Split;
use lrf_formats::shard::{ShardReader, write_tch_shard};
use lrf_formats::views::view_key;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::artifacts::{FieldSpace, input_dir, output_dir, read_json, views_input, write_json};
use crate::autoencoder::AutoencoderSource;
use crate::render::Renders;

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairEmit {}

impl StageKind for PairEmit {
    const KIND: &'static str = "pair-emit";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![Port::new("renders", "renders"), Port::new("views", "views")],
            outputs: vec![Port::new("pairs", PAIRS_TYPE)],
        }
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let renders = Renders::open(input_dir(job, "renders")?)?;
        let (views, images) = views_input(job)?;
        let field = &renders.info.field;
        let FieldSpace::Latent { autoencoder, .. } = &field.space else {
            bail!(
                "pair-emit needs the renders of a latent field (latent-3dgs-fit); these come from an RGB field, \
                 which has no latents to align a decoder to"
            );
        };
        let f = renders.info.downsampling;
        if f != field.downsampling {
            bail!(
                "pair-emit needs renders at the field's trained resolution (1/{} of the images), got 1/{f}; give \
                 the render stage `resolution: trained`",
                field.downsampling
            );
        }
        if renders.info.views.is_empty() {
            bail!("the renders hold no views; give the render stage `splits: [train, test]`");
        }
        let mut records = Vec::with_capacity(renders.info.views.len());
        let mut tensors = Vec::with_capacity(2 * renders.info.views.len());
        for (k, &index) in renders.info.views.iter().enumerate() {
            let view = views
                .views
                .get(index)
                .with_context(|| format!("the renders name view {index}, which the scene's views do not have"))?;
            let latent = renders.get(index)?.to_kind(Kind::Float);
            let image = images.tensor(&view_key(index))?;
            let (latent_shape, image_shape) = (latent.size(), image.size());
            let matches = match (latent_shape.as_slice(), image_shape.as_slice()) {
                ([c, h, w], [3, ih, iw]) => *c == field.channels as i64 && h * f as i64 == *ih && w * f as i64 == *iw,
                _ => false,
            };
            if !matches || image.kind() != Kind::Uint8 {
                bail!(
                    "view {:?}: the render is {latent_shape:?} and the image {image_shape:?} ({:?}); expected a \
                     [{}, h, w] latent and a u8 [3, {f}·h, {f}·w] image",
                    view.name,
                    image.kind(),
                    field.channels
                );
            }
            records.push(PairRecord {
                name: view.name.clone(),
                view: index,
                kind: match view.split {
                    Split::Train => PairKind::Train,
                    Split::Test => PairKind::Novel,
                },
                latent_shape,
                image_shape,
            });
            tensors.push((format!("latent_{k:04}"), latent));
            tensors.push((format!("image_{k:04}"), image));
        }
        let out = output_dir(job, "pairs")?;
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        write_tch_shard(&out.join(PAIRS_FILE), &named, &HashMap::new())?;
        write_json(
            &out.join(PAIRS_INFO),
            &PairsInfo {
                scene: views.scene.clone(),
                autoencoder: autoencoder.clone(),
                channels: field.channels,
                downsampling: f,
                pairs: records,
            },
        )
    }
}

/// A `pairs` artifact as `decoder-align` reads it: the index in memory, the tensors memory-mapped.
pub struct Pairs {
    pub info: PairsInfo,
    pub shard: ShardReader,
}

impl Pairs {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Pairs {
            info: read_json(&dir.join(PAIRS_INFO))?,
            shard: ShardReader::open(&dir.join(PAIRS_FILE))?,
        })
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
