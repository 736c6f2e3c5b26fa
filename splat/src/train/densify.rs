//! Adaptive density control as 3DGS does it: Gaussians whose screen-space position gradient is large are
//! cloned (small ones) or split in two (large ones); nearly transparent or oversized ones are pruned; the
//! optimiser state follows every row.

use tch::{Device, Kind, Tensor};

use super::adam::Adam;
use super::model::GaussianField;

/// Per-Gaussian statistics gathered between two densifications.
pub(crate) struct DensifyStats {
    /// Σ ‖∂L/∂mean2d‖ over the views where the Gaussian was visible.
    grad_sum: Tensor,
    /// Number of such views.
    views: Tensor,
    /// Largest screen radius seen, in pixels.
    pub(crate) max_radius: Tensor,
}

/// What one densification did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DensifyCounts {
    pub cloned: usize,
    pub split: usize,
    pub pruned: usize,
}

/// The thresholds of one densification, in the field's world units.
pub(crate) struct DensifyLimits {
    pub grad_threshold: f64,
    /// Gaussians at most this large (world units) are cloned, larger ones split.
    pub clone_max_scale: f64,
    pub prune_opacity: f64,
    /// Prune Gaussians larger than this in the world (after the first opacity reset, as 3DGS).
    pub prune_world_scale: Option<f64>,
    /// Prune Gaussians whose screen radius exceeded this many pixels.
    pub prune_screen_radius: Option<f64>,
    /// Growth stops at this many Gaussians; the largest gradients go first.
    pub max_gaussians: Option<usize>,
}

/// A split Gaussian becomes two, each scaled by 1/(0.8·2), as 3DGS.
const SPLIT_SCALE_DIVISOR: f64 = 1.6;

impl DensifyStats {
    pub(crate) fn new(count: usize) -> Self {
        let zeros = || Tensor::zeros([count as i64], (Kind::Float, Device::Cpu));
        DensifyStats {
            grad_sum: zeros(),
            views: zeros(),
            max_radius: zeros(),
        }
    }

    /// Adds one view's statistics for the Gaussians it saw (radius > 0).
    pub(crate) fn record(&mut self, grad_norm: &Tensor, radii: &Tensor) {
        let _guard = tch::no_grad_guard();
        let radii = radii.to_kind(Kind::Float);
        let seen = radii.gt(0.0).to_kind(Kind::Float);
        self.grad_sum += grad_norm.to_kind(Kind::Float) * &seen;
        self.views += &seen;
        self.max_radius = self.max_radius.maximum(&radii);
    }

    /// Mean gradient per Gaussian over the views that saw it; 0 for those never seen.
    fn mean_grad(&self) -> Tensor {
        (&self.grad_sum / self.views.clamp_min(1.0)).nan_to_num(0.0, 0.0, 0.0)
    }
}

/// Clones, splits and prunes; returns the counts and leaves `stats` reset for the new set.
pub(crate) fn densify_and_prune(
    field: &mut GaussianField,
    adam: &mut Adam,
    stats: &mut DensifyStats,
    limits: &DensifyLimits,
) -> DensifyCounts {
    let _guard = tch::no_grad_guard();
    let n = field.len() as i64;
    let grad = stats.mean_grad();
    let max_scale = field.log_scales().detach().exp().amax(1, false);
    let mut candidates = grad.ge(limits.grad_threshold);
    if let Some(cap) = limits.max_gaussians {
        candidates = keep_largest(&candidates, &grad, cap.saturating_sub(n as usize) as i64);
    }
    let small = max_scale.le(limits.clone_max_scale);
    let clone_rows = candidates.logical_and(&small).nonzero().view([-1]);
    let split_rows = candidates.logical_and(&small.logical_not()).nonzero().view([-1]);

    // The new rows (clones, then split children) are few; the field's rows are only read, never copied whole
    // more than once: each group's kept rows are gathered straight into a tensor of the final size, so a
    // densification holds at most the old and the new field (and the moments) at once.
    let rows = field.rows();
    let split = split_children(&rows, &split_rows);
    let added_rows: Vec<Tensor> = rows
        .iter()
        .zip(&split)
        .map(|(p, s)| Tensor::cat(&[&p.index_select(0, &clone_rows), s], 0))
        .collect();
    let added = added_rows[0].size()[0];

    // Prune on the grown set: the split parents, then the 3DGS criteria (children and clones are judged too).
    let total = n + added;
    let grown = |k: usize| Tensor::cat(&[&rows[k], &added_rows[k]], 0);
    let mut prune = Tensor::zeros([total], (Kind::Bool, Device::Cpu));
    let _ = prune.index_fill_(0, &split_rows, 1);
    prune = prune.logical_or(&grown(OPACITY).sigmoid().lt(limits.prune_opacity));
    if let Some(limit) = limits.prune_world_scale {
        prune = prune.logical_or(&grown(LOG_SCALES).exp().amax(1, false).gt(limit));
    }
    if let Some(limit) = limits.prune_screen_radius {
        let radius = Tensor::cat(
            &[&stats.max_radius, &Tensor::zeros([added], (Kind::Float, Device::Cpu))],
            0,
        );
        prune = prune.logical_or(&radius.gt(limit));
    }
    // In increasing order: the kept old rows, then the kept new ones, as in the grown set.
    let keep = prune.logical_not().nonzero().view([-1]);
    let pruned = (total - keep.size()[0]) as usize;
    let old_keep = keep.masked_select(&keep.lt(n));
    let new_keep = keep.masked_select(&keep.ge(n)) - n;
    let kept = std::array::from_fn(|k| gather_rows(&rows[k], &old_keep, &added_rows[k], &new_keep));
    drop(rows);
    field.replace_rows(kept);
    adam.keep_rows(&old_keep, new_keep.size()[0]);
    *stats = DensifyStats::new(field.len());
    DensifyCounts {
        cloned: clone_rows.size()[0] as usize,
        split: split_rows.size()[0] as usize,
        // The split parents are replaced, not lost: count only the Gaussians removed by the criteria.
        pruned: pruned - split_rows.size()[0] as usize,
    }
}

