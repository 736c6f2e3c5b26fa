// One Gaussian from world space to the screen, its colour seen from the camera, and the vector-Jacobian products
// of both: a line-by-line port of splat/src/projection.rs and splat/src/sh.rs (same formulas, same order of
// operations, same culling decisions), so the CUDA kernel and the CPU kernel agree to rounding. Stateless per
// Gaussian: the backward recomputes the forward intermediates instead of storing them.
#pragma once

#include "lrf_splat.h"
#include "math.cuh"

namespace lrf {

// ---------------------------------------------------------------------------------------------------------------
// Small fixed-size linear algebra (row-major; products summed left to right like the Rust helpers).

template <typename T>
struct M3 {
    T m[3][3];
};

template <typename T>
LRF_HD M3<T> mat_mul(const M3<T>& a, const M3<T>& b) {
    M3<T> r;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) r.m[i][j] = a.m[i][0] * b.m[0][j] + a.m[i][1] * b.m[1][j] + a.m[i][2] * b.m[2][j];
    return r;
}

template <typename T>
LRF_HD M3<T> transpose(const M3<T>& a) {
    M3<T> r;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) r.m[i][j] = a.m[j][i];
    return r;
}

template <typename T>
LRF_HD void mat_vec(const M3<T>& a, const T v[3], T out[3]) {
    for (int i = 0; i < 3; ++i) out[i] = a.m[i][0] * v[0] + a.m[i][1] * v[1] + a.m[i][2] * v[2];
}

template <typename T>
LRF_HD T sigmoid(T x) {
    return T(1) / (T(1) + r_exp(-x));
}

// ---------------------------------------------------------------------------------------------------------------
// Camera and Gaussian parameters in the kernel's float type.

// PinholeCamera: the f64 values the Rust side computed, each converted once (as R::of does).
template <typename T>
struct Cam {
    M3<T> rotation;
    T translation[3];
    T center[3];
    T fx, fy, cx, cy;
    T lim_x_neg, lim_x_pos, lim_y_neg, lim_y_pos;
    int32_t width, height;
};

template <typename T>
LRF_HD Cam<T> make_cam(const LrfCamera& c) {
    Cam<T> r;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) r.rotation.m[i][j] = T(c.rotation[3 * i + j]);
        r.translation[i] = T(c.translation[i]);
        r.center[i] = T(c.center[i]);
    }
    r.fx = T(c.fx);
    r.fy = T(c.fy);
    r.cx = T(c.cx);
    r.cy = T(c.cy);
    r.lim_x_neg = T(c.lim_x_neg);
    r.lim_x_pos = T(c.lim_x_pos);
    r.lim_y_neg = T(c.lim_y_neg);
    r.lim_y_pos = T(c.lim_y_pos);
    r.width = c.width;
    r.height = c.height;
    return r;
}

template <typename T>
struct Params {
    T mean[3];
    T log_scale[3];
    T quat[4];  // w, x, y, z, unnormalised
    T opacity_logit;
};

template <typename T>
LRF_HD Params<T> load_params(const LrfRaster& a, int64_t i) {
    const T* means = static_cast<const T*>(a.means);
    const T* log_scales = static_cast<const T*>(a.log_scales);
    const T* quats = static_cast<const T*>(a.quats);
    const T* logits = static_cast<const T*>(a.opacity_logits);
    Params<T> p;
    for (int j = 0; j < 3; ++j) {
        p.mean[j] = means[3 * i + j];
        p.log_scale[j] = log_scales[3 * i + j];
    }
    for (int j = 0; j < 4; ++j) p.quat[j] = quats[4 * i + j];
    p.opacity_logit = logits[i];
    return p;
}

// A Gaussian on the screen (projection.rs `Splat`).
template <typename T>
struct Splat {
    T mean2d[2];
    T conic[3];
    T opacity;
    T depth;
    T extent[2];
};

// Gradient with respect to a splat's blend inputs (`SplatGrad`).
template <typename T>
struct SplatGrad {
    T mean2d[2];
    T conic[3];
    T opacity;
};

