//! `vae-encode`: every view's latent (the posterior mean, at the model's raw scale, as the official LRF code
//! encodes) and the per-channel min/max of the training-view latents that normalise them for fitting.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use lrf_formats::scene::Split;
use lrf_formats::shard::write_tch_shard;
use lrf_formats::views::{ViewSet, view_key};
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::artifacts::{LATENTS_FILE, LATENTS_INFO, LatentsInfo, Normalization, output_dir, views_input, write_json};
use crate::autoencoder::{AutoencoderSource, BUNDLED, autoencoder_port};
use crate::latents::encode_view;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeEncode {
    /// `taef2` (bundled), the path of a TAESD folder, a diffusers folder or an AutoencoderKL safetensors
    /// file (relative to the pipeline file), or `input`: the model on the `autoencoder` input port (a
    /// fine-tuned encoder from Stage I).
    pub autoencoder: String,
    #[serde(skip_deserializing)]
    pub resolved: Option<AutoencoderSource>,
}

impl Default for VaeEncode {
    fn default() -> Self {
        VaeEncode {
            autoencoder: BUNDLED.into(),
            resolved: None,
        }
    }
}

impl StageKind for VaeEncode {
    const KIND: &'static str = "vae-encode";
    const VERSION: u32 = 1;

    fn resolve_paths(&mut self, base_dir: &Path) -> Result<(), String> {
        self.resolved = AutoencoderSource::for_parameter(&self.autoencoder, base_dir)?;
        Ok(())
    }
    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: std::iter::once(Port::new("views", "views"))
                .chain(autoencoder_port(&self.autoencoder))
                .collect(),
            outputs: vec![Port::new("latents", "latents")],
        }
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let source = AutoencoderSource::for_job(self.resolved.as_ref(), job)?;
        let (views, images) = views_input(job)?;
        let model = source.open()?;
        let _guard = tch::no_grad_guard();
        let mut latents = Vec::with_capacity(views.views.len());
        for index in 0..views.views.len() {
            latents.push(encode_view(model.as_ref(), &images, index)?);
        }
        let normalization = normalization(&views, &latents)?;
        let out = output_dir(job, "latents")?;
        let names: Vec<String> = (0..latents.len()).map(view_key).collect();
        let tensors: Vec<(&str, &Tensor)> = names.iter().map(String::as_str).zip(&latents).collect();
        write_tch_shard(&out.join(LATENTS_FILE), &tensors, &HashMap::new())?;
        write_json(
            &out.join(LATENTS_INFO),
            &LatentsInfo {
                autoencoder: source,
                channels: model.latent_channels() as usize,
                downsampling: model.downsampling() as usize,
                normalization,
            },
        )
    }
}

/// Per-channel min and max over all training-view latent pixels (LRF's `find_scene_scales`).
fn normalization(views: &ViewSet, latents: &[Tensor]) -> anyhow::Result<Normalization> {
    let train = views.indices(Split::Train);
    if train.is_empty() {
        bail!(
            "scene {:?} has no training views to normalise the latents over",
            views.scene
        );
    }
    let train: Vec<&Tensor> = train.iter().map(|&i| &latents[i]).collect();
    Normalization::over(&train).with_context(|| format!("scene {:?}: over the training views", views.scene))
}
