//! The reference rasterizer in tch tensor operations: dense over every (pixel, Gaussian) pair, no tiles, no
//! culling beyond what the cutoffs imply; autograd gives its backward. Slow and simple, in the Gaussians' own
//! float kind (f32 or f64): the oracle the CPU and CUDA kernels are tested against.

use crate::constants::{
    ALPHA_THRESHOLD, BLUR_VARIANCE, FRUSTUM_CLAMP_MARGIN, MAX_ALPHA, MIN_COMPENSATION, NEAR_PLANE, PIXEL_CENTER,
    SH_COLOR_OFFSET, TRANSMITTANCE_THRESHOLD,
};
use crate::error::{Result, SplatError};
use crate::gaussians::Gaussians;
use crate::options::{ColorBasis, RasterMode, RenderOptions, check_camera};
use crate::sh::{SH_C0, SH_C1, SH_C2, SH_C3, sh_coeffs};
use lrf_formats::Camera;
use std::ops::Range;
use tch::Tensor;

/// Reference outputs for a band of image rows.
#[derive(Debug)]
pub struct ReferenceImage {
    /// `[C, rows, W]`, background included.
    pub image: Tensor,
    /// `[rows, W]`.
    pub alpha: Tensor,
    /// `[rows, W]` expected depth (0 where alpha is 0).
    pub depth: Tensor,
}

/// Renders the whole image.
pub fn render(g: &Gaussians, camera: &Camera, options: &RenderOptions) -> Result<ReferenceImage> {
    render_rows(g, camera, options, 0..camera.height as usize)
}

