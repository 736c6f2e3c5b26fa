//! `latent-consistency`: how far apart a scene's latents are at corresponding pixels, the latent multi-view
//! consistency that LRF's Stage I improves: the mean over correspondences of the per-channel mean
//! |z_i(x_i/8) − z_j(x_j/8)|, on raw and on normalised latents.

use std::collections::{BTreeMap, HashMap};

use anyhow::bail;
use lrf_formats::correspondences::Correspondences;
use lrf_formats::views::ViewSet;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::artifacts::CORRESPONDENCES_TYPE;
use crate::artifacts::Latents;
use crate::artifacts::{input_dir, output_dir, write_json};
use crate::latents::{pixels_tensor, sample_latents};

pub const CONSISTENCY_FILE: &str = "consistency.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatentConsistency {}

/// `consistency/consistency.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consistency {
    pub scene: String,
    pub correspondences: usize,
    pub view_pairs: usize,
    pub channels: usize,
    pub downsampling: usize,
    /// Mean over correspondences of the per-channel mean |z_i − z_j|, raw latents.
    pub raw: f64,
    /// The same on latents normalised to the training views' per-channel range.
    pub normalized: f64,
}

impl StageKind for LatentConsistency {
    const KIND: &'static str = "latent-consistency";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![
                Port::new("latents", "latents"),
                Port::new("correspondences", CORRESPONDENCES_TYPE),
                Port::new("views", "views"),
            ],
            outputs: vec![Port::new("consistency", "consistency")],
        }
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let views = ViewSet::read(input_dir(job, "views")?)?;
        let latents = Latents::open(input_dir(job, "latents")?)?;
        let correspondences = Correspondences::read(input_dir(job, "correspondences")?, views.views.len())?;
        let result = consistency(&views, &latents, &correspondences)?;
        let out = output_dir(job, "consistency")?;
        write_json(&out.join(CONSISTENCY_FILE), &result)?;
        tracing::info!(
            scene = views.scene,
            raw = result.raw,
            normalized = result.normalized,
            "latent consistency"
        );
        Ok(())
    }
}

