//! `rgb-align` (per scene): the second phase of latent-nerfstudio and IG-AE, "RGB alignment". A copy of the
//! decoder is fine-tuned on one scene's decoded training-view renders against its real images, while the
//! field keeps training through the decoder:
//!
//! L = rgb_weight·MSE(D(denormalize(render)), I) + latent_weight·|render − z_n|_1
//!
//! with images in [0, 1]. The decoder takes Adam at `decoder_lr`, decayed by `decoder_lr_decay` every step
//! (latent-nerfstudio: 1e-4 and 0.99969); the field gets a fresh optimiser (its moments reset, as
//! latent-nerfstudio resets the NeRF optimiser when the phase starts) and keeps the SH degree its fit
//! reached, without densification. Each step decodes a random `window`² crop of the render, the tile that
//! tiled decoding uses at evaluation, so gradients reach the field through the region decoded.
//!
//! Outputs: the aligned field (the `latent-3dgs-fit` layout, so `render` reads it) and the scene's own
//! autoencoder, which `evaluate` uses with `autoencoder: input`. The decoder side, [`DecoderTuning`], knows
//! nothing of Gaussians: another field type plugs in by rendering its latent and calling it.

use std::time::Instant;

use anyhow::{Context, bail};
use lrf_formats::Camera;
use lrf_formats::scene::Split;
use lrf_formats::views::read_image;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use lrf_nerf::{NerfOptimizer, TriPlaneNerf};
use lrf_splat::RenderOptions;
use lrf_splat::train::{TrainConfig, Trainer};
use lrf_vae::losses::l1;
use lrf_vae::metrics::psnr;
use lrf_vae::{Autoencoder, Part, TilePlan, decode_tiled};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::artifacts::Latents;
use crate::artifacts::{
    Field, FieldInfo, FieldModel, FieldSpace, Normalization, input_dir, output_dir, peak_memory_mib, views_input,
    write_json,
};
use crate::autoencoder::{AUTOENCODER_TYPE, AutoencoderSource, DecodeWith};
use crate::latents::image_tensor;
use crate::training::{
    LossCurve, SingleThreadedLibtorch, ViewOrder, latent_camera, spread, training_extent, write_field,
};

pub const ALIGNMENT_FILE: &str = "alignment.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RgbAlign {
    /// The decoder to start from: `field` (the autoencoder the field was fitted with) or `input` (the model
    /// on the `autoencoder` port, e.g. Stage III's aligned decoder).
    pub autoencoder: DecodeWith,
    /// Steps, and the field's learning rates during them.
    pub train: AlignSchedule,
    /// latent-nerfstudio's `loss_d_factor`.
    pub rgb_weight: f64,
    /// Keeps latent supervision on during the phase (latent-nerfstudio: 0, the latent loss ends when
    /// alignment starts).
    pub latent_weight: f64,
    pub decoder_lr: f64,
    /// The decoder's learning rate is multiplied by this every step (latent-nerfstudio's ExponentialLR).
    pub decoder_lr_decay: f64,
    /// Side of the random square of latent pixels decoded per step (0: the whole render). The default, the
    /// tile of tiled decoding, decodes a render of up to 64 latent pixels whole, as evaluation does. On the
    /// validation scene desk_laptop (64×36 latents), 30 steps with 16² windows lowered the decoded training
    /// views from 24.77 to 24.01 dB, and with whole renders raised them to 25.66 dB (0.35 against 2.2
    /// s/step): a bare crop decodes in a regime evaluation never uses (see decoder-align's `context`).
    pub window: i64,
    /// A Tri-Plane field's side of the phase (Gaussian fields use `train`'s learning rates). Left out of
    /// the canonical parameters at its defaults, so the keys of Gaussian alignments made before Tri-Plane
    /// fields existed still hold; a change of these defaults therefore needs a version bump.
    #[serde(skip_serializing_if = "TriPlaneAlign::is_default")]
    pub tri_plane: TriPlaneAlign,
    /// The training-view PSNR before and after the phase (the record's `train_psnr_before/after`) is
    /// measured on at most this many training views, evenly spaced (0: all). Each costs a render and a
    /// whole decode, twice.
    pub eval_views: usize,
    pub log_every: u32,
}

/// Adam on all of a Tri-Plane field's parameters, fresh when the phase starts, at the learning rate the
/// fit ends with (`latent-nerf-fit`'s `lr_final`), with the fit's TV prior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriPlaneAlign {
    pub lr: f64,
    pub tv_weight: f64,
}