/// Positions in [`GaussianField::rows`].
const MEANS: usize = 0;
const OPACITY: usize = 2;
const LOG_SCALES: usize = 3;
const QUATS: usize = 4;

/// `old`'s rows `old_rows` followed by `new`'s rows `new_rows`, written into one tensor of that size.
fn gather_rows(old: &Tensor, old_rows: &Tensor, new: &Tensor, new_rows: &Tensor) -> Tensor {
    let (k_old, k_new) = (old_rows.size()[0], new_rows.size()[0]);
    let mut shape = old.size();
    shape[0] = k_old + k_new;
    let out = Tensor::empty(shape.as_slice(), (old.kind(), old.device()));
    let _ = old.index_select_out(&out.narrow(0, 0, k_old), 0, old_rows);
    let _ = new.index_select_out(&out.narrow(0, k_old, k_new), 0, new_rows);
    out
}

/// `mask` limited to its `budget` entries with the largest `score`.
fn keep_largest(mask: &Tensor, score: &Tensor, budget: i64) -> Tensor {
    let count = mask.sum(Kind::Int64).int64_value(&[]);
    if count <= budget {
        return mask.shallow_clone();
    }
    let masked = score.where_self(mask, &Tensor::from(f32::NEG_INFINITY));
    let (_, top) = masked.topk(budget.max(0), 0, true, false);
    let mut limited = mask.zeros_like();
    let _ = limited.index_fill_(0, &top, 1);
    limited
}

/// Two children per split row: positions sampled from the parent Gaussian, scales divided by 1.6, every other
/// parameter copied. `rows` and the result are in the order of [`GaussianField::rows`].
fn split_children(rows: &[Tensor; 5], split: &Tensor) -> Vec<Tensor> {
    let parents: Vec<Tensor> = rows
        .iter()
        .map(|p| p.index_select(0, split).repeat_interleave_self_int(2, 0, None))
        .collect();
    let scales = parents[LOG_SCALES].exp();
    let offsets = scales.randn_like() * &scales;
    let rotation = rotation_matrices(&parents[QUATS]);
    let means = rotation.matmul(&offsets.unsqueeze(-1)).squeeze_dim(-1) + &parents[MEANS];
    let log_scales = (scales / SPLIT_SCALE_DIVISOR).log();
    vec![
        means,
        parents[1].shallow_clone(),
        parents[OPACITY].shallow_clone(),
        log_scales,
        parents[QUATS].shallow_clone(),
    ]
}

/// `[M, 3, 3]` rotations of unnormalised (w, x, y, z) quaternions.
fn rotation_matrices(quats: &Tensor) -> Tensor {
    let q = quats / quats.norm_scalaropt_dim(2, [1], true);
    let [w, x, y, z] = [0, 1, 2, 3].map(|i| q.select(1, i));
    let rows = [
        [
            1.0 - (&y * &y + &z * &z) * 2.0,
            (&x * &y - &w * &z) * 2.0,
            (&x * &z + &w * &y) * 2.0,
        ],
        [
            (&x * &y + &w * &z) * 2.0,
            1.0 - (&x * &x + &z * &z) * 2.0,
            (&y * &z - &w * &x) * 2.0,
        ],
        [
            (&x * &z - &w * &y) * 2.0,
            (&y * &z + &w * &x) * 2.0,
            1.0 - (&x * &x + &y * &y) * 2.0,
        ],
    ];
    Tensor::stack(&rows.map(|row| Tensor::stack(&row, 1)), 1)
}

