//! The tch-level entry point training uses. `render` picks the implementation by device, returns the image as a
//! leaf tensor that requires grad; after `loss.backward()` has filled its gradient, [`Rendered::backward`] runs
//! the rasterizer's own backward and accumulates the Gaussians' gradients through tch, so an optimiser sees
//! ordinary `.grad()`s (and any graph that produced the Gaussian tensors is followed further).

use crate::cpu::{Frame, GaussianGrads, PassTimes, rasterize, rasterize_backward};
use crate::error::{Result, SplatError};
use crate::gaussians::Gaussians;
use crate::options::{ColorLayout, RenderOptions};
use crate::real::Real;
use crate::tiling::GaussianSlices;
use lrf_formats::Camera;
use tch::{Device, Kind, Tensor};

/// A rendered view. Tensors are on the Gaussians' device, in their float kind.
pub struct Rendered {
    /// `[C, H, W]`, background included; requires grad when any Gaussian tensor does.
    pub image: Tensor,
    /// `[H, W]` accumulated opacity; requires grad like `image`.
    pub alpha: Tensor,
    /// `[H, W]` expected depth; not differentiable.
    pub depth: Tensor,
    /// `[N]` i32 screen radius in pixels, 0 when culled.
    pub radii: Tensor,
    /// `[N]` bool: composited into at least one pixel.
    pub visible: Tensor,
    /// The CPU kernel's phases (not measured on CUDA, whose kernels run asynchronously).
    pub kernel_times: Option<PassTimes>,
    state: Box<dyn Backward>,
}

/// Densification statistics from one backward pass.
#[derive(Debug)]
pub struct ScreenGradients {
    /// `[N]` ‖∂L/∂mean2d‖ in pixels.
    pub mean2d_grad_norm: Tensor,
    /// `[N]` ‖∂L/∂mean2d‖ in NDC units.
    pub mean2d_grad_norm_ndc: Tensor,
    /// The CPU kernel's phases; the rest of [`Rendered::backward`] hands the gradients to tch.
    pub kernel_times: Option<PassTimes>,
}

/// Renders Gaussians seen by `camera`.
pub fn render(gaussians: &Gaussians, camera: &Camera, options: &RenderOptions) -> Result<Rendered> {
    let layout = gaussians.layout(options.sh_degree)?;
    match (gaussians.means.device(), gaussians.means.kind()) {
        (Device::Cpu, Kind::Float) => render_cpu::<f32>(gaussians, layout, camera, options),
        (Device::Cpu, _) => render_cpu::<f64>(gaussians, layout, camera, options),
        // The CUDA kernel, or an error saying the build lacks the `cuda` feature.
        (Device::Cuda(_), _) => crate::cuda::render(gaussians, layout, camera, options),
        (device, _) => Err(SplatError::Unsupported(format!("rendering on {device:?}"))),
    }
}

impl Rendered {
    /// A rendered view from an implementation's outputs and its backward state.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn from_parts(
        image: Tensor,
        alpha: Tensor,
        depth: Tensor,
        radii: Tensor,
        visible: Tensor,
        state: Box<dyn Backward>,
    ) -> Self {
        Rendered {
            image,
            alpha,
            depth,
            radii,
            visible,
            kernel_times: None,
            state,
        }
    }

    /// Backpropagates the gradients that `image` and `alpha` received into the Gaussian tensors. Errors when
    /// neither has a gradient.
    pub fn backward(&self) -> Result<ScreenGradients> {
        let (screen, gradients) = self.gradients()?;
        let gradients = match gradients {
            GaussianGradients::Host(grads) => grads.parameters().map(|values| Tensor::from_slice(&values)),
            GaussianGradients::Tensors(tensors) => tensors,
        };
        backward_into_params(
            self.state
                .tensors()
                .iter()
                .zip(gradients)
                .filter(|(param, _)| param.requires_grad())
                .map(|(param, grad)| (param, grad.view(param.size().as_slice()))),
        );
        Ok(screen)
    }

    /// The gradients of the loss with respect to the five Gaussian tensors rendered, from those `image` and
    /// `alpha` received, without touching tch autograd: a trainer whose Gaussians are its own leaves hands them
    /// to its optimiser directly, which saves passes over the SH coefficients (hundreds of MB at C = 32).
    pub fn gradients(&self) -> Result<(ScreenGradients, GaussianGradients)> {
        let grad = |t: &Tensor| {
            let g = t.grad();
            g.defined().then_some(g)
        };
        let (v_image, v_alpha) = (grad(&self.image), grad(&self.alpha));
        if v_image.is_none() && v_alpha.is_none() {
            return Err(SplatError::NoUpstreamGradient);
        }
        let v_image = v_image.unwrap_or_else(|| self.image.zeros_like());
        self.state.gradients(&v_image, v_alpha.as_ref())
    }
}