/// Renders image rows `rows` only (memory is rows × width × N per intermediate).
pub fn render_rows(
    g: &Gaussians,
    camera: &Camera,
    options: &RenderOptions,
    rows: Range<usize>,
) -> Result<ReferenceImage> {
    check_camera(camera)?;
    let layout = g.layout(options.sh_degree)?;
    if rows.end > camera.height as usize || rows.is_empty() {
        return Err(SplatError::Options(format!(
            "rows {rows:?} outside 0..{}",
            camera.height
        )));
    }
    let channels = layout.channels as i64;
    let kind = g.means.kind();
    let device = g.means.device();
    let scalars = |v: &[f64]| Tensor::from_slice(v).to_kind(kind).to_device(device);
    let background = scalars(&options.background_for(layout.channels)?);
    let width = camera.width as i64;
    let band = rows.len() as i64;
    let pixels = width * band;
    let n = g.len() as i64;
    if n == 0 {
        let image = background
            .view([channels, 1, 1])
            .expand([channels, band, width], false)
            .contiguous();
        let zeros = Tensor::zeros([band, width], (kind, device));
        return Ok(ReferenceImage {
            image,
            alpha: zeros.shallow_clone(),
            depth: zeros,
        });
    }

    // Rotation from the normalised quaternion, covariance Σ = R S Sᵀ Rᵀ.
    let q = &g.quats
        / (&g.quats * &g.quats)
            .sum_dim_intlist([1i64].as_slice(), true, kind)
            .sqrt();
    let [w, x, y, z] = [0, 1, 2, 3].map(|i| q.select(1, i));
    let one = Tensor::ones_like(&w);
    let rot = Tensor::stack(
        &[
            &one - 2.0 * (&y * &y + &z * &z),
            2.0 * (&x * &y - &w * &z),
            2.0 * (&x * &z + &w * &y),
            2.0 * (&x * &y + &w * &z),
            &one - 2.0 * (&x * &x + &z * &z),
            2.0 * (&y * &z - &w * &x),
            2.0 * (&x * &z - &w * &y),
            2.0 * (&y * &z + &w * &x),
            &one - 2.0 * (&x * &x + &y * &y),
        ],
        1,
    )
    .view([n, 3, 3]);
    let m = &rot * g.log_scales.exp().unsqueeze(1);
    let cov = m.matmul(&m.transpose(1, 2));

    // Camera space.
    let r = camera.rotation;
    let w2c = scalars(&[0, 1, 2].map(|i| [0, 1, 2].map(|j| r.col(j)[i])).concat()).view([3, 3]);
    let mean_cam = g.means.matmul(&w2c.tr()) + scalars(&camera.translation.to_array());
    let [mx, my, mz] = [0, 1, 2].map(|i| mean_cam.select(1, i));
    let finite = |t: &Tensor| t.isfinite();
    let in_front = mz.ge(NEAR_PLANE).logical_and(&finite(&mx)).logical_and(&finite(&my));
    // Culled Gaussians get harmless stand-in values so no NaN or Inf reaches the image.
    let z = mz.where_self(&in_front, &one);
    let (xs, ys) = (mx.where_self(&in_front, &one), my.where_self(&in_front, &one));
    let cov_cam = w2c.matmul(&cov).matmul(&w2c.tr());

    // EWA projection with the clamped Jacobian, plus the screen blur.
    let (fx, fy, cx, cy) = (camera.fx, camera.fy, camera.cx, camera.cy);
    let (wf, hf) = (camera.width as f64, camera.height as f64);
    let (mgx, mgy) = (
        FRUSTUM_CLAMP_MARGIN * 0.5 * wf / fx,
        FRUSTUM_CLAMP_MARGIN * 0.5 * hf / fy,
    );
    let ux = (&xs / &z).clamp(-(cx / fx + mgx), (wf - cx) / fx + mgx);
    let uy = (&ys / &z).clamp(-(cy / fy + mgy), (hf - cy) / fy + mgy);
    let zero = Tensor::zeros_like(&z);
    let jac = Tensor::stack(
        &[
            fx / &z,
            zero.shallow_clone(),
            -fx * &ux / &z,
            zero,
            fy / &z,
            -fy * &uy / &z,
        ],
        1,
    )
    .view([n, 2, 3]);
    let cov2d = jac.matmul(&cov_cam).matmul(&jac.transpose(1, 2));
    let (sa, sb, sc) = (
        cov2d.select(1, 0).select(1, 0),
        cov2d.select(1, 0).select(1, 1),
        cov2d.select(1, 1).select(1, 1),
    );
    let det = &sa * &sc - &sb * &sb;
    let (ab, cb) = (&sa + BLUR_VARIANCE, &sc + BLUR_VARIANCE);
    let det_blur = &ab * &cb - &sb * &sb;
    let valid = in_front.logical_and(&det_blur.gt(0.0)).logical_and(&finite(&det_blur));
    let det_blur = det_blur.where_self(&valid, &one);
    let conic = [&cb / &det_blur, -&sb / &det_blur, &ab / &det_blur].map(|t| t.where_self(&valid, &zero_like(&t)));
    let compensation = match options.mode {
        RasterMode::Classic => Tensor::ones_like(&det_blur),
        RasterMode::Antialiased => (&det / &det_blur).clamp_min(MIN_COMPENSATION * MIN_COMPENSATION).sqrt(),
    };
    let opacity = g.opacity_logits.sigmoid() * compensation;
    let coeffs_finite = g.colors.isfinite().view([n, -1]).all_dim(1, false);
    let valid = valid.logical_and(&finite(&opacity)).logical_and(&coeffs_finite);
    let opacity = opacity.where_self(&valid, &zero_like(&opacity));
    let mean2d = [fx * &xs / &z + cx, fy * &ys / &z + cy].map(|t| t.where_self(&valid, &zero_like(&t)));

    // Colour seen from the camera.
    let colors = match layout.basis {
        ColorBasis::Plain => g.colors.shallow_clone(),
        ColorBasis::Sh { degree, .. } => {
            let dir = &g.means - scalars(&camera.center().to_array());
            let dir = &dir / (&dir * &dir).sum_dim_intlist([1i64].as_slice(), true, kind).sqrt();
            let basis = sh_basis_tensor(degree, &dir);
            let k = sh_coeffs(degree) as i64;
            (basis.unsqueeze(2) * g.colors.narrow(1, 0, k)).sum_dim_intlist([1i64].as_slice(), false, kind)
        }
    };
    let colors = if options.color_offset_clamp {
        (colors + SH_COLOR_OFFSET).clamp_min(0.0)
    } else {
        colors
    };
    let colors = colors.where_self(&valid.unsqueeze(1), &zero_like(&colors));

    // Front to back.
    let order = z.argsort_stable(true, 0, false);
    let take = |t: &Tensor| t.index_select(0, &order);
    let (u, v, o) = (take(&mean2d[0]), take(&mean2d[1]), take(&opacity));
    let [ca, cb, cc] = conic.each_ref().map(take);
    let (colors, depth, valid) = (take(&colors), take(&z), take(&valid));

    // Every (pixel, Gaussian) pair, pixel centres at +0.5.
    let px = (Tensor::arange(width, (kind, device)) + PIXEL_CENTER).repeat([band]);
    let py = (Tensor::arange_start(rows.start as i64, rows.end as i64, (kind, device)) + PIXEL_CENTER)
        .repeat_interleave_self_int(width, 0, None);
    let dx = px.unsqueeze(1) - u.unsqueeze(0);
    let dy = py.unsqueeze(1) - v.unsqueeze(0);
    let sigma: Tensor = (&ca * &dx * &dx + &cc * &dy * &dy) * 0.5 + &cb * &dx * &dy;
    let alpha = (&o * sigma.neg().exp()).clamp_max(MAX_ALPHA);
    let composited = alpha
        .ge(ALPHA_THRESHOLD)
        .logical_and(&sigma.ge(0.0))
        .logical_and(&valid.unsqueeze(0));
    let alpha = alpha.where_self(&composited, &zero_like(&alpha));
    // A pixel stops before the Gaussian that would take its transmittance to the threshold; the running product
    // only falls, so the Gaussians kept are exactly those whose inclusive product stays above it.
    let kept = (alpha.ones_like() - &alpha)
        .cumprod(1, kind)
        .gt(TRANSMITTANCE_THRESHOLD);
    let alpha = alpha.where_self(&kept, &zero_like(&alpha));
    let t_after = (alpha.ones_like() - &alpha).cumprod(1, kind);
    let t_before = Tensor::cat(
        &[Tensor::ones([pixels, 1], (kind, device)), t_after.narrow(1, 0, n - 1)],
        1,
    );
    let weight = &alpha * t_before;
    let t_final = t_after.select(1, n - 1);
    let image = weight.matmul(&colors) + t_final.unsqueeze(1) * background.unsqueeze(0);
    let acc = t_final.ones_like() - &t_final;
    let depth_sum = weight.matmul(&depth.unsqueeze(1)).squeeze_dim(1);
    let covered = acc.gt(0.0);
    let depth = (&depth_sum / acc.where_self(&covered, &acc.ones_like())).where_self(&covered, &acc.zeros_like());
    Ok(ReferenceImage {
        image: image.tr().reshape([channels, band, width]),
        alpha: acc.reshape([band, width]),
        depth: depth.reshape([band, width]).detach(),
    })
}

