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

use anyhow::{Context, bail};
use lrf_formats::scene::Split;
use lrf_formats::shard::write_tch_shard;
use lrf_formats::views::view_key;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::artifacts::Renders;
use crate::artifacts::{
    FieldSpace, PAIRS_FILE, PAIRS_INFO, PAIRS_TYPE, PairKind, PairRecord, PairsInfo, input_dir, output_dir,
    views_input, write_json,
};

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
