//! The CUDA rasterizer's host side (the kernels are in `splat/cuda/`, built by `build.rs` with the `cuda`
//! feature). A frame runs in gsplat's stages, every buffer a tch tensor on the Gaussians' device:
//!
//! 1. `project_forward` (kernel, per Gaussian): cull, project, colour, extent, tile rectangle.
//! 2. Depth order: a stable tch sort of the depths (culled Gaussians sort last as +inf), so compact ids are depth
//!    ranks with ties in Gaussian order, as in the CPU kernel. One read-back: the splat and intersection counts.
//! 3. `emit_intersections` (kernel, per splat): keys `tile << 32 | compact id` at the prefix sum of the tile
//!    counts; a tch sort of the keys gives every tile's list in depth order, and a binary search the lists' ends.
//! 4. `rasterize_forward` (kernel, per tile): the front-to-back blend.
//! 5. Backward: `rasterize_backward` (kernel, per tile) replays the blend and adds each pair's gradient to its
//!    splat (warp sums, then atomics), `project_backward` (kernel, per Gaussian) takes it to the parameters.
//!
//! The same stages also run on CPU tensors with every kernel's per-thread code in host loops
//! (`render_emulated`, built with the `cuda` feature): tests check the kernels' arithmetic, indexing and decisions without a GPU.
//!
//! Unlike the CPU kernel's, the CUDA backward is not deterministic: float atomics add in a varying order.

// Without the `cuda` feature only the host-side checks are compiled (and tested); the rest has no caller.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use crate::error::{Result, SplatError};
use crate::gaussians::Gaussians;
use crate::options::{ColorBasis, ColorLayout, RasterMode, RenderOptions, check_camera};
use crate::render::Rendered;
use crate::sh::{SH_C0, SH_C1, SH_C2, SH_C3};
use lrf_formats::Camera;
use std::ffi::c_void;
use tch::{Device, Kind, Tensor};

/// Most channels the CUDA kernel handles (its rasterize kernels are compiled for 4, 8, 16, 32 and 64 channels;
/// other counts run on the next larger size).
pub const MAX_CHANNELS: usize = 64;
/// Values per splat record and per splat gradient (`LRF_SPLAT_FIELDS`, `LRF_SPLAT_GRAD_FIELDS`).
const SPLAT_FIELDS: i64 = 9;
const SPLAT_GRAD_FIELDS: i64 = 6;

/// `LrfCamera` (splat/cuda/lrf_splat.h): the camera as the CPU kernel's `PinholeCamera` computes it, in f64.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct CameraAbi {
    rotation: [f64; 9],
    translation: [f64; 3],
    center: [f64; 3],
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    lim_x_neg: f64,
    lim_x_pos: f64,
    lim_y_neg: f64,
    lim_y_pos: f64,
    width: i32,
    height: i32,
}

impl CameraAbi {
    /// The camera with the Jacobian clamp limits of `PinholeCamera::new`, computed the same way.
    fn new(camera: &Camera) -> Result<Self> {
        let too_large = |v: u32| i32::try_from(v).is_err();
        if too_large(camera.width) || too_large(camera.height) {
            return Err(SplatError::Camera(format!(
                "{}×{} pixels exceed the CUDA kernel's i32 image size",
                camera.width, camera.height
            )));
        }
        let (w, h) = (camera.width as f64, camera.height as f64);
        let margin_x = crate::constants::FRUSTUM_CLAMP_MARGIN * 0.5 * w / camera.fx;
        let margin_y = crate::constants::FRUSTUM_CLAMP_MARGIN * 0.5 * h / camera.fy;
        let r = camera.rotation;
        Ok(CameraAbi {
            rotation: std::array::from_fn(|k| r.col(k % 3)[k / 3]),
            translation: camera.translation.to_array(),
            center: camera.center().to_array(),
            fx: camera.fx,
            fy: camera.fy,
            cx: camera.cx,
            cy: camera.cy,
            lim_x_neg: camera.cx / camera.fx + margin_x,
            lim_x_pos: (w - camera.cx) / camera.fx + margin_x,
            lim_y_neg: camera.cy / camera.fy + margin_y,
            lim_y_pos: (h - camera.cy) / camera.fy + margin_y,
            width: camera.width as i32,
            height: camera.height as i32,
        })
    }
}