impl Default for TriPlaneAlign {
    fn default() -> Self {
        TriPlaneAlign {
            lr: 1e-3,
            tv_weight: 1e-5,
        }
    }
}

impl TriPlaneAlign {
    fn is_default(&self) -> bool {
        *self == TriPlaneAlign::default()
    }
}

impl Default for RgbAlign {
    fn default() -> Self {
        RgbAlign {
            autoencoder: DecodeWith::Field,
            train: AlignSchedule::default(),
            rgb_weight: 0.01,
            latent_weight: 0.0,
            decoder_lr: 1e-4,
            decoder_lr_decay: 0.99969,
            window: TilePlan::default().tile,
            tri_plane: TriPlaneAlign::default(),
            eval_views: 32,
            log_every: 100,
        }
    }
}

/// The field's side of the phase. There is no densification and no opacity reset: the field is converged,
/// and the phase refines it. The position learning rate is held at 3DGS's final value (× the scene extent);
/// the others are 3DGS's. 300 steps (latent-nerfstudio runs 15,000 on a GPU) took the validation scene
/// desk_laptop, a training scene held out (pipelines/alignment-study.yaml), from 24.54 to 27.49 dB PSNR and
/// SSIM 0.792 to 0.869 on its test views, after a 2,000-iteration Stage II fit; about 11 minutes on 2 cores.
/// Longer schedules are not measured yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlignSchedule {
    pub iterations: u32,
    pub lr_means: f64,
    pub lr_sh_dc: f64,
    pub lr_sh_rest: f64,
    pub lr_opacity: f64,
    pub lr_scales: f64,
    pub lr_quats: f64,
    /// Seeds the view order and the windows.
    pub seed: u64,
}

impl Default for AlignSchedule {
    fn default() -> Self {
        let fit = TrainConfig::default();
        AlignSchedule {
            iterations: 300,
            lr_means: fit.lr_means_final,
            lr_sh_dc: fit.lr_sh_dc,
            lr_sh_rest: fit.lr_sh_rest,
            lr_opacity: fit.lr_opacity,
            lr_scales: fit.lr_scales,
            lr_quats: fit.lr_quats,
            seed: 0,
        }
    }
}

impl AlignSchedule {
    /// The trainer's configuration for a field that stores SH degree `sh_degree`.
    fn train_config(&self, sh_degree: usize) -> TrainConfig {
        TrainConfig {
            iterations: self.iterations,
            sh_degree,
            lr_means: self.lr_means,
            lr_means_final: self.lr_means,
            lr_sh_dc: self.lr_sh_dc,
            lr_sh_rest: self.lr_sh_rest,
            lr_opacity: self.lr_opacity,
            lr_scales: self.lr_scales,
            lr_quats: self.lr_quats,
            densify_until: 0,
            seed: self.seed,
            ..TrainConfig::default()
        }
    }
}

/// `autoencoder/alignment.json`: what the phase did to the scene's training views.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignmentRecord {
    pub scene: String,
    /// The decoder the phase started from.
    pub autoencoder: AutoencoderSource,
    pub steps: u32,
    pub seconds: f64,
    pub seconds_per_step: f64,
    /// Mean PSNR of the decoded training-view renders (tiled decoding, clamped) before and after, over
    /// `eval_views` of them.
    pub train_psnr_before: f64,
    pub train_psnr_after: f64,
    /// (step, mean loss since the previous entry).
    pub loss_curve: Vec<(u32, f64)>,
}