fn zero_like(t: &Tensor) -> Tensor {
    Tensor::zeros_like(t)
}

/// SH basis `[N, (degree+1)²]` of unit directions `[N, 3]`.
fn sh_basis_tensor(degree: usize, dir: &Tensor) -> Tensor {
    let [x, y, z] = [0, 1, 2].map(|i| dir.select(1, i));
    let mut basis = vec![Tensor::full_like(&x, SH_C0)];
    if degree >= 1 {
        basis.extend([-SH_C1 * &y, SH_C1 * &z, -SH_C1 * &x]);
    }
    if degree >= 2 {
        let (xx, yy, zz) = (&x * &x, &y * &y, &z * &z);
        basis.extend([
            SH_C2[0] * &x * &y,
            SH_C2[1] * &y * &z,
            SH_C2[2] * (2.0 * &zz - &xx - &yy),
            SH_C2[3] * &x * &z,
            SH_C2[4] * (&xx - &yy),
        ]);
        if degree >= 3 {
            basis.extend([
                SH_C3[0] * &y * (3.0 * &xx - &yy),
                SH_C3[1] * &x * &y * &z,
                SH_C3[2] * &y * (4.0 * &zz - &xx - &yy),
                SH_C3[3] * &z * (2.0 * &zz - 3.0 * &xx - 3.0 * &yy),
                SH_C3[4] * &x * (4.0 * &zz - &xx - &yy),
                SH_C3[5] * &z * (&xx - &yy),
                SH_C3[6] * &x * (&xx - 3.0 * &yy),
            ]);
        }
    }
    Tensor::stack(&basis, 1)
}
