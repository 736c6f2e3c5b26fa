//! `encoder-finetune` (Stage I, global over the training scenes): correspondence-aware fine-tuning of the
//! encoder, L = L_AE + λ1·L_corres + λ2·L_reg (DESIGN.md §2, LRF eq. 7):
//! - L_corres = Σ λ_ij |z_i(x_i/8) − z_j(x_j/8)|, latents sampled bilinearly at the correspondences of a group of
//!   views of one scene, λ_ij = APE_ij / Σ APE over the step's correspondences;
//! - L_AE = L1 of the (frozen) decoder's reconstruction, plus LPIPS and a PatchGAN term when configured
//!   ([`AutoencoderLoss`]), plus the KL to N(0, I) with weight 1e-6 for KL VAEs;
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
use lrf_vae::losses::{AutoencoderLoss, DiagonalGaussian, kl_diagonal};
use lrf_vae::{Autoencoder, GanConfig, InputRange, Part, PatchGan, Posterior};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::artifacts::{output_dir, write_json};
use crate::autoencoder::{AUTOENCODER_TYPE, AutoencoderSource, BUNDLED};
use crate::latents::image_tensor;
use crate::latents::{pixels_tensor, sample_latents};
use crate::perceptual::{LpipsBackbone, open_lpips, resolve_lpips};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderFinetune {
    /// The autoencoder to start from: `taef2` or a path (see vae-encode).
    pub autoencoder: String,
    /// Default 300: on the validation scene of pipelines/encoder-study.yaml, 900 steps (at λ2 = 10) drifted
    /// the encoder further than 300 (AE ceiling −1.6 dB against −0.56 dB) and lost 0.22 dB of PSNR.
    pub steps: u32,
    /// Adam learning rate for the encoder (the paper: 4.5e-6 for the LDM kl-f8 with large batches).
    pub lr: f64,
    /// Views per step: one anchor view and up to this many minus one of its neighbours, from one scene.
    /// Default 2, the value every measured recipe (the ablation, the encoder study) used: a step costs
    /// about linearly in views.
    pub views_per_step: usize,
    /// At most this many correspondences per step, drawn evenly from the anchor's pairs.
    pub correspondences_per_step: usize,
    /// λ1 and λ2 (the paper does not state them). λ2 defaults to 100, chosen on the validation scene of
    /// pipelines/encoder-study.yaml (test views, original decoder, 300 steps): λ2 = 1 made latents 37 %
    /// more consistent but cost the autoencoder 3.8 dB of its own reconstruction and the field 0.27 dB
    /// (ST-LPIPS 0.121 → 0.171); λ2 = 10 gave +0.11 dB PSNR but a 0.56 dB reconstruction drop and worse
    /// ST-LPIPS (0.132); λ2 = 100 gave +0.07 dB, the best SSIM and ST-LPIPS (0.120) and no drop, while
    /// moving the encoder little (consistency −1 %).
    pub corres_weight: f64,
    pub reg_weight: f64,
    /// Weight of the KL to N(0, I) in L_AE for KL autoencoders (the paper: 1e-6).
    pub kl_weight: f64,
    /// L_AE is measured on a random square window of this many latent pixels per view (0: the whole
    /// image): decoding is the costly part of a step. Default 16, as every measured recipe used.
    pub reconstruction_window: i64,
    /// Each view of a step is encoded as a square crop of at most this many image pixels (a multiple of
    /// the downsampling factor; 0: the whole image), as LDM trains on 256² crops: encoding with gradients
    /// is most of a step's time. The anchor's crop is centred on one of its correspondences, each other
    /// view's on where the anchor crop's correspondences land in it.
    pub crop: i64,
    /// A perceptual (LPIPS) term in L_AE; left out: L1 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perceptual: Option<Perceptual>,
    /// A PatchGAN discriminator in L_AE (LRF: from step 501, weight 0.5); left out: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gan: Option<GanSchedule>,
    pub seed: u64,
    pub log_every: u32,
    #[serde(skip_deserializing)]
    pub resolved: Option<AutoencoderSource>,
}

impl Default for EncoderFinetune {
    fn default() -> Self {
        EncoderFinetune {
            autoencoder: BUNDLED.into(),
            steps: 300,
            lr: 1e-5,
            views_per_step: 2,
            correspondences_per_step: 4096,
            corres_weight: 1.0,
            reg_weight: 100.0,
            kl_weight: 1e-6,
            reconstruction_window: 16,
            crop: 256,
            perceptual: None,
            gan: None,
            seed: 0,
            log_every: 50,
            resolved: None,
        }
    }
}

