//! Adam with one state per parameter group whose rows can be appended, selected and zeroed, because
//! densification adds and removes Gaussians mid-training (tch's optimisers hide their state).

use std::borrow::Cow;

use tch::{Kind, Tensor};

use crate::cpu::ColorGrads;
use lrf_simd::{SimdTask, dispatch};

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
                // Contiguous whatever the parameter's layout (the SH groups are views with gaps).
                .map(|p| Moments {
                    first: Tensor::zeros(p.size(), (p.kind(), p.device())),
                    second: Tensor::zeros(p.size(), (p.kind(), p.device())),
                    step: 0,
                })
                .collect(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-15,
        }
    }

    /// One step for group `group` with learning rate `lr`. With `rows`, only those rows (Gaussians) are updated,
    /// moments included: Gaussians that received no gradient keep their state instead of drifting on stale
    /// momentum.
    pub fn step(&mut self, group: usize, param: &Tensor, grad: Gradient<'_>, lr: f64, rows: Option<&Tensor>) {
        let state = &mut self.groups[group];
        state.step += 1;
        if param.numel() == 0 {
            return;
        }
        let (b1, b2) = (self.beta1, self.beta2);
        let correction1 = 1.0 - b1.powi(state.step as i32);
        let correction2 = 1.0 - b2.powi(state.step as i32);
        let _guard = tch::no_grad_guard();
        let count = param.size().first().copied().unwrap_or(0);
        let host = |t: &Tensor| t.device() == tch::Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
        let param_rows = ParamRows::of(param);
        if let (None, Some(param_rows), true) = (rows, param_rows, host(&state.first) && host(&state.second)) {
            let row_len = param_rows.row_len;
            let grad_rows = match &grad {
                Gradient::Host(g) => Some(*g),
                Gradient::Tensor(t) if host(t) && t.numel() == param.numel() => Some(GradientRows::Strided {
                    // SAFETY: a contiguous f32 CPU tensor holds `numel` initialised values from `data_ptr`; the
                    // slice lives within this call, while `grad` keeps the tensor alive.
                    data: unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) },
                    stride: row_len,
                    offset: 0,
                }),
                Gradient::Tensor(_) => None,
            };
            if let Some(grad_rows) = grad_rows.filter(|g| g.covers(count as usize, row_len)) {
                let step = FusedStep {
                    b1,
                    b2,
                    correction1,
                    correction2,
                    eps: self.eps,
                    lr,
                };
                // SAFETY: the parameter's rows are disjoint runs of f32 values in its storage (`ParamRows::of`),
                // which no other reference reaches during the call; the moments are our own contiguous f32
                // tensors of `numel` elements; the gradient's rows lie within its slice (`covers`).
                unsafe { step.apply(param_rows, count as usize, grad_rows, &state.first, &state.second) };
                return;
            }
        }
        let grad = grad.to_tensor(param);
        match rows {
            None => {
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

    /// Keeps the state rows `rows` (a `[M]` i64 index) of every group, in that order, followed by `appended`
    /// rows of zero state (new Gaussians start without momentum). Each moment is gathered straight into its
    /// new tensor, so only one moment is held twice at a time.
    pub fn keep_rows(&mut self, rows: &Tensor, appended: i64) {
        let kept = rows.size()[0];
        for state in &mut self.groups {
            for moment in [&mut state.first, &mut state.second] {
                let mut shape = moment.size();
                shape[0] = kept + appended;
                let out = Tensor::zeros(shape.as_slice(), (moment.kind(), moment.device()));
                let _ = moment.index_select_out(&out.narrow(0, 0, kept), 0, rows);
                *moment = out;
            }
        }
    }

    /// Zeroes one group's moments (3DGS does this for opacities when it resets them).
    pub fn reset_group(&mut self, group: usize) {
        let state = &mut self.groups[group];
        let _ = state.first.f_zero_();
        let _ = state.second.f_zero_();
    }
}

/// A parameter's gradient: a tensor shaped like it, or rows of a host array the kernel wrote.
pub(crate) enum Gradient<'a> {
    Tensor(Tensor),
    Host(GradientRows<'a>),
}

/// A parameter's gradient rows, read where the kernel wrote them.
#[derive(Clone, Copy)]
pub(crate) enum GradientRows<'a> {
    /// Row `i` is `data[i·stride + offset ..]`, as long as the parameter's rows.
    Strided {
        data: &'a [f32],
        stride: usize,
        offset: usize,
    },
    /// Row `i` is Gaussian i's colour coefficients from `first` on, formed from their factors as the step
    /// goes: the DC group starts at coefficient 0, the rest of the SH at 1.
    Colors { grads: &'a ColorGrads<f32>, first: usize },
}

impl GradientRows<'_> {
    /// Whether `count` rows of `row_len` values lie within the data.
    fn covers(&self, count: usize, row_len: usize) -> bool {
        match *self {
            GradientRows::Strided { data, stride, offset } => {
                count == 0 || (offset + row_len <= stride && count * stride <= data.len())
            }
            GradientRows::Colors { grads, first } => {
                let c = grads.channels;
                count <= grads.len()
                    && row_len.is_multiple_of(c.max(1))
                    && first * c + row_len <= grads.coefficients * c
            }
        }
    }

    /// Row `row`'s gradient, `len` values: in place, or formed in `scratch`.
    #[inline(always)]
    fn row<'s>(&'s self, row: usize, len: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        match *self {
            GradientRows::Strided { data, stride, offset } => {
                let start = row * stride + offset;
                &data[start..start + len]
            }
            GradientRows::Colors { grads, first } => {
                let scratch = &mut scratch[..len];
                grads.row(row, first, len / grads.channels, scratch);
                scratch
            }
        }
    }
}