template <typename T>
struct ParamsGrad {
    T mean[3];
    T log_scale[3];
    T quat[4];
    T opacity_logit;
};

// Every forward intermediate the VJP needs (`Forward`).
template <typename T>
struct Fwd {
    T quat_norm;
    T quat[4];
    M3<T> rotation;
    T scale[3];
    M3<T> m;  // rotation · diag(scale)
    T mean_cam[3];
    M3<T> cov_cam;
    T jac[2][3];
    bool inside[2];
    T cov2d[3];  // blurred
    T det_blur;
    T det;
    T compensation;
    bool compensation_free;
    T sigmoid;
};

// projection.rs `forward`: false when the Gaussian is culled (degenerate quaternion, behind the near plane,
// non-finite, or a non-invertible blurred covariance).
template <typename T>
LRF_HD bool forward(const Cam<T>& cam, const Params<T>& g, bool antialiased, Fwd<T>& f) {
    T norm2 = T(0);
    for (int i = 0; i < 4; ++i) norm2 = norm2 + g.quat[i] * g.quat[i];
    const T quat_norm = r_sqrt(norm2);
    const bool usable = quat_norm > T(0) && r_finite(quat_norm);
    if (!usable) return false;
    const T w = g.quat[0] / quat_norm, x = g.quat[1] / quat_norm, y = g.quat[2] / quat_norm,
            z = g.quat[3] / quat_norm;
    const T two = T(2.0), one = T(1);
    M3<T> rot;
    rot.m[0][0] = one - two * (y * y + z * z);
    rot.m[0][1] = two * (x * y - w * z);
    rot.m[0][2] = two * (x * z + w * y);
    rot.m[1][0] = two * (x * y + w * z);
    rot.m[1][1] = one - two * (x * x + z * z);
    rot.m[1][2] = two * (y * z - w * x);
    rot.m[2][0] = two * (x * z - w * y);
    rot.m[2][1] = two * (y * z + w * x);
    rot.m[2][2] = one - two * (x * x + y * y);
    T scale[3];
    for (int j = 0; j < 3; ++j) scale[j] = r_exp(g.log_scale[j]);
    M3<T> m;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) m.m[i][j] = rot.m[i][j] * scale[j];
    const M3<T> cov = mat_mul(m, transpose(m));
    T wm[3];
    mat_vec(cam.rotation, g.mean, wm);
    T mean_cam[3];
    for (int i = 0; i < 3; ++i) mean_cam[i] = wm[i] + cam.translation[i];
    const T mx = mean_cam[0], my = mean_cam[1], mz = mean_cam[2];
    // Positive phrasing: NaN fails every comparison, so it is culled too.
    const bool in_front = mz >= T(LRF_NEAR_PLANE) && r_finite(mx) && r_finite(my) && r_finite(mz);
    if (!in_front) return false;
    const M3<T> cov_cam = mat_mul(mat_mul(cam.rotation, cov), transpose(cam.rotation));
    const T ux = mx / mz, uy = my / mz;
    const T cux = rmin(rmax(ux, -cam.lim_x_neg), cam.lim_x_pos);
    const T cuy = rmin(rmax(uy, -cam.lim_y_neg), cam.lim_y_pos);
    f.inside[0] = cux == ux;
    f.inside[1] = cuy == uy;
    f.jac[0][0] = cam.fx / mz;
    f.jac[0][1] = T(0);
    f.jac[0][2] = -cam.fx * cux / mz;
    f.jac[1][0] = T(0);
    f.jac[1][1] = cam.fy / mz;
    f.jac[1][2] = -cam.fy * cuy / mz;
    // Σ2D = J V Jᵀ
    T jv[2][3];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            jv[i][j] = f.jac[i][0] * cov_cam.m[0][j] + f.jac[i][1] * cov_cam.m[1][j] + f.jac[i][2] * cov_cam.m[2][j];
    const T sa = jv[0][0] * f.jac[0][0] + jv[0][1] * f.jac[0][1] + jv[0][2] * f.jac[0][2];
    const T sb = jv[0][0] * f.jac[1][0] + jv[0][1] * f.jac[1][1] + jv[0][2] * f.jac[1][2];
    const T sc = jv[1][0] * f.jac[1][0] + jv[1][1] * f.jac[1][1] + jv[1][2] * f.jac[1][2];
    const T det = sa * sc - sb * sb;
    const T blur = T(LRF_BLUR_VARIANCE);
    f.cov2d[0] = sa + blur;
    f.cov2d[1] = sb;
    f.cov2d[2] = sc + blur;
    const T det_blur = f.cov2d[0] * f.cov2d[2] - sb * sb;
    const bool invertible = det_blur > T(0) && r_finite(det_blur);
    if (!invertible) return false;
    if (antialiased) {
        const T ratio = det / det_blur;
        const T floor = T(LRF_MIN_COMPENSATION * LRF_MIN_COMPENSATION);
        f.compensation = r_sqrt(rmax(ratio, floor));
        f.compensation_free = ratio > floor;
    } else {
        f.compensation = T(1);
        f.compensation_free = false;
    }
    f.quat_norm = quat_norm;
    f.quat[0] = w;
    f.quat[1] = x;
    f.quat[2] = y;
    f.quat[3] = z;
    f.rotation = rot;
    for (int j = 0; j < 3; ++j) {
        f.scale[j] = scale[j];
        f.mean_cam[j] = mean_cam[j];
    }
    f.m = m;
    f.cov_cam = cov_cam;
    f.det_blur = det_blur;
    f.det = det;
    f.sigmoid = sigmoid(g.opacity_logit);
    return true;
}