/// `LrfShConstants`: the SH constants of `sh.rs`, handed to the kernels so they are written down once.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ShAbi {
    c0: f64,
    c1: f64,
    c2: [f64; 5],
    c3: [f64; 7],
}

const SH_ABI: ShAbi = ShAbi {
    c0: SH_C0,
    c1: SH_C1,
    c2: SH_C2,
    c3: SH_C3,
};

/// `LrfRaster`: the argument block of every stage; see the header for what each stage reads and writes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RasterAbi {
    dtype: i32,
    on_host: i32,
    device: i32,
    antialiased: i32,
    channels: i32,
    color_stride: i32,
    sh_degree: i32,
    offset_clamp: i32,
    tiles_x: i32,
    tiles_y: i32,
    count: i64,
    visible: i64,
    intersections: i64,
    camera: CameraAbi,
    sh: ShAbi,
    means: *const c_void,
    log_scales: *const c_void,
    quats: *const c_void,
    opacity_logits: *const c_void,
    coeffs: *const c_void,
    splats: *mut c_void,
    colors: *mut c_void,
    sort_depth: *mut c_void,
    radii: *mut c_void,
    tile_rect: *mut c_void,
    tile_count: *mut c_void,
    order: *const c_void,
    isect_offsets: *const c_void,
    keys: *mut c_void,
    splats_c: *const c_void,
    colors_c: *const c_void,
    tile_offsets: *const c_void,
    ids: *const c_void,
    background: *const c_void,
    image: *mut c_void,
    alpha: *mut c_void,
    depth: *mut c_void,
    used: *mut c_void,
    v_image: *const c_void,
    v_alpha: *const c_void,
    v_splats_c: *mut c_void,
    v_colors_c: *mut c_void,
    v_splats: *const c_void,
    v_colors: *const c_void,
    grad_means: *mut c_void,
    grad_log_scales: *mut c_void,
    grad_quats: *mut c_void,
    grad_opacity_logits: *mut c_void,
    grad_coeffs: *mut c_void,
    mean2d_grad_norm: *mut c_void,
    mean2d_grad_norm_ndc: *mut c_void,
}

/// A tensor's storage for a stage: null when empty (an empty tensor's data pointer need not be valid, and no
/// thread reads it). Every tensor passed is contiguous and of the element type the stage expects.
fn ptr(t: &Tensor) -> *mut c_void {
    if t.numel() == 0 {
        std::ptr::null_mut()
    } else {
        t.data_ptr()
    }
}

/// Where the stages run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// CUDA device index: kernels on torch's current stream of that device.
    Device(usize),
    /// Host loops over CPU tensors (tests).
    Host,
}

/// The checked configuration of one frame: everything the stages need besides the buffers.
#[derive(Clone, Debug)]
struct Config {
    kind: Kind,
    device: Device,
    target: Target,
    layout: ColorLayout,
    count: i64,
    tiles_x: i64,
    tiles_y: i64,
    camera: CameraAbi,
    background: Vec<f64>,
    mode: RasterMode,
    offset_clamp: bool,
}

