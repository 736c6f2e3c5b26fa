//! One Gaussian from world space to the screen (EWA splatting with the clamped Jacobian), its colour seen from
//! the camera, and the exact vector-Jacobian products of both. Stateless per Gaussian: the backward recomputes
//! the forward intermediates instead of storing them.

use crate::constants::{
    ALPHA_THRESHOLD, BLUR_VARIANCE, FRUSTUM_CLAMP_MARGIN, MAX_EXTENT_SIGMAS, MIN_COMPENSATION, NEAR_PLANE,
    SH_COLOR_OFFSET,
};
use crate::options::{ColorBasis, ColorLayout, RasterMode};
use crate::real::Real;
use crate::sh::{MAX_SH_DEGREE, sh_basis, sh_basis_vjp, sh_coeffs};
use crate::tiling::GaussianSlices;
use lrf_formats::Camera;

type M3<R> = [[R; 3]; 3];

#[inline(always)]
fn mat_mul<R: Real>(a: &M3<R>, b: &M3<R>) -> M3<R> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j]))
}

#[inline(always)]
fn transpose<R: Real>(a: &M3<R>) -> M3<R> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[j][i]))
}

#[inline(always)]
fn mat_vec<R: Real>(a: &M3<R>, v: [R; 3]) -> [R; 3] {
    std::array::from_fn(|i| a[i][0] * v[0] + a[i][1] * v[1] + a[i][2] * v[2])
}

#[inline(always)]
fn sigmoid<R: Real>(x: R) -> R {
    R::ONE / (R::ONE + (-x).fast_exp())
}

/// The camera in the kernel's float type, with the Jacobian clamp limits precomputed.
#[derive(Clone, Debug)]
pub(crate) struct PinholeCamera<R> {
    rotation: M3<R>,
    translation: [R; 3],
    center: [R; 3],
    pub fx: R,
    pub fy: R,
    cx: R,
    cy: R,
    pub width: usize,
    pub height: usize,
    /// Limits of x/z and y/z: (negative side, positive side) magnitudes.
    lim_x: (R, R),
    lim_y: (R, R),
}

impl<R: Real> PinholeCamera<R> {
    pub fn new(camera: &Camera) -> Self {
        let (w, h) = (camera.width as f64, camera.height as f64);
        let margin_x = FRUSTUM_CLAMP_MARGIN * 0.5 * w / camera.fx;
        let margin_y = FRUSTUM_CLAMP_MARGIN * 0.5 * h / camera.fy;
        let r = camera.rotation;
        PinholeCamera {
            rotation: std::array::from_fn(|i| std::array::from_fn(|j| R::of(r.col(j)[i]))),
            translation: camera.translation.to_array().map(R::of),
            center: camera.center().to_array().map(R::of),
            fx: R::of(camera.fx),
            fy: R::of(camera.fy),
            cx: R::of(camera.cx),
            cy: R::of(camera.cy),
            width: camera.width as usize,
            height: camera.height as usize,
            lim_x: (
                R::of(camera.cx / camera.fx + margin_x),
                R::of((w - camera.cx) / camera.fx + margin_x),
            ),
            lim_y: (
                R::of(camera.cy / camera.fy + margin_y),
                R::of((h - camera.cy) / camera.fy + margin_y),
            ),
        }
    }
}

/// One Gaussian's parameters as stored (unnormalised quaternion w, x, y, z; log-scales; opacity logit).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GaussianParams<R> {
    pub mean: [R; 3],
    pub log_scale: [R; 3],
    pub quat: [R; 4],
    pub opacity_logit: R,
}

/// A Gaussian on the screen, as the blend uses it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Splat<R> {
    /// Pixel coordinates of the centre (pixel centres at +0.5).
    pub mean2d: [R; 2],
    /// Inverse of the blurred 2D covariance, (a, b, c) = [[a, b], [b, c]].
    pub conic: [R; 3],
    /// Activated opacity, including the antialiasing compensation.
    pub opacity: R,
    /// Camera-space z.
    pub depth: R,
    /// Half-widths in pixels beyond which the Gaussian's alpha is below ALPHA_THRESHOLD.
    pub extent: [R; 2],
    /// ln(opacity / ALPHA_THRESHOLD): the Mahalanobis half-distance σ beyond which alpha is below the threshold
    /// (`extent` bounds this ellipse, capped at MAX_EXTENT_SIGMAS).
    pub sigma_cut: R,
}