// projection.rs `project`: false when culled (see `forward`), too transparent to reach ALPHA_THRESHOLD anywhere,
// or entirely off screen.
template <typename T>
LRF_HD bool project(const Cam<T>& cam, const Params<T>& g, bool antialiased, Splat<T>& s) {
    Fwd<T> f;
    if (!forward(cam, g, antialiased, f)) return false;
    const T opacity = f.sigmoid * f.compensation;
    const T threshold = T(LRF_ALPHA_THRESHOLD);
    const bool reaches_threshold = opacity >= threshold;
    if (!reaches_threshold) return false;
    const T mx = f.mean_cam[0], my = f.mean_cam[1], mz = f.mean_cam[2];
    const T mean2d[2] = {cam.fx * mx / mz + cam.cx, cam.fy * my / mz + cam.cy};
    // Beyond `sigmas` standard deviations along an axis, ½ dᵀΣ⁻¹d ≥ ln(opacity / threshold), so o·G < threshold.
    const T sigmas = rmin(r_sqrt(T(2.0) * r_log(opacity / threshold)), T(LRF_MAX_EXTENT_SIGMAS));
    const T extent[2] = {sigmas * r_sqrt(f.cov2d[0]), sigmas * r_sqrt(f.cov2d[2])};
    const T w = T(double(cam.width)), h = T(double(cam.height));
    const bool on_screen = mean2d[0] + extent[0] > T(0) && mean2d[0] - extent[0] < w && mean2d[1] + extent[1] > T(0) &&
                           mean2d[1] - extent[1] < h;
    if (!on_screen || !r_finite(mean2d[0]) || !r_finite(mean2d[1])) return false;
    const T inv_det = T(1) / f.det_blur;
    s.mean2d[0] = mean2d[0];
    s.mean2d[1] = mean2d[1];
    s.conic[0] = f.cov2d[2] * inv_det;
    s.conic[1] = -f.cov2d[1] * inv_det;
    s.conic[2] = f.cov2d[0] * inv_det;
    s.opacity = opacity;
    s.depth = mz;
    s.extent[0] = extent[0];
    s.extent[1] = extent[1];
    return true;
}

