//! The trainable Gaussian field: raw parameters as tch leaf tensors, in the 3DGS parameterisation (log-scales,
//! unnormalised quaternions, opacity logits, SH split into the DC term and the rest so each gets its own
//! learning rate).

use std::collections::HashMap;
use std::path::Path;

use std::num::NonZero;

use kiddo::{ImmutableKdTree, SquaredEuclidean};
use lrf_formats::ply::GaussianPly;
use lrf_formats::shard::{ShardReader, write_tch_shard};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, SplatError};
use crate::gaussians::Gaussians;
use crate::sh::{MAX_SH_DEGREE, SH_C0, sh_coeffs};

/// The parameter groups in the order the optimiser and checkpoints use.
pub const GROUPS: [&str; 6] = ["means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats"];

/// A Gaussian field being fitted: `[N, 3]` means, `[N, 1, C]` SH DC, `[N, K-1, C]` higher SH, `[N]` opacity
/// logits, `[N, 3]` log-scales, `[N, 4]` quaternions (w, x, y, z). Every tensor is an f32 leaf that requires grad.
/// The two SH groups are views into one `[N, K, C]` storage, which the trainer renders from without joining
/// them each step (a copy of hundreds of MB at C = 32, SH degree 3).
#[derive(Debug)]
pub struct GaussianField {
    pub params: [Tensor; 6],
    /// `[N, K, C]`: `params[1]` is its first coefficient, `params[2]` the others.
    sh: Tensor,
    /// Highest SH degree stored; the trainer grows the degree in use up to it.
    pub max_sh_degree: usize,
}

/// Where a field starts: points with a colour per channel, already in the space the field renders (for RGB,
/// [0, 1]; for latents, the normalised latent).
pub struct PointInit<'a> {
    /// `N × 3` world positions.
    pub positions: &'a [[f64; 3]],
    /// `N × C` colours, row-major.
    pub colors: &'a [f32],
    pub channels: usize,
}

/// 3DGS's initial opacity, σ⁻¹(0.1).
const INITIAL_OPACITY: f64 = 0.1;
/// Floor on the mean squared neighbour distance, as 3DGS's `distCUDA2` clamp.
const MIN_NEIGHBOUR_DISTANCE2: f64 = 1e-7;

