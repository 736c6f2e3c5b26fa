//! `encoder-finetune` (Stage I, global over the training scenes): correspondence-aware fine-tuning of the
//! encoder, L = L_AE + λ1·L_corres + λ2·L_reg (DESIGN.md §2, LRF eq. 7):
//! - L_corres = Σ λ_ij |z_i(x_i/8) − z_j(x_j/8)|, latents sampled bilinearly at the correspondences of a group of
//!   views of one scene, λ_ij = APE_ij / Σ APE over the step's correspondences;
//! - L_AE = L1 of the (frozen) decoder's reconstruction, plus the KL to N(0, I) with weight 1e-6 for KL VAEs;
//! - L_reg = KL to the frozen original encoder's posterior (KL VAEs) or the mean squared difference to its
//!   latents (deterministic encoders).
//!
//! Only the encoder trains; the output is the whole model (new encoder, original decoder) as a folder other
//! tools load, in the autoencoder's own key layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use lrf_formats::correspondences::Correspondences;
use lrf_formats::shard::ShardReader;
use lrf_formats::views::{ViewSet, open_images, read_image};
use lrf_graph::{Input, Job, Port, Scope, Signature, StageKind};
use lrf_vae::losses::{DiagonalGaussian, kl_diagonal};
use lrf_vae::{Autoencoder, Part, Posterior};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::ResolvePaths;
use crate::artifacts::{output_dir, write_json};
use crate::autoencoder::{AUTOENCODER_TYPE, AutoencoderSource, BUNDLED};
use crate::correspond::{pixels_tensor, sample_latents};
use crate::encode::image_tensor;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderFinetune {
    /// The autoencoder to start from: `taef2` or a path (see vae-encode).
    pub autoencoder: String,
    pub steps: u32,
    /// Adam learning rate for the encoder (the paper: 4.5e-6 for the LDM kl-f8 with large batches).
    pub lr: f64,
    /// Views per step: one anchor view and up to this many minus one of its neighbours, from one scene.
    pub views_per_step: usize,
    /// At most this many correspondences per step, drawn evenly from the anchor's pairs.
    pub correspondences_per_step: usize,
    /// λ1 and λ2 (the paper does not state them).
    pub corres_weight: f64,
    pub reg_weight: f64,
    /// Weight of the KL to N(0, I) in L_AE for KL autoencoders (the paper: 1e-6).
    pub kl_weight: f64,
    /// L_AE is measured on a random square window of this many latent pixels per view (0: the whole
    /// image): decoding is the costly part of a step.
    pub reconstruction_window: i64,
    pub seed: u64,
    pub log_every: u32,
    #[serde(skip_deserializing)]
    pub resolved: Option<AutoencoderSource>,
}

impl Default for EncoderFinetune {
    fn default() -> Self {
        EncoderFinetune {
            autoencoder: BUNDLED.into(),
            steps: 1000,
            lr: 1e-5,
            views_per_step: 3,
            correspondences_per_step: 4096,
            corres_weight: 1.0,
            reg_weight: 1.0,
            kl_weight: 1e-6,
            reconstruction_window: 32,
            seed: 0,
            log_every: 50,
            resolved: None,
        }
    }
}

impl ResolvePaths for EncoderFinetune {
    fn resolve(&mut self, base_dir: &Path) -> Result<(), String> {
        self.resolved = Some(AutoencoderSource::resolve(&self.autoencoder, base_dir)?);
        Ok(())
    }
}

/// One training scene: its views, images and correspondences grouped by view pair.
struct TrainingScene {
    name: String,
    images: ShardReader,
    correspondences: Correspondences,
    /// Anchor view → (other view → rows of `correspondences`).
    pairs: BTreeMap<usize, BTreeMap<usize, Vec<usize>>>,
}

impl TrainingScene {
    fn open(name: &str, views_dir: &Path, correspondences_dir: &Path) -> anyhow::Result<Self> {
        let views = ViewSet::read(views_dir)?;
        let images = open_images(views_dir)?;
        let correspondences = Correspondences::read(correspondences_dir, views.views.len())?;
        let mut pairs: BTreeMap<usize, BTreeMap<usize, Vec<usize>>> = BTreeMap::new();
        for (row, (&i, &j)) in correspondences.view_i.iter().zip(&correspondences.view_j).enumerate() {
            let (i, j) = (i as usize, j as usize);
            pairs.entry(i).or_default().entry(j).or_default().push(row);
            pairs.entry(j).or_default().entry(i).or_default().push(row);
        }
        Ok(TrainingScene {
            name: name.to_owned(),
            images,
            correspondences,
            pairs,
        })
    }
}

/// One step's measured terms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Terms {
    total: f64,
    reconstruction: f64,
    correspondence: f64,
    regularisation: f64,
}

