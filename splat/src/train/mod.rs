//! Fitting a Gaussian field to images of any channel count, with the 3DGS schedule: Adam per parameter group,
//! exponentially decaying position learning rate scaled by the scene extent, SH degree growth, adaptive density
//! control and opacity resets. The loss is the caller's: the trainer hands it the rendered image.

mod adam;
mod densify;
mod model;

pub use densify::DensifyCounts;
pub use model::{GROUPS, GaussianField, PointInit};

use lrf_formats::Camera;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
#[cfg(test)]
use tch::Kind;
use tch::Tensor;

use crate::error::{Result, SplatError};
use crate::options::{RasterMode, RenderOptions};
use crate::render::{GaussianGradients, Rendered, render};
use crate::sh::sh_coeffs;
use adam::{Adam, Gradient, GradientRows};
use densify::{DensifyLimits, DensifyStats, densify_and_prune};

/// Which screen-space gradient the densification threshold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GradientUnits {
    /// ∂L/∂(NDC position), as 3DGS (and the official LRF code, at latent resolution) measures it.
    #[default]
    Ndc,
    /// ∂L/∂(pixel position): independent of the image width, so one threshold means the same at any resolution.
    Pixels,
}

/// The training schedule. Defaults are graphdeco 3DGS's (commit 82bc469), which LRF uses unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub iterations: u32,
    /// Highest SH degree; the degree in use grows by one every `sh_degree_interval` iterations.
    pub sh_degree: usize,
    pub sh_degree_interval: u32,
    /// Position learning rate, decayed exponentially from `lr_means` to `lr_means_final` over
    /// `lr_means_steps` iterations (default: all of them); both are multiplied by the scene extent.
    pub lr_means: f64,
    pub lr_means_final: f64,
    pub lr_means_steps: Option<u32>,
    pub lr_sh_dc: f64,
    pub lr_sh_rest: f64,
    pub lr_opacity: f64,
    pub lr_scales: f64,
    pub lr_quats: f64,
    /// Densify every `densify_interval` iterations after `densify_from` and before `densify_until`.
    pub densify_from: u32,
    pub densify_until: u32,
    pub densify_interval: u32,
    pub densify_grad_threshold: f64,
    pub densify_gradient: GradientUnits,
    /// Gaussians up to this fraction of the extent are cloned, larger ones split.
    pub percent_dense: f64,
    pub prune_opacity: f64,
    /// Prune Gaussians larger than this fraction of the extent (once opacity has been reset once).
    pub prune_world_scale: f64,
    /// Prune Gaussians whose screen radius exceeded this many pixels (once opacity has been reset once).
    /// Off by default: 3DGS sets 20 px but zeroes its radius statistics just before testing them, so the rule
    /// never fires there; turning it on changes results.
    pub prune_screen_radius: Option<f64>,
    pub opacity_reset_interval: u32,
    /// Stop densifying beyond this many Gaussians (the largest gradients win); `None`: no limit.
    pub max_gaussians: Option<usize>,
    /// Update only the Gaussians a view saw (and their Adam moments); the others keep their state.
    pub sparse_updates: bool,
    pub antialiased: bool,
    /// Seeds the view order and the split sampling.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            iterations: 30_000,
            sh_degree: 3,
            sh_degree_interval: 1000,
            lr_means: 1.6e-4,
            lr_means_final: 1.6e-6,
            lr_means_steps: None,
            lr_sh_dc: 2.5e-3,
            lr_sh_rest: 2.5e-3 / 20.0,
            lr_opacity: 0.05,
            lr_scales: 0.005,
            lr_quats: 0.001,
            densify_from: 500,
            densify_until: 15_000,
            densify_interval: 100,
            densify_grad_threshold: 2e-4,
            densify_gradient: GradientUnits::Ndc,
            percent_dense: 0.01,
            prune_opacity: 0.005,
            prune_world_scale: 0.1,
            prune_screen_radius: None,
            opacity_reset_interval: 3000,
            max_gaussians: None,
            sparse_updates: false,
            antialiased: false,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks ranges; the message names the field and the allowed range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("lr_means", self.lr_means),
            ("lr_means_final", self.lr_means_final),
            ("densify_grad_threshold", self.densify_grad_threshold),
            ("percent_dense", self.percent_dense),
            ("prune_world_scale", self.prune_world_scale),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{name} = {value} must be a positive number"));
            }
        }
        let non_negative = [
            ("lr_sh_dc", self.lr_sh_dc),
            ("lr_sh_rest", self.lr_sh_rest),
            ("lr_opacity", self.lr_opacity),
            ("lr_scales", self.lr_scales),
            ("lr_quats", self.lr_quats),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} = {value} must be a number ≥ 0"));
            }
        }
        if !(0.0..1.0).contains(&self.prune_opacity) {
            return Err(format!("prune_opacity = {} must be in [0, 1)", self.prune_opacity));
        }
        if self.sh_degree > crate::sh::MAX_SH_DEGREE {
            return Err(format!("sh_degree = {} must be at most 3", self.sh_degree));
        }
        if self.iterations == 0 {
            return Err("iterations must be at least 1".into());
        }
        for (name, value) in [
            ("sh_degree_interval", self.sh_degree_interval),
            ("densify_interval", self.densify_interval),
            ("opacity_reset_interval", self.opacity_reset_interval),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The position learning rate at `iteration` (1-based), before scaling by the extent.
    fn lr_means_at(&self, iteration: u32) -> f64 {
        let steps = self.lr_means_steps.unwrap_or(self.iterations).max(1);
        let t = (iteration as f64 / steps as f64).clamp(0.0, 1.0);
        ((1.0 - t) * self.lr_means.ln() + t * self.lr_means_final.ln()).exp()
    }
}