impl Gradient<'_> {
    /// The gradient as a tensor shaped like `param`.
    fn to_tensor(&self, param: &Tensor) -> Tensor {
        match self {
            Gradient::Tensor(t) => t.reshape(param.size().as_slice()),
            Gradient::Host(rows) => {
                let count = param.size()[0];
                let row_len = if count == 0 { 0 } else { param.numel() as i64 / count };
                let (values, stride, offset) = match *rows {
                    GradientRows::Strided { data, stride, offset } => (Cow::Borrowed(data), stride, offset),
                    GradientRows::Colors { grads, first } => {
                        let stride = grads.coefficients * grads.channels;
                        (Cow::Owned(grads.dense()), stride, first * grads.channels)
                    }
                };
                Tensor::from_slice(&values[..count as usize * stride])
                    .view([count, stride as i64])
                    .narrow(1, offset as i64, row_len)
                    .to_device(param.device())
                    .to_kind(param.kind())
                    .reshape(param.size().as_slice())
            }
        }
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
    /// `param` must address `count` disjoint rows that nothing else reads or writes during the call; `first`
    /// and `second` must be contiguous f32 CPU tensors of `count` rows; `grad` must cover every row
    /// (`GradientRows::covers`).
    unsafe fn apply(&self, param: ParamRows, count: usize, grad: GradientRows, first: &Tensor, second: &Tensor) {
        use rayon::prelude::*;
        let row_len = param.row_len;
        let n = count * row_len;
        if n == 0 {
            return;
        }
        let (m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(first.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(second.data_ptr() as *mut f32, n),
            )
        };
        // libtorch's order of operations, so the two implementations round alike.
        let constants = AdamConstants {
            b1: self.b1 as f32,
            b2: self.b2 as f32,
            eps: self.eps as f32,
            step_size: (self.lr / self.correction1) as f32,
            sqrt_c2: (self.correction2 as f32).sqrt(),
        };
        let rows_per_chunk = (CHUNK / row_len).max(1);
        let chunk = rows_per_chunk * row_len;
        m.par_chunks_mut(chunk)
            .zip(v.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(c, (m, v))| {
                let rows = m.chunks_mut(row_len).zip(v.chunks_mut(row_len));
                // Where the rows are formed from factors: one contiguous row, so the update vectorises even at
                // C = 3 (runs of 3 values per coefficient made an RGB fit's optimiser 1.5× slower).
                let formed = matches!(grad, GradientRows::Colors { .. });
                let mut scratch = vec![0.0; if formed { row_len } else { 0 }];
                for (r, (m, v)) in rows.enumerate() {
                    let row = c * rows_per_chunk + r;
                    // SAFETY: row < count, and each row is visited by exactly one task (see `apply`).
                    let p = unsafe { param.row(row) };
                    dispatch(AdamRow {
                        param: p,
                        grad: grad.row(row, row_len, &mut scratch),
                        first: m,
                        second: v,
                        constants: &constants,
                    });
                }
            });
    }
}

