//! The float type of the CPU kernel: f32 for speed, f64 for finite-difference tests of the backward.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + tch::kind::Element
    + 'static
{
    // ZERO comes from `tch::kind::Element`.
    const ONE: Self;
    fn of(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// exp(x) for the blend and projection loops: for f32 a branch-free polynomial the compiler can vectorise
    /// (relative error below 2e-7 against libm; the input is clamped to [−87, 88], so it never reaches 0 or
    /// infinity), libm for f64.
    fn fast_exp(self) -> Self;
    /// [`Real::fast_exp`] for x in [−87, 88] only, with its polynomial evaluated by fused multiply-adds: the
    /// blend bounds its argument itself, and each vector operation left out of its row counts. Outside that
    /// range the f32 result is unspecified. Same accuracy bound, different rounding. Fast only in code compiled
    /// with FMA: inside the kernel's instruction-set dispatch (`lrf_simd::dispatch`) on x86-64, everywhere on
    /// AArch64; elsewhere each fused step is a libm call.
    fn fused_exp_in_range(self) -> Self;
    /// self·a + b rounded once; fast under the same conditions as [`Real::fused_exp_in_range`].
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// ln(x) for positive, normal, finite x, vectorisable like [`Real::fast_exp`] (within 2 ulp of libm); other
    /// inputs give unspecified values.
    fn fast_ln(self) -> Self;
    /// ln(1 + x) for x in [0, 1] (softplus's log1p(e^−|x|)): for f32 x·P(x), a polynomial by fused multiply-adds
    /// with no range reduction or division, relative error below 2.5e-7 against libm, also as x → 0; libm for
    /// f64. Outside [0, 1] the f32 result is unspecified. Fast under the conditions of
    /// [`Real::fused_exp_in_range`].
    fn fused_ln_1p_unit(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn min(self, other: Self) -> Self;
    fn max(self, other: Self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn is_finite(self) -> bool;
}

macro_rules! impl_real {
    ($t:ty, $fast_exp:path, $fused_exp:path, $fast_ln:path, $fused_ln_1p_unit:path) => {
        impl Real for $t {
            const ONE: Self = 1.0;
            #[inline(always)]
            fn of(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn fast_exp(self) -> Self {
                $fast_exp(self)
            }
            #[inline(always)]
            fn fused_exp_in_range(self) -> Self {
                $fused_exp(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn fast_ln(self) -> Self {
                $fast_ln(self)
            }
            #[inline(always)]
            fn fused_ln_1p_unit(self) -> Self {
                $fused_ln_1p_unit(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                if self < other { self } else { other }
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                if self > other { self } else { other }
            }
            #[inline(always)]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline(always)]
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}

impl_real!(f32, exp_f32, exp_f32_in_range::<true>, ln_f32, ln_1p_unit_f32);
impl_real!(f64, f64::exp, f64::exp, f64::ln, f64::ln_1p);

/// ln 2 split so that n·LN2_HI is exact for the exponents the polynomials see (Cephes).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// a·b + c, rounded once when `FUSED`.
#[inline(always)]
fn multiply_add<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// Cephes-style expf: x = n·ln2 + r with |r| ≤ ln2/2, e^r ≈ 1 + r + r²·q(r), 2^n by exponent bits. q is a
/// cubic fitted for least maximum relative error (iteratively reweighted least squares), which keeps the error
/// within 2e-7 of libm with two fewer multiply-adds than Cephes' quintic; they count in the blend's row.
/// Inputs are clamped to [−87, 88] (the kernel never needs values beyond); NaN propagates.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    exp_f32_in_range::<false>(x.clamp(-87.0, 88.0))
}

/// [`exp_f32`] without the clamp, for x in [−87, 88]. `FUSED` evaluates it with fused multiply-adds (see
/// [`Real::fused_exp_in_range`]).
#[inline(always)]
fn exp_f32_in_range<const FUSED: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let fma = multiply_add::<FUSED>;
    let n = fma(x, LOG2E, 0.5).floor();
    let r = fma(-n, LN2_LO, fma(-n, LN2_HI, x));
    let r2 = r * r;
    let p = [4.189_009_6e-2, 1.666_711_4e-1, 4.999_923e-1]
        .into_iter()
        .fold(8.312_506e-3, |p, c| fma(p, r, c));
    let e_r = fma(p, r2, r) + 1.0;
    // 2^n from the exponent bits. x is in [−87, 88], so n + 127 is an integer in [2, 254]; adding 2^23 puts it,
    // exactly, in the low mantissa bits. `n as i32` would give the same integer, but Rust's saturating
    // float-to-int cast does not vectorise: it became 16 scalar conversions with NaN and range fix-ups per row
    // of the blend. A NaN n yields some finite scale here, and e_r is NaN then too, so NaN still propagates.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0xff;
    e_r * f32::from_bits(biased << 23)
}

/// Cephes-style logf: x = m·2^e with m in [√½, √2), ln x = e·ln2 + ln m, a degree-9 polynomial in m − 1.
/// Mantissa and exponent come from the bits, branch-free, so the compiler can vectorise it.
#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    // Mantissa in [1, 2), then moved to [√½, √2) with the exponent adjusted to match.
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let above_sqrt2 = m > std::f32::consts::SQRT_2;
    let m = if above_sqrt2 { 0.5 * m } else { m };
    let e = (e + above_sqrt2 as i32) as f32;
    let r = m - 1.0;
    let r2 = r * r;
    let p = ((((((((7.037_683_6e-2 * r - 1.151_461_1e-1) * r + 1.167_699_9e-1) * r - 1.242_014_1e-1) * r
        + 1.424_932_3e-1)
        * r
        - 1.666_805_8e-1)
        * r
        + 2.000_071_4e-1)
        * r
        - 2.499_999_4e-1)
        * r
        + 3.333_333e-1)
        * r
        * r2;
    let y = p + e * LN2_LO - 0.5 * r2;
    r + y + e * LN2_HI
}

/// ln(1 + x) ≈ x·P(x) on [0, 1], P of degree 8 fitted for least maximum relative error (iteratively
/// reweighted least squares). P(0) ≈ 1 keeps the relative error bounded as x → 0, where ln(1 + x) ≈ x.
#[inline(always)]
fn ln_1p_unit_f32(x: f32) -> f32 {
    let p = [
        0.999_999_94,
        -0.499_994_93,
        0.333_190_95,
        -0.248_429_72,
        0.191_059_63,
        -0.136_631_49,
        0.078_224_786,
        -0.029_504_515,
    ]
    .into_iter()
    .rev()
    .fold(5.232_51e-3, |p, c| p.mul_add(x, c));
    p * x
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f64;
        for i in 0..=400_000 {
            let x = -87.0 + 175.0 * i as f32 / 400_000.0;
            let exact = (x as f64).exp();
            for approx in [super::exp_f32(x), super::exp_f32_in_range::<true>(x)] {
                worst = worst.max(((approx as f64) - exact).abs() / exact);
            }
        }
        assert!(worst < 2e-7, "relative error {worst}");
        assert!(super::exp_f32(-1e30) < 1e-37 && super::exp_f32(1e30).is_finite());
        assert!(super::exp_f32(f32::NAN).is_nan() && super::exp_f32_in_range::<true>(f32::NAN).is_nan());
    }

    #[test]
    fn ln_1p_unit_matches_libm() {
        let mut worst = 0f64;
        // Uniform over [0, 1], plus logarithmically spaced towards 0 down to f32's smallest normals.
        let samples = (1..=400_000)
            .map(|i| i as f32 / 400_000.0)
            .chain((0..=20_000).map(|i| (-87.0 + 87.0 * i as f64 / 20_000.0).exp() as f32));
        for x in samples {
            let exact = (x as f64).ln_1p();
            worst = worst.max(((super::ln_1p_unit_f32(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(super::ln_1p_unit_f32(0.0), 0.0);
    }

    #[test]
    fn fast_ln_matches_libm() {
        let mut worst = 0f64;
        // Logarithmically spaced over the normal range, plus the neighbourhood of 1 where ln is near 0.
        let samples = (0..=400_000)
            .map(|i| (-87.0 + 175.0 * i as f64 / 400_000.0).exp() as f32)
            .chain((0..=20_000).map(|i| 0.9 + 0.2 * i as f32 / 20_000.0));
        for x in samples {
            let exact = (x as f64).ln();
            let error = ((super::ln_f32(x) as f64) - exact).abs();
            // Relative, except at ln 1 = 0 itself.
            worst = worst.max(if x == 1.0 { error } else { error / exact.abs() });
        }
        assert!(worst < 3e-7, "error {worst}");
    }
}