/// What one iteration did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub iteration: u32,
    pub loss: f64,
    pub gaussians: usize,
    pub sh_degree: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub densified: Option<DensifyCounts>,
    #[serde(skip)]
    pub phases: StepPhases,
}

/// Where one iteration's wall time went, for the fit benchmark's breakdown. The CPU kernel reports its own
/// halves; on CUDA, whose kernels run asynchronously, `projection` stays zero and the render's whole time is
/// under `rasterize_forward`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepPhases {
    /// The forward's per-Gaussian half: projection, colour from SH, culling, depth sort and tile lists.
    pub projection: Duration,
    /// The rest of the render: the tiles' blend, and the field and image moved between tch and the kernel.
    pub rasterize_forward: Duration,
    /// The caller's loss on the rendered image, forward and backward.
    pub loss: Duration,
    /// The kernel's backward: per tile, per splat, per Gaussian.
    pub rasterize_backward: Duration,
    /// The kernel's gradients handed to the parameters.
    pub gradient_hand_off: Duration,
    /// Gradient statistics, densify and prune, opacity resets.
    pub densification: Duration,
    /// The optimiser's step.
    pub optimizer: Duration,
    /// The whole step; what the phases above leave is bookkeeping (checks of the parameters, reports).
    pub total: Duration,
}

impl std::ops::AddAssign<&StepPhases> for StepPhases {
    fn add_assign(&mut self, p: &StepPhases) {
        self.projection += p.projection;
        self.rasterize_forward += p.rasterize_forward;
        self.loss += p.loss;
        self.rasterize_backward += p.rasterize_backward;
        self.gradient_hand_off += p.gradient_hand_off;
        self.densification += p.densification;
        self.optimizer += p.optimizer;
        self.total += p.total;
    }
}

impl StepPhases {
    /// The whole step less the named phases.
    pub fn rest(&self) -> Duration {
        let named = self.projection
            + self.rasterize_forward
            + self.loss
            + self.rasterize_backward
            + self.gradient_hand_off
            + self.densification
            + self.optimizer;
        self.total.saturating_sub(named)
    }
}