/// One step's scalars, in f32.
struct AdamConstants {
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    sqrt_c2: f32,
}

/// The update of one row, compiled for the CPU's widest vectors ([`dispatch`]): square roots and divisions
/// are most of its cost, and the baseline build does 4 of them per instruction where AVX-512 does 16. Both
/// round alike (no fused multiply-adds are formed).
struct AdamRow<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    first: &'a mut [f32],
    second: &'a mut [f32],
    constants: &'a AdamConstants,
}

impl SimdTask for AdamRow<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let AdamConstants {
            b1,
            b2,
            eps,
            step_size,
            sqrt_c2,
        } = *self.constants;
        let values = self
            .param
            .iter_mut()
            .zip(self.grad)
            .zip(self.first.iter_mut().zip(self.second.iter_mut()));
        for ((p, &g), (m, v)) in values {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step_size * *m / (v.sqrt() / sqrt_c2 + eps);
        }
    }
}

/// A CPU f32 parameter as rows: row `i` is `row_len` consecutive values from `base + i·stride`. Contiguous
/// tensors qualify, and so do the SH groups, views into one `[N, K, C]` storage.
#[derive(Clone, Copy)]
struct ParamRows {
    base: *mut f32,
    stride: usize,
    row_len: usize,
}

// SAFETY: the pointer is only dereferenced in `FusedStep::apply`, whose tasks write disjoint rows.
unsafe impl Send for ParamRows {}
unsafe impl Sync for ParamRows {}

impl ParamRows {
    /// The rows of `param`, when it is an f32 CPU tensor whose rows are contiguous and do not overlap.
    fn of(param: &Tensor) -> Option<Self> {
        if param.device() != tch::Device::Cpu || param.kind() != Kind::Float || param.dim() == 0 {
            return None;
        }
        let (size, strides) = (param.size(), param.stride());
        let mut expected = 1;
        for d in (1..size.len()).rev() {
            if size[d] != 1 && strides[d] != expected {
                return None;
            }
            expected *= size[d];
        }
        let row_len = expected as usize;
        let stride = if size[0] > 1 { strides[0] } else { expected };
        if stride < expected {
            return None;
        }
        Some(ParamRows {
            base: param.data_ptr() as *mut f32,
            stride: stride as usize,
            row_len,
        })
    }

    /// # Safety
    /// `row` must be a row of the tensor this was made from, alive, and not referenced elsewhere meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, row: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.base.add(row * self.stride), self.row_len) }
    }
}