impl Config {
    /// Host-side argument checks: what the kernels cannot handle is refused here with a plain message, before
    /// any buffer is allocated.
    fn new(
        g: &Gaussians,
        layout: ColorLayout,
        camera: &Camera,
        options: &RenderOptions,
        target: Target,
    ) -> Result<Self> {
        check_camera(camera)?;
        let channels = layout.channels;
        if channels > MAX_CHANNELS {
            return Err(SplatError::Unsupported(format!(
                "{channels} channels on the CUDA rasterizer (it handles 1 to {MAX_CHANNELS})"
            )));
        }
        let kind = g.means.kind();
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(SplatError::Shape(format!("Gaussians must be f32 or f64, got {kind:?}")));
        }
        let device = g.means.device();
        let expected = match target {
            Target::Device(index) => Device::Cuda(index),
            Target::Host => Device::Cpu,
        };
        if device != expected {
            return Err(SplatError::Shape(format!(
                "Gaussians on {device:?}, the CUDA rasterizer runs this frame on {expected:?}"
            )));
        }
        // Compact ids fill the low 32 bits of an intersection key (and the CPU kernel has the same bound).
        let count = g.len();
        if count > u32::MAX as usize {
            return Err(SplatError::Shape(format!(
                "{count} Gaussians exceed the u32 index range"
            )));
        }
        let stride = layout.stride();
        if i32::try_from(stride).is_err() {
            return Err(SplatError::Shape(format!("{stride} colour coefficients per Gaussian")));
        }
        let tile = crate::constants::TILE_SIZE as u32;
        let (tiles_x, tiles_y) = (camera.width.div_ceil(tile) as i64, camera.height.div_ceil(tile) as i64);
        let camera = CameraAbi::new(camera)?;
        Ok(Config {
            kind,
            device,
            target,
            layout,
            count: count as i64,
            tiles_x,
            tiles_y,
            camera,
            background: options.background_for(channels)?,
            mode: options.mode,
            offset_clamp: options.color_offset_clamp,
        })
    }

    fn channels(&self) -> i64 {
        self.layout.channels as i64
    }

    fn float(&self) -> (Kind, Device) {
        (self.kind, self.device)
    }

    fn typed(&self, kind: Kind) -> (Kind, Device) {
        (kind, self.device)
    }

    /// The argument block with this frame's configuration and the Gaussians' buffers; stage buffers null.
    fn abi(&self, params: &[Tensor; 5]) -> RasterAbi {
        // SAFETY: RasterAbi holds only integers, floats and raw pointers, for which all-zero bits are valid
        // (null pointers, zeros); every field the stages need is set below or by the caller.
        let mut a: RasterAbi = unsafe { std::mem::zeroed() };
        a.dtype = if self.kind == Kind::Float { 0 } else { 1 };
        a.on_host = (self.target == Target::Host) as i32;
        a.device = match self.target {
            Target::Device(index) => index as i32,
            Target::Host => -1,
        };
        a.antialiased = (self.mode == RasterMode::Antialiased) as i32;
        a.channels = self.layout.channels as i32;
        a.color_stride = self.layout.stride() as i32;
        a.sh_degree = match self.layout.basis {
            ColorBasis::Plain => -1,
            ColorBasis::Sh { degree, .. } => degree as i32,
        };
        a.offset_clamp = self.offset_clamp as i32;
        a.tiles_x = self.tiles_x as i32;
        a.tiles_y = self.tiles_y as i32;
        a.count = self.count;
        a.camera = self.camera;
        a.sh = SH_ABI;
        let [means, log_scales, quats, opacity_logits, coeffs] = params.each_ref().map(|t| ptr(t) as *const c_void);
        (a.means, a.log_scales, a.quats, a.opacity_logits, a.coeffs) =
            (means, log_scales, quats, opacity_logits, coeffs);
        a
    }
}

/// Renders Gaussians on a CUDA device with the CUDA kernel (`render` dispatches here).
#[cfg(feature = "cuda")]
pub(crate) fn render(g: &Gaussians, layout: ColorLayout, camera: &Camera, options: &RenderOptions) -> Result<Rendered> {
    match g.means.device() {
        Device::Cuda(index) => kernel::render(g, layout, camera, options, Target::Device(index)),
        device => Err(SplatError::Unsupported(format!("the CUDA rasterizer on {device:?}"))),
    }
}

