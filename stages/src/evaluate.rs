//! `evaluate`: renders against the real images. Latent renders are decoded (denormalised → decode → clamp);
//! RGB renders are compared as they are. PSNR (mean of per-view values), SSIM (3DGS's), ST-LPIPS (shipped
//! weights), LPIPS when the user gives backbone weights, and for latent fields the autoencoder's own reconstruction of the same views, the
//! ceiling a latent field cannot pass, and the latent PSNR of the render against the encoded image; with `autoencoder: input` both decode with the model on the
//! `autoencoder` port instead (e.g. Stage III's aligned decoder). Images are quantised to 8 bits first, as the
//! official evaluation reads saved PNGs. Writes per-view JSON, a summary, and side-by-side PNGs:
//! ground truth | decoded render | autoencoder reconstruction | error heat-map | latent channels 0–2 as
//! false colour ([`crate::artifacts::SIDE_BY_SIDE_PANELS`]; RGB fields have no reconstruction nor latent panel),
//! and the decoded renders and ground truths as graphdeco's `render.py` writes them
//! (`<split>/ours_<iterations>/{renders,gt}/00000.png`, numbered within the split).

use std::path::{Path, PathBuf};

use anyhow::bail;
use lrf_formats::image::write_png;
use lrf_formats::scene::Split;
use lrf_formats::views::read_image;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use lrf_vae::Lpips;
use lrf_vae::metrics::{MetricValue, lpips, psnr, ssim};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::artifacts::{Evaluation, METRICS_FILE, Renders, Scores, SplitSummary, ViewScores};
use crate::artifacts::{FieldSpace, input_dir, output_dir, views_input, write_json};
use crate::autoencoder::DecodeWith;
use crate::latents::{decode_latent, encode_view, false_color, image_tensor, side_by_side};
use crate::perceptual::{LpipsBackbone, ShiftTolerantLpips, open_lpips, resolve_lpips};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Evaluate {
    /// Which views to score (those the render stage rendered).
    pub splits: Vec<Split>,
    /// ST-LPIPS network: `vgg` (default: the LRF paper reports VGG LPIPS), `alex` (about 10× cheaper on
    /// a CPU) or `none`.
    pub st_lpips: ShiftTolerantLpips,
    /// LPIPS backbone weights, relative to the pipeline file: torchvision's ImageNet `vgg16` (or `alexnet`,
    /// with `lpips_backbone: alex`) state dict as safetensors, completed by the heads the `lpips` wheel
    /// ships, or a complete `lpips` state dict. Without them LPIPS is reported as "unavailable".
    pub lpips: Option<String>,
    pub lpips_backbone: LpipsBackbone,
    /// Write the side-by-side PNGs.
    pub images: bool,
    /// `field` (default) or `input`. Left out of the canonical parameters when `field`, so the keys of
    /// evaluations made before this option existed still hold.
    #[serde(skip_serializing_if = "DecodeWith::is_field")]
    pub autoencoder: DecodeWith,
    #[serde(skip_deserializing)]
    pub lpips_content: Option<String>,
    #[serde(skip)]
    lpips_path: Option<PathBuf>,
    /// The ST-LPIPS weights' hash, so that other weights make other scores.
    #[serde(skip_deserializing)]
    pub st_lpips_content: Option<String>,
}

impl Default for Evaluate {
    fn default() -> Self {
        Evaluate {
            splits: vec![Split::Test],
            st_lpips: ShiftTolerantLpips::Vgg,
            lpips: None,
            lpips_backbone: LpipsBackbone::Vgg,
            images: true,
            autoencoder: DecodeWith::Field,
            lpips_content: None,
            lpips_path: None,
            st_lpips_content: None,
        }
    }
}

impl StageKind for Evaluate {
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 4;