impl StageKind for RgbAlign {
    const KIND: &'static str = "rgb-align";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        let mut inputs = vec![
            Port::new("field", "field"),
            Port::new("views", "views"),
            Port::new("latents", "latents"),
        ];
        inputs.extend(self.autoencoder.port());
        Signature {
            scope: Scope::PerScene,
            inputs,
            outputs: vec![Port::new("field", "field"), Port::new("autoencoder", AUTOENCODER_TYPE)],
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.train
            .train_config(0)
            .validate()
            .map_err(|e| format!("train.{e}"))?;
        for (name, value) in [("rgb_weight", self.rgb_weight), ("latent_weight", self.latent_weight)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} = {value} must be a number ≥ 0"));
            }
        }
        if self.rgb_weight == 0.0 {
            return Err("rgb_weight = 0 aligns nothing; use latent-3dgs-fit for latent supervision alone".into());
        }
        if !(self.decoder_lr.is_finite() && self.decoder_lr > 0.0) {
            return Err(format!("decoder_lr = {} must be a number > 0", self.decoder_lr));
        }
        if !(self.decoder_lr_decay > 0.0 && self.decoder_lr_decay <= 1.0) {
            return Err(format!(
                "decoder_lr_decay = {} must be in (0, 1]",
                self.decoder_lr_decay
            ));
        }
        if !(self.tri_plane.lr.is_finite() && self.tri_plane.lr > 0.0) {
            return Err(format!("tri_plane.lr = {} must be a number > 0", self.tri_plane.lr));
        }
        if !(self.tri_plane.tv_weight.is_finite() && self.tri_plane.tv_weight >= 0.0) {
            return Err(format!(
                "tri_plane.tv_weight = {} must be a number ≥ 0",
                self.tri_plane.tv_weight
            ));
        }
        if self.window < 0 {
            return Err(format!("window = {} must be ≥ 0 (0: the whole render)", self.window));
        }
        if self.log_every == 0 {
            return Err("log_every must be at least 1".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let Field { info, model: field } = Field::open(input_dir(job, "field")?)?;
        let FieldSpace::Latent {
            autoencoder: fitted_with,
            normalization,
        } = &info.space
        else {
            bail!(
                "rgb-align needs a latent field; this one was fitted on RGB (use latent-3dgs-fit's or \
                 latent-nerf-fit's output)"
            );
        };
        let (views, images) = views_input(job)?;
        let latents = Latents::open(input_dir(job, "latents")?)?;
        if latents.info.normalization != *normalization {
            bail!(
                "scene {:?}: the latents on the `latents` port are not the ones the field was fitted to (their \
                 normalization differs); connect the vae-encode stage that fed the field's fit",
                views.scene
            );
        }
        let source = self
            .autoencoder
            .input_model(job)?
            .unwrap_or_else(|| fitted_with.clone());
        let mut model = source.open()?;
        let factor = info.downsampling;
        if model.downsampling() as usize != factor || model.latent_channels() as usize != info.channels {
            bail!(
                "autoencoder {:?} has {} channels at 1/{}, the field {} channels at 1/{factor}",
                source.name,
                model.latent_channels(),
                model.downsampling(),
                info.channels
            );
        }

        let mut samples = Vec::new();
        for index in views.indices(Split::Train) {
            let target = latents.normalized(index)?;
            let camera = latent_camera(&views.views[index].camera, factor, &target)?;
            let image = image_tensor(&read_image(&images, index)?);
            samples.push(AlignSample {
                camera,
                latent: target,
                image,
            });
        }
        if samples.is_empty() {
            bail!("scene {:?} has no training views to align on", views.scene);
        }
        let mut field = match field {
            FieldModel::Gaussians(field) => {
                let sh_degree = field.max_sh_degree;
                let config = self.train.train_config(sh_degree);
                let trainer = Trainer::new(field, config, training_extent(&views)?, RenderOptions::offset_clamped())?;
                AlignedField::Gaussians(trainer.starting_at_sh_degree(sh_degree))
            }
            FieldModel::TriPlane(nerf) => AlignedField::TriPlane {
                optimizer: NerfOptimizer::new(&nerf, self.tri_plane.lr, self.tri_plane.tv_weight)?,
                nerf,
            },
        };
        let mut tuning = DecoderTuning::new(model.as_mut(), self.decoder_lr, self.decoder_lr_decay)?;

        let before = train_psnr(tuning.model, &field, &spread(&samples, self.eval_views), normalization)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.train.seed);
        let mut order = ViewOrder::new(samples.len());
        let mut loss_curve = LossCurve::new(self.log_every, self.train.iterations);
        let started = Instant::now();
        for iteration in 1..=self.train.iterations {
            let sample = &samples[order.next(&mut rng)];
            let window = Window::random(self.window, &sample.latent, &mut rng);
            let loss = field
                .step(sample, &window, &mut rng, |step| -> anyhow::Result<Tensor> {
                    let raw = normalization.denormalize(&step.window.clamp(0.0, 1.0));
                    let mut loss = tuning.mse(&raw, &window.image(&sample.image, factor))? * self.rgb_weight;
                    if self.latent_weight > 0.0 {
                        loss += l1(step.render, step.target)? * self.latent_weight;
                    }
                    Ok(loss)
                })
                .with_context(|| format!("scene {:?}, alignment", views.scene))?;
            tuning.step();
            if let Some(mean) = loss_curve.add(iteration, loss) {
                tracing::info!(
                    stage = job.stage_id,
                    scene = views.scene,
                    step = iteration,
                    loss = mean,
                    "rgb alignment"
                );
                job.status(&format!("step {iteration}/{}, loss {mean:.5}", self.train.iterations));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = train_psnr(tuning.model, &field, &spread(&samples, self.eval_views), normalization)?;
        tracing::info!(scene = views.scene, before, after, "rgb alignment: training-view PSNR");

        let steps = self.train.iterations;
        let field = field.into_model();
        write_field(
            &output_dir(job, "field")?,
            &field,
            &FieldInfo {
                gaussians: match &field {
                    FieldModel::Gaussians(gaussians) => gaussians.len(),
                    FieldModel::TriPlane(_) => 0,
                },
                iterations: info.iterations + steps,
                seconds: info.seconds + seconds,
                seconds_per_iteration: (info.seconds + seconds) / (info.iterations + steps) as f64,
                peak_memory_mib: peak_memory_mib(),
                ..info.clone()
            },
        )?;
        let out = output_dir(job, "autoencoder")?;
        model
            .save_folder(&out)
            .context("saving the scene's aligned autoencoder")?;
        write_json(
            &out.join(ALIGNMENT_FILE),
            &AlignmentRecord {
                scene: views.scene.clone(),
                autoencoder: source,
                steps,
                seconds,
                seconds_per_step: seconds / steps as f64,
                train_psnr_before: before,
                train_psnr_after: after,
                loss_curve: loss_curve.points,
            },
        )
    }
}

/// One training view: its camera at latent resolution, its normalised latent and its image.
struct AlignSample {
    camera: Camera,
    latent: Tensor,
    image: Tensor,
}

/// The square of latent pixels one step decodes, and the image region it decodes to.
struct Window {
    top: i64,
    left: i64,
    height: i64,
    width: i64,
}

impl Window {
    /// A random `size`² window inside a `[C, h, w]` latent (the whole latent when `size` is 0 or too large).
    fn random(size: i64, latent: &Tensor, rng: &mut ChaCha8Rng) -> Window {
        let (h, w) = (latent.size()[1], latent.size()[2]);
        let (height, width) = if size == 0 { (h, w) } else { (size.min(h), size.min(w)) };
        Window {
            top: rng.random_range(0..=h - height),
            left: rng.random_range(0..=w - width),
            height,
            width,
        }
    }

    fn latent(&self, latent: &Tensor) -> Tensor {
        latent.narrow(1, self.top, self.height).narrow(2, self.left, self.width)
    }

    fn image(&self, image: &Tensor, factor: usize) -> Tensor {
        let f = factor as i64;
        image
            .narrow(1, self.top * f, self.height * f)
            .narrow(2, self.left * f, self.width * f)
    }
}

/// The decoder side of RGB alignment, for any field type: the model with its encoder frozen, Adam on the
/// decoder, and the per-step learning-rate decay.
pub struct DecoderTuning<'a> {
    pub model: &'a mut dyn Autoencoder,
    optimizer: nn::Optimizer,
    lr: f64,
    decay: f64,
}