/// Without the `cuda` feature there is no kernel to run.
#[cfg(not(feature = "cuda"))]
pub(crate) fn render(g: &Gaussians, layout: ColorLayout, camera: &Camera, options: &RenderOptions) -> Result<Rendered> {
    // The arguments are still checked, so a bad call says what is wrong with it first.
    let target = match g.means.device() {
        Device::Cuda(index) => Target::Device(index),
        _ => Target::Host,
    };
    Config::new(g, layout, camera, options, target)?;
    Err(SplatError::Unsupported(format!(
        "rendering on {:?}: lrf-splat was built without the cuda feature (build with `--features lrf-splat/cuda` \
         after `.venv/bin/pip install -r scripts/requirements-cuda.txt`)",
        g.means.device()
    )))
}

/// Renders CPU-tensor Gaussians through the CUDA rasterizer's stages with every kernel's per-thread code run in
/// host loops: the kernels' arithmetic, indexing and decisions, checkable without a GPU. Slow (one pixel at a
/// time); for tests.
#[cfg(feature = "cuda")]
#[doc(hidden)]
pub fn render_emulated(g: &Gaussians, camera: &Camera, options: &RenderOptions) -> Result<Rendered> {
    let layout = g.layout(options.sh_degree)?;
    kernel::render(g, layout, camera, options, Target::Host)
}

#[cfg(feature = "cuda")]
mod kernel {
    use super::*;
    use crate::render::{Backward, GaussianGradients, ScreenGradients, version};
    use std::ffi::c_char;
    use std::sync::OnceLock;

    type StageFn = unsafe extern "C" fn(*const RasterAbi, *mut c_char, usize) -> i32;

    unsafe extern "C" {
        fn lrf_splat_abi(out: *mut u64);
        fn lrf_splat_project_forward(args: *const RasterAbi, error: *mut c_char, len: usize) -> i32;
        fn lrf_splat_emit_intersections(args: *const RasterAbi, error: *mut c_char, len: usize) -> i32;
        fn lrf_splat_rasterize_forward(args: *const RasterAbi, error: *mut c_char, len: usize) -> i32;
        fn lrf_splat_rasterize_backward(args: *const RasterAbi, error: *mut c_char, len: usize) -> i32;
        fn lrf_splat_project_backward(args: *const RasterAbi, error: *mut c_char, len: usize) -> i32;
    }

    fn cuda_error(message: String) -> SplatError {
        SplatError::Tch(tch::TchError::Torch(format!("CUDA rasterizer: {message}")))
    }

    /// Checks once that the compiled kernel library agrees with this file's mirror of its header.
    pub(crate) fn check_abi() -> Result<()> {
        static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        CHECKED
            .get_or_init(|| {
                let mut got = [0u64; 4];
                // SAFETY: `lrf_splat_abi` writes exactly four values into the array it is given.
                unsafe { lrf_splat_abi(got.as_mut_ptr()) };
                let want = [
                    std::mem::size_of::<RasterAbi>() as u64,
                    SPLAT_FIELDS as u64,
                    SPLAT_GRAD_FIELDS as u64,
                    MAX_CHANNELS as u64,
                ];
                (got == want).then_some(()).ok_or_else(|| {
                    format!(
                        "kernel library and splat/src/cuda.rs disagree on the ABI (size, splat fields, gradient \
                         fields, max channels): {got:?} vs {want:?}"
                    )
                })
            })
            .clone()
            .map_err(cuda_error)
    }

    fn run(stage: StageFn, args: &RasterAbi) -> Result<()> {
        let mut message = [0 as c_char; 512];
        // SAFETY: `args` is a valid argument block whose pointers are null or point to live tensors of the
        // shapes and element types the header documents (the callers allocate them so); `message` is writable
        // for its length.
        let status = unsafe { stage(args, message.as_mut_ptr(), message.len()) };
        if status == 0 {
            return Ok(());
        }
        // SAFETY: the stage wrote a NUL-terminated message within the buffer (vsnprintf), or left it zeroed.
        let text = unsafe { std::ffi::CStr::from_ptr(message.as_ptr()) };
        Err(cuda_error(text.to_string_lossy().into_owned()))
    }

