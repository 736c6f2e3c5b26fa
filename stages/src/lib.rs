//! lrf-flow's built-in stages: thin plugins that wire formats, splat and vae into the engine. Each module is
//! one stage kind (or two sharing one implementation); [`register`] adds them all to a registry.
//!
//! | kind | scope | inputs → outputs | module |
//! |---|---|---|---|
//! | `colmap-ingest` | per scene | scene → views | [`ingest`] |
//! | `vae-encode` | per scene | views → latents | [`encode`] |
//! | `latent-3dgs-fit`, `rgb-3dgs-fit` | per scene | views (+ latents) → field | [`fit`] |
//! | `latent-nerf-fit` | per scene | views, latents → Tri-Plane NeRF field | [`nerf_fit`] |
//! | `render` | per scene | field (Gaussians or Tri-Plane), views → renders | [`render`] |
//! | `evaluate` | per scene | renders, views (+ autoencoder) → evaluation | [`evaluate`] |
//! | `correspondence-mine` | per scene | scene, views → correspondences | [`correspond`] |
//! | `encoder-finetune` | global | views, correspondences of the training scenes → autoencoder | [`finetune`] |
//! | `latent-consistency` | per scene | latents, correspondences, views → consistency | [`consistency`] |
//! | `pair-emit` | per scene | renders, views → pairs | [`pairs`] |
//! | `decoder-align` | global | pairs of several scenes (+ autoencoder) → autoencoder | [`align`] |
//! | `rgb-align` | per scene | field (Gaussians or Tri-Plane), views, latents (+ autoencoder) → field, autoencoder | [`rgb_align`] |
//! | `igae-train` | global | views of the training scenes (+ autoencoder) → IG-AE autoencoder | [`igae`] |
//! | `summary` | global | evaluations of several methods → report | [`summary`] |
//! | `render-path` | per scene | field, views (+ autoencoder) → frames and videos along a camera path | [`path`] |
//! | `graphdeco-export` | per scene | RGB field, views, scene → graphdeco model folder | [`export`] |

pub mod align;
pub mod artifacts;
pub mod autoencoder;
pub mod consistency;
pub mod correspond;
pub mod encode;
pub mod evaluate;
pub mod export;
pub mod finetune;
pub mod fit;
pub mod frames;
pub mod igae;
pub mod ingest;
pub mod latents;
pub mod nerf_fit;
pub mod pairs;
pub mod path;
pub mod perceptual;
pub mod render;
pub mod report;
pub mod rgb_align;
pub mod summary;
#[cfg(test)]
mod test_support;
pub mod training;

use lrf_graph::Registry;

/// Adds every built-in stage kind to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register::<ingest::ColmapIngest>();
    registry.register::<encode::VaeEncode>();
    registry.register::<fit::LatentFit>();
    registry.register::<fit::RgbFit>();
    registry.register::<nerf_fit::LatentNerfFit>();
    registry.register::<render::Render>();
    registry.register::<evaluate::Evaluate>();
    registry.register::<pairs::PairEmit>();
    registry.register::<correspond::CorrespondenceMine>();
    registry.register::<consistency::LatentConsistency>();
    registry.register::<finetune::EncoderFinetune>();
    registry.register::<align::DecoderAlign>();
    registry.register::<rgb_align::RgbAlign>();
    registry.register::<igae::IgaeTrain>();
    registry.register::<summary::Summary>();
    registry.register::<export::GraphdecoExport>();
    registry.register::<path::RenderPath>();
}
