//! The tch-level entry point training uses. `render` picks the implementation by device, returns the image as a
//! leaf tensor that requires grad; after `loss.backward()` has filled its gradient, [`Rendered::backward`] runs
//! the rasterizer's own backward and accumulates the Gaussians' gradients through tch, so an optimiser sees
//! ordinary `.grad()`s (and any graph that produced the Gaussian tensors is followed further).

use crate::cpu::{Frame, rasterize, rasterize_backward};
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
    state: Box<dyn Backward>,
}

/// Densification statistics from one backward pass.
#[derive(Debug)]
pub struct ScreenGradients {
    /// `[N]` ‖∂L/∂mean2d‖ in pixels.
    pub mean2d_grad_norm: Tensor,
    /// `[N]` ‖∂L/∂mean2d‖ in NDC units.
    pub mean2d_grad_norm_ndc: Tensor,
}

/// Renders Gaussians seen by `camera`.
pub fn render(gaussians: &Gaussians, camera: &Camera, options: &RenderOptions) -> Result<Rendered> {
    let layout = gaussians.layout(options.sh_degree)?;
    match (gaussians.means.device(), gaussians.means.kind()) {
        (Device::Cpu, Kind::Float) => render_cpu::<f32>(gaussians, layout, camera, options),
        (Device::Cpu, _) => render_cpu::<f64>(gaussians, layout, camera, options),
        (device, _) => Err(SplatError::Unsupported(format!("rendering on {device:?}"))),
    }
}

impl Rendered {
    /// Backpropagates the gradients that `image` and `alpha` received into the Gaussian tensors. Errors when
    /// neither has a gradient.
    pub fn backward(&self) -> Result<ScreenGradients> {
        let grad = |t: &Tensor| {
            let g = t.grad();
            g.defined().then_some(g)
        };
        let (v_image, v_alpha) = (grad(&self.image), grad(&self.alpha));
        if v_image.is_none() && v_alpha.is_none() {
            return Err(SplatError::NoUpstreamGradient);
        }
        let v_image = v_image.unwrap_or_else(|| self.image.zeros_like());
        self.state.backward(&v_image, v_alpha.as_ref())
    }
}

trait Backward {
    fn backward(&self, v_image: &Tensor, v_alpha: Option<&Tensor>) -> Result<ScreenGradients>;
}

/// The Gaussians copied to host memory once per render, and the tensors their gradients flow back into.
struct CpuState<R> {
    host: [Vec<R>; 5],
    layout: ColorLayout,
    camera: Camera,
    options: RenderOptions,
    frame: Frame<R>,
    tensors: [Tensor; 5],
}

pub(crate) fn to_host<R: Real>(t: &Tensor) -> Result<Vec<R>> {
    Ok(Vec::<R>::try_from(t.detach().to_kind(R::KIND).contiguous().view([-1]))?)
}

fn slices<R: Real>(host: &[Vec<R>; 5], layout: ColorLayout) -> GaussianSlices<'_, R> {
    let [means, log_scales, quats, opacity_logits, colors] = host;
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
    let host: [Vec<R>; 5] = [
        to_host(&g.means)?,
        to_host(&g.log_scales)?,
        to_host(&g.quats)?,
        to_host(&g.opacity_logits)?,
        to_host(&g.colors)?,
    ];
    let frame = rasterize(&slices(&host, layout), camera, options)?;
    let state = CpuState {
        host,
        layout,
        camera: camera.clone(),
        options: options.clone(),
        frame,
        tensors: g.tensors().map(Tensor::shallow_clone),
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
        state: Box::new(state),
    })
}

impl<R: Real> Backward for CpuState<R> {
    fn backward(&self, v_image: &Tensor, v_alpha: Option<&Tensor>) -> Result<ScreenGradients> {
        let v_image = to_host::<R>(v_image)?;
        let v_alpha = v_alpha.map(to_host::<R>).transpose()?;
        let grads = rasterize_backward(
            &slices(&self.host, self.layout),
            &self.camera,
            &self.options,
            &self.frame,
            &v_image,
            v_alpha.as_deref(),
        )?;
        let parts = [
            &grads.means,
            &grads.log_scales,
            &grads.quats,
            &grads.opacity_logits,
            &grads.colors,
        ];
        // Σ ⟨param, grad⟩ has exactly `grad` as its gradient with respect to each param: one tch backward
        // accumulates them all into `.grad()` and on through whatever produced the params.
        let mut surrogate: Option<Tensor> = None;
        for (param, grad) in self.tensors.iter().zip(parts) {
            if !param.requires_grad() {
                continue;
            }
            let grad = Tensor::from_slice(grad).view(param.size().as_slice());
            let term = (param * grad).sum(param.kind());
            surrogate = Some(match surrogate {
                Some(s) => s + term,
                None => term,
            });
        }
        if let Some(s) = surrogate {
            s.backward();
        }
        Ok(ScreenGradients {
            mean2d_grad_norm: Tensor::from_slice(&grads.mean2d_grad_norm),
            mean2d_grad_norm_ndc: Tensor::from_slice(&grads.mean2d_grad_norm_ndc),
        })
    }
}