/// Fits a [`GaussianField`] to views, one view per [`Trainer::step`].
pub struct Trainer {
    field: GaussianField,
    config: TrainConfig,
    adam: Adam,
    stats: DensifyStats,
    /// The scene extent (3DGS: 1.1 × the largest camera distance to the cameras' mean).
    extent: f64,
    /// Background and colour convention; mode and SH degree come from the schedule.
    look: RenderOptions,
    sh_degree: usize,
    iteration: u32,
}

impl Trainer {
    /// `look` gives the background (per channel; empty: zero) and the colour convention
    /// (`color_offset_clamp`: SH + 0.5 clamped at 0, as 3DGS does for RGB and the official LRF code for
    /// normalized latents); its mode and SH degree are replaced by the schedule's.
    pub fn new(field: GaussianField, config: TrainConfig, extent: f64, look: RenderOptions) -> Result<Self> {
        config.validate().map_err(SplatError::Options)?;
        if !(extent.is_finite() && extent > 0.0) {
            return Err(SplatError::Options(format!(
                "scene extent {extent} must be finite and positive (it is the training cameras' spread; see \
                 scene_extent)"
            )));
        }
        if field.max_sh_degree < config.sh_degree {
            return Err(SplatError::Options(format!(
                "the field stores SH degree {} but the schedule asks for {}",
                field.max_sh_degree, config.sh_degree
            )));
        }
        tch::manual_seed(config.seed as i64);
        Ok(Trainer {
            adam: Adam::new(&field.params),
            stats: DensifyStats::new(field.len()),
            field,
            config,
            extent,
            look,
            sh_degree: 0,
            iteration: 0,
        })
    }

    /// Renders from the start at SH degree `degree` (at most the schedule's): a field fitted before keeps the
    /// degree its fit reached, instead of growing it again from 0.
    pub fn starting_at_sh_degree(mut self, degree: usize) -> Self {
        self.sh_degree = degree.min(self.config.sh_degree);
        self
    }

    pub fn field(&self) -> &GaussianField {
        &self.field
    }