    /// What the backward needs of a rendered frame.
    struct Frame {
        /// Compact id → Gaussian id, `[visible]` i64.
        order: Tensor,
        splats_c: Tensor,
        colors_c: Tensor,
        ids: Tensor,
        tile_offsets: Tensor,
        background: Tensor,
        image: Tensor,
        alpha: Tensor,
        visible: i64,
        intersections: i64,
    }

    struct Outputs {
        image: Tensor,
        alpha: Tensor,
        depth: Tensor,
        radii: Tensor,
        visible: Tensor,
    }

    fn forward(config: &Config, params: &[Tensor; 5]) -> Result<(Frame, Outputs)> {
        let n = config.count;
        let c = config.channels();
        let (w, h) = (config.camera.width as i64, config.camera.height as i64);
        let int = config.typed(Kind::Int);
        let int64 = config.typed(Kind::Int64);

        // 1. Projection, per Gaussian.
        let splats = Tensor::zeros([n, SPLAT_FIELDS], config.float());
        let colors = Tensor::zeros([n, c], config.float());
        let sort_depth = Tensor::empty([n], config.float());
        let radii = Tensor::empty([n], int);
        let tile_rect = Tensor::empty([n, 4], int);
        let tile_count = Tensor::empty([n], int64);
        let mut a = config.abi(params);
        a.splats = ptr(&splats);
        a.colors = ptr(&colors);
        a.sort_depth = ptr(&sort_depth);
        a.radii = ptr(&radii);
        a.tile_rect = ptr(&tile_rect);
        a.tile_count = ptr(&tile_count);
        run(lrf_splat_project_forward, &a)?;

        // 2. Depth order. A stable sort keeps equal depths in Gaussian order, like the CPU kernel's sort by
        // (depth, Gaussian id); culled Gaussians (+inf) come last and are cut off.
        let (_, order) = sort_depth.sort_stable(true, 0, false);
        let counts = Tensor::stack(
            &[sort_depth.isfinite().sum(Kind::Int64), tile_count.sum(Kind::Int64)],
            0,
        )
        .to_device(Device::Cpu);
        let [visible, intersections] = Vec::<i64>::try_from(&counts)?[..] else {
            unreachable!("two counts were stacked");
        };
        let order = order.narrow(0, 0, visible);

        // 3. Intersections in compact order, sorted by (tile, compact id); keys are unique, so any sort gives the
        // same lists.
        let isect_offsets = tile_count.index_select(0, &order).cumsum(0, Kind::Int64);
        let keys = Tensor::empty([intersections], int64);
        a.visible = visible;
        a.intersections = intersections;
        a.order = ptr(&order);
        a.isect_offsets = ptr(&isect_offsets);
        a.keys = ptr(&keys);
        run(lrf_splat_emit_intersections, &a)?;
        let (keys, _) = keys.sort(0, false);
        let ids = keys.bitwise_and(0xffff_ffff_i64).to_kind(Kind::Int);
        let tiles = keys.bitwise_right_shift_tensor_scalar(32);
        // Tile t's list is ids[offsets[t]..offsets[t + 1]]: the first position of each tile id in the sorted keys.
        let tile_offsets = Tensor::arange(config.tiles_x * config.tiles_y + 1, int64).searchsorted(
            &tiles,
            false,
            false,
            "left",
            None::<Tensor>,
        );

        // 4. Blend, per tile, over the splats in compact order.
        let splats_c = splats.index_select(0, &order);
        let colors_c = colors.index_select(0, &order);
        let background = Tensor::from_slice(&config.background)
            .to_kind(config.kind)
            .to_device(config.device);
        let image = Tensor::empty([c, h, w], config.float());
        let alpha = Tensor::empty([h, w], config.float());
        let depth = Tensor::empty([h, w], config.float());
        let used = Tensor::zeros([visible], config.typed(Kind::Uint8));
        a.splats_c = ptr(&splats_c);
        a.colors_c = ptr(&colors_c);
        a.tile_offsets = ptr(&tile_offsets);
        a.ids = ptr(&ids);
        a.background = ptr(&background);
        a.image = ptr(&image);
        a.alpha = ptr(&alpha);
        a.depth = ptr(&depth);
        a.used = ptr(&used);
        run(lrf_splat_rasterize_forward, &a)?;

        let visible_mask = Tensor::zeros([n], config.typed(Kind::Uint8))
            .index_copy(0, &order, &used)
            .to_kind(Kind::Bool);
        let outputs = Outputs {
            image: image.shallow_clone(),
            alpha: alpha.shallow_clone(),
            depth,
            radii,
            visible: visible_mask,
        };
        let frame = Frame {
            order,
            splats_c,
            colors_c,
            ids,
            tile_offsets,
            background,
            // Copies: the returned image and alpha may be changed in place before the backward.
            image: image.copy(),
            alpha: alpha.copy(),
            visible,
            intersections,
        };
        Ok((frame, outputs))
    }

