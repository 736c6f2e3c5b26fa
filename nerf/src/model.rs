//! A latent Tri-Plane NeRF as one unit a stage saves, loads, renders and trains: the field, where its box
//! sits in the world, and how its rays are sampled.

use std::path::Path;

use lrf_formats::Camera;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

use crate::query::PlaneTape;
use crate::render::{Rays, Sampling, render};
use crate::{NerfError, Result, SceneBounds, TriPlaneConfig, TriPlaneField};

/// Everything but the tensors: what a field's JSON records so that the field can be rebuilt and its
/// safetensors file loaded into it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriPlaneLayout {
    pub config: TriPlaneConfig,
    pub bounds: SceneBounds,
    pub sampling: Sampling,
}

pub struct TriPlaneNerf {
    /// The field's variables.
    pub vars: nn::VarStore,
    pub field: TriPlaneField,
    pub bounds: SceneBounds,
    pub sampling: Sampling,
}

/// Rays rendered at once in an inference pass, so that a full-resolution view stays within a few
/// hundred MiB (each ray holds its samples' features and hidden activations).
const RAYS_PER_CHUNK: i64 = 4096;

impl TriPlaneNerf {
    /// A new f32 field on the CPU with IG-AE's initialisation (planes N(0, `plane_scale`²)).
    pub fn new(layout: TriPlaneLayout, plane_scale: f64) -> Result<Self> {
        let vars = nn::VarStore::new(Device::Cpu);
        let field = TriPlaneField::new(&vars.root(), layout.config, plane_scale)?;
        Ok(TriPlaneNerf {
            vars,
            field,
            bounds: layout.bounds,
            sampling: layout.sampling,
        })
    }

    pub fn layout(&self) -> TriPlaneLayout {
        TriPlaneLayout {
            config: self.field.config,
            bounds: self.bounds,
            sampling: self.sampling,
        }
    }

    /// Writes the parameters as safetensors (`path` must end in `.safetensors`).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.vars.save(path)?;
        Ok(())
    }

    /// The field `layout` describes, with the parameters of `path`; refused when a parameter is missing, has
    /// another shape, or holds NaN or an infinity.
    pub fn load(layout: TriPlaneLayout, path: &Path) -> Result<Self> {
        let mut nerf = TriPlaneNerf::new(layout, 1.0)?;
        nerf.vars
            .load(path)
            .map_err(|e| NerfError::Input(format!("{}: {e}", path.display())))?;
        if let Some(name) = nerf.non_finite_parameter() {
            return Err(NerfError::Input(format!(
                "{}: parameter `{name}` holds NaN or infinite values",
                path.display()
            )));
        }
        Ok(nerf)
    }

    /// The name of a parameter that holds NaN or an infinity, if any.
    pub fn non_finite_parameter(&self) -> Option<String> {
        let mut variables: Vec<(String, Tensor)> = self.vars.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        variables
            .into_iter()
            .find(|(_, t)| !bool::try_from(t.isfinite().all()).unwrap_or(false))
            .map(|(name, _)| name)
    }

    /// The `[C, h, w]` render of `camera` without gradients ([`render_image`]).
    pub fn render_view(&self, camera: &Camera) -> Result<Tensor> {
        render_image(&self.field, &self.bounds, camera, self.sampling)
    }

    /// The `[C, h, w]` render of `camera` for a training step ([`render_training_image`]).
    pub fn render_training(&self, camera: &Camera, rng: &mut dyn RngCore) -> Result<(Tensor, PlaneTape)> {
        render_training_image(&self.field, &self.bounds, camera, self.sampling, rng)
    }
}

/// The `[C, h, w]` render of `camera`'s pixels by `field` in the box of `bounds`, without gradients,
/// unjittered, in chunks of rays; values in the field's bounded range.
pub fn render_image(
    field: &TriPlaneField,
    bounds: &SceneBounds,
    camera: &Camera,
    sampling: Sampling,
) -> Result<Tensor> {
    let rays = Rays::for_camera(camera, bounds, Kind::Float);
    let _guard = tch::no_grad_guard();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < rays.len() {
        let count = RAYS_PER_CHUNK.min(rays.len() - start);
        parts.push(render(field, &rays.narrow(start, count), sampling, None, None)?);
        start += count;
    }
    Ok(to_image(Tensor::cat(&parts, 0), camera))
}

/// The `[C, h, w]` render of `camera` for a training step: jittered by `rng`'s draws, with its graph, and
/// the tape that hands the planes and the MLP their gradient after the loss's backward pass.
pub fn render_training_image(
    field: &TriPlaneField,
    bounds: &SceneBounds,
    camera: &Camera,
    sampling: Sampling,
    rng: &mut dyn RngCore,
) -> Result<(Tensor, PlaneTape)> {
    let rays = Rays::for_camera(camera, bounds, Kind::Float);
    let mut tape = PlaneTape::new();
    let flat = render(field, &rays, sampling, Some(rng), Some(&mut tape))?;
    Ok((to_image(flat, camera), tape))
}