/// The consistency of `latents` over `correspondences`.
pub fn consistency(
    views: &ViewSet,
    latents: &Latents,
    correspondences: &Correspondences,
) -> anyhow::Result<Consistency> {
    if correspondences.is_empty() {
        bail!(
            "scene {:?}: no correspondences to measure consistency over",
            views.scene
        );
    }
    let _guard = tch::no_grad_guard();
    let f = latents.info.downsampling;
    let normalization = &latents.info.normalization;
    let channels = normalization.min.len() as i64;
    let range = (Tensor::from_slice(&normalization.max) - Tensor::from_slice(&normalization.min))
        .to_kind(Kind::Double)
        .view([1, channels]);
    let mut groups: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
    for k in 0..correspondences.len() {
        groups
            .entry((correspondences.view_i[k], correspondences.view_j[k]))
            .or_default()
            .push(k);
    }
    let mut cache: HashMap<usize, Tensor> = HashMap::new();
    let mut load = |index: usize| -> anyhow::Result<Tensor> {
        if let Some(latent) = cache.get(&index) {
            return Ok(latent.shallow_clone());
        }
        let latent = latents.raw(index)?.to_kind(Kind::Double);
        let camera = &views.views[index].camera;
        let size = latent.size();
        if size
            != [
                channels,
                (camera.height as usize / f) as i64,
                (camera.width as usize / f) as i64,
            ]
        {
            bail!(
                "scene {:?} view {index}: latent {size:?} does not fit a {}×{} view at {f}× downsampling with {channels} channels",
                views.scene,
                camera.width,
                camera.height
            );
        }
        cache.insert(index, latent.shallow_clone());
        Ok(latent)
    };
    let (mut raw, mut normalized) = (0.0, 0.0);
    for (&(i, j), members) in &groups {
        let pixels = |column: &[[f32; 2]]| pixels_tensor(&members.iter().map(|&k| column[k]).collect::<Vec<_>>());
        let zi = sample_latents(&load(i as usize)?, &pixels(&correspondences.pixel_i), f as f64);
        let zj = sample_latents(&load(j as usize)?, &pixels(&correspondences.pixel_j), f as f64);
        let difference = (zi - zj).abs();
        raw += difference
            .mean_dim(1, false, Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
        normalized += (difference / &range)
            .mean_dim(1, false, Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
    }
    let m = correspondences.len() as f64;
    Ok(Consistency {
        scene: views.scene.clone(),
        correspondences: correspondences.len(),
        view_pairs: groups.len(),
        channels: channels as usize,
        downsampling: f,
        raw: raw / m,
        normalized: normalized / m,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use glam::{DMat3, DVec3};
    use lrf_formats::camera::Camera;
    use lrf_formats::scene::Split;
    use lrf_formats::shard::write_tch_shard;
    use lrf_formats::views::{ViewRecord, view_key};

    use super::*;
    use crate::artifacts::{LATENTS_FILE, LATENTS_INFO};
    use crate::artifacts::{LatentsInfo, Normalization};
    use crate::autoencoder::AutoencoderSource;

    #[test]
    fn consistency_of_hand_made_latents() {
        let dir = tempfile::tempdir().unwrap();
        let camera = Camera {
            rotation: DMat3::IDENTITY,
            translation: DVec3::ZERO,
            fx: 10.0,
            fy: 10.0,
            cx: 8.0,
            cy: 8.0,
            width: 16,
            height: 16,
        };
        let views = ViewSet {
            scene: "s".into(),
            images: "images".into(),
            views: (0..2)
                .map(|i| ViewRecord {
                    name: format!("{i}.png"),
                    split: Split::Train,
                    camera: camera.clone(),
                })
                .collect(),
        };
        // 2 channels, 2×2 latents: view 0 all 1 (channel 0) and 0 (channel 1); view 1 channel 0 = 3, channel 1 = 0.
        let a = Tensor::from_slice(&[1f32, 1., 1., 1., 0., 0., 0., 0.]).view([2, 2, 2]);
        let b = Tensor::from_slice(&[3f32, 3., 3., 3., 0., 0., 0., 0.]).view([2, 2, 2]);
        let names = [view_key(0), view_key(1)];
        write_tch_shard(
            &dir.path().join(LATENTS_FILE),
            &[(names[0].as_str(), &a), (names[1].as_str(), &b)],
            &HashMap::new(),
        )
        .unwrap();
        let info = LatentsInfo {
            autoencoder: AutoencoderSource::resolve("taef2", dir.path()).unwrap(),
            channels: 2,
            downsampling: 8,
            normalization: Normalization {
                min: vec![0.0, 0.0],
                max: vec![4.0, 1.0],
            },
        };
        write_json(&dir.path().join(LATENTS_INFO), &info).unwrap();
        let latents = Latents::open(dir.path()).unwrap();
        let correspondences = Correspondences {
            view_i: vec![0, 0, 1],
            view_j: vec![1, 1, 1],
            pixel_i: vec![[4.0, 4.0], [12.0, 3.0], [1.0, 1.0]],
            pixel_j: vec![[8.0, 8.0], [0.0, 0.0], [15.0, 15.0]],
            ape: vec![1.0; 3],
        };
        let result = consistency(&views, &latents, &correspondences).unwrap();
        // Two pairs differ by 2 in channel 0 (mean over channels 1), one is within view 1 (0).
        assert_eq!((result.correspondences, result.view_pairs), (3, 2));
        assert!((result.raw - 2.0 / 3.0).abs() < 1e-9, "{}", result.raw);
        // Normalised: channel 0 difference 2/4 → per-channel mean 0.25.
        assert!((result.normalized - 0.5 / 3.0).abs() < 1e-9, "{}", result.normalized);
    }
}