    /// The Gaussians' buffers, the tensors their gradients flow back into, and those tensors' versions at
    /// render time (a backward after an in-place change is refused, as on the CPU).
    struct CudaState {
        config: Config,
        params: [Tensor; 5],
        tensors: [Tensor; 5],
        versions: [Option<i64>; 5],
        frame: Frame,
    }

    pub(super) fn render(
        g: &Gaussians,
        layout: ColorLayout,
        camera: &Camera,
        options: &RenderOptions,
        target: Target,
    ) -> Result<Rendered> {
        let config = Config::new(g, layout, camera, options, target)?;
        check_abi()?;
        let tensors = g.tensors().map(Tensor::shallow_clone);
        let versions = tensors.each_ref().map(version);
        let params = g.tensors().map(|t| t.detach().contiguous());
        let (frame, out) = forward(&config, &params)?;
        let trainable = g.tensors().iter().any(|t| t.requires_grad());
        let state = CudaState {
            config,
            params,
            tensors,
            versions,
            frame,
        };
        Ok(Rendered::from_parts(
            out.image.set_requires_grad(trainable),
            out.alpha.set_requires_grad(trainable),
            out.depth,
            out.radii,
            out.visible,
            Box::new(state),
        ))
    }

    /// An upstream gradient as a contiguous tensor of the frame's kind and device, shape-checked.
    fn upstream(config: &Config, t: &Tensor, shape: &[i64], name: &str) -> Result<Tensor> {
        if t.size() != shape {
            return Err(SplatError::Shape(format!(
                "∂L/∂{name} is {:?}, the frame's {name} {shape:?}",
                t.size()
            )));
        }
        Ok(t.detach().to_kind(config.kind).to_device(config.device).contiguous())
    }