/// The Gaussians' gradients from one backward, in the order of [`Gaussians::tensors`].
pub enum GaussianGradients {
    /// The CPU kernel's f32 arrays, flat and row-major (the colours factored).
    Host(Box<GaussianGrads<f32>>),
    /// Tensors on the Gaussians' device, each shaped like its Gaussian tensor.
    Tensors([Tensor; 5]),
}

pub(crate) trait Backward {
    fn gradients(&self, v_image: &Tensor, v_alpha: Option<&Tensor>) -> Result<(ScreenGradients, GaussianGradients)>;
    /// The tensors rendered, in the order of [`Gaussians::tensors`].
    fn tensors(&self) -> &[Tensor; 5];
}

/// The Gaussians' values on the host, the tensors their gradients flow back into, and those tensors' versions at
/// render time, so a backward after an in-place change is refused rather than silently wrong.
struct CpuState<R> {
    host: [HostData<R>; 5],
    layout: ColorLayout,
    camera: Camera,
    options: RenderOptions,
    frame: Frame<R>,
    tensors: [Tensor; 5],
    versions: [Option<i64>; 5],
}

/// The tensor's in-place modification counter (inference-mode tensors have none).
pub(crate) fn version(t: &Tensor) -> Option<i64> {
    t.f_internal_version().ok()
}

pub(crate) fn to_host<R: Real>(t: &Tensor) -> Result<Vec<R>> {
    Ok(Vec::<R>::try_from(t.detach().to_kind(R::KIND).contiguous().view([-1]))?)
}

/// A tensor's values as a host slice: the tensor's own memory when it already is a contiguous CPU tensor of the
/// kernel's kind (training's case: no copy of parameters that can take hundreds of MB), else a converted copy.
enum HostData<R> {
    /// A detached handle that shares the storage and keeps it alive.
    Shared(Tensor),
    Copied(Vec<R>),
}

impl<R: Real> HostData<R> {
    fn of(t: &Tensor) -> Result<Self> {
        let shareable = t.device() == Device::Cpu && t.kind() == R::KIND && t.is_contiguous();
        Ok(if shareable {
            HostData::Shared(t.detach())
        } else {
            HostData::Copied(to_host(t)?)
        })
    }

    fn as_slice(&self) -> &[R] {
        match self {
            HostData::Shared(t) if t.numel() > 0 => {
                // SAFETY: `t` is a contiguous CPU tensor of element type R (checked in `of`), so its `numel`
                // elements lie initialised from `data_ptr`, which is aligned for R; the storage lives as long as
                // `t`, which the returned borrow cannot outlive.
                unsafe { std::slice::from_raw_parts(t.data_ptr() as *const R, t.numel()) }
            }
            HostData::Shared(_) => &[],
            HostData::Copied(v) => v,
        }
    }
}

fn slices<R: Real>(host: &[HostData<R>; 5], layout: ColorLayout) -> GaussianSlices<'_, R> {
    let [means, log_scales, quats, opacity_logits, colors] = host.each_ref().map(HostData::as_slice);
    GaussianSlices {
        means,
        log_scales,
        quats,
        opacity_logits,
        colors,
        layout,
    }
}