impl GaussianField {
    /// The 3DGS initialisation: isotropic scale from the mean squared distance to the 3 nearest neighbours,
    /// identity rotation, opacity 0.1, DC so that the rendered colour (with the +0.5 offset) is the point's
    /// colour, higher SH zero.
    pub fn from_points(init: &PointInit, max_sh_degree: usize) -> Result<Self> {
        let n = init.positions.len();
        let c = init.channels;
        if c == 0 || init.colors.len() != n * c {
            return Err(SplatError::Shape(format!(
                "{n} points need {n}×{c} colours, got {}",
                init.colors.len()
            )));
        }
        if n == 0 {
            return Err(SplatError::Shape("no points to initialise Gaussians from".into()));
        }
        if max_sh_degree > MAX_SH_DEGREE {
            return Err(SplatError::Options(format!(
                "SH degree {max_sh_degree} is above the supported {MAX_SH_DEGREE}"
            )));
        }
        let log_scales: Vec<f32> = mean_neighbor_distance2(init.positions)?
            .into_iter()
            .flat_map(|d2| [(0.5 * d2.max(MIN_NEIGHBOUR_DISTANCE2).ln()) as f32; 3])
            .collect();
        let means: Vec<f32> = init.positions.iter().flatten().map(|&v| v as f32).collect();
        let dc: Vec<f32> = init.colors.iter().map(|&v| ((v as f64 - 0.5) / SH_C0) as f32).collect();
        let (n, c) = (n as i64, c as i64);
        let rest = sh_coeffs(max_sh_degree) as i64 - 1;
        let logit = (INITIAL_OPACITY / (1.0 - INITIAL_OPACITY)).ln();
        let params = [
            Tensor::from_slice(&means).view([n, 3]),
            Tensor::from_slice(&dc).view([n, 1, c]),
            Tensor::zeros([n, rest, c], (Kind::Float, Device::Cpu)),
            Tensor::full([n], logit, (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&log_scales).view([n, 3]),
            Tensor::from_slice(&[1f32, 0.0, 0.0, 0.0]).view([1, 4]).repeat([n, 1]),
        ];
        Ok(Self::from_tensors(params, max_sh_degree))
    }

    fn from_tensors(params: [Tensor; 6], max_sh_degree: usize) -> Self {
        let [means, dc, rest, opacity, scales, quats] = params.map(|t| t.detach());
        let sh = Tensor::cat(&[&dc, &rest], 1);
        Self::from_rows([means, sh, opacity, scales, quats], max_sh_degree)
    }

    /// A field from its rows in the order of [`GaussianField::rows`]; the SH tensor becomes the storage.
    fn from_rows(rows: [Tensor; 5], max_sh_degree: usize) -> Self {
        let [means, sh, opacity, scales, quats] = rows.map(|t| t.detach());
        let sh = sh.contiguous();
        let (dc, rest) = (sh.narrow(1, 0, 1), sh.narrow(1, 1, sh.size()[1] - 1));
        GaussianField {
            params: [means, dc, rest, opacity, scales, quats].map(|t| t.set_requires_grad(true)),
            sh,
            max_sh_degree,
        }
    }

    /// The parameters as five row tensors, detached, without copies: means, SH `[N, K, C]` (both groups),
    /// opacity logits, log-scales, quaternions. Densification works on these.
    pub(crate) fn rows(&self) -> [Tensor; 5] {
        let [means, _, _, opacity, scales, quats] = &self.params;
        [means, &self.sh, opacity, scales, quats].map(Tensor::detach)
    }

    /// Replaces every parameter with rows in the order of [`GaussianField::rows`].
    pub(crate) fn replace_rows(&mut self, rows: [Tensor; 5]) {
        *self = Self::from_rows(rows, self.max_sh_degree);
    }

    pub fn len(&self) -> usize {
        self.params[0].size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first parameter group (a name of [`GROUPS`]) holding a NaN or an infinity, if any.
    pub fn non_finite_group(&self) -> Option<&'static str> {
        let _guard = tch::no_grad_guard();
        self.params
            .iter()
            .zip(GROUPS)
            .find(|(param, _)| !bool::try_from(param.isfinite().all()).unwrap_or(false))
            .map(|(_, group)| group)
    }

    pub fn channels(&self) -> usize {
        self.params[1].size()[2] as usize
    }

    pub fn means(&self) -> &Tensor {
        &self.params[0]
    }

    pub fn opacity_logits(&self) -> &Tensor {
        &self.params[3]
    }

    pub fn log_scales(&self) -> &Tensor {
        &self.params[4]
    }

    pub fn quats(&self) -> &Tensor {
        &self.params[5]
    }

    /// The field as the rasterizer takes it; the SH halves are joined by a differentiable `cat`, so gradients
    /// reach both groups.
    pub fn gaussians(&self) -> Gaussians {
        let [means, dc, rest, opacity, scales, quats] = &self.params;
        Gaussians {
            means: means.shallow_clone(),
            log_scales: scales.shallow_clone(),
            quats: quats.shallow_clone(),
            opacity_logits: opacity.shallow_clone(),
            colors: Tensor::cat(&[dc, rest], 1),
        }
    }

    /// The same field without gradients, for rendering only.
    pub fn detached(&self) -> Gaussians {
        let [means, _, _, opacity, scales, quats] = &self.params;
        Gaussians {
            means: means.detach(),
            log_scales: scales.detach(),
            quats: quats.detach(),
            opacity_logits: opacity.detach(),
            colors: self.sh.detach(),
        }
    }

    /// The field as the trainer renders it: the SH storage itself as the colours, without a copy. Tch autograd
    /// does not reach the SH groups from these colours; the trainer takes the kernel's gradients instead
    /// ([`crate::Rendered::gradients`]).
    pub(crate) fn render_inputs(&self) -> Gaussians {
        let [means, _, _, opacity, scales, quats] = &self.params;
        Gaussians {
            means: means.shallow_clone(),
            log_scales: scales.shallow_clone(),
            quats: quats.shallow_clone(),
            opacity_logits: opacity.shallow_clone(),
            colors: self.sh.shallow_clone(),
        }
    }

    /// Replaces every parameter (after densification), keeping them leaves that require grad.
    pub(crate) fn replace(&mut self, params: [Tensor; 6]) {
        *self = Self::from_tensors(params, self.max_sh_degree);
    }

    /// Writes the field as a safetensors checkpoint, one tensor per group.
    pub fn save(&self, path: &Path) -> Result<()> {
        let contiguous: Vec<Tensor> = self.params.iter().map(|p| p.detach().contiguous()).collect();
        let tensors: Vec<(&str, &Tensor)> = GROUPS.iter().copied().zip(contiguous.iter()).collect();
        let metadata = HashMap::from([("max_sh_degree".to_string(), self.max_sh_degree.to_string())]);
        write_tch_shard(path, &tensors, &metadata).map_err(|e| SplatError::Io(e.to_string()))
    }

    /// Reads a checkpoint written by [`GaussianField::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let io = |e: lrf_formats::FormatError| SplatError::Io(e.to_string());
        let reader = ShardReader::open(path).map_err(io)?;
        let max_sh_degree = reader
            .metadata()
            .and_then(|m| m.get("max_sh_degree"))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d <= MAX_SH_DEGREE)
            .ok_or_else(|| SplatError::Io(format!("{}: no valid max_sh_degree in its metadata", path.display())))?;
        let mut tensors = Vec::with_capacity(GROUPS.len());
        for name in GROUPS {
            tensors.push(reader.tensor(name).map_err(io)?.to_kind(Kind::Float));
        }
        let params: [Tensor; 6] = tensors.try_into().expect("one tensor per group");
        let field = Self::from_tensors(params, max_sh_degree);
        field
            .gaussians()
            .layout(None)
            .map_err(|e| SplatError::Io(format!("{}: {e}", path.display())))?;
        Ok(field)
    }

    /// The field in the 3DGS PLY layout.
    pub fn to_ply(&self) -> Result<GaussianPly> {
        let g = self.detached();
        let k = sh_coeffs(self.max_sh_degree);
        Ok(GaussianPly {
            means: crate::render::to_host(&g.means)?,
            log_scales: crate::render::to_host(&g.log_scales)?,
            quats: crate::render::to_host(&g.quats)?,
            opacity_logits: crate::render::to_host(&g.opacity_logits)?,
            colors: crate::render::to_host(&g.colors)?,
            sh_coeffs: k,
            channels: self.channels(),
        })
    }
}