impl<'a> DecoderTuning<'a> {
    pub fn new(model: &'a mut dyn Autoencoder, lr: f64, decay: f64) -> anyhow::Result<Self> {
        model.vars_mut(Part::Encoder).freeze();
        let optimizer = nn::Adam::default().build(model.vars(Part::Decoder), lr)?;
        Ok(DecoderTuning {
            model,
            optimizer,
            lr,
            decay,
        })
    }

    /// MSE between the decoding of a raw-scale `[C, h, w]` latent (a field's render, with its graph) and the
    /// `[3, H, W]` image in [0, 1]. Its backward reaches both the decoder and the render.
    pub fn mse(&self, latent: &Tensor, image: &Tensor) -> anyhow::Result<Tensor> {
        let decoded = self
            .model
            .input_range()
            .to_unit(&self.model.decode(&latent.unsqueeze(0))?);
        Ok((decoded.squeeze_dim(0) - image).square().mean(Kind::Float))
    }

    /// Applies the gradients the last losses left on the decoder, clears them and decays the learning rate.
    pub fn step(&mut self) {
        self.optimizer.step();
        self.optimizer.zero_grad();
        self.lr *= self.decay;
        self.optimizer.set_lr(self.lr);
    }
}

/// Mean PSNR of the decoded (tiled, clamped) renders of the training views.
fn train_psnr(
    model: &dyn Autoencoder,
    field: &AlignedField,
    samples: &[&AlignSample],
    normalization: &Normalization,
) -> anyhow::Result<f64> {
    let _guard = tch::no_grad_guard();
    let mut total = 0.0;
    for sample in samples {
        let render = field.render(&sample.camera)?.clamp(0.0, 1.0);
        let raw = normalization.denormalize(&render).unsqueeze(0);
        let decoded = model
            .input_range()
            .to_unit(&decode_tiled(model, &raw, TilePlan::default())?);
        total += psnr(&decoded.clamp(0.0, 1.0).squeeze_dim(0), &sample.image)?;
    }
    Ok(total / samples.len() as f64)
}

