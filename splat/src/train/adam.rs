//! Adam with one state per parameter group whose rows can be appended, selected and zeroed, because
//! densification adds and removes Gaussians mid-training (tch's optimisers hide their state).

use tch::{Kind, Tensor};

/// Adam as 3DGS configures it: β = (0.9, 0.999), ε = 1e-15.
pub struct Adam {
    groups: Vec<Moments>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// One group's first and second moments and step count (per group, as torch's Adam keeps it).
struct Moments {
    first: Tensor,
    second: Tensor,
    step: i64,
}

impl Adam {
    /// Zero state for parameters shaped like `params`.
    pub fn new(params: &[Tensor]) -> Self {
        Adam {
            groups: params
                .iter()
                .map(|p| Moments {
                    first: p.detach().zeros_like(),
                    second: p.detach().zeros_like(),
                    step: 0,
                })
                .collect(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-15,
        }
    }

    /// One step for group `group` with learning rate `lr`, from the parameter's `.grad()`. With `rows`, only
    /// those rows (Gaussians) are updated, moments included: Gaussians that received no gradient keep their
    /// state instead of drifting on stale momentum.
    pub fn step(&mut self, group: usize, param: &Tensor, lr: f64, rows: Option<&Tensor>) {
        let grad = param.grad();
        if !grad.defined() {
            return;
        }
        let state = &mut self.groups[group];
        state.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let correction1 = 1.0 - b1.powi(state.step as i32);
        let correction2 = 1.0 - b2.powi(state.step as i32);
        let _guard = tch::no_grad_guard();
        match rows {
            None => {
                let fused = [param, &grad, &state.first, &state.second]
                    .iter()
                    .all(|t| t.device() == tch::Device::Cpu && t.kind() == Kind::Float && t.is_contiguous())
                    && grad.numel() == param.numel();
                if fused {
                    let step = FusedStep {
                        b1,
                        b2,
                        correction1,
                        correction2,
                        eps: self.eps,
                        lr,
                    };
                    // SAFETY: all four are contiguous f32 CPU tensors of `numel` elements (checked above), distinct
                    // storages (the moments are our own, the gradient is not the parameter), alive for the call.
                    unsafe { step.apply(param, &grad, &state.first, &state.second) };
                } else {
                    let _ = state
                        .first
                        .f_mul_scalar_(b1)
                        .and_then(|mut m| m.f_add_(&(&grad * (1.0 - b1))));
                    let _ = state
                        .second
                        .f_mul_scalar_(b2)
                        .and_then(|mut v| v.f_addcmul_(&grad, &(&grad * (1.0 - b2))));
                    let update = (&state.first / correction1) / ((&state.second / correction2).sqrt() + self.eps) * lr;
                    let mut param = param.shallow_clone();
                    let _ = param.f_sub_(&update);
                }
            }
            Some(rows) => {
                let grad = grad.index_select(0, rows);
                let first = state.first.index_select(0, rows) * b1 + &grad * (1.0 - b1);
                let second = state.second.index_select(0, rows) * b2 + &grad * &grad * (1.0 - b2);
                let update = (&first / correction1) / ((&second / correction2).sqrt() + self.eps) * lr;
                let _ = state.first.f_index_copy_(0, rows, &first);
                let _ = state.second.f_index_copy_(0, rows, &second);
                let mut param = param.shallow_clone();
                let _ = param.f_index_add_(0, rows, &(-update));
            }
        }
    }

    /// Keeps the state rows `rows` (a `[M]` i64 index) of every group, in that order.
    pub fn select_rows(&mut self, rows: &Tensor) {
        for state in &mut self.groups {
            state.first = state.first.index_select(0, rows);
            state.second = state.second.index_select(0, rows);
        }
    }

    /// Appends `count` rows of zero state to every group (new Gaussians start without momentum).
    pub fn append_rows(&mut self, count: i64) {
        for state in &mut self.groups {
            let mut shape = state.first.size();
            shape[0] = count;
            let zeros = Tensor::zeros(&shape, (Kind::Float, state.first.device()));
            state.first = Tensor::cat(&[&state.first, &zeros], 0);
            state.second = Tensor::cat(&[&state.second, &zeros], 0);
        }
    }

    /// Zeroes one group's moments (3DGS does this for opacities when it resets them).
    pub fn reset_group(&mut self, group: usize) {
        let state = &mut self.groups[group];
        let _ = state.first.f_zero_();
        let _ = state.second.f_zero_();
    }
}

/// One dense Adam update done in a single multithreaded pass over parameter, gradient and moments: libtorch
/// spends about ten single-threaded passes on it, which dominated fits of 32-channel SH fields (perf).
struct FusedStep {
    b1: f64,
    b2: f64,
    correction1: f64,
    correction2: f64,
    eps: f64,
    lr: f64,
}

impl FusedStep {
    /// # Safety
    /// The four tensors must be contiguous f32 CPU tensors with the same element count, in distinct storages.
    unsafe fn apply(&self, param: &Tensor, grad: &Tensor, first: &Tensor, second: &Tensor) {
        use rayon::prelude::*;
        let n = param.numel();
        if n == 0 {
            return;
        }
        let (p, g, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(param.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts(grad.data_ptr() as *const f32, n),
                std::slice::from_raw_parts_mut(first.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(second.data_ptr() as *mut f32, n),
            )
        };
        let (b1, b2) = (self.b1 as f32, self.b2 as f32);
        let eps = self.eps as f32;
        // libtorch's order of operations, so the two implementations round alike.
        let (step_size, sqrt_c2) = ((self.lr / self.correction1) as f32, (self.correction2 as f32).sqrt());
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let gi = g[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] -= step_size * m[i] / (v[i].sqrt() / sqrt_c2 + eps);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, OptimizerConfig};

    /// tch's own Adam (libtorch's implementation) is the reference for the dense update.
    #[test]
    fn dense_steps_match_libtorchs_adam() {
        tch::manual_seed(3);
        let start = Tensor::randn([5, 3], (Kind::Float, tch::Device::Cpu));
        let target = Tensor::randn([5, 3], (Kind::Float, tch::Device::Cpu));
        let ours = start.copy().set_requires_grad(true);
        let mut adam = Adam::new(std::slice::from_ref(&ours));
        adam.eps = 1e-8;
        let store = nn::VarStore::new(tch::Device::Cpu);
        let theirs = store.root().var_copy("x", &start);
        let mut reference = nn::Adam::default().build(&store, 0.01).unwrap();
        for _ in 0..20 {
            let loss = (&ours - &target).square().sum(Kind::Float);
            loss.backward();
            adam.step(0, &ours, 0.01, None);
            let _ = ours.grad().zero_();
            reference.backward_step(&(&theirs - &target).square().sum(Kind::Float));
        }
        let diff = (&ours - &theirs).abs().max().double_value(&[]);
        // Fused and libtorch's separate passes round differently: 20 steps of lr 0.01 agree to 1e-3 of a step.
        assert!(diff < 1e-5, "max difference {diff}");
    }

    #[test]
    fn sparse_steps_leave_other_rows_and_their_moments_untouched() {
        let param = Tensor::ones([4, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut adam = Adam::new(std::slice::from_ref(&param));
        (&param * 2.0).sum(Kind::Float).backward();
        let rows = Tensor::from_slice(&[1i64, 3]);
        adam.step(0, &param, 0.1, Some(&rows));
        let values = Vec::<f32>::try_from(param.detach().view([-1])).unwrap();
        // Adam's first step moves each updated entry by lr (sign of the gradient).
        assert_eq!(values, [1.0, 1.0, 0.9, 0.9, 1.0, 1.0, 0.9, 0.9]);
        let first = Vec::<f32>::try_from(adam.groups[0].first.view([-1])).unwrap();
        assert_eq!(first, [0.0, 0.0, 0.2, 0.2, 0.0, 0.0, 0.2, 0.2]);
        adam.append_rows(2);
        adam.select_rows(&Tensor::from_slice(&[3i64, 4]));
        let first = Vec::<f32>::try_from(adam.groups[0].first.view([-1])).unwrap();
        assert!(first[..2].iter().all(|&v| (v - 0.2).abs() < 1e-6), "{first:?}");
        assert_eq!(first[2..], [0.0, 0.0]);
    }
}