/// Gradient of the loss with respect to a splat's blend inputs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SplatGrad<R> {
    pub mean2d: [R; 2],
    pub conic: [R; 3],
    pub opacity: R,
}

/// Gradient of the loss with respect to one Gaussian's geometry parameters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ParamsGrad<R> {
    pub mean: [R; 3],
    pub log_scale: [R; 3],
    pub quat: [R; 4],
    pub opacity_logit: R,
}

/// Every forward intermediate the VJP needs.
struct Forward<R> {
    /// Not culled: a usable quaternion, in front of the near plane, finite, an invertible 2D covariance. The
    /// other fields are computed either way (maybe non-finite) so the computation has no branch.
    valid: bool,
    quat_norm: R,
    quat: [R; 4],
    rotation: M3<R>,
    scale: [R; 3],
    /// M = rotation · diag(scale); covariance Σ = M Mᵀ.
    m: M3<R>,
    mean_cam: [R; 3],
    /// Camera-space covariance W Σ Wᵀ.
    cov_cam: M3<R>,
    /// Projection Jacobian rows (∂u/∂p, ∂v/∂p), clamped; whether x/z and y/z were inside the clamp.
    jac: [[R; 3]; 2],
    inside: [bool; 2],
    /// Blurred 2D covariance (a, b, c), its determinant and the unblurred determinant.
    cov2d: [R; 3],
    det_blur: R,
    det: R,
    compensation: R,
    /// Whether the compensation was above its floor (else its gradient is zero).
    compensation_free: bool,
    sigmoid: R,
}

