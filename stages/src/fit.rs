//! `latent-3dgs-fit` (Stage II: a Gaussian field fitted to a scene's normalised latents) and `rgb-3dgs-fit`
//! (the image-space baselines: 3DGS on RGB at 1/8 resolution, "3DGS/8", or at full resolution). Both run the
//! one trainer of lrf-splat with the 3DGS schedule and the loss (1−λ)·L1 + λ·D-SSIM.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use lrf_formats::Camera;
use lrf_formats::image::ImageF32;
use lrf_formats::scene::Split;
use lrf_formats::views::{Points, ViewSet, open_images, read_image};
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use lrf_splat::RenderOptions;
use lrf_splat::train::{GaussianField, PointInit, StepReport, TrainConfig, Trainer};
use lrf_vae::losses::l1_dssim;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::artifacts::Latents;
use crate::artifacts::{FieldInfo, FieldModel, FieldSpace, Representation, input_dir, output_dir, peak_memory_mib};
use crate::latents::image_tensor;
use crate::training::{LossCurve, SingleThreadedLibtorch, ViewOrder, latent_camera, training_extent, write_field};

/// How a latent field's Gaussians get their initial colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitColors {
    /// The normalised latent at each point's observations in the training views, averaged.
    Latent,
    /// The official LRF code's: the point's RGB in the first three channels, 0.5 in the others.
    Rgb,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatentFit {
    pub train: TrainConfig,
    pub init_colors: InitColors,
    /// λ in (1−λ)·L1 + λ·D-SSIM.
    pub dssim_weight: f64,
    /// Loss-curve and log interval, in iterations.
    pub log_every: u32,
}