// projection.rs `project_vjp`: the splat's blend-input gradient back to the Gaussian's parameters (all zero for a
// culled Gaussian).
template <typename T>
LRF_HD ParamsGrad<T> project_vjp(const Cam<T>& cam, const Params<T>& g, bool antialiased, const SplatGrad<T>& v) {
    ParamsGrad<T> out = {};
    Fwd<T> f;
    if (!forward(cam, g, antialiased, f)) return out;
    const T two = T(2.0), half = T(0.5);
    // Opacity = sigmoid(logit) · compensation.
    const T v_logit = v.opacity * f.compensation * f.sigmoid * (T(1) - f.sigmoid);
    const T v_compensation = v.opacity * f.sigmoid;
    // Conic P = Σb⁻¹: ∂L/∂Σb = −P (∂L/∂P) P, with the conic's off-diagonal gradient split over both entries.
    const T inv_det = T(1) / f.det_blur;
    const T p[2][2] = {{f.cov2d[2] * inv_det, -f.cov2d[1] * inv_det}, {-f.cov2d[1] * inv_det, f.cov2d[0] * inv_det}};
    const T vp[2][2] = {{v.conic[0], half * v.conic[1]}, {half * v.conic[1], v.conic[2]}};
    T pv[2][2], pvp[2][2];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) pv[i][j] = p[i][0] * vp[0][j] + p[i][1] * vp[1][j];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) pvp[i][j] = pv[i][0] * p[0][j] + pv[i][1] * p[1][j];
    T v_cov2d[2][2] = {{-pvp[0][0], -pvp[0][1]}, {-pvp[1][0], -pvp[1][1]}};
    if (antialiased && f.compensation_free) {
        // comp² = det Σ / det Σb ⇒ ∂comp²/∂Σ = (1 − comp²)·Σb⁻¹ − (blur / det Σb)·I.
        const T c2 = f.det / f.det_blur;
        const T k = v_compensation * half / f.compensation;
        const T blur_term = T(LRF_BLUR_VARIANCE) * inv_det;
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {
                const T eye = i == j ? blur_term : T(0);
                v_cov2d[i][j] += k * ((T(1) - c2) * p[i][j] - eye);
            }
    }
    // Σ2D = J V Jᵀ: ∂L/∂V = Jᵀ G J, ∂L/∂J = 2 G J V (G and V symmetric).
    T gj[2][3];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) gj[i][j] = v_cov2d[i][0] * f.jac[0][j] + v_cov2d[i][1] * f.jac[1][j];
    M3<T> v_cov_cam;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_cov_cam.m[i][j] = f.jac[0][i] * gj[0][j] + f.jac[1][i] * gj[1][j];
    T v_jac[2][3];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            v_jac[i][j] =
                two * (gj[i][0] * f.cov_cam.m[0][j] + gj[i][1] * f.cov_cam.m[1][j] + gj[i][2] * f.cov_cam.m[2][j]);
    const T mx = f.mean_cam[0], my = f.mean_cam[1], mz = f.mean_cam[2];
    const T fx = cam.fx, fy = cam.fy;
    const T iz = T(1) / mz;
    const T iz2 = iz * iz;
    T v_mean_cam[3] = {T(0), T(0), T(0)};
    // J00 = fx/z, J11 = fy/z; J02 = −fx·clamp(x/z)/z, J12 likewise; the clamp stops the gradient through x/z.
    v_mean_cam[2] += -fx * iz2 * v_jac[0][0] - fy * iz2 * v_jac[1][1];
    for (int axis = 0; axis < 2; ++axis) {
        const T focal = axis == 0 ? fx : fy;
        const T coord = axis == 0 ? mx : my;
        const T v_j2 = v_jac[axis][2];
        if (f.inside[axis]) {
            v_mean_cam[axis] += -focal * iz2 * v_j2;
            v_mean_cam[2] += two * focal * coord * iz2 * iz * v_j2;
        } else {
            // J_2 = −focal·lim/z, so ∂J_2/∂z = −J_2/z.
            v_mean_cam[2] += -f.jac[axis][2] * iz * v_j2;
        }
    }
    // Mean: u = fx x/z + cx, v = fy y/z + cy.
    v_mean_cam[0] += v.mean2d[0] * fx * iz;
    v_mean_cam[1] += v.mean2d[1] * fy * iz;
    v_mean_cam[2] += -(v.mean2d[0] * fx * mx + v.mean2d[1] * fy * my) * iz2;
    const M3<T> wt = transpose(cam.rotation);
    mat_vec(wt, v_mean_cam, out.mean);
    // V = W Σ Wᵀ ⇒ ∂L/∂Σ = Wᵀ (∂L/∂V) W; Σ = M Mᵀ ⇒ ∂L/∂M = 2 (∂L/∂Σ) M (symmetric).
    const M3<T> v_cov = mat_mul(mat_mul(wt, v_cov_cam), cam.rotation);
    M3<T> v_m = mat_mul(v_cov, f.m);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_m.m[i][j] = two * v_m.m[i][j];
    T r[3][3];
    for (int j = 0; j < 3; ++j) {
        T v_s = T(0);
        for (int i = 0; i < 3; ++i) {
            r[i][j] = v_m.m[i][j] * f.scale[j];
            v_s += f.rotation.m[i][j] * v_m.m[i][j];
        }
        out.log_scale[j] = v_s * f.scale[j];
    }
    const T w = f.quat[0], x = f.quat[1], y = f.quat[2], z = f.quat[3];
    const T four = T(4.0);
    const T v_w = two * (-z * r[0][1] + y * r[0][2] + z * r[1][0] - x * r[1][2] - y * r[2][0] + x * r[2][1]);
    const T v_x = two * (y * r[0][1] + z * r[0][2] + y * r[1][0] - w * r[1][2] + z * r[2][0] + w * r[2][1]) -
                  four * x * (r[1][1] + r[2][2]);
    const T v_y = two * (x * r[0][1] + w * r[0][2] + x * r[1][0] + z * r[1][2] - w * r[2][0] + z * r[2][1]) -
                  four * y * (r[0][0] + r[2][2]);
    const T v_z = two * (-w * r[0][1] + x * r[0][2] + w * r[1][0] + y * r[1][2] + x * r[2][0] + y * r[2][1]) -
                  four * z * (r[0][0] + r[1][1]);
    // Normalisation q̂ = q/|q|: ∂L/∂q = (v − (v·q̂) q̂)/|q|.
    const T vq[4] = {v_w, v_x, v_y, v_z};
    T along = T(0);
    for (int i = 0; i < 4; ++i) along = along + vq[i] * f.quat[i];
    for (int i = 0; i < 4; ++i) out.quat[i] = (vq[i] - along * f.quat[i]) / f.quat_norm;
    out.opacity_logit = v_logit;
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Spherical harmonics (sh.rs), per channel: value_k = Σ_l Y_l(d)·c_lk with coefficients stored [K, C].