/// Branch-free, so the compiler can run it on a vector of Gaussians at once (see [`project_batch`]).
#[inline(always)]
fn forward<R: Real>(cam: &PinholeCamera<R>, g: &GaussianParams<R>, mode: RasterMode) -> Forward<R> {
    let quat_norm = g.quat.iter().map(|&q| q * q).fold(R::ZERO, |a, b| a + b).sqrt();
    let usable = (quat_norm > R::ZERO) & quat_norm.is_finite();
    let [w, x, y, z] = std::array::from_fn(|i| g.quat[i] / quat_norm);
    let two = R::of(2.0);
    let one = R::ONE;
    let rotation = [
        [
            one - two * (y * y + z * z),
            two * (x * y - w * z),
            two * (x * z + w * y),
        ],
        [
            two * (x * y + w * z),
            one - two * (x * x + z * z),
            two * (y * z - w * x),
        ],
        [
            two * (x * z - w * y),
            two * (y * z + w * x),
            one - two * (x * x + y * y),
        ],
    ];
    let scale = std::array::from_fn(|i| g.log_scale[i].fast_exp());
    let m: M3<R> = std::array::from_fn(|i| std::array::from_fn(|j| rotation[i][j] * scale[j]));
    let cov = mat_mul(&m, &transpose(&m));
    let wm = mat_vec(&cam.rotation, g.mean);
    let mean_cam: [R; 3] = std::array::from_fn(|i| wm[i] + cam.translation[i]);
    let [mx, my, mz] = mean_cam;
    // Positive phrasing: NaN fails every comparison, so it is culled too.
    let in_front = (mz >= R::of(NEAR_PLANE)) & mx.is_finite() & my.is_finite() & mz.is_finite();
    let cov_cam = mat_mul(&mat_mul(&cam.rotation, &cov), &transpose(&cam.rotation));
    let (ux, uy) = (mx / mz, my / mz);
    let cux = ux.max(-cam.lim_x.0).min(cam.lim_x.1);
    let cuy = uy.max(-cam.lim_y.0).min(cam.lim_y.1);
    let inside = [cux == ux, cuy == uy];
    let jac = [
        [cam.fx / mz, R::ZERO, -cam.fx * cux / mz],
        [R::ZERO, cam.fy / mz, -cam.fy * cuy / mz],
    ];
    // Σ2D = J V Jᵀ
    let jv: [[R; 3]; 2] = std::array::from_fn(|i| {
        std::array::from_fn(|j| jac[i][0] * cov_cam[0][j] + jac[i][1] * cov_cam[1][j] + jac[i][2] * cov_cam[2][j])
    });
    let dot = |a: &[R; 3], b: &[R; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let (sa, sb, sc) = (dot(&jv[0], &jac[0]), dot(&jv[0], &jac[1]), dot(&jv[1], &jac[1]));
    let det = sa * sc - sb * sb;
    let blur = R::of(BLUR_VARIANCE);
    let cov2d = [sa + blur, sb, sc + blur];
    let det_blur = cov2d[0] * cov2d[2] - sb * sb;
    let invertible = (det_blur > R::ZERO) & det_blur.is_finite();
    let (compensation, compensation_free) = match mode {
        RasterMode::Classic => (R::ONE, false),
        RasterMode::Antialiased => {
            let ratio = det / det_blur;
            let floor = R::of(MIN_COMPENSATION * MIN_COMPENSATION);
            (ratio.max(floor).sqrt(), ratio > floor)
        }
    };
    Forward {
        valid: usable & in_front & invertible,
        quat_norm,
        quat: [w, x, y, z],
        rotation,
        scale,
        m,
        mean_cam,
        cov_cam,
        jac,
        inside,
        cov2d,
        det_blur,
        det,
        compensation,
        compensation_free,
        sigmoid: sigmoid(g.opacity_logit),
    }
}

/// Projects a Gaussian; the flag is false when it is culled (behind the near plane, degenerate, non-finite, too
/// transparent to reach ALPHA_THRESHOLD anywhere, or entirely off screen), and the splat is then meaningless.
/// Branch-free like [`forward`].
#[inline(always)]
fn project_one<R: Real>(cam: &PinholeCamera<R>, g: &GaussianParams<R>, mode: RasterMode) -> (Splat<R>, bool) {
    let f = forward(cam, g, mode);
    let opacity = f.sigmoid * f.compensation;
    let threshold = R::of(ALPHA_THRESHOLD);
    let reaches_threshold = opacity >= threshold;
    let [mx, my, mz] = f.mean_cam;
    let mean2d = [cam.fx * mx / mz + cam.cx, cam.fy * my / mz + cam.cy];
    // Beyond `sigmas` standard deviations along an axis, ½ dᵀΣ⁻¹d ≥ ln(opacity / threshold), so o·G < threshold.
    // The ratio is clamped into fast_ln's domain for culled Gaussians; it is at least 1 for the others.
    let ratio = (opacity / threshold).max(R::ONE).min(R::of(1e30));
    let sigma_cut = ratio.fast_ln();
    let sigmas = (R::of(2.0) * sigma_cut).sqrt().min(R::of(MAX_EXTENT_SIGMAS));
    let extent = [sigmas * f.cov2d[0].sqrt(), sigmas * f.cov2d[2].sqrt()];
    let (w, h) = (R::of(cam.width as f64), R::of(cam.height as f64));
    let on_screen = (mean2d[0] + extent[0] > R::ZERO)
        & (mean2d[0] - extent[0] < w)
        & (mean2d[1] + extent[1] > R::ZERO)
        & (mean2d[1] - extent[1] < h)
        & mean2d[0].is_finite()
        & mean2d[1].is_finite();
    let inv_det = R::ONE / f.det_blur;
    let splat = Splat {
        mean2d,
        conic: [f.cov2d[2] * inv_det, -f.cov2d[1] * inv_det, f.cov2d[0] * inv_det],
        opacity,
        depth: mz,
        extent,
        sigma_cut,
    };
    (splat, f.valid & reaches_threshold & on_screen)
}

/// Gaussians projected together in [`project_batch`]: one AVX-512 vector of f32.
pub(crate) const PROJECT_LANES: usize = 16;

/// The parameters of up to [`PROJECT_LANES`] Gaussians gathered into fixed-size arrays (one per parameter, lane
/// by lane), so that a loop over the lanes vectorises with one vector lane per Gaussian. Unused lanes are zero,
/// a Gaussian the projection culls.
struct ParamGroup<R> {
    means: [R; 3 * PROJECT_LANES],
    log_scales: [R; 3 * PROJECT_LANES],
    quats: [R; 4 * PROJECT_LANES],
    logits: [R; PROJECT_LANES],
}

impl<R: Real> ParamGroup<R> {
    #[inline(always)]
    fn gather(gaussians: &GaussianSlices<R>, ids: impl Iterator<Item = usize>) -> Self {
        let mut group = ParamGroup {
            means: [R::ZERO; 3 * PROJECT_LANES],
            log_scales: [R::ZERO; 3 * PROJECT_LANES],
            quats: [R::ZERO; 4 * PROJECT_LANES],
            logits: [R::ZERO; PROJECT_LANES],
        };
        for (l, i) in ids.take(PROJECT_LANES).enumerate() {
            group.means[3 * l..3 * l + 3].copy_from_slice(&gaussians.means[3 * i..3 * i + 3]);
            group.log_scales[3 * l..3 * l + 3].copy_from_slice(&gaussians.log_scales[3 * i..3 * i + 3]);
            group.quats[4 * l..4 * l + 4].copy_from_slice(&gaussians.quats[4 * i..4 * i + 4]);
            group.logits[l] = gaussians.opacity_logits[i];
        }
        group
    }

    #[inline(always)]
    fn params(&self, l: usize) -> GaussianParams<R> {
        GaussianParams {
            mean: std::array::from_fn(|j| self.means[3 * l + j]),
            log_scale: std::array::from_fn(|j| self.log_scales[3 * l + j]),
            quat: std::array::from_fn(|j| self.quats[4 * l + j]),
            opacity_logit: self.logits[l],
        }
    }
}

/// Projects `out.len()` consecutive Gaussians starting at `first`; `None` for culled ones. Groups of
/// [`PROJECT_LANES`] run through [`ParamGroup`]s so the compiler vectorises [`project_one`] across them.
#[inline(always)]
pub(crate) fn project_batch<R: Real>(
    cam: &PinholeCamera<R>,
    gaussians: &GaussianSlices<R>,
    first: usize,
    mode: RasterMode,
    out: &mut [Option<Splat<R>>],
) {
    const L: usize = PROJECT_LANES;
    for (out, start) in out.chunks_mut(L).zip((first..).step_by(L)) {
        let group = ParamGroup::gather(gaussians, start..start + out.len());
        let mut splats = [Splat::default(); L];
        let mut kept = [false; L];
        for l in 0..L {
            (splats[l], kept[l]) = project_one(cam, &group.params(l), mode);
        }
        for (out, (splat, kept)) in out.iter_mut().zip(splats.into_iter().zip(kept)) {
            *out = kept.then_some(splat);
        }
    }
}

/// [`project_vjp`] of the Gaussians `ids` with splat gradients `v`, vectorised across groups of
/// [`PROJECT_LANES`] like [`project_batch`].
#[inline(always)]
pub(crate) fn project_vjp_batch<R: Real>(
    cam: &PinholeCamera<R>,
    gaussians: &GaussianSlices<R>,
    mode: RasterMode,
    ids: &[usize],
    v: &[SplatGrad<R>],
    out: &mut [ParamsGrad<R>],
) {
    const L: usize = PROJECT_LANES;
    for ((ids, v), out) in ids.chunks(L).zip(v.chunks(L)).zip(out.chunks_mut(L)) {
        let group = ParamGroup::gather(gaussians, ids.iter().copied());
        let mut lanes = [SplatGrad::default(); L];
        lanes[..v.len()].copy_from_slice(v);
        let mut grads = [ParamsGrad::default(); L];
        for l in 0..L {
            grads[l] = project_vjp(cam, &group.params(l), mode, &lanes[l]);
        }
        out.copy_from_slice(&grads[..out.len()]);
    }
}

/// Gradient of the splat's blend inputs back to the Gaussian's parameters; zero for a Gaussian the projection
/// culls. Branch-free like [`forward`], so [`project_vjp_batch`] runs it on vectors of Gaussians.
#[inline(always)]
pub(crate) fn project_vjp<R: Real>(
    cam: &PinholeCamera<R>,
    g: &GaussianParams<R>,
    mode: RasterMode,
    v: &SplatGrad<R>,
) -> ParamsGrad<R> {
    let f = forward(cam, g, mode);
    let two = R::of(2.0);
    let half = R::of(0.5);
    // Opacity = sigmoid(logit) · compensation.
    let v_logit = v.opacity * f.compensation * f.sigmoid * (R::ONE - f.sigmoid);
    let v_compensation = v.opacity * f.sigmoid;
    // Conic P = Σb⁻¹: ∂L/∂Σb = −P (∂L/∂P) P, with the conic's off-diagonal gradient split over both entries.
    let inv_det = R::ONE / f.det_blur;
    let p = [
        [f.cov2d[2] * inv_det, -f.cov2d[1] * inv_det],
        [-f.cov2d[1] * inv_det, f.cov2d[0] * inv_det],
    ];
    let vp = [[v.conic[0], half * v.conic[1]], [half * v.conic[1], v.conic[2]]];
    let mul2 = |a: [[R; 2]; 2], b: [[R; 2]; 2]| -> [[R; 2]; 2] {
        std::array::from_fn(|i| std::array::from_fn(|j| a[i][0] * b[0][j] + a[i][1] * b[1][j]))
    };
    let pvp = mul2(mul2(p, vp), p);
    let mut v_cov2d = [[-pvp[0][0], -pvp[0][1]], [-pvp[1][0], -pvp[1][1]]];
    if mode == RasterMode::Antialiased {
        // comp² = det Σ / det Σb ⇒ ∂comp²/∂Σ = (1 − comp²)·Σb⁻¹ − (blur / det Σb)·I; no gradient at the floor.
        let c2 = f.det / f.det_blur;
        let k = if f.compensation_free {
            v_compensation * half / f.compensation
        } else {
            R::ZERO
        };
        let blur_term = R::of(BLUR_VARIANCE) * inv_det;
        for i in 0..2 {
            for j in 0..2 {
                let eye = if i == j { blur_term } else { R::ZERO };
                v_cov2d[i][j] += k * ((R::ONE - c2) * p[i][j] - eye);
            }
        }
    }
    // Σ2D = J V Jᵀ: ∂L/∂V = Jᵀ G J, ∂L/∂J = 2 G J V (G and V symmetric).
    let jac = &f.jac;
    let gj: [[R; 3]; 2] =
        std::array::from_fn(|i| std::array::from_fn(|j| v_cov2d[i][0] * jac[0][j] + v_cov2d[i][1] * jac[1][j]));
    let v_cov_cam: M3<R> =
        std::array::from_fn(|i| std::array::from_fn(|j| jac[0][i] * gj[0][j] + jac[1][i] * gj[1][j]));
    let v_jac: [[R; 3]; 2] = std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            two * (gj[i][0] * f.cov_cam[0][j] + gj[i][1] * f.cov_cam[1][j] + gj[i][2] * f.cov_cam[2][j])
        })
    });
    let [mx, my, mz] = f.mean_cam;
    let (fx, fy) = (cam.fx, cam.fy);
    let iz = R::ONE / mz;
    let iz2 = iz * iz;
    let mut v_mean_cam = [R::ZERO; 3];
    // J00 = fx/z, J11 = fy/z; J02 = −fx·clamp(x/z)/z, J12 likewise; the clamp stops the gradient through x/z.
    v_mean_cam[2] += -fx * iz2 * v_jac[0][0] - fy * iz2 * v_jac[1][1];
    for (axis, (focal, coord)) in [(fx, mx), (fy, my)].into_iter().enumerate() {
        let v_j2 = v_jac[axis][2];
        // Inside the clamp J_2 = −focal·(x/z)/z; outside J_2 = −focal·lim/z, so ∂J_2/∂z = −J_2/z.
        let inside = f.inside[axis];
        v_mean_cam[axis] += if inside { -focal * iz2 * v_j2 } else { R::ZERO };
        v_mean_cam[2] += if inside {
            two * focal * coord * iz2 * iz * v_j2
        } else {
            -jac[axis][2] * iz * v_j2
        };
    }
    // Mean: u = fx x/z + cx, v = fy y/z + cy.
    v_mean_cam[0] += v.mean2d[0] * fx * iz;
    v_mean_cam[1] += v.mean2d[1] * fy * iz;
    v_mean_cam[2] += -(v.mean2d[0] * fx * mx + v.mean2d[1] * fy * my) * iz2;
    let wt = transpose(&cam.rotation);
    let mean = mat_vec(&wt, v_mean_cam);
    // V = W Σ Wᵀ ⇒ ∂L/∂Σ = Wᵀ (∂L/∂V) W; Σ = M Mᵀ ⇒ ∂L/∂M = 2 (∂L/∂Σ) M (symmetric).
    let v_cov = mat_mul(&mat_mul(&wt, &v_cov_cam), &cam.rotation);
    let v_m = mat_mul(&v_cov, &f.m);
    let v_m: M3<R> = std::array::from_fn(|i| std::array::from_fn(|j| two * v_m[i][j]));
    let mut log_scale = [R::ZERO; 3];
    let mut v_rot = [[R::ZERO; 3]; 3];
    for j in 0..3 {
        let mut v_s = R::ZERO;
        for i in 0..3 {
            v_rot[i][j] = v_m[i][j] * f.scale[j];
            v_s += f.rotation[i][j] * v_m[i][j];
        }
        log_scale[j] = v_s * f.scale[j];
    }
    let [w, x, y, z] = f.quat;
    let r = &v_rot;
    let four = R::of(4.0);
    let v_w = two * (-z * r[0][1] + y * r[0][2] + z * r[1][0] - x * r[1][2] - y * r[2][0] + x * r[2][1]);
    let v_x = two * (y * r[0][1] + z * r[0][2] + y * r[1][0] - w * r[1][2] + z * r[2][0] + w * r[2][1])
        - four * x * (r[1][1] + r[2][2]);
    let v_y = two * (x * r[0][1] + w * r[0][2] + x * r[1][0] + z * r[1][2] - w * r[2][0] + z * r[2][1])
        - four * y * (r[0][0] + r[2][2]);
    let v_z = two * (-w * r[0][1] + x * r[0][2] + w * r[1][0] + y * r[1][2] + x * r[2][0] + y * r[2][1])
        - four * z * (r[0][0] + r[1][1]);
    // Normalisation q̂ = q/|q|: ∂L/∂q = (v − (v·q̂) q̂)/|q|.
    let vq = [v_w, v_x, v_y, v_z];
    let along = vq.iter().zip(&f.quat).map(|(&a, &b)| a * b).fold(R::ZERO, |a, b| a + b);
    let quat: [R; 4] = std::array::from_fn(|i| (vq[i] - along * f.quat[i]) / f.quat_norm);
    // Selected, not multiplied: a culled Gaussian's intermediates may be infinite or NaN. Fixed-size `from_fn`s,
    // which unroll: `project_vjp_batch` vectorises its lane loop only if no loop is left inside.
    let kept = |x: R| if f.valid { x } else { R::ZERO };
    ParamsGrad {
        mean: std::array::from_fn(|i| kept(mean[i])),
        log_scale: std::array::from_fn(|i| kept(log_scale[i])),
        quat: std::array::from_fn(|i| kept(quat[i])),
        opacity_logit: kept(v_logit),
    }
}