    impl Backward for CudaState {
        fn gradients(
            &self,
            v_image: &Tensor,
            v_alpha: Option<&Tensor>,
        ) -> Result<(ScreenGradients, GaussianGradients)> {
            if self.tensors.each_ref().map(version) != self.versions {
                return Err(SplatError::Shape(
                    "Gaussian tensors were modified in place between render and backward".into(),
                ));
            }
            let config = &self.config;
            let frame = &self.frame;
            let (n, c) = (config.count, config.channels());
            let (w, h) = (config.camera.width as i64, config.camera.height as i64);
            let v_image = upstream(config, v_image, &[c, h, w], "image")?;
            let v_alpha = v_alpha.map(|t| upstream(config, t, &[h, w], "alpha")).transpose()?;

            // Per tile: each splat's blend-input gradient, in compact order.
            let v_splats_c = Tensor::zeros([frame.visible, SPLAT_GRAD_FIELDS], config.float());
            let v_colors_c = Tensor::zeros([frame.visible, c], config.float());
            let mut a = config.abi(&self.params);
            a.visible = frame.visible;
            a.intersections = frame.intersections;
            a.splats_c = ptr(&frame.splats_c);
            a.colors_c = ptr(&frame.colors_c);
            a.tile_offsets = ptr(&frame.tile_offsets);
            a.ids = ptr(&frame.ids);
            a.background = ptr(&frame.background);
            a.image = ptr(&frame.image);
            a.alpha = ptr(&frame.alpha);
            a.v_image = ptr(&v_image);
            a.v_alpha = v_alpha.as_ref().map_or(std::ptr::null(), |t| ptr(t) as *const c_void);
            a.v_splats_c = ptr(&v_splats_c);
            a.v_colors_c = ptr(&v_colors_c);
            run(lrf_splat_rasterize_backward, &a)?;

            // Per Gaussian: back to the parameters; culled Gaussians keep zero rows, hence zero gradients.
            let v_splats =
                Tensor::zeros([n, SPLAT_GRAD_FIELDS], config.float()).index_copy(0, &frame.order, &v_splats_c);
            let v_colors = Tensor::zeros([n, c], config.float()).index_copy(0, &frame.order, &v_colors_c);
            let grads = self.params.each_ref().map(Tensor::zeros_like);
            let norm = Tensor::zeros([n], config.float());
            let norm_ndc = Tensor::zeros([n], config.float());
            a.v_splats = ptr(&v_splats);
            a.v_colors = ptr(&v_colors);
            a.grad_means = ptr(&grads[0]);
            a.grad_log_scales = ptr(&grads[1]);
            a.grad_quats = ptr(&grads[2]);
            a.grad_opacity_logits = ptr(&grads[3]);
            a.grad_coeffs = ptr(&grads[4]);
            a.mean2d_grad_norm = ptr(&norm);
            a.mean2d_grad_norm_ndc = ptr(&norm_ndc);
            run(lrf_splat_project_backward, &a)?;

            let screen = ScreenGradients {
                mean2d_grad_norm: norm,
                mean2d_grad_norm_ndc: norm_ndc,
                kernel_times: None,
            };
            Ok((screen, GaussianGradients::Tensors(grads)))
        }