/// LPIPS in Stage I's L_AE, with the user's backbone weights (ImageNet backbones cannot ship with lrf-flow).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Perceptual {
    /// LPIPS weights, relative to the pipeline file: a complete `lpips` state dict, or torchvision's ImageNet
    /// backbone completed by the heads the `lpips` wheel ships (as `evaluate.lpips`).
    pub weights: String,
    #[serde(default = "vgg")]
    pub backbone: LpipsBackbone,
    /// LDM's `perceptual_weight`.
    #[serde(default = "one")]
    pub weight: f64,
    /// The weights' content hash, so that new weights make a new model.
    #[serde(skip_deserializing)]
    pub content: Option<String>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

fn vgg() -> LpipsBackbone {
    LpipsBackbone::Vgg
}

fn one() -> f64 {
    1.0
}

/// When the PatchGAN enters L_AE and how strongly (see [`GanConfig`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GanSchedule {
    pub start_step: i64,
    /// Multiplies the adaptive weight.
    pub weight: f64,
    /// The discriminator's Adam learning rate (LDM: the autoencoder's, with β = (0.5, 0.9)).
    pub lr: Option<f64>,
}

impl Default for GanSchedule {
    fn default() -> Self {
        let ldm = GanConfig::default();
        GanSchedule {
            start_step: ldm.start_step,
            weight: ldm.weight,
            lr: None,
        }
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
    regularization: f64,
    /// The LPIPS distance inside `reconstruction`, unweighted (0 without LPIPS weights).
    perceptual: f64,
    /// The weighted PatchGAN generator term inside `reconstruction` (0 before the GAN starts).
    adversarial: f64,
    /// The discriminator's hinge loss (0 before it starts).
    discriminator: f64,
}

impl StageKind for EncoderFinetune {
    const KIND: &'static str = "encoder-finetune";
    const VERSION: u32 = 2;