    pub fn into_field(self) -> GaussianField {
        self.field
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// Render options for the field as trained so far (its current SH degree).
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            mode: if self.config.antialiased {
                RasterMode::Antialiased
            } else {
                RasterMode::Classic
            },
            sh_degree: Some(self.sh_degree),
            ..self.look.clone()
        }
    }

    /// One iteration on `camera`: render, `loss(image)` (a scalar tensor built from the `[C, H, W]` render),
    /// backward, densification bookkeeping, then the optimiser step, in 3DGS's order.
    pub fn step<E>(
        &mut self,
        camera: &Camera,
        loss: impl FnOnce(&Tensor) -> std::result::Result<Tensor, E>,
    ) -> std::result::Result<StepReport, TrainError<E>> {
        let started = Instant::now();
        let mut phases = StepPhases::default();
        self.iteration += 1;
        let it = self.iteration;
        let config = self.config.clone();
        if it % config.sh_degree_interval == 0 {
            self.sh_degree = (self.sh_degree + 1).min(config.sh_degree);
        }
        let gaussians = self.field.render_inputs();
        let rendered: Rendered = render(&gaussians, camera, &self.render_options())?;
        let rendered_at = Instant::now();
        phases.projection = rendered.kernel_times.map_or(Duration::ZERO, |t| t.per_gaussian);
        phases.rasterize_forward = (rendered_at - started).saturating_sub(phases.projection);
        let loss = loss(&rendered.image).map_err(TrainError::Loss)?;
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged { iteration: it });
        }
        loss.backward();
        let loss_at = Instant::now();
        phases.loss = loss_at - rendered_at;
        let (screen, gradients) = rendered.gradients()?;
        // Dropped before a densification, which replaces the field (the optimiser then skips this step).
        let mut gradients = Some(gradients);
        let backward_at = Instant::now();
        let backward = backward_at - loss_at;
        phases.rasterize_backward = screen.kernel_times.map_or(backward, |t| t.per_gaussian + t.per_pixel);
        phases.gradient_hand_off = backward.saturating_sub(phases.rasterize_backward);

        let mut densified = None;
        let mut opacity_reset = false;
        if it < config.densify_until {
            let norm = match config.densify_gradient {
                GradientUnits::Ndc => &screen.mean2d_grad_norm_ndc,
                GradientUnits::Pixels => &screen.mean2d_grad_norm,
            };
            self.stats.record(norm, &rendered.radii);
            if it > config.densify_from && it % config.densify_interval == 0 {
                let after_reset = it > config.opacity_reset_interval;
                let limits = DensifyLimits {
                    grad_threshold: config.densify_grad_threshold,
                    clone_max_scale: config.percent_dense * self.extent,
                    prune_opacity: config.prune_opacity,
                    prune_world_scale: after_reset.then_some(config.prune_world_scale * self.extent),
                    prune_screen_radius: config.prune_screen_radius.filter(|_| after_reset),
                    max_gaussians: config.max_gaussians,
                };
                gradients = None;
                densified = Some(densify_and_prune(
                    &mut self.field,
                    &mut self.adam,
                    &mut self.stats,
                    &limits,
                ));
            }
            if it % config.opacity_reset_interval == 0 {
                self.reset_opacity();
                opacity_reset = true;
            }
        }
        let densified_at = Instant::now();
        phases.densification = densified_at - backward_at;
        // As in 3DGS, parameters that densification or the opacity reset replaced take no step with gradients
        // of the set they replaced.
        if let Some(gradients) = gradients.filter(|_| it < config.iterations) {
            self.optimizer_step(&gradients, &rendered.radii, opacity_reset);
        }
        phases.optimizer = densified_at.elapsed();
        // A field can go non-finite while the loss stays finite (the rasterizer culls such Gaussians), so the
        // parameters are checked themselves: cheaply, on the densification cadence and at the end.
        if (it.is_multiple_of(config.densify_interval) || it == config.iterations)
            && let Some(group) = self.field.non_finite_group()
        {
            return Err(TrainError::NonFinite { iteration: it, group });
        }
        Ok(StepReport {
            iteration: it,
            loss: loss_value,
            gaussians: self.field.len(),
            sh_degree: self.sh_degree,
            densified,
            phases: StepPhases {
                total: started.elapsed(),
                ..phases
            },
        })
    }

    /// One Adam step per group with the kernel's gradients; `skip_opacity` after an opacity reset.
    fn optimizer_step(&mut self, gradients: &GaussianGradients, radii: &Tensor, skip_opacity: bool) {
        let c = &self.config;
        let rates = [
            c.lr_means_at(self.iteration) * self.extent,
            c.lr_sh_dc,
            c.lr_sh_rest,
            c.lr_opacity,
            c.lr_scales,
            c.lr_quats,
        ];
        let rows =
            (c.sparse_updates && radii.size()[0] == self.field.len() as i64).then(|| radii.gt(0).nonzero().view([-1]));
        let coefficients = sh_coeffs(self.field.max_sh_degree);
        // Group k's gradient: which of the rendered tensors (means, log-scales, quaternions, opacities, colours)
        // holds it, and for the colours, its first SH coefficient.
        let sources = [(0, 0), (4, 0), (4, 1), (3, 0), (1, 0), (2, 0)];
        for (group, ((param, lr), (tensor, first))) in self.field.params.iter().zip(rates).zip(sources).enumerate() {
            if skip_opacity && group == 3 {
                continue;
            }
            let grad = match gradients {
                GaussianGradients::Host(grads) if tensor == 4 => Gradient::Host(GradientRows::Colors {
                    grads: &grads.colors,
                    first,
                }),
                GaussianGradients::Host(grads) => {
                    let row = param.numel() / self.field.len().max(1);
                    Gradient::Host(GradientRows::Strided {
                        data: grads.geometry()[tensor],
                        stride: row,
                        offset: 0,
                    })
                }
                GaussianGradients::Tensors(tensors) => Gradient::Tensor(if tensor == 4 {
                    let length = if first == 0 { 1 } else { coefficients as i64 - 1 };
                    tensors[4].narrow(1, first as i64, length)
                } else {
                    tensors[tensor].shallow_clone()
                }),
            };
            self.adam.step(group, param, grad, lr, rows.as_ref());
        }
    }

    /// Opacity ← min(opacity, 0.01), with the opacity group's Adam moments zeroed (3DGS `reset_opacity`).
    fn reset_opacity(&mut self) {
        let _guard = tch::no_grad_guard();
        let limit = (0.01f64 / 0.99).ln();
        let mut params: Vec<Tensor> = self.field.params.iter().map(|p| p.detach()).collect();
        params[3] = params[3].clamp_max(limit);
        self.field.replace(params.try_into().expect("six groups"));
        self.adam.reset_group(3);
    }
}