/// The field side of the phase, one variant per field type.
enum AlignedField {
    Gaussians(Trainer),
    TriPlane {
        nerf: TriPlaneNerf,
        optimizer: NerfOptimizer,
    },
}

/// What one step rendered, for its loss.
struct AlignStep<'a> {
    /// The window's normalised latent, with its graph.
    window: &'a Tensor,
    /// What the step rendered (the whole view for Gaussians, the window for a Tri-Plane, whose rays cost
    /// per pixel) and the latent target of the same pixels, for the optional latent term.
    render: &'a Tensor,
    target: &'a Tensor,
}

impl AlignedField {
    /// One step on `sample`'s view: renders, takes `loss`, backpropagates, and steps the field's optimiser.
    fn step(
        &mut self,
        sample: &AlignSample,
        window: &Window,
        rng: &mut ChaCha8Rng,
        loss: impl FnOnce(AlignStep<'_>) -> anyhow::Result<Tensor>,
    ) -> anyhow::Result<f64> {
        match self {
            AlignedField::Gaussians(trainer) => {
                let _threads = SingleThreadedLibtorch::enter();
                let report = trainer.step(&sample.camera, |render| {
                    loss(AlignStep {
                        window: &window.latent(render),
                        render,
                        target: &sample.latent,
                    })
                })?;
                Ok(report.loss)
            }
            AlignedField::TriPlane { nerf, optimizer } => {
                let camera = sample.camera.cropped(
                    window.left as u32,
                    window.top as u32,
                    window.width as u32,
                    window.height as u32,
                );
                let target = window.latent(&sample.latent);
                optimizer.step(nerf, &camera, rng, |render| {
                    loss(AlignStep {
                        window: render,
                        render,
                        target: &target,
                    })
                })
            }
        }
    }

    /// `[C, h, w]` at `camera`, without gradients.
    fn render(&self, camera: &Camera) -> anyhow::Result<Tensor> {
        Ok(match self {
            AlignedField::Gaussians(trainer) => {
                lrf_splat::render(&trainer.field().detached(), camera, &trainer.render_options())?.image
            }
            AlignedField::TriPlane { nerf, .. } => nerf.render_view(camera)?,
        })
    }

    fn into_model(self) -> FieldModel {
        match self {
            AlignedField::Gaussians(trainer) => FieldModel::Gaussians(trainer.into_field()),
            AlignedField::TriPlane { nerf, .. } => FieldModel::TriPlane(nerf),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use lrf_graph::Input;
    use lrf_vae::{TinyAutoencoder, open_autoencoder};
    use serde_json::json;
    use tch::Device;

    use super::*;
    use crate::artifacts::{FIELD_FILE, Renders, read_json};
    use crate::fit::LatentFit;
    use crate::render::Render;
    use crate::test_support::{run_stage, stage, views_and_latents};
    use lrf_splat::train::GaussianField;

    const SPLITS: [Split; 4] = [Split::Train, Split::Train, Split::Train, Split::Test];

    fn one(path: &Path) -> Input {
        Input::One(path.to_path_buf())
    }

    /// Views, their TAEF2 latents and a short latent fit from a grid of points in front of the cameras.
    fn fitted(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (views, latents) = views_and_latents(dir, &SPLITS);
        let fit: LatentFit = stage(
            json!({"train": {"iterations": 150, "densify_until": 0, "sh_degree": 0}, "dssim_weight": 0}),
            dir,
        );
        run_stage(
            &fit,
            &[("views", one(&views)), ("latents", one(&latents))],
            &dir.join("fit"),
        )
        .unwrap();
        (views, latents, dir.join("fit").join("field"))
    }

    fn align(dir: &Path, inputs: (&Path, &Path, &Path), params: serde_json::Value, name: &str) -> AlignmentRecord {
        let (views, latents, field) = inputs;
        let stage: RgbAlign = stage(params, dir);
        let out = dir.join(name);
        run_stage(
            &stage,
            &[("field", one(field)), ("views", one(views)), ("latents", one(latents))],
            &out,
        )
        .unwrap();
        let record: AlignmentRecord = read_json(&out.join("autoencoder").join(ALIGNMENT_FILE)).unwrap();
        eprintln!(
            "{name}: training-view PSNR {:.2} → {:.2} dB",
            record.train_psnr_before, record.train_psnr_after
        );
        record
    }

    /// Alignment raises the decoded training views' PSNR, tunes the decoder only (the encoder is TAEF2's bit
    /// for bit), and writes a field that `render` reads.
    #[test]
    fn alignment_tunes_the_decoder_and_the_field_renders() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let (views, latents, field) = fitted(base);
        let record = align(
            base,
            (&views, &latents, &field),
            json!({"train": {"iterations": 60}, "decoder_lr": 1e-3, "log_every": 20}),
            "aligned",
        );
        assert!(
            record.train_psnr_after > record.train_psnr_before + 1.0,
            "training-view PSNR {} → {}",
            record.train_psnr_before,
            record.train_psnr_after
        );
        assert_eq!(record.loss_curve.len(), 3);

        let model = open_autoencoder(&base.join("aligned").join("autoencoder"), Device::Cpu).unwrap();
        let original = TinyAutoencoder::taef2(Device::Cpu).unwrap();
        let same = |part: Part| -> Vec<bool> {
            let theirs = original.vars(part).variables();
            model
                .vars(part)
                .variables()
                .iter()
                .map(|(name, t)| t.equal(&theirs[name]))
                .collect()
        };
        assert!(same(Part::Encoder).iter().all(|&s| s), "the encoder changed");
        assert!(same(Part::Decoder).iter().any(|&s| !s), "the decoder did not change");

        let render: Render = stage(json!({"splits": ["train", "test"]}), base);
        let aligned_field = base.join("aligned").join("field");
        run_stage(
            &render,
            &[("field", one(&aligned_field)), ("views", one(&views))],
            &base.join("render"),
        )
        .unwrap();
        let renders = Renders::open(&base.join("render").join("renders")).unwrap();
        assert_eq!(renders.info.views.len(), SPLITS.len());
        assert_eq!(renders.info.field.iterations, 150 + 60);
    }

    /// The decoded loss's gradient reaches the field through the decoder: with the decoder all but frozen,
    /// the field alone still raises the decoded PSNR, and its parameters move.
    #[test]
    fn the_decoded_loss_trains_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let (views, latents, field) = fitted(base);
        let record = align(
            base,
            (&views, &latents, &field),
            json!({"train": {"iterations": 60, "lr_sh_dc": 0.02}, "decoder_lr": 1e-12}),
            "field-only",
        );
        assert!(
            record.train_psnr_after > record.train_psnr_before + 0.2,
            "training-view PSNR {} → {}",
            record.train_psnr_before,
            record.train_psnr_after
        );
        let before = GaussianField::load(&field.join(FIELD_FILE)).unwrap();
        let after = GaussianField::load(&base.join("field-only").join("field").join(FIELD_FILE)).unwrap();
        assert!(!before.params[1].equal(&after.params[1]), "the colours did not move");
    }

    #[test]
    fn parameters_are_checked() {
        for bad in [
            json!({"rgb_weight": 0}),
            json!({"decoder_lr": 0}),
            json!({"decoder_lr_decay": 1.5}),
            json!({"window": -1}),
            json!({"train": {"iterations": 0}}),
        ] {
            let stage: RgbAlign = serde_json::from_value(bad.clone()).unwrap();
            assert!(stage.validate().is_err(), "{bad}");
        }
        let input: RgbAlign = serde_json::from_value(json!({"autoencoder": "input"})).unwrap();
        let ports: Vec<String> = input.signature().inputs.into_iter().map(|p| p.name).collect();
        assert_eq!(ports, ["field", "views", "latents", "autoencoder"]);
    }
}
