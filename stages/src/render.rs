//! `render`: a fitted field (3D Gaussians or a Tri-Plane NeRF) rendered at a scene's training and test views, at the resolution it was trained
//! at or at full image resolution (how the paper evaluates 3DGS/8). Latent renders are clamped to the
//! normalised range and stored denormalised, at the autoencoder's raw scale, as the official LRF code does
//! before decoding.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use lrf_formats::scene::Split;
use lrf_formats::shard::write_tch_shard;
use lrf_formats::views::{ViewSet, view_key};
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::artifacts::{FieldSpace, RENDERS_FILE, RENDERS_INFO, RendersInfo, input_dir, output_dir, write_json};
use crate::frames::FieldFrames;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The resolution the field was fitted at (latent resolution for latent fields).
    Trained,
    /// The views' full image resolution.
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Render {
    pub resolution: Resolution,
    pub splits: Vec<Split>,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            resolution: Resolution::Trained,
            splits: vec![Split::Train, Split::Test],
        }
    }
}

impl StageKind for Render {
    const KIND: &'static str = "render";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![Port::new("field", "field"), Port::new("views", "views")],
            outputs: vec![Port::new("renders", "renders")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.splits.is_empty() {
            return Err("splits must name at least one of train, test".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let (field, _) = FieldFrames::open(input_dir(job, "field")?, None)?;
        let info = field.info.clone();
        let views = ViewSet::read(input_dir(job, "views")?)?;
        let downsampling = match self.resolution {
            Resolution::Trained => info.downsampling,
            Resolution::Full => 1,
        };
        let indices: Vec<usize> = (0..views.views.len())
            .filter(|&i| self.splits.contains(&views.views[i].split))
            .collect();
        let started = Instant::now();
        let mut renders = Vec::with_capacity(indices.len());
        for &index in &indices {
            let camera = &views.views[index].camera;
            let (w, h) = (camera.width / downsampling as u32, camera.height / downsampling as u32);
            let image = field
                .render_at(&camera.resized(w, h))
                .with_context(|| format!("rendering view {:?}", views.views[index].name))?;
            renders.push(match &info.space {
                FieldSpace::Latent { normalization, .. } => normalization.denormalize(&image),
                FieldSpace::Rgb => image,
            });
        }
        let seconds_per_view = started.elapsed().as_secs_f64() / indices.len().max(1) as f64;
        let out = output_dir(job, "renders")?;
        let names: Vec<String> = indices.iter().map(|&i| view_key(i)).collect();
        let tensors: Vec<(&str, &Tensor)> = names.iter().map(String::as_str).zip(&renders).collect();
        write_tch_shard(&out.join(RENDERS_FILE), &tensors, &HashMap::new())?;
        write_json(
            &out.join(RENDERS_INFO),
            &RendersInfo {
                field: info,
                views: indices,
                downsampling,
                seconds_per_view,
            },
        )
    }
}
