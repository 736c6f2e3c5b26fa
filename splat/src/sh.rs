//! Real spherical harmonics of degree 0–3 (the 3DGS basis and constants), evaluated per channel: a Gaussian's
//! value in channel k seen along unit direction d is Σ_l Y_l(d)·c_lk.

use crate::real::Real;

pub const SH_C0: f64 = 0.28209479177387814;
pub const SH_C1: f64 = 0.4886025119029199;
pub const SH_C2: [f64; 5] = [
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
];
pub const SH_C3: [f64; 7] = [
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
];
/// Highest supported SH degree.
pub const MAX_SH_DEGREE: usize = 3;

/// Number of SH coefficients per channel for a degree.
pub const fn sh_coeffs(degree: usize) -> usize {
    (degree + 1) * (degree + 1)
}

/// The SH degree whose coefficient count is `k`, if any.
pub fn sh_degree_of(k: usize) -> Option<usize> {
    (0..=MAX_SH_DEGREE).find(|&d| sh_coeffs(d) == k)
}

/// Y_l(d) for l < (degree+1)², written into `basis`.
pub(crate) fn sh_basis<R: Real>(degree: usize, [x, y, z]: [R; 3], basis: &mut [R]) {
    let c = R::of;
    basis[0] = c(SH_C0);
    if degree >= 1 {
        basis[1] = -c(SH_C1) * y;
        basis[2] = c(SH_C1) * z;
        basis[3] = -c(SH_C1) * x;
    }
    if degree >= 2 {
        let (xx, yy, zz) = (x * x, y * y, z * z);
        basis[4] = c(SH_C2[0]) * x * y;
        basis[5] = c(SH_C2[1]) * y * z;
        basis[6] = c(SH_C2[2]) * (c(2.0) * zz - xx - yy);
        basis[7] = c(SH_C2[3]) * x * z;
        basis[8] = c(SH_C2[4]) * (xx - yy);
        if degree >= 3 {
            basis[9] = c(SH_C3[0]) * y * (c(3.0) * xx - yy);
            basis[10] = c(SH_C3[1]) * x * y * z;
            basis[11] = c(SH_C3[2]) * y * (c(4.0) * zz - xx - yy);
            basis[12] = c(SH_C3[3]) * z * (c(2.0) * zz - c(3.0) * xx - c(3.0) * yy);
            basis[13] = c(SH_C3[4]) * x * (c(4.0) * zz - xx - yy);
            basis[14] = c(SH_C3[5]) * z * (xx - yy);
            basis[15] = c(SH_C3[6]) * x * (xx - c(3.0) * yy);
        }
    }
}

/// Gradient with respect to the direction (x, y, z taken as independent) of Σ_l v_basis[l]·Y_l(d).
pub(crate) fn sh_basis_vjp<R: Real>(degree: usize, [x, y, z]: [R; 3], v_basis: &[R]) -> [R; 3] {
    let c = R::of;
    let mut v = [R::ZERO; 3];
    let mut add = |l: usize, gx: R, gy: R, gz: R| {
        v[0] += v_basis[l] * gx;
        v[1] += v_basis[l] * gy;
        v[2] += v_basis[l] * gz;
    };
    let zero = R::ZERO;
    if degree >= 1 {
        add(1, zero, -c(SH_C1), zero);
        add(2, zero, zero, c(SH_C1));
        add(3, -c(SH_C1), zero, zero);
    }
    if degree >= 2 {
        let (xx, yy, zz) = (x * x, y * y, z * z);
        add(4, c(SH_C2[0]) * y, c(SH_C2[0]) * x, zero);
        add(5, zero, c(SH_C2[1]) * z, c(SH_C2[1]) * y);
        add(6, c(-2.0 * SH_C2[2]) * x, c(-2.0 * SH_C2[2]) * y, c(4.0 * SH_C2[2]) * z);
        add(7, c(SH_C2[3]) * z, zero, c(SH_C2[3]) * x);
        add(8, c(2.0 * SH_C2[4]) * x, c(-2.0 * SH_C2[4]) * y, zero);
        if degree >= 3 {
            add(9, c(6.0 * SH_C3[0]) * x * y, c(3.0 * SH_C3[0]) * (xx - yy), zero);
            add(10, c(SH_C3[1]) * y * z, c(SH_C3[1]) * x * z, c(SH_C3[1]) * x * y);
            add(
                11,
                c(-2.0 * SH_C3[2]) * x * y,
                c(SH_C3[2]) * (c(4.0) * zz - xx - c(3.0) * yy),
                c(8.0 * SH_C3[2]) * y * z,
            );
            add(
                12,
                c(-6.0 * SH_C3[3]) * x * z,
                c(-6.0 * SH_C3[3]) * y * z,
                c(SH_C3[3]) * (c(6.0) * zz - c(3.0) * xx - c(3.0) * yy),
            );
            add(
                13,
                c(SH_C3[4]) * (c(4.0) * zz - c(3.0) * xx - yy),
                c(-2.0 * SH_C3[4]) * x * y,
                c(8.0 * SH_C3[4]) * x * z,
            );
            add(
                14,
                c(2.0 * SH_C3[5]) * x * z,
                c(-2.0 * SH_C3[5]) * y * z,
                c(SH_C3[5]) * (xx - yy),
            );
            add(15, c(3.0 * SH_C3[6]) * (xx - yy), c(-6.0 * SH_C3[6]) * x * y, zero);
        }
    }
    v
}