constexpr int MAX_SH_COEFFS = 16;  // degree 3

LRF_HD int sh_coeffs(int degree) { return (degree + 1) * (degree + 1); }

// Y_l(d) for l < (degree+1)².
template <typename T>
LRF_HD void sh_basis(const LrfShConstants& k, int degree, const T d[3], T basis[MAX_SH_COEFFS]) {
    const T x = d[0], y = d[1], z = d[2];
    basis[0] = T(k.c0);
    if (degree >= 1) {
        basis[1] = -T(k.c1) * y;
        basis[2] = T(k.c1) * z;
        basis[3] = -T(k.c1) * x;
    }
    if (degree >= 2) {
        const T xx = x * x, yy = y * y, zz = z * z;
        basis[4] = T(k.c2[0]) * x * y;
        basis[5] = T(k.c2[1]) * y * z;
        basis[6] = T(k.c2[2]) * (T(2.0) * zz - xx - yy);
        basis[7] = T(k.c2[3]) * x * z;
        basis[8] = T(k.c2[4]) * (xx - yy);
        if (degree >= 3) {
            basis[9] = T(k.c3[0]) * y * (T(3.0) * xx - yy);
            basis[10] = T(k.c3[1]) * x * y * z;
            basis[11] = T(k.c3[2]) * y * (T(4.0) * zz - xx - yy);
            basis[12] = T(k.c3[3]) * z * (T(2.0) * zz - T(3.0) * xx - T(3.0) * yy);
            basis[13] = T(k.c3[4]) * x * (T(4.0) * zz - xx - yy);
            basis[14] = T(k.c3[5]) * z * (xx - yy);
            basis[15] = T(k.c3[6]) * x * (xx - T(3.0) * yy);
        }
    }
}