    fn resolve_paths(&mut self, base_dir: &Path) -> Result<(), String> {
        self.resolved = Some(AutoencoderSource::resolve(&self.autoencoder, base_dir)?);
        if let Some(perceptual) = &mut self.perceptual {
            let (content, path) = resolve_lpips(&perceptual.weights, base_dir)?;
            perceptual.content = Some(content);
            perceptual.path = Some(path);
        }
        Ok(())
    }
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
        if self.crop < 0 {
            return Err(format!("crop = {} must be ≥ 0 (0: whole images)", self.crop));
        }
        if let Some(perceptual) = &self.perceptual
            && !(perceptual.weight.is_finite() && perceptual.weight >= 0.0)
        {
            return Err(format!(
                "perceptual.weight = {} must be a number ≥ 0",
                perceptual.weight
            ));
        }
        if let Some(gan) = &self.gan {
            if gan.start_step < 1 || !(gan.weight.is_finite() && gan.weight >= 0.0) {
                return Err(format!(
                    "gan.start_step = {} must be ≥ 1 and gan.weight = {} ≥ 0",
                    gan.start_step, gan.weight
                ));
            }
            if gan.lr.is_some_and(|lr| !(lr.is_finite() && lr > 0.0)) {
                return Err("gan.lr must be a number > 0".into());
            }
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
        let mut loss = AutoencoderLoss {
            perceptual: None,
            gan: None,
        };
        if let Some(perceptual) = &self.perceptual {
            let path = perceptual
                .path
                .as_deref()
                .context("the LPIPS weights were not resolved")?;
            loss.perceptual = Some((open_lpips(perceptual.backbone, path)?, perceptual.weight));
        }
        let mut discriminator_optimizer = None;
        if let Some(schedule) = &self.gan {
            let config = GanConfig {
                start_step: schedule.start_step,
                weight: schedule.weight,
                ..GanConfig::default()
            };
            let gan = PatchGan::new(config, tch::Device::Cpu);
            let adam = nn::Adam {
                beta1: 0.5,
                beta2: 0.9,
                ..Default::default()
            };
            discriminator_optimizer = Some(adam.build(gan.vars(), schedule.lr.unwrap_or(self.lr))?);
            loss.gan = Some(gan);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        tch::manual_seed(self.seed as i64);
        let started = Instant::now();
        let mut curve = Vec::new();
        let mut window = (Terms::default(), 0u32);
        let mut first = None;
        for step in 1..=self.steps {
            let scene = scenes.choose(&mut rng).expect("at least one scene");
            let group = self.pick_group(scene, &mut rng);
            let mut optimizers = Optimizers {
                encoder: &mut optimizer,
                discriminator: discriminator_optimizer.as_mut(),
            };
            let models = Models {
                model: model.as_ref(),
                original: original.as_ref(),
                loss: &loss,
            };
            let terms = self.step(models, scene, &group, step as i64, &mut rng, &mut optimizers)?;
            first.get_or_insert(terms);
            let (sum, count) = &mut window;
            sum.total += terms.total;
            sum.reconstruction += terms.reconstruction;
            sum.correspondence += terms.correspondence;
            sum.regularization += terms.regularization;
            sum.perceptual += terms.perceptual;
            sum.adversarial += terms.adversarial;
            sum.discriminator += terms.discriminator;
            *count += 1;
            if step % self.log_every == 0 || step == self.steps {
                let n = *count as f64;
                let mean = Terms {
                    total: sum.total / n,
                    reconstruction: sum.reconstruction / n,
                    correspondence: sum.correspondence / n,
                    regularization: sum.regularization / n,
                    perceptual: sum.perceptual / n,
                    adversarial: sum.adversarial / n,
                    discriminator: sum.discriminator / n,
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
        Models { model, original, loss }: Models,
        scene: &TrainingScene,
        group: &[usize],
        step: i64,
        rng: &mut ChaCha8Rng,
        optimizers: &mut Optimizers,
    ) -> anyhow::Result<Terms> {
        let range = model.input_range();
        let factor = model.downsampling();
        let images = group
            .iter()
            .map(|&view| Ok(image_tensor(&read_image(&scene.images, view)?).unsqueeze(0)))
            .collect::<anyhow::Result<Vec<Tensor>>>()?;
        let crops = self.crops(scene, group, &images, factor, rng);
        let mut encoded: Vec<(usize, Posterior, Crop)> = Vec::new();
        let mut reconstruction = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        let mut regularization = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        let (mut perceptual, mut adversarial, mut reconstructions) = (0.0, 0.0, Vec::new());
        for ((&view, image), crop) in group.iter().zip(&images).zip(crops) {
            let image = crop.apply(image);
            let input = range.from_unit(&image);
            let posterior = model.encode(&input)?;
            let frozen = tch::no_grad(|| original.encode(&input))?;
            regularization += match (&posterior.logvar, &frozen.logvar) {
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
            let (z, target) = self.window(&z, &image, factor, rng);
            // Compared in [0, 1] whatever the model's range, so the weights mean the same for every model.
            let decoded = range.to_unit(&model.decode(&z)?);
            let terms = loss.generator(&decoded, &target, InputRange::Unit, &z, step)?;
            perceptual += terms.perceptual.unwrap_or(0.0);
            adversarial += terms.adversarial.unwrap_or(0.0);
            reconstruction += terms.total;
            reconstructions.push((decoded, target));
            if let Some(logvar) = &posterior.logvar {
                let prior = DiagonalGaussian {
                    mean: &posterior.mean,
                    logvar,
                };
                reconstruction += kl_diagonal(prior, None)? * self.kl_weight;
            }
            encoded.push((view, posterior, crop));
        }
        let n = group.len() as f64;
        let (reconstruction, regularization) = (reconstruction / n, regularization / n);
        let correspondence = self.correspondence_term(scene, &encoded, factor, rng);
        let total = &reconstruction + &correspondence * self.corres_weight + &regularization * self.reg_weight;
        optimizers.encoder.zero_grad();
        total.backward();
        optimizers.encoder.step();
        let mut discriminator = 0.0;
        if let Some(optimizer) = optimizers.discriminator.as_mut() {
            let mut hinge = Vec::new();
            for (decoded, target) in &reconstructions {
                hinge.extend(loss.discriminator(decoded, target, step)?);
            }
            if !hinge.is_empty() {
                let hinge = Tensor::stack(&hinge, 0).mean(Kind::Float);
                optimizer.zero_grad();
                hinge.backward();
                optimizer.step();
                discriminator = hinge.double_value(&[]);
            }
        }
        let value = |t: &Tensor| t.double_value(&[]);
        let terms = Terms {
            total: value(&total),
            reconstruction: value(&reconstruction),
            correspondence: value(&correspondence),
            regularization: value(&regularization),
            perceptual: perceptual / n,
            adversarial: adversarial / n,
            discriminator,
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

    /// Each group view's crop: the anchor's around one of its correspondences drawn at random, every
    /// other view's around the median of where the anchor crop's correspondences land in it, so that
    /// most of them fall inside both crops.
    fn crops(
        &self,
        scene: &TrainingScene,
        group: &[usize],
        images: &[Tensor],
        factor: i64,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Crop> {
        let c = &scene.correspondences;
        let anchor = group[0];
        let place = |image: &Tensor, center: [f32; 2]| Crop::around(center, image.size(), self.crop, factor);
        let anchor_rows: Vec<usize> = scene.pairs[&anchor].values().flatten().copied().collect();
        let row = *anchor_rows.choose(rng).expect("anchors have correspondences");
        let anchor_crop = place(&images[0], oriented(c, row, anchor).0);
        let mut crops = vec![anchor_crop];
        for (&other, image) in group[1..].iter().zip(&images[1..]) {
            let rows = &scene.pairs[&anchor][&other];
            let landing = |inside_only: bool| -> Vec<[f32; 2]> {
                rows.iter()
                    .map(|&row| oriented(c, row, anchor))
                    .filter(|(a, _)| !inside_only || anchor_crop.contains(*a))
                    .map(|(_, b)| b)
                    .collect()
            };
            let mut points = landing(true);
            if points.is_empty() {
                points = landing(false);
            }
            crops.push(place(image, median(&points)));
        }
        crops
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

    /// Σ λ_ij |z_i − z_j| over the anchor's correspondences inside both crops, λ the APE normalised over
    /// the step's correspondences; latents are the posterior means (what LRF encodes with). Zero when no
    /// correspondence falls inside the crops.
    fn correspondence_term(
        &self,
        scene: &TrainingScene,
        encoded: &[(usize, Posterior, Crop)],
        factor: i64,
        rng: &mut ChaCha8Rng,
    ) -> Tensor {
        let (anchor, anchor_posterior, anchor_crop) = &encoded[0];
        let per_pair = (self.correspondences_per_step / (encoded.len() - 1)).max(1);
        let c = &scene.correspondences;
        let mut differences = Vec::new();
        let mut weights = Vec::new();
        for (other, posterior, crop) in &encoded[1..] {
            let inside: Vec<usize> = scene.pairs[anchor][other]
                .iter()
                .copied()
                .filter(|&row| {
                    let (a, b) = oriented(c, row, *anchor);
                    anchor_crop.contains(a) && crop.contains(b)
                })
                .collect();
            if inside.is_empty() {
                continue;
            }
            let chosen: Vec<usize> = inside.choose_multiple(rng, per_pair).copied().collect();
            let (mut anchor_pixels, mut other_pixels) = (Vec::new(), Vec::new());
            for &row in &chosen {
                let (a, b) = oriented(c, row, *anchor);
                anchor_pixels.push(anchor_crop.local(a));
                other_pixels.push(crop.local(b));
                weights.push(c.ape[row]);
            }
            let f = factor as f64;
            let z_anchor = sample_latents(&anchor_posterior.mean.squeeze_dim(0), &pixels_tensor(&anchor_pixels), f);
            let z_other = sample_latents(&posterior.mean.squeeze_dim(0), &pixels_tensor(&other_pixels), f);
            differences.push((z_anchor - z_other).abs().mean_dim(1, false, Kind::Float));
        }
        if differences.is_empty() {
            return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        }
        let total: f32 = weights.iter().sum();
        if total <= 0.0 {
            // Identical poses: APE is zero for every pair; weigh them equally.
            weights.iter_mut().for_each(|w| *w = 1.0);
        }
        let weights = Tensor::from_slice(&weights);
        let weights = &weights / weights.sum(Kind::Float);
        (Tensor::cat(&differences, 0) * weights).sum(Kind::Float)
    }
}

/// The networks a step evaluates: the model being fine-tuned, the frozen original, and L_AE.
#[derive(Clone, Copy)]
struct Models<'a> {
    model: &'a dyn Autoencoder,
    original: &'a dyn Autoencoder,
    loss: &'a AutoencoderLoss,
}

struct Optimizers<'a> {
    encoder: &'a mut nn::Optimizer,
    discriminator: Option<&'a mut nn::Optimizer>,
}

/// Correspondence `row` as (pixel in `anchor`, pixel in the other view).
fn oriented(c: &Correspondences, row: usize, anchor: usize) -> ([f32; 2], [f32; 2]) {
    if c.view_i[row] as usize == anchor {
        (c.pixel_i[row], c.pixel_j[row])
    } else {
        (c.pixel_j[row], c.pixel_i[row])
    }
}

/// Per-coordinate median of a non-empty set of pixels.
fn median(points: &[[f32; 2]]) -> [f32; 2] {
    let mut center = [0.0; 2];
    for (axis, value) in center.iter_mut().enumerate() {
        let mut values: Vec<f32> = points.iter().map(|p| p[axis]).collect();
        values.sort_by(f32::total_cmp);
        *value = values[values.len() / 2];
    }
    center
}

/// A view's encoded region in image pixels. Offsets are multiples of the downsampling factor, so the
/// crop's latent grid lies on the whole image's and correspondences keep their latent positions.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crop {
    top: i64,
    left: i64,
    height: i64,
    width: i64,
}

impl Crop {
    /// The `side`² crop (each side at most the image's, rounded down to a multiple of `factor`; 0: the whole
    /// image) nearest to being centred on `centre`, for an image of size `[1, C, H, W]`.
    fn around(center: [f32; 2], image_size: Vec<i64>, side: i64, factor: i64) -> Crop {
        let (height, width) = (image_size[2], image_size[3]);
        if side == 0 {
            return Crop {
                top: 0,
                left: 0,
                height,
                width,
            };
        }
        let extent = |full: i64| (side.min(full) / factor * factor).max(factor.min(full));
        let offset = |center: f32, extent: i64, full: i64| {
            let wanted = (center as f64 - extent as f64 / 2.0) / factor as f64;
            let highest = (full - extent) / factor;
            (wanted.round() as i64).clamp(0, highest.max(0)) * factor
        };
        let (h, w) = (extent(height), extent(width));
        Crop {
            top: offset(center[1], h, height),
            left: offset(center[0], w, width),
            height: h,
            width: w,
        }
    }

    fn apply(&self, image: &Tensor) -> Tensor {
        image.narrow(2, self.top, self.height).narrow(3, self.left, self.width)
    }

    fn contains(&self, [x, y]: [f32; 2]) -> bool {
        let (x, y) = (x as f64, y as f64);
        x >= self.left as f64
            && x < (self.left + self.width) as f64
            && y >= self.top as f64
            && y < (self.top + self.height) as f64
    }

    /// A full-image pixel position in the crop's coordinates.
    fn local(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        [x - self.left as f32, y - self.top as f32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_stay_inside_the_image_on_the_latent_grid() {
        let size = vec![1, 3, 376, 504];
        let centered = Crop::around([252.0, 188.0], size.clone(), 256, 8);
        assert_eq!((centered.height, centered.width), (256, 256));
        assert_eq!((centered.top % 8, centered.left % 8), (0, 0));
        assert!(centered.contains([252.0, 188.0]));
        let corner = Crop::around([0.0, 0.0], size.clone(), 256, 8);
        assert_eq!((corner.top, corner.left), (0, 0));
        let far = Crop::around([503.9, 375.9], size.clone(), 256, 8);
        assert_eq!((far.top + far.height, far.left + far.width), (376, 504));
        let whole = Crop::around([10.0, 10.0], size.clone(), 0, 8);
        assert_eq!((whole.top, whole.left, whole.height, whole.width), (0, 0, 376, 504));
        let small = Crop::around([10.0, 10.0], vec![1, 3, 120, 200], 256, 8);
        assert_eq!((small.height, small.width), (120, 200));
        assert_eq!(
            far.local([503.5, 375.5]),
            [503.5 - far.left as f32, 375.5 - far.top as f32]
        );
    }

    #[test]
    fn median_per_axis() {
        assert_eq!(median(&[[0.0, 9.0], [5.0, 1.0], [2.0, 4.0]]), [2.0, 4.0]);
    }
}