impl Default for LatentFit {
    fn default() -> Self {
        LatentFit {
            train: TrainConfig::default(),
            init_colors: InitColors::Latent,
            dssim_weight: 0.2,
            log_every: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RgbFit {
    pub train: TrainConfig,
    /// Train on images downsampled by this factor (8: "3DGS/8", the paper's baseline; 1: full resolution).
    pub downsampling: u32,
    pub dssim_weight: f64,
    pub log_every: u32,
}

impl Default for RgbFit {
    fn default() -> Self {
        RgbFit {
            train: TrainConfig::default(),
            downsampling: 8,
            dssim_weight: 0.2,
            log_every: 100,
        }
    }
}

fn validate(train: &TrainConfig, dssim_weight: f64, log_every: u32) -> Result<(), String> {
    train.validate().map_err(|e| format!("train.{e}"))?;
    if !(0.0..=1.0).contains(&dssim_weight) {
        return Err(format!("dssim_weight = {dssim_weight} must be in [0, 1]"));
    }
    if log_every == 0 {
        return Err("log_every must be at least 1".into());
    }
    Ok(())
}

impl StageKind for LatentFit {
    const KIND: &'static str = "latent-3dgs-fit";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![Port::new("views", "views"), Port::new("latents", "latents")],
            outputs: vec![Port::new("field", "field")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        validate(&self.train, self.dssim_weight, self.log_every)
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let run = self.start(input_dir(job, "views")?, input_dir(job, "latents")?)?;
        run.finish(job, &output_dir(job, "field")?)
    }
}

impl LatentFit {
    /// The fit of one scene's latents (`latents`, of the views in `views`), ready to step.
    pub fn start(&self, views: &Path, latents: &Path) -> anyhow::Result<FitRun> {
        let views_dir = views;
        let views = ViewSet::read(views_dir)?;
        let latents = Latents::open(latents)?;
        let factor = latents.info.downsampling;
        let channels = latents.info.channels;
        let mut samples = Vec::new();
        for index in views.indices(Split::Train) {
            let target = latents.normalized(index)?;
            let camera = latent_camera(&views.views[index].camera, factor, &target)?;
            samples.push(Sample { index, camera, target });
        }
        let points = Points::read(views_dir)?;
        let colors = match self.init_colors {
            InitColors::Latent => colors_from_latents(&points, &samples, factor, channels)?,
            InitColors::Rgb => points
                .colors
                .iter()
                .flat_map(|rgb| (0..channels).map(move |c| rgb.get(c).map_or(0.5, |&v| v as f32 / 255.0)))
                .collect(),
        };
        let space = FieldSpace::Latent {
            autoencoder: latents.info.autoencoder.clone(),
            normalization: latents.info.normalization.clone(),
        };
        let fit = Fit {
            train: self.train.clone(),
            dssim_weight: self.dssim_weight,
            log_every: self.log_every,
            space,
            channels,
            downsampling: factor,
        };
        fit.start(views, &points, &colors, samples)
    }
}

impl StageKind for RgbFit {
    const KIND: &'static str = "rgb-3dgs-fit";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![Port::new("views", "views")],
            outputs: vec![Port::new("field", "field")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !matches!(self.downsampling, 1 | 2 | 4 | 8) {
            return Err(format!("downsampling = {} must be 1, 2, 4 or 8", self.downsampling));
        }
        validate(&self.train, self.dssim_weight, self.log_every)
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let run = self.start(input_dir(job, "views")?)?;
        run.finish(job, &output_dir(job, "field")?)
    }
}

impl RgbFit {
    /// The fit of one scene's images (the views in `views`), ready to step.
    pub fn start(&self, views: &Path) -> anyhow::Result<FitRun> {
        let views_dir = views;
        let views = ViewSet::read(views_dir)?;
        let images = open_images(views_dir)?;
        let d = self.downsampling as usize;
        let mut samples = Vec::new();
        for index in views.indices(Split::Train) {
            let image = image_tensor(&read_image(&images, index)?);
            let target = downsample(&image, d);
            let camera = latent_camera(&views.views[index].camera, d, &target)?;
            samples.push(Sample { index, camera, target });
        }
        let points = Points::read(views_dir)?;
        let colors: Vec<f32> = points.colors.iter().flatten().map(|&v| v as f32 / 255.0).collect();
        let fit = Fit {
            train: self.train.clone(),
            dssim_weight: self.dssim_weight,
            log_every: self.log_every,
            space: FieldSpace::Rgb,
            channels: 3,
            downsampling: d,
        };
        fit.start(views, &points, &colors, samples)
    }
}

/// Area-average downsampling of a `[C, H, W]` image by `factor` (H and W are multiples of it after ingest).
pub fn downsample(image: &Tensor, factor: usize) -> Tensor {
    if factor == 1 {
        return image.shallow_clone();
    }
    let f = factor as i64;
    image
        .unsqueeze(0)
        .avg_pool2d([f, f], [f, f], [0, 0], false, true, None)
        .squeeze_dim(0)
}

/// One training view: its index in the scene, its camera at the target's resolution and the target.
struct Sample {
    index: usize,
    camera: Camera,
    target: Tensor,
}

/// Each point's normalised latent, averaged over its observations in the training views; points seen by no
/// training view start at mid-range (0.5).
fn colors_from_latents(
    points: &Points,
    samples: &[Sample],
    factor: usize,
    channels: usize,
) -> anyhow::Result<Vec<f32>> {
    let mut by_view = vec![None; samples.iter().map(|s| s.index + 1).max().unwrap_or(0)];
    for sample in samples {
        let size = sample.target.size();
        let data = Vec::<f32>::try_from(sample.target.contiguous().view([-1])).context("reading a latent")?;
        by_view[sample.index] = Some(ImageF32 {
            channels,
            width: size[2] as u32,
            height: size[1] as u32,
            data,
        });
    }
    let mut sums = vec![0f64; points.positions.len() * channels];
    let mut counts = vec![0u32; points.positions.len()];
    for ((&point, &view), pixel) in points
        .track_point
        .iter()
        .zip(&points.track_view)
        .zip(&points.track_pixel)
    {
        let Some(Some(latent)) = by_view.get(view as usize) else {
            continue;
        };
        let (x, y) = (pixel[0] as f64 / factor as f64, pixel[1] as f64 / factor as f64);
        let point = point as usize;
        for c in 0..channels {
            sums[point * channels + c] += latent.sample_bilinear(c, x, y) as f64;
        }
        counts[point] += 1;
    }
    Ok(sums
        .chunks(channels)
        .zip(&counts)
        .flat_map(|(sum, &n)| {
            sum.iter()
                .map(move |&s| if n == 0 { 0.5 } else { (s / n as f64) as f32 })
        })
        .collect())
}

/// What both fit stages share: the schedule, the loss, and the field's description.
struct Fit {
    train: TrainConfig,
    dssim_weight: f64,
    log_every: u32,
    space: FieldSpace,
    channels: usize,
    downsampling: usize,
}

impl Fit {
    fn start(self, views: ViewSet, points: &Points, colors: &[f32], samples: Vec<Sample>) -> anyhow::Result<FitRun> {
        if samples.is_empty() {
            bail!("scene {:?} has no training views", views.scene);
        }
        if points.positions.is_empty() {
            bail!(
                "scene {:?} has no sparse points to start the Gaussians from",
                views.scene
            );
        }
        let init = PointInit {
            positions: &points.positions,
            colors,
            channels: self.channels,
        };
        let field = GaussianField::from_points(&init, self.train.sh_degree)?;
        let trainer = Trainer::new(
            field,
            self.train.clone(),
            training_extent(&views)?,
            RenderOptions::offset_clamped(),
        )?;
        Ok(FitRun {
            trainer,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(self.train.seed),
            order: ViewOrder::new(samples.len()),
            samples,
            views,
            fit: self,
        })
    }
}

/// One scene's fit, ready to step: the stages run it to the end and save the field; the fit benchmark
/// (`lrf-flow bench fit`) times its steps.
pub struct FitRun {
    trainer: Trainer,
    rng: rand_chacha::ChaCha8Rng,
    order: ViewOrder,
    samples: Vec<Sample>,
    views: ViewSet,
    fit: Fit,
}

impl FitRun {
    /// Renders at the schedule's highest SH degree from the first step, as a fit far into its schedule does.
    pub fn at_full_sh_degree(mut self) -> Self {
        self.trainer = self.trainer.starting_at_sh_degree(self.fit.train.sh_degree);
        self
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// One iteration on the next training view, with the loss (1−λ)·L1 + λ·D-SSIM. Call it with libtorch on one
    /// thread ([`SingleThreadedLibtorch`]), as the stages do.
    pub fn step(&mut self) -> anyhow::Result<StepReport> {
        let sample = &self.samples[self.order.next(&mut self.rng)];
        let λ = self.fit.dssim_weight;
        self.trainer
            .step(&sample.camera, |image| l1_dssim(image, &sample.target, λ))
            .with_context(|| {
                format!(
                    "scene {:?}, view {:?}",
                    self.views.scene, self.views.views[sample.index].name
                )
            })
    }

    /// Runs the schedule to its end, then writes the field artifact into `out`.
    pub fn finish(mut self, job: &Job, out: &Path) -> anyhow::Result<()> {
        let _threads = SingleThreadedLibtorch::enter();
        let iterations = self.fit.train.iterations;
        let mut loss_curve = LossCurve::new(self.fit.log_every, iterations);
        let mut gaussian_curve = Vec::new();
        let started = Instant::now();
        while self.trainer.iteration() < iterations {
            let report = self.step()?;
            if report.densified.is_some() {
                gaussian_curve.push((report.iteration, report.gaussians));
            }
            if let Some(mean) = loss_curve.add(report.iteration, report.loss) {
                tracing::info!(
                    stage = job.stage_id,
                    scene = self.views.scene,
                    iteration = report.iteration,
                    loss = mean,
                    gaussians = report.gaussians,
                    "fitting"
                );
                job.status(&format!(
                    "iteration {}/{iterations}, loss {mean:.4}, {} Gaussians",
                    report.iteration, report.gaussians
                ));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let Fit {
            space,
            channels,
            downsampling,
            ..
        } = self.fit;
        let field = self.trainer.into_field();
        let gaussians = field.len();
        write_field(
            out,
            &FieldModel::Gaussians(field),
            &FieldInfo {
                space,
                representation: Representation::Gaussians,
                channels,
                downsampling,
                gaussians,
                iterations,
                seconds,
                seconds_per_iteration: seconds / iterations as f64,
                peak_memory_mib: peak_memory_mib(),
                loss_curve: loss_curve.points,
                gaussian_curve,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_curve_means_close_every_interval_and_at_the_end() {
        let mut curve = LossCurve::new(3, 7);
        let closed: Vec<Option<f64>> = (1..=7).map(|i| curve.add(i, i as f64)).collect();
        assert_eq!(closed, [None, None, Some(2.0), None, None, Some(5.0), Some(7.0)]);
        assert_eq!(curve.points, [(3, 2.0), (6, 5.0), (7, 7.0)]);
    }

    #[test]
    fn each_pass_visits_every_view_once() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut order = ViewOrder::new(5);
        for _ in 0..3 {
            let mut pass: Vec<usize> = (0..5).map(|_| order.next(&mut rng)).collect();
            pass.sort();
            assert_eq!(pass, [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn a_non_finite_field_is_not_saved() {
        let positions = [[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]];
        let init = PointInit {
            positions: &positions,
            colors: &[0.5, 0.5],
            channels: 1,
        };
        let field = GaussianField::from_points(&init, 0).unwrap();
        let _ = tch::no_grad(|| field.params[4].get(1).fill_(f64::INFINITY));
        let info = FieldInfo {
            space: FieldSpace::Rgb,
            representation: Representation::Gaussians,
            channels: 1,
            downsampling: 1,
            gaussians: 2,
            iterations: 1,
            seconds: 0.0,
            seconds_per_iteration: 0.0,
            peak_memory_mib: None,
            loss_curve: vec![],
            gaussian_curve: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let error = write_field(dir.path(), &FieldModel::Gaussians(field), &info).unwrap_err();
        assert!(format!("{error:#}").contains("log_scales"), "{error:#}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "something was written"
        );
    }
}