template <typename T>
LRF_HD void sh_add(T v[3], T w, T gx, T gy, T gz) {
    v[0] += w * gx;
    v[1] += w * gy;
    v[2] += w * gz;
}

// Gradient with respect to the direction (x, y, z taken as independent) of Σ_l v_basis[l]·Y_l(d). Constant
// factors are products of f64 constants converted once, as in sh.rs.
template <typename T>
LRF_HD void sh_basis_vjp(const LrfShConstants& k, int degree, const T d[3], const T v_basis[MAX_SH_COEFFS],
                         T v[3]) {
    const T x = d[0], y = d[1], z = d[2];
    const T zero = T(0);
    v[0] = v[1] = v[2] = zero;
    if (degree >= 1) {
        sh_add(v, v_basis[1], zero, -T(k.c1), zero);
        sh_add(v, v_basis[2], zero, zero, T(k.c1));
        sh_add(v, v_basis[3], -T(k.c1), zero, zero);
    }
    if (degree >= 2) {
        const T xx = x * x, yy = y * y, zz = z * z;
        sh_add(v, v_basis[4], T(k.c2[0]) * y, T(k.c2[0]) * x, zero);
        sh_add(v, v_basis[5], zero, T(k.c2[1]) * z, T(k.c2[1]) * y);
        sh_add(v, v_basis[6], T(-2.0 * k.c2[2]) * x, T(-2.0 * k.c2[2]) * y, T(4.0 * k.c2[2]) * z);
        sh_add(v, v_basis[7], T(k.c2[3]) * z, zero, T(k.c2[3]) * x);
        sh_add(v, v_basis[8], T(2.0 * k.c2[4]) * x, T(-2.0 * k.c2[4]) * y, zero);
        if (degree >= 3) {
            sh_add(v, v_basis[9], T(6.0 * k.c3[0]) * x * y, T(3.0 * k.c3[0]) * (xx - yy), zero);
            sh_add(v, v_basis[10], T(k.c3[1]) * y * z, T(k.c3[1]) * x * z, T(k.c3[1]) * x * y);
            sh_add(v, v_basis[11], T(-2.0 * k.c3[2]) * x * y, T(k.c3[2]) * (T(4.0) * zz - xx - T(3.0) * yy),
                   T(8.0 * k.c3[2]) * y * z);
            sh_add(v, v_basis[12], T(-6.0 * k.c3[3]) * x * z, T(-6.0 * k.c3[3]) * y * z,
                   T(k.c3[3]) * (T(6.0) * zz - T(3.0) * xx - T(3.0) * yy));
            sh_add(v, v_basis[13], T(k.c3[4]) * (T(4.0) * zz - T(3.0) * xx - yy), T(-2.0 * k.c3[4]) * x * y,
                   T(8.0 * k.c3[4]) * x * z);
            sh_add(v, v_basis[14], T(2.0 * k.c3[5]) * x * z, T(-2.0 * k.c3[5]) * y * z, T(k.c3[5]) * (xx - yy));
            sh_add(v, v_basis[15], T(3.0 * k.c3[6]) * (xx - yy), T(-6.0 * k.c3[6]) * x * y, zero);
        }
    }
}

// Unit view direction from the camera centre to the mean and the distance; false at the centre itself.
template <typename T>
LRF_HD bool view_direction(const Cam<T>& cam, const T mean[3], T dir[3], T& dist) {
    T v[3];
    for (int i = 0; i < 3; ++i) v[i] = mean[i] - cam.center[i];
    const T n = r_sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (!(n > T(0))) return false;
    for (int i = 0; i < 3; ++i) dir[i] = v[i] / n;
    dist = n;
    return true;
}

// How a Gaussian's colour coefficients are read (ColorLayout, plus the RGB convention flag).
struct ColorSpec {
    int channels;
    int stride;
    int sh_degree;  // -1: plain
    bool offset_clamp;
};