impl StageKind for EncoderFinetune {
    const KIND: &'static str = "encoder-finetune";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::Global,
            inputs: vec![
                Port::new("views", "views"),
                Port::new("correspondences", "correspondences"),
            ],
            outputs: vec![Port::new("autoencoder", AUTOENCODER_TYPE)],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.steps == 0 || self.log_every == 0 {
            return Err("steps and log_every must be at least 1".into());
        }
        if self.views_per_step < 2 {
            return Err(format!("views_per_step = {} must be at least 2", self.views_per_step));
        }
        if self.correspondences_per_step == 0 {
            return Err("correspondences_per_step must be at least 1".into());
        }
        for (name, value) in [
            ("lr", self.lr),
            ("corres_weight", self.corres_weight),
            ("reg_weight", self.reg_weight),
            ("kl_weight", self.kl_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} = {value} must be a number ≥ 0"));
            }
        }
        if self.reconstruction_window < 0 {
            return Err("reconstruction_window must be ≥ 0".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let source = self.resolved.clone().context("the autoencoder was not resolved")?;
        let scenes = open_scenes(job)?;
        let mut model = source.open()?;
        let original = source.open()?;
        model.vars_mut(Part::Decoder).freeze();
        let mut optimizer = nn::Adam::default().build(model.vars(Part::Encoder), self.lr)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        tch::manual_seed(self.seed as i64);
        let started = Instant::now();
        let mut curve = Vec::new();
        let mut window = (Terms::default(), 0u32);
        let mut first = None;
        for step in 1..=self.steps {
            let scene = scenes.choose(&mut rng).expect("at least one scene");
            let group = self.pick_group(scene, &mut rng);
            let terms = self.step(
                model.as_ref(),
                original.as_ref(),
                scene,
                &group,
                &mut rng,
                &mut optimizer,
            )?;
            first.get_or_insert(terms);
            let (sum, count) = &mut window;
            sum.total += terms.total;
            sum.reconstruction += terms.reconstruction;
            sum.correspondence += terms.correspondence;
            sum.regularisation += terms.regularisation;
            *count += 1;
            if step % self.log_every == 0 || step == self.steps {
                let n = *count as f64;
                let mean = Terms {
                    total: sum.total / n,
                    reconstruction: sum.reconstruction / n,
                    correspondence: sum.correspondence / n,
                    regularisation: sum.regularisation / n,
                };
                tracing::info!(step, ?mean, "encoder fine-tuning");
                curve.push((step, mean));
                window = (Terms::default(), 0);
            }
        }
        let out = output_dir(job, "autoencoder")?;
        model.save_folder(&out).context("saving the fine-tuned autoencoder")?;
        write_json(
            &out.join("training.json"),
            &serde_json::json!({
                "scenes": scenes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                "steps": self.steps,
                "seconds": started.elapsed().as_secs_f64(),
                "first_step": first,
                "curve": curve,
            }),
        )
    }
}

fn open_scenes(job: &Job) -> anyhow::Result<Vec<TrainingScene>> {
    let per_scene = |port: &str| -> anyhow::Result<BTreeMap<String, PathBuf>> {
        match job.input(port)? {
            Input::PerScene(map) => Ok(map.clone()),
            Input::One(_) => bail!("encoder-finetune input `{port}` must come from a per-scene stage"),
        }
    };
    let (views, correspondences) = (per_scene("views")?, per_scene("correspondences")?);
    let mut scenes = Vec::new();
    for (name, views_dir) in &views {
        let Some(correspondences_dir) = correspondences.get(name) else {
            bail!("scene {name:?} has views but no correspondences");
        };
        let scene = TrainingScene::open(name, views_dir, correspondences_dir)
            .with_context(|| format!("training scene {name:?}"))?;
        if scene.pairs.is_empty() {
            bail!("training scene {name:?} has no correspondences");
        }
        scenes.push(scene);
    }
    if scenes.is_empty() {
        bail!("encoder-finetune got no training scenes; check the stage's roles");
    }
    Ok(scenes)
}

impl EncoderFinetune {
    /// An anchor view and up to `views_per_step − 1` of the views it has correspondences with.
    fn pick_group(&self, scene: &TrainingScene, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let anchors: Vec<&usize> = scene.pairs.keys().collect();
        let anchor = **anchors.choose(rng).expect("scenes without pairs are refused");
        let mut others: Vec<usize> = scene.pairs[&anchor].keys().copied().collect();
        others.shuffle(rng);
        others.truncate(self.views_per_step - 1);
        let mut group = vec![anchor];
        group.extend(others);
        group
    }