/// Unit view direction from the camera centre to the mean, and the distance; `None` at the centre itself.
fn view_direction<R: Real>(cam: &PinholeCamera<R>, mean: [R; 3]) -> Option<([R; 3], R)> {
    let v: [R; 3] = std::array::from_fn(|i| mean[i] - cam.center[i]);
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    (n > R::ZERO).then(|| (v.map(|e| e / n), n))
}

/// Value per channel before the optional offset and clamp, written to `out`; fills the SH basis.
#[inline(always)]
fn raw_color<R: Real>(
    layout: ColorLayout,
    basis: &mut [R; sh_coeffs(MAX_SH_DEGREE)],
    cam: &PinholeCamera<R>,
    mean: [R; 3],
    coeffs: &[R],
    out: &mut [R],
) {
    let c = layout.channels;
    match layout.basis {
        ColorBasis::Plain => out.copy_from_slice(&coeffs[..c]),
        ColorBasis::Sh { degree, .. } => {
            let dir = view_direction(cam, mean).map_or([R::ZERO; 3], |(d, _)| d);
            sh_basis(degree, dir, basis);
            let (first, rest) = coeffs.split_at(c);
            for (o, &coef) in out.iter_mut().zip(first) {
                *o = basis[0] * coef;
            }
            for (&y, row) in basis[1..sh_coeffs(degree)].iter().zip(rest.chunks_exact(c)) {
                for (o, &coef) in out.iter_mut().zip(row) {
                    *o += y * coef;
                }
            }
        }
    }
}