fn render_cpu<R: Real>(
    g: &Gaussians,
    layout: ColorLayout,
    camera: &Camera,
    options: &RenderOptions,
) -> Result<Rendered> {
    let tensors = g.tensors().map(Tensor::shallow_clone);
    let versions = tensors.each_ref().map(version);
    let [means, log_scales, quats, opacity_logits, colors] = tensors.each_ref().map(HostData::<R>::of);
    let host = [means?, log_scales?, quats?, opacity_logits?, colors?];
    let frame = rasterize(&slices(&host, layout), camera, options)?;
    let state = CpuState {
        host,
        layout,
        camera: camera.clone(),
        options: options.clone(),
        frame,
        tensors,
        versions,
    };
    let f = &state.frame;
    let (c, h, w) = (f.channels as i64, f.height as i64, f.width as i64);
    let trainable = g.tensors().iter().any(|t| t.requires_grad());
    let image = Tensor::from_slice(&f.image)
        .view([c, h, w])
        .set_requires_grad(trainable);
    let alpha = Tensor::from_slice(&f.alpha).view([h, w]).set_requires_grad(trainable);
    Ok(Rendered {
        image,
        alpha,
        depth: Tensor::from_slice(&f.depth).view([h, w]),
        radii: Tensor::from_slice(&f.radii),
        visible: Tensor::from_slice(&f.visible.iter().map(|&v| v as u8).collect::<Vec<_>>()).to_kind(Kind::Bool),
        kernel_times: Some(f.times),
        state: Box::new(state),
    })
}

impl<R: Real> Backward for CpuState<R> {
    fn gradients(&self, v_image: &Tensor, v_alpha: Option<&Tensor>) -> Result<(ScreenGradients, GaussianGradients)> {
        if self.tensors.each_ref().map(version) != self.versions {
            return Err(SplatError::Shape(
                "Gaussian tensors were modified in place between render and backward".into(),
            ));
        }
        let v_image = HostData::<R>::of(v_image)?;
        let v_alpha = v_alpha.map(HostData::<R>::of).transpose()?;
        let grads = rasterize_backward(
            &slices(&self.host, self.layout),
            &self.camera,
            &self.options,
            &self.frame,
            v_image.as_slice(),
            v_alpha.as_ref().map(HostData::as_slice),
        )?;
        let screen = ScreenGradients {
            mean2d_grad_norm: Tensor::from_slice(&grads.mean2d_grad_norm),
            mean2d_grad_norm_ndc: Tensor::from_slice(&grads.mean2d_grad_norm_ndc),
            kernel_times: Some(grads.times),
        };
        // f32 arrays go out as they are; f64 ones become tensors of the rendered tensors' kind.
        let grads: Box<dyn std::any::Any> = Box::new(grads);
        let gradients = match grads.downcast::<GaussianGrads<f32>>() {
            Ok(grads) => GaussianGradients::Host(grads),
            Err(grads) => {
                let grads = grads
                    .downcast::<GaussianGrads<R>>()
                    .expect("the kernel's own gradients");
                let parts = grads.parameters();
                let tensors = self.tensors.each_ref();
                GaussianGradients::Tensors(std::array::from_fn(|k| {
                    Tensor::from_slice(&parts[k])
                        .view(tensors[k].size().as_slice())
                        .to_kind(tensors[k].kind())
                }))
            }
        };
        Ok((screen, gradients))
    }

    fn tensors(&self) -> &[Tensor; 5] {
        &self.tensors
    }
}

/// Hands a kernel's gradients to tch autograd: Σ ⟨param, grad⟩ has exactly `grad` as its gradient with respect
/// to each param, so one tch backward accumulates them all into `.grad()` and on through whatever produced the
/// params. Pairs are (param, its gradient), for params that require grad.
pub(crate) fn backward_into_params<'a>(pairs: impl IntoIterator<Item = (&'a Tensor, Tensor)>) {
    let surrogate = pairs
        .into_iter()
        .map(|(param, grad)| (param * grad.to_kind(param.kind())).sum(param.kind()))
        .reduce(|a, b| a + b);
    if let Some(s) = surrogate {
        s.backward();
    }
}