    fn resolve_paths(&mut self, base_dir: &Path) -> Result<(), String> {
        self.st_lpips_content = self.st_lpips.content()?;
        if let Some(spec) = &self.lpips {
            let (content, path) = resolve_lpips(spec, base_dir)?;
            self.lpips_content = Some(content);
            self.lpips_path = Some(path);
        }
        Ok(())
    }
    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: [Port::new("renders", "renders"), Port::new("views", "views")]
                .into_iter()
                .chain(self.autoencoder.port())
                .collect(),
            outputs: vec![Port::new("evaluation", "evaluation")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.splits.is_empty() {
            return Err("splits must name at least one of train, test".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let renders = Renders::open(input_dir(job, "renders")?)?;
        let (views, images) = views_input(job)?;
        let field = &renders.info.field;
        let (model, normalization) = match &field.space {
            FieldSpace::Latent {
                autoencoder,
                normalization,
            } => {
                let source = self
                    .autoencoder
                    .input_model(job)?
                    .unwrap_or_else(|| autoencoder.clone());
                (Some(source.open()?), Some(normalization))
            }
            FieldSpace::Rgb => {
                if self.autoencoder == DecodeWith::Input {
                    bail!("`autoencoder: input` decodes latent renders, but these renders are of an RGB field");
                }
                if renders.info.downsampling != 1 {
                    bail!("RGB renders must be at full resolution to be scored; render with `resolution: full`");
                }
                (None, None)
            }
        };
        let perceptual = Perceptual {
            st_lpips: self.st_lpips.open()?,
            lpips: match &self.lpips_path {
                Some(path) => Some(open_lpips(self.lpips_backbone, path)?),
                None => None,
            },
        };
        let _guard = tch::no_grad_guard();
        let out = output_dir(job, "evaluation")?;
        let mut scored = Vec::new();
        for &index in &renders.info.views {
            let view = &views.views[index];
            if !self.splits.contains(&view.split) {
                continue;
            }
            let truth = quantize(&image_tensor(&read_image(&images, index)?));
            let render = renders.get(index)?;
            let predicted = match &model {
                Some(model) => quantize(&decode_latent(model.as_ref(), &render)?),
                None => quantize(&render.clamp(0.0, 1.0)),
            };
            if predicted.size() != truth.size() {
                bail!(
                    "view {:?}: the render decodes to {:?} but the image is {:?}",
                    view.name,
                    predicted.size(),
                    truth.size()
                );
            }
            let (reconstruction, latent_psnr) = match (&model, normalization) {
                (Some(model), Some(normalization)) => {
                    let encoded = encode_view(model.as_ref(), &images, index)?;
                    let unit = |latent: &Tensor| normalization.normalize(latent).clamp(0.0, 1.0).unsqueeze(0);
                    (
                        Some(quantize(&decode_latent(model.as_ref(), &encoded)?)),
                        Some(psnr(&unit(&render), &unit(&encoded))?),
                    )
                }
                _ => (None, None),
            };
            let score = |image: &Tensor| score(&perceptual, image, &truth);
            let entry = ViewScores {
                name: view.name.clone(),
                split: view.split,
                render: score(&predicted)?,
                reconstruction: reconstruction.as_ref().map(score).transpose()?,
                latent_psnr,
            };
            if self.images {
                let error = error_heat_map(&predicted, &truth);
                let mut panels = vec![&truth, &predicted];
                panels.extend(reconstruction.as_ref());
                panels.push(&error);
                let false_color = normalization.map(|n| false_color(&n.normalize(&render), truth.size()[1]));
                panels.extend(false_color.as_ref());
                let stem = Path::new(&view.name).with_extension("");
                let name = stem.to_string_lossy().replace(['/', '\\'], "_");
                write_png(&out.join(format!("{name}.png")), &side_by_side(&panels)?)?;
                // graphdeco's render.py layout, which its metrics.py and other tools read.
                let split_dir = out
                    .join(split_name(view.split))
                    .join(format!("ours_{}", field.iterations));
                let index = scored.iter().filter(|v: &&ViewScores| v.split == view.split).count();
                std::fs::create_dir_all(split_dir.join("renders"))?;
                std::fs::create_dir_all(split_dir.join("gt"))?;
                write_png(
                    &split_dir.join("renders").join(format!("{index:05}.png")),
                    &side_by_side(&[&predicted])?,
                )?;
                write_png(
                    &split_dir.join("gt").join(format!("{index:05}.png")),
                    &side_by_side(&[&truth])?,
                )?;
            }
            scored.push(entry);
        }
        if scored.is_empty() {
            bail!(
                "no rendered views in the splits {:?}; check the render stage's `splits`",
                self.splits
            );
        }
        let summary = [Split::Test, Split::Train]
            .into_iter()
            .filter_map(|split| summarize(&scored, split))
            .collect();
        let field_name = match field.space {
            FieldSpace::Latent { .. } => "latent",
            FieldSpace::Rgb => "rgb",
        };
        write_json(
            &out.join(METRICS_FILE),
            &Evaluation {
                scene: views.scene.clone(),
                field: field_name.into(),
                field_downsampling: field.downsampling,
                representation: field.representation.clone(),
                gaussians: field.gaussians,
                fit_seconds: field.seconds,
                fit_seconds_per_iteration: field.seconds_per_iteration,
                fit_iterations: field.iterations,
                fit_peak_memory_mib: field.peak_memory_mib,
                loss_curve: field.loss_curve.clone(),
                gaussian_curve: field.gaussian_curve.clone(),
                render_seconds_per_view: renders.info.seconds_per_view,
                summary,
                views: scored,
            },
        )
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Rounds to 8-bit levels, as saving and reloading a PNG would.
fn quantize(image: &Tensor) -> Tensor {
    (image.clamp(0.0, 1.0) * 255.0).round() / 255.0
}

/// The perceptual networks an evaluation scores with.
struct Perceptual {
    st_lpips: Option<Lpips>,
    lpips: Option<Lpips>,
}

fn score(perceptual: &Perceptual, image: &Tensor, truth: &Tensor) -> anyhow::Result<Scores> {
    let (a, b) = (image.unsqueeze(0), truth.unsqueeze(0));
    let psnr = psnr(&a, &b)?;
    if psnr.is_nan() {
        bail!("PSNR is not a number: the image or its ground truth holds NaN");
    }
    Ok(Scores {
        psnr,
        ssim: ssim(&a, &b)?.double_value(&[]),
        lpips: lpips(perceptual.lpips.as_ref(), &a, &b)?,
        st_lpips: lpips(perceptual.st_lpips.as_ref(), &a, &b)?,
    })
}

fn summarize(views: &[ViewScores], split: Split) -> Option<SplitSummary> {
    let chosen: Vec<&ViewScores> = views.iter().filter(|v| v.split == split).collect();
    if chosen.is_empty() {
        return None;
    }
    let mean = |scores: Vec<&Scores>| -> Scores {
        let n = scores.len() as f64;
        let metric_mean = |metric: fn(&Scores) -> MetricValue| {
            scores
                .iter()
                .map(|s| match metric(s) {
                    MetricValue::Value(v) => Some(v),
                    MetricValue::Unavailable => None,
                })
                .sum::<Option<f64>>()
                .map_or(MetricValue::Unavailable, |total| MetricValue::Value(total / n))
        };
        Scores {
            psnr: scores.iter().map(|s| s.psnr).sum::<f64>() / n,
            ssim: scores.iter().map(|s| s.ssim).sum::<f64>() / n,
            lpips: metric_mean(|s| s.lpips),
            st_lpips: metric_mean(|s| s.st_lpips),
        }
    };
    let reconstruction: Option<Vec<&Scores>> = chosen.iter().map(|v| v.reconstruction.as_ref()).collect();
    let latent_psnr: Option<f64> = chosen.iter().map(|v| v.latent_psnr).sum();
    Some(SplitSummary {
        split,
        views: chosen.len(),
        render: mean(chosen.iter().map(|v| &v.render).collect()),
        reconstruction: reconstruction.map(mean),
        latent_psnr: latent_psnr.map(|total| total / chosen.len() as f64),
    })
}

/// |render − truth| averaged over channels, ×4 (an error of 0.25 saturates), through a black → red →
/// yellow → white ramp: where the render is wrong at a glance.
fn error_heat_map(render: &Tensor, truth: &Tensor) -> Tensor {
    let t = ((render - truth).abs().mean_dim(0, true, None) * 4.0).clamp(0.0, 1.0);
    let red = (&t * 3.0).clamp(0.0, 1.0);
    let green = (&t * 3.0 - 1.0).clamp(0.0, 1.0);
    let blue = (&t * 3.0 - 2.0).clamp(0.0, 1.0);
    Tensor::cat(&[red, green, blue], 0)
}