/// One Gaussian's row of [`crate::cpu::ColorGrads`]: `[K]` basis and `[C]` colour gradient.
pub(crate) struct ColorGradRow<'a, R> {
    pub basis: &'a mut [R],
    pub color: &'a mut [R],
}

/// Colour evaluation with one thread's scratch space.
pub(crate) struct ColorEval<R> {
    layout: ColorLayout,
    offset_clamp: bool,
    basis: [R; sh_coeffs(MAX_SH_DEGREE)],
    v_basis: [R; sh_coeffs(MAX_SH_DEGREE)],
    raw: Vec<R>,
}

impl<R: Real> ColorEval<R> {
    /// `offset_clamp`: the 3DGS RGB convention, colour = max(value + SH_COLOR_OFFSET, 0).
    pub fn new(layout: ColorLayout, offset_clamp: bool) -> Self {
        ColorEval {
            layout,
            offset_clamp,
            basis: [R::ZERO; sh_coeffs(MAX_SH_DEGREE)],
            v_basis: [R::ZERO; sh_coeffs(MAX_SH_DEGREE)],
            raw: vec![R::ZERO; layout.channels],
        }
    }

    /// The colour per channel of a Gaussian seen from the camera. Always inlined, so it is compiled with the
    /// instruction set of the dispatched pass that calls it.
    #[inline(always)]
    pub fn color(&mut self, cam: &PinholeCamera<R>, mean: [R; 3], coeffs: &[R], out: &mut [R]) {
        raw_color(self.layout, &mut self.basis, cam, mean, coeffs, out);
        if self.offset_clamp {
            for o in out.iter_mut() {
                *o = (*o + R::of(SH_COLOR_OFFSET)).max(R::ZERO);
            }
        }
    }

