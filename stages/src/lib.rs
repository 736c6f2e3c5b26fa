//! lrf-flow's built-in stages: thin plugins that wire formats, splat and vae into the engine. Each module is
//! one stage kind (or two sharing one implementation); [`register`] adds them all to a registry.
//!
//! | kind | scope | inputs → outputs | module |
//! |---|---|---|---|
//! | `colmap-ingest` | per scene | scene → views | [`ingest`] |
//! | `vae-encode` | per scene | views → latents | [`encode`] |
//! | `latent-3dgs-fit`, `rgb-3dgs-fit` | per scene | views (+ latents) → field | [`fit`] |
//! | `render` | per scene | field, views → renders | [`render`] |
//! | `evaluate` | per scene | renders, views (+ autoencoder) → evaluation | [`evaluate`] |
//! | `correspondence-mine` | per scene | scene, views → correspondences | [`correspond`] |
//! | `encoder-finetune` | global | views, correspondences of the training scenes → autoencoder | [`finetune`] |
//! | `latent-consistency` | per scene | latents, correspondences, views → consistency | [`consistency`] |
//! | `pair-emit` | per scene | renders, views → pairs | [`pairs`] |
//! | `decoder-align` | global | pairs of several scenes (+ autoencoder) → autoencoder | [`align`] |
//! | `rgb-align` | per scene | field, views, latents (+ autoencoder) → field, autoencoder | [`rgb_align`] |
//! | `summary` | global | evaluations of several methods → report | [`summary`] |

pub mod align;
pub mod artifacts;
pub mod autoencoder;
pub mod consistency;
pub mod correspond;
pub mod encode;
pub mod evaluate;
pub mod finetune;
pub mod fit;
pub mod ingest;
pub mod pairs;
pub mod render;
pub mod rgb_align;
pub mod summary;
#[cfg(test)]
mod test_support;

use std::path::Path;
use std::sync::Arc;

use lrf_graph::{Registry, Stage, StageKind};

/// Adds every built-in stage kind to `registry`.
pub fn register(registry: &mut Registry) {
    register_kind::<ingest::ColmapIngest>(registry);
    register_kind::<encode::VaeEncode>(registry);
    register_kind::<fit::LatentFit>(registry);
    register_kind::<fit::RgbFit>(registry);
    register_kind::<render::Render>(registry);
    register_kind::<evaluate::Evaluate>(registry);
    register_kind::<pairs::PairEmit>(registry);
    register_kind::<correspond::CorrespondenceMine>(registry);
    register_kind::<consistency::LatentConsistency>(registry);
    register_kind::<finetune::EncoderFinetune>(registry);
    register_kind::<align::DecoderAlign>(registry);
    register_kind::<rgb_align::RgbAlign>(registry);
    register_kind::<summary::Summary>(registry);
}

/// A stage whose parameters name files: they are resolved against the pipeline file's folder when the stage
/// is built, and their content enters the stage's canonical parameters (so the artifact key changes when a
/// file does).
pub trait ResolvePaths {
    fn resolve(&mut self, _base_dir: &Path) -> Result<(), String> {
        Ok(())
    }
}

fn register_kind<T: StageKind + ResolvePaths>(registry: &mut Registry) {
    registry.insert(T::KIND, |params, context| {
        let mut stage: T = serde_json::from_value(params).map_err(|e| e.to_string())?;
        stage.validate()?;
        stage.resolve(&context.base_dir)?;
        Ok(Arc::new(stage) as Arc<dyn Stage>)
    });
}