#[cfg(test)]
mod tests {
    use super::super::model::PointInit;
    use super::*;

    fn field(scales: &[f32]) -> GaussianField {
        let positions: Vec<[f64; 3]> = (0..scales.len()).map(|i| [i as f64, 0.0, 0.0]).collect();
        let colors = vec![0.5f32; scales.len()];
        let mut field = GaussianField::from_points(
            &PointInit {
                positions: &positions,
                colors: &colors,
                channels: 1,
            },
            1,
        )
        .unwrap();
        let mut params: Vec<Tensor> = field.params.iter().map(|p| p.detach().copy()).collect();
        params[4] = Tensor::from_slice(scales).log().view([-1, 1]).repeat([1, 3]);
        field.replace(params.try_into().unwrap());
        field
    }

    fn limits() -> DensifyLimits {
        DensifyLimits {
            grad_threshold: 1.0,
            clone_max_scale: 0.5,
            prune_opacity: 0.005,
            prune_world_scale: None,
            prune_screen_radius: None,
            max_gaussians: None,
        }
    }

    #[test]
    fn small_gaussians_clone_large_ones_split_and_state_follows_the_rows() {
        let mut field = field(&[0.1, 1.0, 0.1, 1.0]);
        let mut adam = Adam::new(&field.params);
        let mut stats = DensifyStats::new(4);
        // Gaussian 0 (small) and 1 (large) have a mean gradient above 1; 2 and 3 do not.
        stats.record(
            &Tensor::from_slice(&[2.0f32, 3.0, 0.5, 0.0]),
            &Tensor::from_slice(&[1i32, 1, 1, 1]),
        );
        stats.record(
            &Tensor::from_slice(&[9.0f32, 0.0, 9.0, 9.0]),
            &Tensor::from_slice(&[0i32, 1, 0, 0]),
        );
        let counts = densify_and_prune(&mut field, &mut adam, &mut stats, &limits());
        assert_eq!(
            counts,
            DensifyCounts {
                cloned: 1,
                split: 1,
                pruned: 0
            }
        );
        // Kept: 0, 2, 3, the clone of 0, the two children of 1.
        assert_eq!(field.len(), 6);
        let scales = Vec::<f32>::try_from(field.log_scales().detach().exp().select(1, 0)).unwrap();
        let expected = [0.1, 0.1, 1.0, 0.1, 1.0 / 1.6, 1.0 / 1.6];
        for (a, b) in scales.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{scales:?}");
        }
        let means = Vec::<f32>::try_from(field.means().detach().select(1, 0)).unwrap();
        assert_eq!(means[..4], [0.0, 2.0, 3.0, 0.0]);
        assert!(field.params.iter().all(Tensor::requires_grad));
        assert_eq!(stats.views.size(), [6]);
    }

    #[test]
    fn transparent_and_oversized_gaussians_are_pruned_and_the_cap_keeps_the_largest_gradients() {
        let mut field = field(&[0.1, 0.1, 5.0, 0.1]);
        let mut params: Vec<Tensor> = field.params.iter().map(|p| p.detach().copy()).collect();
        params[3] = Tensor::from_slice(&[0.0f32, -10.0, 0.0, 0.0]);
        field.replace(params.try_into().unwrap());
        let mut adam = Adam::new(&field.params);
        let mut stats = DensifyStats::new(4);
        stats.record(
            &Tensor::from_slice(&[0.0f32, 0.0, 0.0, 2.0]),
            &Tensor::from_slice(&[1i32, 1, 1, 1]),
        );
        let mut limits = limits();
        limits.prune_world_scale = Some(1.0);
        limits.max_gaussians = Some(4);
        let counts = densify_and_prune(&mut field, &mut adam, &mut stats, &limits);
        assert_eq!(
            counts,
            DensifyCounts {
                cloned: 0,
                split: 0,
                pruned: 2
            }
        );
        assert_eq!(field.len(), 2);
    }

    #[test]
    fn rotation_matrices_are_orthonormal_and_match_a_known_rotation() {
        let q = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 2.0, 0.3, -0.2, 0.9, 0.1]).view([2, 4]);
        let r = rotation_matrices(&q);
        // (1, 0, 0, 1)/√2 is 90° about z: x → y.
        let x = r.get(0).matmul(&Tensor::from_slice(&[1.0f32, 0.0, 0.0]));
        assert!(
            (x - Tensor::from_slice(&[0.0f32, 1.0, 0.0]))
                .abs()
                .max()
                .double_value(&[])
                < 1e-6
        );
        let identity = r.matmul(&r.transpose(1, 2)) - Tensor::eye(3, (Kind::Float, Device::Cpu));
        assert!(identity.abs().max().double_value(&[]) < 1e-6);
    }
}
