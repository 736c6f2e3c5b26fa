// What the forward and backward blends share (a port of splat/src/blend.rs and the per-pair bodies of
// splat/src/forward.rs and splat/src/backward.rs): pixel spans, the evaluation of one (splat, pixel) pair, and
// one pixel's step over one splat. Both kernels and the host emulation call exactly these functions, so every
// path takes the CPU kernel's decisions (skip, composite, stop) by the same arithmetic.
#pragma once

#include "projection.cuh"

namespace lrf {

// Fields of a splat record (LRF_SPLAT_FIELDS values per splat).
enum SplatField { S_MX, S_MY, S_CA, S_CB, S_CC, S_OPACITY, S_DEPTH, S_EX, S_EY };
// Fields of a splat gradient (LRF_SPLAT_GRAD_FIELDS values per splat), in the CPU kernel's partial order.
enum SplatGradField { G_MX, G_MY, G_CA, G_CB, G_CC, G_OPACITY };

// What the blend reads of one splat (blend.rs `SplatBlend`).
template <typename T>
struct BlendSplat {
    T mean[2];
    T conic[3];
    T opacity;
    T depth;
    T extent_y;
};

template <typename T>
LRF_HD BlendSplat<T> load_blend(const T* record) {
    BlendSplat<T> s;
    s.mean[0] = record[S_MX];
    s.mean[1] = record[S_MY];
    s.conic[0] = record[S_CA];
    s.conic[1] = record[S_CB];
    s.conic[2] = record[S_CC];
    s.opacity = record[S_OPACITY];
    s.depth = record[S_DEPTH];
    s.extent_y = record[S_EY];
    return s;
}

// tiling.rs `pixel_span`: the inclusive range of pixel indices whose centres lie within `extent` of `centre`,
// clipped to 0..size; false when empty. On success both ends are integers in [0, size − 1].
template <typename T>
LRF_HD bool pixel_span(T centre, T extent, int64_t size, T& lo, T& hi) {
    lo = rmax(r_ceil(centre - extent - T(LRF_PIXEL_CENTER)), T(0));
    hi = rmin(r_floor(centre + extent - T(LRF_PIXEL_CENTER)), T(double(size) - 1.0));
    return lo <= hi;
}

// blend.rs `Tile::rows_of`, as an inclusive range of image rows (empty: lo > hi): the rows of a tile that a
// splat can reach. `rows_end` is one past the tile's last row on the image (the span is clipped there).
template <typename T>
LRF_HD void reached_rows(const BlendSplat<T>& s, int64_t tile_y0, int64_t rows_end, int32_t& lo, int32_t& hi) {
    T flo, fhi;
    lo = 1;
    hi = 0;
    if (!pixel_span(s.mean[1], s.extent_y, rows_end, flo, fhi)) return;
    if (!(int64_t(fhi) >= tile_y0)) return;
    lo = int32_t(rmax(int64_t(flo), tile_y0));
    hi = int32_t(fhi);
}

// One (splat, pixel) pair (blend.rs `Pair`, hard cutoff).
template <typename T>
struct Pair {
    T gauss;   // G = exp(−σ)
    T alpha;   // after the MAX_ALPHA clamp
    T dalpha;  // ∂alpha/∂(o·G): zero when clamped
    bool composite;
    bool stop;  // the pixel ends here, before this pair
    T next_t;
};

// blend.rs `eval_pair` at offset (dx, dy) = pixel − mean, for a pixel with transmittance `t` still `active`.
// The CPU kernel evaluates G at σ bounded to [0, 30] to keep its SIMD exp in range and out of denormals; where
// that matters o·G is below ALPHA_THRESHOLD (σ > 30) or σ < 0, so the pair is skipped either way and its G
// unused: the decisions are the same.
template <typename T>
LRF_HD Pair<T> eval_pair(const BlendSplat<T>& s, T dx, T dy, T t, bool active) {
    const T a = s.conic[0], b = s.conic[1], c = s.conic[2];
    const T sigma = T(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy;
    Pair<T> p;
    p.gauss = r_exp(-sigma);
    const T og = s.opacity * p.gauss;
    const bool clamped = og > T(LRF_MAX_ALPHA);
    p.alpha = clamped ? T(LRF_MAX_ALPHA) : og;
    p.dalpha = clamped ? T(0) : T(1);
    const bool valid = p.alpha >= T(LRF_ALPHA_THRESHOLD) && sigma >= T(0) && active;
    p.next_t = t * (T(1) - p.alpha);
    p.stop = valid && p.next_t <= T(LRF_TRANSMITTANCE_THRESHOLD);
    p.composite = valid && !p.stop;
    return p;
}

// Pixel-centre coordinate of pixel index `i` (R::of(i as f64 + PIXEL_CENTER)).
template <typename T>
LRF_HD T pixel_center(int64_t i) {
    return T(double(i) + LRF_PIXEL_CENTER);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward: one pixel's compositing state (forward.rs, per lane). CM is the compiled channel capacity; only the
// first `channels` entries are used. Loops run to CM with a guard so that the arrays stay in registers.

template <typename T, int CM>
struct ForwardPixel {
    T t;  // transmittance
    T color[CM];
    T depth;  // Σ weight·depth
    bool live;
};

template <typename T, int CM>
LRF_HD void forward_init(ForwardPixel<T, CM>& p, bool on_image) {
    p.t = T(1);
    for (int k = 0; k < CM; ++k) p.color[k] = T(0);
    p.depth = T(0);
    p.live = on_image;
}

// Composites one splat into the pixel at (px, py); returns whether the pair composited.
template <typename T, int CM>
LRF_HD bool forward_step(ForwardPixel<T, CM>& p, const BlendSplat<T>& s, const T* color, int channels, T px, T py) {
    const Pair<T> pair = eval_pair(s, px - s.mean[0], py - s.mean[1], p.t, p.live);
    if (pair.stop) p.live = false;
    if (!pair.composite) return false;
    const T weight = pair.alpha * p.t;
    LRF_UNROLL
    for (int k = 0; k < CM; ++k)
        if (k < channels) p.color[k] += weight * color[k];
    p.depth += weight * s.depth;
    p.t = pair.next_t;
    return true;
}

// Writes the pixel's image (background included), alpha and expected depth (cpu.rs `rasterize_with`).
template <typename T, int CM>
LRF_HD void forward_finish(const ForwardPixel<T, CM>& p, const LrfRaster& a, int64_t pixel) {
    const int64_t plane = int64_t(a.camera.width) * a.camera.height;
    T* image = static_cast<T*>(a.image);
    const T* background = static_cast<const T*>(a.background);
    LRF_UNROLL
    for (int k = 0; k < CM; ++k)
        if (k < a.channels) image[k * plane + pixel] = p.color[k] + p.t * background[k];
    const T alpha = T(1) - p.t;
    static_cast<T*>(a.alpha)[pixel] = alpha;
    static_cast<T*>(a.depth)[pixel] = alpha > T(0) ? p.depth / alpha : T(0);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward by forward replay (backward.rs): the splat list is walked front to back again, taking the forward's
// decisions, while the colour still behind the pixel is peeled off. With g = ∂L/∂colour, S = colour behind the
// splat, T its transmittance and T_N the pixel's final one:
// ∂L/∂α = T·Σ_k g_k c_k + (T_N·(∂L/∂A − Σ_k g_k bg_k) − Σ_k g_k S_k) / (1 − α).

template <typename T, int CM>
struct BackwardPixel {
    T t;
    T behind[CM];  // composited colour not yet peeled off (background excluded)
    T g[CM];       // ∂L/∂image
    T v_final;     // T_N·(∂L/∂alpha − Σ_k g_k bg_k)
    bool live;
};

// The pixel's upstream state, from the forward's outputs (cpu.rs `rasterize_backward`, per tile).
template <typename T, int CM>
LRF_HD void backward_init(BackwardPixel<T, CM>& p, const LrfRaster& a, int64_t pixel, bool on_image) {
    p.t = T(1);
    p.live = on_image;
    p.v_final = T(0);
    for (int k = 0; k < CM; ++k) p.behind[k] = p.g[k] = T(0);
    if (!on_image) return;
    const int64_t plane = int64_t(a.camera.width) * a.camera.height;
    const T* image = static_cast<const T*>(a.image);
    const T* v_image = static_cast<const T*>(a.v_image);
    const T* background = static_cast<const T*>(a.background);
    // The final transmittance is recovered from alpha, as the CPU kernel does (1 − (1 − T) need not be T).
    const T t_final = T(1) - static_cast<const T*>(a.alpha)[pixel];
    if (a.v_alpha) p.v_final = static_cast<const T*>(a.v_alpha)[pixel];
    LRF_UNROLL
    for (int k = 0; k < CM; ++k)
        if (k < a.channels) {
            p.g[k] = v_image[k * plane + pixel];
            p.v_final -= p.g[k] * background[k];
            p.behind[k] = image[k * plane + pixel] - t_final * background[k];
        }
    p.v_final *= t_final;
}

// One pair's gradient: the splat's blend inputs (SplatGradField order) and the colour weight; the colour's
// gradient is weight·g_k per channel, left to the caller so it needs no array of its own.
template <typename T>
struct PairGrad {
    T geometry[LRF_SPLAT_GRAD_FIELDS];
    T weight;
};

// Replays one splat at the pixel; returns whether the pair composited (and so has a gradient in `out`).
template <typename T, int CM>
LRF_HD bool backward_step(BackwardPixel<T, CM>& p, const BlendSplat<T>& s, const T* color, int channels, T px, T py,
                          PairGrad<T>& out) {
    const T dx = px - s.mean[0], dy = py - s.mean[1];
    const Pair<T> pair = eval_pair(s, dx, dy, p.t, p.live);
    if (pair.stop) p.live = false;
    if (!pair.composite) return false;
    const T t_before = p.t;
    const T weight = pair.alpha * t_before;
    // Σ_k g_k c_k and Σ_k g_k S_k, with S the colour behind this splat.
    T g_dot_c = T(0), g_dot_s = T(0);
    LRF_UNROLL
    for (int k = 0; k < CM; ++k)
        if (k < channels) {
            const T ck = color[k];
            p.behind[k] -= weight * ck;
            g_dot_c += p.g[k] * ck;
            g_dot_s += p.g[k] * p.behind[k];
        }
    p.t = pair.next_t;
    const T v_alpha = t_before * g_dot_c + (p.v_final - g_dot_s) / (T(1) - pair.alpha);
    // α = o·G (below the clamp): ∂α/∂o = G, ∂α/∂σ = −o·G.
    const T v_og = v_alpha * pair.dalpha;
    const T v_sigma = -v_og * s.opacity * pair.gauss;
    const T a = s.conic[0], b = s.conic[1], c = s.conic[2];
    const T half = T(0.5);
    out.geometry[G_MX] = -(v_sigma * (a * dx + b * dy));
    out.geometry[G_MY] = -(v_sigma * (b * dx + c * dy));
    out.geometry[G_CA] = half * v_sigma * dx * dx;
    out.geometry[G_CB] = v_sigma * dx * dy;
    out.geometry[G_CC] = half * v_sigma * dy * dy;
    out.geometry[G_OPACITY] = v_og * pair.gauss;
    out.weight = weight;
    return true;
}

}  // namespace lrf