    /// Writes the coefficients' gradient, factored ([`crate::cpu::ColorGrads`]), into `out` and returns the
    /// gradient of the mean through the view direction. `color` is the colour [`ColorEval::color`] gave for
    /// this Gaussian: the backward reads the forward's instead of evaluating the SH sum again.
    #[allow(
        clippy::too_many_arguments,
        reason = "the colour VJP's inputs; a struct for one call would add nothing"
    )]
    #[inline(always)]
    pub fn color_vjp(
        &mut self,
        cam: &PinholeCamera<R>,
        mean: [R; 3],
        coeffs: &[R],
        color: &[R],
        v_color: &[R],
        out: ColorGradRow<'_, R>,
    ) -> [R; 3] {
        let view = view_direction(cam, mean);
        if let ColorBasis::Sh { degree, .. } = self.layout.basis {
            sh_basis(degree, view.map_or([R::ZERO; 3], |(d, _)| d), &mut self.basis);
        }
        // Where the clamp at 0 held the colour, no gradient passes. The clamped colour is max(raw + offset, 0):
        // exactly 0 there and positive elsewhere.
        let v_color: &[R] = if self.offset_clamp {
            for ((masked, &v), &col) in self.raw.iter_mut().zip(v_color).zip(color) {
                *masked = if col > R::ZERO { v } else { R::ZERO };
            }
            &self.raw
        } else {
            v_color
        };
        let c = self.layout.channels;
        out.color.copy_from_slice(v_color);
        let ColorBasis::Sh { degree, .. } = self.layout.basis else {
            out.basis[0] = R::ONE;
            out.basis[1..].fill(R::ZERO);
            return [R::ZERO; 3];
        };
        let k = sh_coeffs(degree);
        // Coefficients above the degree in use get no gradient.
        out.basis[..k].copy_from_slice(&self.basis[..k]);
        out.basis[k..].fill(R::ZERO);
        for l in 0..k {
            let row = &coeffs[l * c..(l + 1) * c];
            self.v_basis[l] = row.iter().zip(v_color).fold(R::ZERO, |v_y, (&coef, &g)| v_y + coef * g);
        }
        let Some((dir, dist)) = view.filter(|_| degree > 0) else {
            return [R::ZERO; 3];
        };
        let v_dir = sh_basis_vjp(degree, dir, &self.v_basis[..k]);
        // d = v/|v| ⇒ ∂L/∂v = (I − d dᵀ) ∂L/∂d / |v|.
        let along = v_dir[0] * dir[0] + v_dir[1] * dir[1] + v_dir[2] * dir[2];
        std::array::from_fn(|i| (v_dir[i] - along * dir[i]) / dist)
    }
}