/// Why a training step failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError<E> {
    #[error(transparent)]
    Render(#[from] SplatError),
    #[error("loss: {0}")]
    Loss(E),
    #[error("the loss became NaN or infinite at iteration {iteration}; lower the learning rates")]
    Diverged { iteration: u32 },
    #[error(
        "the field's `{group}` parameters became NaN or infinite by iteration {iteration}; lower the learning \
         rates (the `{group}` group's first)"
    )]
    NonFinite { iteration: u32, group: &'static str },
}

/// 3DGS's scene extent: 1.1 × the largest distance of a camera centre from the centres' mean.
///
/// Errors when the cameras cannot define one: a non-finite centre, or centres that coincide up to rounding
/// (a spread below 1e-9 of their distance from the origin, or of 1 when they sit near it), which would
/// otherwise train with an extent like 1e-15 and scale every learning rate by it.
pub fn scene_extent(cameras: &[&Camera]) -> Result<f64> {
    let invalid = |message: String| Err(SplatError::Options(message));
    if cameras.is_empty() {
        return invalid("no training cameras to measure the scene extent from".into());
    }
    let centers: Vec<_> = cameras.iter().map(|c| c.center()).collect();
    if let Some(k) = centers.iter().position(|c| !c.is_finite()) {
        return invalid(format!(
            "training camera {k} has a non-finite centre {}; check the poses in images.bin",
            centers[k]
        ));
    }
    let mean = centers.iter().copied().sum::<glam::DVec3>() / centers.len() as f64;
    let radius = centers.iter().map(|c| c.distance(mean)).fold(0.0, f64::max);
    if !(mean.is_finite() && radius.is_finite() && (1.1 * radius).is_finite()) {
        let far = centers.iter().map(|c| c.abs().max_element()).fold(0.0, f64::max);
        return invalid(format!(
            "the {} training cameras spread too far to measure (a centre coordinate reaches {far:.1e}, beyond \
             floating-point range for distances); check the translations in images.bin",
            centers.len()
        ));
    }
    if radius <= 1e-9 * mean.length().max(1.0) {
        return invalid(format!(
            "the {} training cameras all stand at one place (they spread {radius:.1e} around {mean}), so the scene \
             has no extent; 3D reconstruction needs views from different positions",
            centers.len()
        ));
    }
    Ok(1.1 * radius)
}