    fn step(
        &self,
        model: &dyn Autoencoder,
        original: &dyn Autoencoder,
        scene: &TrainingScene,
        group: &[usize],
        rng: &mut ChaCha8Rng,
        optimizer: &mut nn::Optimizer,
    ) -> anyhow::Result<Terms> {
        let mut posteriors: Vec<(usize, Posterior, Tensor)> = Vec::new();
        let mut reconstruction = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        let mut regularisation = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        for &view in group {
            let image = image_tensor(&read_image(&scene.images, view)?).unsqueeze(0);
            let input = model.input_range().from_unit(&image);
            let posterior = model.encode(&input)?;
            let frozen = tch::no_grad(|| original.encode(&input))?;
            regularisation += match (&posterior.logvar, &frozen.logvar) {
                (Some(logvar), Some(frozen_logvar)) => kl_diagonal(
                    DiagonalGaussian {
                        mean: &posterior.mean,
                        logvar,
                    },
                    Some(DiagonalGaussian {
                        mean: &frozen.mean,
                        logvar: frozen_logvar,
                    }),
                )?,
                _ => (&posterior.mean - &frozen.mean).square().mean(Kind::Float),
            };
            let z = posterior.sample();
            let (z, target) = self.window(&z, &image, model.downsampling(), rng);
            let decoded = model.input_range().to_unit(&model.decode(&z)?);
            reconstruction += (decoded - target).abs().mean(Kind::Float);
            if let Some(logvar) = &posterior.logvar {
                let prior = DiagonalGaussian {
                    mean: &posterior.mean,
                    logvar,
                };
                reconstruction += kl_diagonal(prior, None)? * self.kl_weight;
            }
            posteriors.push((view, posterior, image));
        }
        let n = group.len() as f64;
        let (reconstruction, regularisation) = (reconstruction / n, regularisation / n);
        let correspondence = self.correspondence_term(scene, &posteriors, model.downsampling(), rng)?;
        let total = &reconstruction + &correspondence * self.corres_weight + &regularisation * self.reg_weight;
        optimizer.zero_grad();
        total.backward();
        optimizer.step();
        let value = |t: &Tensor| t.double_value(&[]);
        let terms = Terms {
            total: value(&total),
            reconstruction: value(&reconstruction),
            correspondence: value(&correspondence),
            regularisation: value(&regularisation),
        };
        if !terms.total.is_finite() {
            bail!(
                "the Stage I loss became {} in scene {:?}; lower lr",
                terms.total,
                scene.name
            );
        }
        Ok(terms)
    }

    /// A random `reconstruction_window`² window of the latent and the image region it decodes to.
    fn window(&self, z: &Tensor, image: &Tensor, factor: i64, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
        let (h, w) = (z.size()[2], z.size()[3]);
        let size = self.reconstruction_window;
        if size == 0 || (h <= size && w <= size) {
            return (z.shallow_clone(), image.shallow_clone());
        }
        let (wh, ww) = (size.min(h), size.min(w));
        let (top, left) = (rng.random_range(0..=h - wh), rng.random_range(0..=w - ww));
        let z = z.narrow(2, top, wh).narrow(3, left, ww);
        let image = image
            .narrow(2, top * factor, wh * factor)
            .narrow(3, left * factor, ww * factor);
        (z, image)
    }

    /// Σ λ_ij |z_i − z_j| over the anchor's correspondences with the other views of the group, λ the APE
    /// normalised over the step's correspondences; latents are the posterior means (what LRF encodes with).
    fn correspondence_term(
        &self,
        scene: &TrainingScene,
        posteriors: &[(usize, Posterior, Tensor)],
        factor: i64,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<Tensor> {
        let (anchor, anchor_posterior, _) = &posteriors[0];
        let per_pair = (self.correspondences_per_step / (posteriors.len() - 1)).max(1);
        let c = &scene.correspondences;
        let mut differences = Vec::new();
        let mut weights = Vec::new();
        for (other, posterior, _) in &posteriors[1..] {
            let rows = &scene.pairs[anchor][other];
            let chosen: Vec<usize> = if rows.len() > per_pair {
                rows.choose_multiple(rng, per_pair).copied().collect()
            } else {
                rows.clone()
            };
            // Orient each correspondence as (anchor pixel, other pixel).
            let (mut anchor_pixels, mut other_pixels) = (Vec::new(), Vec::new());
            for &row in &chosen {
                let (a, b) = if c.view_i[row] as usize == *anchor {
                    (c.pixel_i[row], c.pixel_j[row])
                } else {
                    (c.pixel_j[row], c.pixel_i[row])
                };
                anchor_pixels.push(a);
                other_pixels.push(b);
                weights.push(c.ape[row]);
            }
            let f = factor as f64;
            let z_anchor = sample_latents(&anchor_posterior.mean.squeeze_dim(0), &pixels_tensor(&anchor_pixels), f);
            let z_other = sample_latents(&posterior.mean.squeeze_dim(0), &pixels_tensor(&other_pixels), f);
            differences.push((z_anchor - z_other).abs().mean_dim(1, false, Kind::Float));
        }
        let total: f32 = weights.iter().sum();
        if total <= 0.0 {
            // Identical poses: APE is zero for every pair; weigh them equally.
            weights.iter_mut().for_each(|w| *w = 1.0);
        }
        let weights = Tensor::from_slice(&weights);
        let weights = &weights / weights.sum(Kind::Float);
        Ok((Tensor::cat(&differences, 0) * weights).sum(Kind::Float))
    }
}