/// `[h·w, C]` rays → `[C, h, w]`.
fn to_image(flat: Tensor, camera: &Camera) -> Tensor {
    let (w, h) = (camera.width as i64, camera.height as i64);
    let channels = flat.size()[1];
    flat.view([h, w, channels]).permute([2, 0, 1])
}

/// Adam over all of a [`TriPlaneNerf`]'s parameters, with IG-AE's total-variation prior on the planes.
pub struct NerfOptimizer {
    optimizer: nn::Optimizer,
    /// Weight of [`plane_total_variation`] in every step's loss.
    pub tv_weight: f64,
}

impl NerfOptimizer {
    /// A fresh optimiser (no moments), as latent-nerfstudio makes when a phase starts.
    pub fn new(nerf: &TriPlaneNerf, lr: f64, tv_weight: f64) -> Result<Self> {
        Ok(NerfOptimizer {
            optimizer: nn::Adam::default().build(&nerf.vars, lr)?,
            tv_weight,
        })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.optimizer.set_lr(lr);
    }

    /// One step: renders `camera` (jittered by `rng`), adds `loss(render)` to the TV prior, backpropagates and steps.
    /// Returns the loss without the prior. `loss` may add gradients to other models (a decoder); their
    /// optimisers step them.
    pub fn step<E: From<NerfError>>(
        &mut self,
        nerf: &TriPlaneNerf,
        camera: &Camera,
        rng: &mut dyn RngCore,
        loss: impl FnOnce(&Tensor) -> std::result::Result<Tensor, E>,
    ) -> std::result::Result<f64, E> {
        self.optimizer.zero_grad();
        let (rendered, tape) = nerf.render_training(camera, rng)?;
        let data = loss(&rendered)?;
        let value = data.double_value(&[]);
        if !value.is_finite() {
            return Err(NerfError::Input(format!("the loss diverged ({value})")).into());
        }
        let total = if self.tv_weight > 0.0 {
            &data + plane_total_variation(&nerf.field.planes) * self.tv_weight
        } else {
            data
        };
        total.backward();
        tape.backward();
        self.optimizer.step();
        Ok(value)
    }
}

/// IG-AE's `compute_tv(p=2, q=2)` over the planes `[3, F, R, R]`: squared neighbour differences along both
/// plane axes, summed and divided by R + R.
pub fn plane_total_variation(planes: &Tensor) -> Tensor {
    let size = planes.size();
    let (h, w) = (size[2], size[3]);
    let down = (planes.narrow(2, 1, h - 1) - planes.narrow(2, 0, h - 1))
        .square()
        .sum(planes.kind());
    let across = (planes.narrow(3, 1, w - 1) - planes.narrow(3, 0, w - 1))
        .square()
        .sum(planes.kind());
    (down + across) / (h + w) as f64
}

#[cfg(test)]
mod tests {
    use glam::DVec3;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn layout() -> TriPlaneLayout {
        TriPlaneLayout {
            config: TriPlaneConfig {
                features: 4,
                resolution: 8,
                hidden: 8,
                channels: 3,
            },
            bounds: SceneBounds {
                center: DVec3::ZERO,
                scale: 0.5,
            },
            sampling: Sampling {
                stratified: 8,
                importance: 4,
            },
        }
    }

    fn camera() -> Camera {
        Camera::look_at(DVec3::new(0.0, 0.0, 3.0), DVec3::ZERO, DVec3::Y, 12.0, 12.0, 9, 7)
    }

    #[test]
    fn a_saved_field_loads_and_renders_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("field.safetensors");
        let nerf = TriPlaneNerf::new(layout(), 1.0).unwrap();
        nerf.save(&path).unwrap();
        let loaded = TriPlaneNerf::load(layout(), &path).unwrap();
        let (a, b) = (
            nerf.render_view(&camera()).unwrap(),
            loaded.render_view(&camera()).unwrap(),
        );
        assert_eq!(a.size(), [3, 7, 9]);
        assert!(a.equal(&b));
        let other = TriPlaneLayout {
            config: TriPlaneConfig {
                features: 5,
                ..layout().config
            },
            ..layout()
        };
        assert!(
            TriPlaneNerf::load(other, &path).is_err(),
            "a layout that does not match is refused"
        );
    }

    #[test]
    fn a_non_finite_field_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("field.safetensors");
        let nerf = TriPlaneNerf::new(layout(), 1.0).unwrap();
        let _ = tch::no_grad(|| nerf.field.planes.get(1).get(0).fill_(f64::NAN));
        nerf.save(&path).unwrap();
        let error = TriPlaneNerf::load(layout(), &path).err().expect("refused");
        assert!(error.to_string().contains("planes"), "{error}");
    }

    /// Jitter comes from the caller's generator: the same seed renders the same samples, another seed others.
    #[test]
    fn jitter_follows_the_generator() {
        let nerf = TriPlaneNerf::new(layout(), 1.0).unwrap();
        let render = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            nerf.render_training(&camera(), &mut rng).unwrap().0.detach()
        };
        assert!(render(1).equal(&render(1)));
        assert!(!render(1).equal(&render(2)));
    }
}