        fn tensors(&self) -> &[Tensor; 5] {
            &self.tensors
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::DVec3;

    fn camera() -> Camera {
        Camera::look_at(DVec3::new(0.3, -0.2, -4.0), DVec3::ZERO, DVec3::Y, 40.0, 42.0, 37, 29)
    }

    fn gaussians(n: i64, colors: &[i64], kind: Kind) -> Gaussians {
        let t = |shape: &[i64]| Tensor::zeros(shape, (kind, Device::Cpu));
        Gaussians {
            means: t(&[n, 3]),
            log_scales: t(&[n, 3]),
            quats: t(&[n, 4]),
            opacity_logits: t(&[n]),
            colors: t(colors),
        }
    }

    fn config(g: &Gaussians, options: &RenderOptions) -> Result<Config> {
        let layout = g.layout(options.sh_degree)?;
        Config::new(g, layout, &camera(), options, Target::Host)
    }

    #[test]
    fn abi_mirror_has_the_header_layout() {
        // Offsets the C compiler gives LrfRaster on x86-64 and aarch64 (10 × i32, then 8-byte fields).
        assert_eq!(std::mem::size_of::<CameraAbi>(), 23 * 8 + 2 * 4);
        assert_eq!(std::mem::size_of::<ShAbi>(), 14 * 8);
        assert_eq!(std::mem::offset_of!(RasterAbi, count), 40);
        assert_eq!(std::mem::offset_of!(RasterAbi, camera), 64);
        assert_eq!(std::mem::offset_of!(RasterAbi, means), 64 + 192 + 112);
        assert_eq!(std::mem::size_of::<RasterAbi>(), 64 + 192 + 112 + 36 * 8);
    }

    #[test]
    fn camera_abi_matches_the_cpu_kernels_clamp_limits() {
        let cam = camera();
        let abi = CameraAbi::new(&cam).unwrap();
        let margin = crate::constants::FRUSTUM_CLAMP_MARGIN * 0.5 * 37.0 / 40.0;
        assert_eq!(abi.lim_x_pos, (37.0 - cam.cx) / 40.0 + margin);
        assert_eq!(abi.lim_x_neg, cam.cx / 40.0 + margin);
        // Row-major world-to-camera rotation.
        assert_eq!(abi.rotation[1], cam.rotation.col(1)[0]);
        assert_eq!(abi.rotation[3], cam.rotation.col(0)[1]);
        assert_eq!(abi.center, cam.center().to_array());
        assert_eq!((abi.width, abi.height), (37, 29));
    }

    #[test]
    fn config_accepts_the_layouts_the_kernel_supports() {
        for (colors, degree) in [
            (vec![5, 4], -1),
            (vec![5, 16, 32], 3),
            (vec![5, 9, 64], 2),
            (vec![5, 1, 3], 0),
        ] {
            let g = gaussians(5, &colors, Kind::Float);
            let c = config(&g, &RenderOptions::default()).unwrap();
            let a = c.abi(&g.tensors().map(Tensor::shallow_clone));
            assert_eq!(a.sh_degree, degree);
            assert_eq!(a.channels as i64, *colors.last().unwrap());
            assert_eq!(a.color_stride as i64, colors[1..].iter().product::<i64>());
            assert_eq!((a.tiles_x, a.tiles_y, a.count, a.on_host, a.dtype), (3, 2, 5, 1, 0));
        }
        let g = gaussians(2, &[2, 4, 3], Kind::Double);
        let options = RenderOptions {
            sh_degree: Some(0),
            mode: RasterMode::Antialiased,
            color_offset_clamp: true,
            background: vec![1.0, 0.5, 0.0],
        };
        let a = config(&g, &options)
            .unwrap()
            .abi(&g.tensors().map(Tensor::shallow_clone));
        assert_eq!(
            (a.sh_degree, a.color_stride, a.dtype, a.antialiased, a.offset_clamp),
            (0, 12, 1, 1, 1)
        );
    }

    #[test]
    fn config_refuses_what_the_kernel_cannot_render() {
        let too_wide = gaussians(1, &[1, MAX_CHANNELS as i64 + 1], Kind::Float);
        let err = config(&too_wide, &RenderOptions::default()).unwrap_err().to_string();
        assert!(err.contains("65 channels"), "{err}");
        let g = gaussians(1, &[1, 4], Kind::Float);
        let bad_background = RenderOptions {
            background: vec![0.0; 3],
            ..Default::default()
        };
        assert!(config(&g, &bad_background).is_err());
        // The frame's target must be the Gaussians' device.
        let layout = g.layout(None).unwrap();
        let err = Config::new(&g, layout, &camera(), &RenderOptions::default(), Target::Device(0)).unwrap_err();
        assert!(err.to_string().contains("Cuda(0)"), "{err}");
        let mut flat = camera();
        flat.fx = 0.0;
        assert!(Config::new(&g, layout, &flat, &RenderOptions::default(), Target::Host).is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_cuda_rendering_says_how_to_get_it() {
        let g = gaussians(1, &[1, 4], Kind::Float);
        let layout = g.layout(None).unwrap();
        let err = render(&g, layout, &camera(), &RenderOptions::default())
            .err()
            .expect("no kernel without the feature")
            .to_string();
        assert!(err.contains("built without the cuda feature"), "{err}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn kernel_library_agrees_with_the_abi_mirror() {
        kernel::check_abi().unwrap();
    }
}