/// For each point, the mean squared distance to its three nearest other points (3DGS's `distCUDA2`).
fn mean_neighbor_distance2(points: &[[f64; 3]]) -> Result<Vec<f64>> {
    let wanted = (points.len() - 1).min(3);
    if wanted == 0 {
        return Ok(vec![MIN_NEIGHBOUR_DISTANCE2; points.len()]);
    }
    let tree: ImmutableKdTree<f64, 3> = ImmutableKdTree::new_from_slice(points)
        .map_err(|e| SplatError::Shape(format!("cannot index the initial points: {e}")))?;
    let found = tree
        .query_batch(points)
        .nearest_n::<SquaredEuclidean<f64>>(NonZero::new(wanted + 1).expect("at least one"))
        .execute();
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, neighbors)| {
            // The point itself is among the results (distance 0); a duplicate point may stand in its place.
            let mut own = false;
            let distances = neighbors.iter().filter(|n| {
                let is_self = !own && n.item as usize == i;
                own |= is_self;
                !is_self
            });
            distances.take(wanted).map(|n| n.distance).sum::<f64>() / wanted as f64
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over every pair: the reference the k-d tree must agree with.
    fn brute_force(points: &[[f64; 3]]) -> Vec<f64> {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut d: Vec<f64> = points
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, q)| (0..3).map(|a| (p[a] - q[a]).powi(2)).sum())
                    .collect();
                d.sort_by(f64::total_cmp);
                d.iter().take(3).sum::<f64>() / d.len().min(3) as f64
            })
            .collect()
    }

    #[test]
    fn neighbor_distances_match_brute_force_including_duplicates_and_outliers() {
        let mut points: Vec<[f64; 3]> = (0..500)
            .map(|i| {
                let t = i as f64;
                [(t * 0.37).sin() * 2.0, (t * 0.11).cos(), (t * 0.05).fract() * 3.0]
            })
            .collect();
        points.push(points[7]);
        points.push([1e4, -3e3, 50.0]);
        let tree = mean_neighbor_distance2(&points).unwrap();
        for (i, (a, b)) in tree.iter().zip(brute_force(&points)).enumerate() {
            assert!((a - b).abs() <= 1e-12 * b.max(1.0), "point {i}: {a} vs {b}");
        }
    }

    #[test]
    fn initial_field_renders_the_point_colors_and_round_trips_through_a_checkpoint() {
        let positions = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]];
        let colors: Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
        let field = GaussianField::from_points(
            &PointInit {
                positions: &positions,
                colors: &colors,
                channels: 2,
            },
            2,
        )
        .unwrap();
        assert_eq!((field.len(), field.channels()), (4, 2));
        let dc = Vec::<f32>::try_from(field.params[1].detach().reshape([-1])).unwrap();
        for (value, color) in dc.iter().zip(&colors) {
            assert!(((*value as f64) * SH_C0 + 0.5 - *color as f64).abs() < 1e-6);
        }
        // Point 3's neighbours are at squared distances 4, 5, 5: mean 14/3.
        let scale = Vec::<f32>::try_from(field.log_scales().detach().view([-1])).unwrap()[9];
        assert!((scale as f64 - 0.5 * (14.0f64 / 3.0).ln()).abs() < 1e-6);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("field.safetensors");
        field.save(&path).unwrap();
        let back = GaussianField::load(&path).unwrap();
        assert_eq!(back.max_sh_degree, 2);
        for (a, b) in field.params.iter().zip(&back.params) {
            assert!(back.params.iter().all(Tensor::requires_grad));
            assert_eq!(a.detach(), b.detach());
        }
    }

    #[test]
    fn bad_initializations_are_errors() {
        let positions = [[0.0; 3]; 2];
        let init = |colors: &[f32], channels| {
            GaussianField::from_points(
                &PointInit {
                    positions: &positions,
                    colors,
                    channels,
                },
                1,
            )
        };
        assert!(init(&[0.0; 3], 2).is_err());
        assert!(init(&[], 0).is_err());
        let empty = GaussianField::from_points(
            &PointInit {
                positions: &[],
                colors: &[],
                channels: 3,
            },
            0,
        );
        assert!(empty.is_err());
    }
}