LRF_HD ColorSpec color_spec(const LrfRaster& a) {
    return ColorSpec{a.channels, a.color_stride, a.sh_degree, a.offset_clamp != 0};
}

// Fills the SH basis for this Gaussian (zero direction at the camera centre, as ColorEval::raw_color does).
template <typename T>
LRF_HD void color_basis(const LrfShConstants& k, const ColorSpec& spec, const Cam<T>& cam, const T mean[3],
                        T basis[MAX_SH_COEFFS]) {
    T dir[3] = {T(0), T(0), T(0)};
    T dist;
    if (!view_direction(cam, mean, dir, dist)) dir[0] = dir[1] = dir[2] = T(0);
    sh_basis(k, spec.sh_degree, dir, basis);
}

// Channel `ch`'s value before the optional offset and clamp.
template <typename T>
LRF_HD T raw_color(const ColorSpec& spec, const T basis[MAX_SH_COEFFS], const T* coeffs, int ch) {
    if (spec.sh_degree < 0) return coeffs[ch];
    T value = T(0);
    const int count = sh_coeffs(spec.sh_degree);
    for (int l = 0; l < count; ++l) value += basis[l] * coeffs[l * spec.channels + ch];
    return value;
}

// ColorEval::color: the colour per channel of a Gaussian seen from the camera.
template <typename T>
LRF_HD void eval_color(const LrfShConstants& k, const ColorSpec& spec, const Cam<T>& cam, const T mean[3],
                       const T* coeffs, T* out) {
    T basis[MAX_SH_COEFFS];
    if (spec.sh_degree >= 0) color_basis(k, spec, cam, mean, basis);
    for (int ch = 0; ch < spec.channels; ++ch) {
        const T r = raw_color(spec, basis, coeffs, ch);
        out[ch] = spec.offset_clamp ? rmax(r + T(LRF_SH_COLOR_OFFSET), T(0)) : r;
    }
}

// ColorEval::color_vjp: writes the active coefficients' gradient into `v_coeffs` (the caller zeroed the rest) and
// returns the gradient of the mean through the view direction in `v_mean`.
template <typename T>
LRF_HD void color_vjp(const LrfShConstants& k, const ColorSpec& spec, const Cam<T>& cam, const T mean[3],
                      const T* coeffs, const T* v_color, T* v_coeffs, T v_mean[3]) {
    v_mean[0] = v_mean[1] = v_mean[2] = T(0);
    T basis[MAX_SH_COEFFS];
    if (spec.sh_degree >= 0) color_basis(k, spec, cam, mean, basis);
    T v_basis[MAX_SH_COEFFS];
    const int count = spec.sh_degree >= 0 ? sh_coeffs(spec.sh_degree) : 0;
    for (int l = 0; l < count; ++l) v_basis[l] = T(0);
    for (int ch = 0; ch < spec.channels; ++ch) {
        T g = v_color[ch];
        // The clamp at zero stops the gradient of channels it flattened.
        if (spec.offset_clamp && raw_color(spec, basis, coeffs, ch) + T(LRF_SH_COLOR_OFFSET) <= T(0)) g = T(0);
        if (spec.sh_degree < 0) {
            v_coeffs[ch] = g;
            continue;
        }
        // Channel-outer order sums each v_basis[l] over channels in ascending order, as the CPU kernel does.
        for (int l = 0; l < count; ++l) {
            v_coeffs[l * spec.channels + ch] = basis[l] * g;
            v_basis[l] += coeffs[l * spec.channels + ch] * g;
        }
    }
    if (spec.sh_degree <= 0) return;
    T dir[3], dist;
    if (!view_direction(cam, mean, dir, dist)) return;
    T v_dir[3];
    sh_basis_vjp(k, spec.sh_degree, dir, v_basis, v_dir);
    // d = v/|v| ⇒ ∂L/∂v = (I − d dᵀ) ∂L/∂d / |v|.
    const T along = v_dir[0] * dir[0] + v_dir[1] * dir[1] + v_dir[2] * dir[2];
    for (int i = 0; i < 3; ++i) v_mean[i] = (v_dir[i] - along * dir[i]) / dist;
}

}  // namespace lrf