/// Values per parallel work item of the fused step.
const CHUNK: usize = 1 << 14;

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
            adam.step(0, &ours, Gradient::Tensor(ours.grad()), 0.01, None);
            let _ = ours.grad().zero_();
            reference.backward_step(&(&theirs - &target).square().sum(Kind::Float));
        }
        let diff = (&ours - &theirs).abs().max().double_value(&[]);
        // Fused and libtorch's separate passes round differently: 20 steps of lr 0.01 agree to 1e-3 of a step.
        assert!(diff < 1e-5, "max difference {diff}");
    }

    /// The SH groups are views with gaps into one storage and read their gradient rows from the colour
    /// gradient: the fused step on such a view must move exactly the view's values, as libtorch's Adam moves a
    /// contiguous copy.
    #[test]
    fn fused_steps_on_strided_views_match_libtorchs_adam_and_touch_nothing_else() {
        tch::manual_seed(4);
        let opts = (Kind::Float, tch::Device::Cpu);
        let storage = Tensor::randn([6, 4, 3], opts);
        let before = storage.copy();
        let view = storage.narrow(1, 1, 3).set_requires_grad(true);
        assert!(!view.is_contiguous());
        let mut adam = Adam::new(std::slice::from_ref(&view));
        adam.eps = 1e-8;
        let store = nn::VarStore::new(tch::Device::Cpu);
        let theirs = store.root().var_copy("x", &view.detach().contiguous());
        let mut reference = nn::Adam::default().build(&store, 0.01).unwrap();
        for step in 0..10 {
            // A colour gradient [6, 4·3] of which the view's rows are columns 3..12.
            let colors: Vec<f32> = (0..72).map(|i| ((i * 7 + step * 3) % 11) as f32 - 5.0).collect();
            let rows = GradientRows::Strided {
                data: &colors,
                stride: 12,
                offset: 3,
            };
            adam.step(0, &view, Gradient::Host(rows), 0.01, None);
            let grad = Tensor::from_slice(&colors).view([6, 4, 3]).narrow(1, 1, 3);
            reference.zero_grad();
            (&theirs * &grad).sum(Kind::Float).backward();
            reference.step();
        }
        let diff = (view.detach() - &theirs).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
        assert!(
            storage.narrow(1, 0, 1).equal(&before.narrow(1, 0, 1)),
            "the rows outside the view moved"
        );
        assert!(
            !storage.narrow(1, 1, 3).equal(&before.narrow(1, 1, 3)),
            "the view did not move"
        );
    }

    /// The SH groups step from the kernel's factored colour gradient: bit for bit what they take from the same
    /// gradient expanded, both in the fused step and in the tensor fallback of sparse steps.
    #[test]
    fn factored_colour_gradients_step_as_their_dense_expansion() {
        let (count, coefficients, channels) = (5, 4, 3);
        let values =
            |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + seed) % 13) as f32 / 6.0 - 1.0).collect() };
        let mut grads = ColorGrads {
            basis: values(count * coefficients, 1),
            color: values(count * channels, 5),
            coefficients,
            channels,
        };
        // A Gaussian that received no gradient keeps zero factors.
        grads.basis[2 * coefficients..3 * coefficients].fill(0.0);
        grads.color[2 * channels..3 * channels].fill(0.0);
        let dense = grads.dense();
        let opts = (Kind::Float, tch::Device::Cpu);
        let start = Tensor::randn([count as i64, coefficients as i64, channels as i64], opts);
        for rows in [None, Some(Tensor::from_slice(&[0i64, 3]))] {
            let [factored, expanded] = [0, 1].map(|_| start.copy());
            let groups = |t: &Tensor| [t.narrow(1, 0, 1), t.narrow(1, 1, coefficients as i64 - 1)];
            let mut adams = [&factored, &expanded].map(|t| Adam::new(&groups(t)));
            for _ in 0..3 {
                for (group, first) in [0, 1].into_iter().enumerate() {
                    let from_factors = GradientRows::Colors { grads: &grads, first };
                    let from_dense = GradientRows::Strided {
                        data: &dense,
                        stride: coefficients * channels,
                        offset: first * channels,
                    };
                    let sides = adams
                        .iter_mut()
                        .zip([&factored, &expanded])
                        .zip([from_factors, from_dense]);
                    for ((adam, storage), gradient) in sides {
                        adam.step(
                            group,
                            &groups(storage)[group],
                            Gradient::Host(gradient),
                            0.01,
                            rows.as_ref(),
                        );
                    }
                }
            }
            assert!(
                factored.equal(&expanded),
                "sparse rows {rows:?}: the two forms stepped apart"
            );
            assert!(!factored.equal(&start), "nothing moved");
        }
    }

    #[test]
    fn sparse_steps_leave_other_rows_and_their_moments_untouched() {
        let param = Tensor::ones([4, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut adam = Adam::new(std::slice::from_ref(&param));
        (&param * 2.0).sum(Kind::Float).backward();
        let rows = Tensor::from_slice(&[1i64, 3]);
        adam.step(0, &param, Gradient::Tensor(param.grad()), 0.1, Some(&rows));
        let values = Vec::<f32>::try_from(param.detach().view([-1])).unwrap();
        // Adam's first step moves each updated entry by lr (sign of the gradient).
        assert_eq!(values, [1.0, 1.0, 0.9, 0.9, 1.0, 1.0, 0.9, 0.9]);
        let first = Vec::<f32>::try_from(adam.groups[0].first.view([-1])).unwrap();
        assert_eq!(first, [0.0, 0.0, 0.2, 0.2, 0.0, 0.0, 0.2, 0.2]);
        adam.keep_rows(&Tensor::from_slice(&[3i64]), 1);
        let first = Vec::<f32>::try_from(adam.groups[0].first.view([-1])).unwrap();
        assert!(first[..2].iter().all(|&v| (v - 0.2).abs() < 1e-6), "{first:?}");
        assert_eq!(first[2..], [0.0, 0.0]);
    }
}