/// Mean absolute difference: the tests' loss (the stages use lrf-vae's losses).
#[cfg(test)]
fn l1(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b).abs().mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::DVec3;

    fn camera(eye: DVec3) -> Camera {
        Camera::look_at(eye, DVec3::ZERO, DVec3::NEG_Y, 40.0, 40.0, 40, 30)
    }

    #[test]
    fn default_schedule_matches_3dgs() {
        let c = TrainConfig::default();
        assert!((c.lr_means_at(0) - 1.6e-4).abs() < 1e-12);
        assert!((c.lr_means_at(15_000) - 1.6e-5).abs() < 1e-12);
        assert!((c.lr_means_at(30_000) - 1.6e-6).abs() < 1e-15);
        assert!((c.lr_means_at(40_000) - 1.6e-6).abs() < 1e-15);
        assert_eq!(c.validate(), Ok(()));
        let mut bad = c.clone();
        bad.prune_opacity = 1.5;
        assert!(bad.validate().unwrap_err().contains("prune_opacity"));
    }

    #[test]
    fn extent_is_1_1_times_the_largest_center_distance() {
        let a = camera(DVec3::new(3.0, 0.0, 0.0));
        let b = camera(DVec3::new(-1.0, 0.0, 0.0));
        assert!((scene_extent(&[&a, &b]).unwrap() - 2.2).abs() < 1e-9);
    }

    #[test]
    fn cameras_at_one_place_have_no_extent_but_small_scenes_do() {
        // Identical poses differ by rounding only: 3DGS would train with an extent near 1e-15.
        let eye = DVec3::new(0.3, -1.7, 2.9);
        let (a, b) = (camera(eye), camera(eye + DVec3::splat(1e-15)));
        let error = scene_extent(&[&a, &b, &a]).unwrap_err().to_string();
        assert!(error.contains("3 training cameras all stand at one place"), "{error}");
        // A scene in millimetres is small, not degenerate.
        let (c, d) = (camera(DVec3::new(1e-3, 0.0, 0.0)), camera(DVec3::new(-1e-3, 0.0, 0.0)));
        assert!((scene_extent(&[&c, &d]).unwrap() - 1.1e-3).abs() < 1e-12);
        let error = scene_extent(&[]).unwrap_err().to_string();
        assert!(error.contains("no training cameras"), "{error}");
        // Finite centres whose distance overflows: the extent would be infinite.
        let at = |x: f64| Camera {
            translation: DVec3::new(x, 0.0, 0.0),
            ..camera(DVec3::new(0.0, 0.0, 3.0))
        };
        let (e, f) = (at(1e200), at(-1e200));
        let error = scene_extent(&[&e, &f]).unwrap_err().to_string();
        assert!(
            error.contains("spread too far to measure") && error.contains("1.0e200"),
            "{error}"
        );
    }

    /// A fit that must make progress: random points fitted to a target rendered from other Gaussians.
    #[test]
    fn training_lowers_the_loss_densifies_and_resets_opacity_on_schedule() {
        tch::manual_seed(1);
        let positions: Vec<[f64; 3]> = (0..200)
            .map(|i| {
                let t = i as f64;
                [(t * 0.37).sin(), (t * 0.71).cos(), (t * 0.13).sin() * 0.5]
            })
            .collect();
        let colors = vec![0.5f32; 200 * 2];
        let init = PointInit {
            positions: &positions,
            colors: &colors,
            channels: 2,
        };
        let cameras = [
            camera(DVec3::new(0.0, 0.0, -4.0)),
            camera(DVec3::new(1.0, 0.5, -4.0)),
            camera(DVec3::new(-1.0, -0.5, -4.0)),
        ];
        // Targets: the same cameras seeing a smooth two-channel pattern.
        let targets: Vec<Tensor> = (0..3)
            .map(|k| {
                let y = Tensor::linspace(0.0, 1.0, 30, (Kind::Float, tch::Device::Cpu)).view([1, 30, 1]);
                let x = Tensor::linspace(0.0, 1.0, 40, (Kind::Float, tch::Device::Cpu)).view([1, 1, 40]);
                Tensor::cat(
                    &[(&x * (k as f64 + 1.0)).sin() * 0.4 + 0.5 + &y * 0.0, &y + &x * 0.0],
                    0,
                )
            })
            .collect();
        let config = TrainConfig {
            iterations: 300,
            densify_from: 20,
            densify_until: 250,
            densify_interval: 50,
            opacity_reset_interval: 200,
            sh_degree: 1,
            sh_degree_interval: 100,
            densify_grad_threshold: 1e-5,
            ..TrainConfig::default()
        };
        let field = GaussianField::from_points(&init, 1).unwrap();
        let extent = scene_extent(&cameras.iter().collect::<Vec<_>>()).unwrap();
        let mut trainer = Trainer::new(field, config, extent, RenderOptions::offset_clamped()).unwrap();
        let mut first = Vec::new();
        let mut last = Vec::new();
        let mut densified = 0;
        for i in 0..300 {
            let view = i % 3;
            let report = trainer
                .step(&cameras[view], |image| Ok::<_, SplatError>(l1(image, &targets[view])))
                .unwrap();
            if i < 3 {
                first.push(report.loss);
            }
            if i >= 297 {
                last.push(report.loss);
            }
            if let Some(counts) = report.densified {
                densified += counts.cloned + counts.split;
            }
            if report.iteration == 200 {
                let max = trainer.field().opacity_logits().max().double_value(&[]);
                assert!(max <= (0.01f64 / 0.99).ln() + 1e-6, "opacity was not reset: {max}");
            }
        }
        let (first, last) = (first.iter().sum::<f64>(), last.iter().sum::<f64>());
        assert!(last < 0.5 * first, "loss went from {first} to {last}");
        assert!(densified > 0, "nothing was densified");
        assert_eq!(trainer.render_options().sh_degree, Some(1));
        assert!(
            trainer
                .field()
                .params
                .iter()
                .all(|p| !bool::try_from(p.isnan().any()).unwrap())
        );
    }

    #[test]
    fn a_diverging_loss_is_an_error_not_a_nan_field() {
        let positions = [[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]];
        let field = GaussianField::from_points(
            &PointInit {
                positions: &positions,
                colors: &[0.5, 0.5],
                channels: 1,
            },
            0,
        )
        .unwrap();
        let config = TrainConfig {
            sh_degree: 0,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(field, config, 1.0, RenderOptions::offset_clamped()).unwrap();
        let cam = camera(DVec3::new(0.0, 0.0, -3.0));
        let error = trainer
            .step(&cam, |image| Ok::<_, SplatError>(image.sum(Kind::Float) * f64::NAN))
            .unwrap_err();
        assert!(matches!(error, TrainError::Diverged { iteration: 1 }), "{error}");
    }

    /// Learning rates of 1000 (with densification) send parameters to NaN while the rendered loss stays finite:
    /// the trainer must stop with the group and the iteration, not hand back a non-finite field.
    #[test]
    fn a_non_finite_field_is_an_error_naming_the_group() {
        let positions: Vec<[f64; 3]> = (0..50)
            .map(|i| [(i % 10) as f64 * 0.1 - 0.5, (i / 10) as f64 * 0.1, 0.0])
            .collect();
        let field = GaussianField::from_points(
            &PointInit {
                positions: &positions,
                colors: &[0.5; 50],
                channels: 1,
            },
            0,
        )
        .unwrap();
        let config = TrainConfig {
            iterations: 200,
            sh_degree: 0,
            densify_from: 10,
            densify_interval: 50,
            densify_grad_threshold: 1e-9,
            lr_means: 1000.0,
            lr_means_final: 1000.0,
            lr_sh_dc: 1000.0,
            lr_opacity: 1000.0,
            lr_scales: 1000.0,
            lr_quats: 1000.0,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(field, config, 1.0, RenderOptions::offset_clamped()).unwrap();
        let cam = camera(DVec3::new(0.0, 0.0, -3.0));
        let target = Tensor::full([1, 30, 40], 0.8, (Kind::Float, tch::Device::Cpu));
        let error = (0..200)
            .find_map(|_| {
                trainer
                    .step(&cam, |image| Ok::<_, SplatError>(l1(image, &target)))
                    .err()
            })
            .expect("training with learning rates of 1000 went on to the end");
        let message = error.to_string();
        let TrainError::NonFinite { iteration, group } = error else {
            panic!("expected a non-finite field, got: {message}");
        };
        assert_eq!(iteration % 50, 0, "checked off the densification cadence: {iteration}");
        assert_eq!(trainer.field().non_finite_group(), Some(group));
        assert!(
            message.contains(group) && message.contains(&iteration.to_string()),
            "{message}"
        );
    }
}
