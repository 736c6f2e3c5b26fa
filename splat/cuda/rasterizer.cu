// The CUDA rasterizer: the stages of a frame as kernels, following gsplat's split (project → intersections →
// per-tile forward → per-tile backward → projection backward). The sorts and prefix sums between the stages are
// tch operations on the Rust side (splat/src/cuda.rs), which also owns every buffer.
//
// Each stage's per-thread work is a __host__ __device__ function (projection.cuh, blend.cuh, the bodies below).
// With `on_host` set, a stage runs that same code in host loops over host buffers instead of launching: tests
// exercise every formula, index and decision of the kernels on machines without a GPU. What only the device
// path has is the launch geometry, the shared-memory batching, and the warp reduction and atomics of the
// backward; those are kept small and commented.
#include <cuda_runtime.h>

#include <stdarg.h>
#include <stdio.h>

#include "blend.cuh"
#include "lrf_splat.h"
#include "projection.cuh"

// torch's C shim (torch/csrc/inductor/aoti_torch/c/shim.h, exported by libtorch_cuda): the device guard and
// current stream. Referencing them also keeps libtorch_cuda among the binary's needed libraries under the
// linker's --as-needed, without which tch silently sees no GPU.
extern "C" {
struct CUDAGuardOpaque;
int32_t aoti_torch_create_cuda_guard(int32_t device_index, CUDAGuardOpaque** ret_guard);
int32_t aoti_torch_delete_cuda_guard(CUDAGuardOpaque* guard);
int32_t aoti_torch_get_current_cuda_stream(int32_t device_index, void** ret_stream);
}

namespace lrf {
namespace {

constexpr int TILE = LRF_TILE_SIZE;
constexpr int BLOCK = LRF_TILE_PIXELS;  // one thread per pixel of a tile; also the per-Gaussian block size
constexpr int WARP = 32;
constexpr unsigned FULL_MASK = 0xffffffffu;
static_assert(BLOCK == TILE * TILE, "a tile's pixels are one block's threads");
static_assert(BLOCK % WARP == 0, "blocks are whole warps");

struct Error {
    char* buffer;
    size_t len;

    int32_t fail(const char* format, ...) {
        if (buffer && len > 0) {
            va_list args;
            va_start(args, format);
            vsnprintf(buffer, len, format, args);
            va_end(args);
        }
        return 1;
    }
};

// The device and stream torch uses for the tensors, for the duration of one stage.
class DeviceScope {
  public:
    DeviceScope() = default;
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;
    ~DeviceScope() {
        if (guard_) aoti_torch_delete_cuda_guard(guard_);
    }

    int32_t open(int32_t device, Error& error) {
        if (aoti_torch_create_cuda_guard(device, &guard_) != 0)
            return error.fail("torch could not select CUDA device %d", device);
        // This library's CUDA runtime (static) keeps its own current device: select the same one. Both runtimes
        // use the device's primary context, so torch's memory and streams are valid here.
        const cudaError_t status = cudaSetDevice(device);
        if (status != cudaSuccess)
            return error.fail("cudaSetDevice(%d): %s", device, cudaGetErrorString(status));
        void* stream = nullptr;
        if (aoti_torch_get_current_cuda_stream(device, &stream) != 0)
            return error.fail("torch has no current CUDA stream for device %d", device);
        stream_ = static_cast<cudaStream_t>(stream);
        return 0;
    }

    cudaStream_t stream() const { return stream_; }

  private:
    CUDAGuardOpaque* guard_ = nullptr;
    cudaStream_t stream_ = nullptr;
};

int32_t check_launch(const char* stage, Error& error) {
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return error.fail("%s kernel launch failed: %s", stage, cudaGetErrorString(status));
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-index stages: one thread (or one host loop iteration) per Gaussian or compact id.

template <typename Body>
__global__ void __launch_bounds__(BLOCK) for_each_kernel(LrfRaster a, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) Body::run(a, i);
}

template <typename Body>
int32_t for_each(const LrfRaster& a, int64_t n, const char* stage, Error& error) {
    if (a.on_host) {
        for (int64_t i = 0; i < n; ++i) Body::run(a, i);
        return 0;
    }
    if (n <= 0) return 0;
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
    if (blocks > 0x7fffffff) return error.fail("%s: %lld items exceed one launch", stage, (long long)n);
    DeviceScope scope;
    if (scope.open(a.device, error)) return 1;
    for_each_kernel<Body><<<unsigned(blocks), BLOCK, 0, scope.stream()>>>(a, n);
    return check_launch(stage, error);
}

// tiling.rs `prepare`, per Gaussian: cull (non-finite coefficients included), project, colour, radius and the
// tile rectangle of `bin`.
template <typename T>
struct ProjectForward {
    static LRF_HD void run(const LrfRaster& a, int64_t i) {
        const ColorSpec spec = color_spec(a);
        a.radii[i] = 0;
        a.tile_count[i] = 0;
        int32_t* rect = a.tile_rect + 4 * i;
        rect[0] = rect[2] = 1;  // empty: tx0 > tx1, ty0 > ty1
        rect[1] = rect[3] = 0;
        static_cast<T*>(a.sort_depth)[i] = r_inf<T>();
        const T* coeffs = static_cast<const T*>(a.coeffs) + i * spec.stride;
        for (int j = 0; j < spec.stride; ++j)
            if (!r_finite(coeffs[j])) return;
        const Cam<T> cam = make_cam<T>(a.camera);
        const Params<T> params = load_params<T>(a, i);
        Splat<T> s;
        if (!project(cam, params, a.antialiased != 0, s)) return;
        eval_color(a.sh, spec, cam, params.mean, coeffs, static_cast<T*>(a.colors) + i * spec.channels);
        T* record = static_cast<T*>(a.splats) + i * LRF_SPLAT_FIELDS;
        record[S_MX] = s.mean2d[0];
        record[S_MY] = s.mean2d[1];
        record[S_CA] = s.conic[0];
        record[S_CB] = s.conic[1];
        record[S_CC] = s.conic[2];
        record[S_OPACITY] = s.opacity;
        record[S_DEPTH] = s.depth;
        record[S_EX] = s.extent[0];
        record[S_EY] = s.extent[1];
        static_cast<T*>(a.sort_depth)[i] = s.depth;
        a.radii[i] = saturating_i32(r_ceil(rmax(s.extent[0], s.extent[1])));
        T x0, x1, y0, y1;
        if (!pixel_span(s.mean2d[0], s.extent[0], a.camera.width, x0, x1) ||
            !pixel_span(s.mean2d[1], s.extent[1], a.camera.height, y0, y1))
            return;
        const int64_t tx0 = int64_t(x0) / TILE, tx1 = int64_t(x1) / TILE;
        const int64_t ty0 = int64_t(y0) / TILE, ty1 = int64_t(y1) / TILE;
        rect[0] = int32_t(tx0);
        rect[1] = int32_t(tx1);
        rect[2] = int32_t(ty0);
        rect[3] = int32_t(ty1);
        a.tile_count[i] = (tx1 + 1 - tx0) * (ty1 + 1 - ty0);
    }
};

// tiling.rs `bin`, per compact id: its intersections' keys, row by row of its tile rectangle. The key sorts by
// tile, then by compact id, i.e. depth: each tile's list comes out front to back.
struct EmitIntersections {
    static LRF_HD void run(const LrfRaster& a, int64_t s) {
        const int32_t* rect = a.tile_rect + 4 * a.order[s];
        int64_t j = s == 0 ? 0 : a.isect_offsets[s - 1];
        for (int64_t ty = rect[2]; ty <= rect[3]; ++ty)
            for (int64_t tx = rect[0]; tx <= rect[1]; ++tx) a.keys[j++] = ((ty * a.tiles_x + tx) << 32) | s;
    }
};

// cpu.rs `rasterize_backward`'s last pass, per Gaussian: the reduced splat gradient back to the parameters and
// coefficients, and the densification statistics.
template <typename T>
struct ProjectBackward {
    static LRF_HD void run(const LrfRaster& a, int64_t i) {
        const ColorSpec spec = color_spec(a);
        const T* vs = static_cast<const T*>(a.v_splats) + i * LRF_SPLAT_GRAD_FIELDS;
        const T* vc = static_cast<const T*>(a.v_colors) + i * spec.channels;
        // Culled Gaussians, and splats hidden or below the alpha cutoff everywhere, have an all-zero gradient:
        // skip VJPs whose results would be zero (a NaN is not zero, so it still propagates).
        bool any = false;
        for (int f = 0; f < LRF_SPLAT_GRAD_FIELDS; ++f) any = any || vs[f] != T(0);
        for (int k = 0; k < spec.channels; ++k) any = any || vc[k] != T(0);
        if (!any) return;
        SplatGrad<T> v;
        v.mean2d[0] = vs[G_MX];
        v.mean2d[1] = vs[G_MY];
        v.conic[0] = vs[G_CA];
        v.conic[1] = vs[G_CB];
        v.conic[2] = vs[G_CC];
        v.opacity = vs[G_OPACITY];
        const Cam<T> cam = make_cam<T>(a.camera);
        const Params<T> params = load_params<T>(a, i);
        const ParamsGrad<T> pg = project_vjp(cam, params, a.antialiased != 0, v);
        T v_dir[3];
        color_vjp(a.sh, spec, cam, params.mean, static_cast<const T*>(a.coeffs) + i * spec.stride, vc,
                  static_cast<T*>(a.grad_coeffs) + i * spec.stride, v_dir);
        T* means = static_cast<T*>(a.grad_means) + 3 * i;
        T* log_scales = static_cast<T*>(a.grad_log_scales) + 3 * i;
        T* quats = static_cast<T*>(a.grad_quats) + 4 * i;
        for (int j = 0; j < 3; ++j) {
            means[j] = pg.mean[j] + v_dir[j];
            log_scales[j] = pg.log_scale[j];
        }
        for (int j = 0; j < 4; ++j) quats[j] = pg.quat[j];
        static_cast<T*>(a.grad_opacity_logits)[i] = pg.opacity_logit;
        const T gx = v.mean2d[0], gy = v.mean2d[1];
        static_cast<T*>(a.mean2d_grad_norm)[i] = r_sqrt(gx * gx + gy * gy);
        const T nx = gx * T(double(a.camera.width) * 0.5), ny = gy * T(double(a.camera.height) * 0.5);
        static_cast<T*>(a.mean2d_grad_norm_ndc)[i] = r_sqrt(nx * nx + ny * ny);
    }
};

// ---------------------------------------------------------------------------------------------------------------
// Per-tile stages: one block of TILE × TILE threads per tile, one thread per pixel (row-major in the tile).

struct TilePixel {
    int64_t y0;        // first row of the tile
    int64_t rows_end;  // one past the tile's last row on the image
    int64_t x, y;      // the pixel
    int64_t index;     // y · width + x
    bool on_image;     // partial tiles at the right and bottom edges have threads beyond the image
};

LRF_HD TilePixel tile_pixel(const LrfRaster& a, int64_t tile, int local) {
    TilePixel p;
    const int64_t width = a.camera.width, height = a.camera.height;
    const int64_t x0 = (tile % a.tiles_x) * TILE;
    p.y0 = (tile / a.tiles_x) * TILE;
    p.rows_end = p.y0 + (height - p.y0 < TILE ? height - p.y0 : TILE);
    p.x = x0 + local % TILE;
    p.y = p.y0 + local / TILE;
    p.on_image = p.x < width && p.y < height;
    p.index = p.y * width + p.x;
    return p;
}

// One splat of a tile's list as the blend loops see it.
template <typename T>
struct ListEntry {
    BlendSplat<T> splat;
    int32_t id;  // compact id
    int32_t row_lo, row_hi;
};

template <typename T>
LRF_HD ListEntry<T> list_entry(const LrfRaster& a, const TilePixel& p, int64_t isect) {
    ListEntry<T> e;
    e.id = a.ids[isect];
    e.splat = load_blend(static_cast<const T*>(a.splats_c) + int64_t(e.id) * LRF_SPLAT_FIELDS);
    reached_rows(e.splat, p.y0, p.rows_end, e.row_lo, e.row_hi);
    return e;
}

template <typename T>
LRF_HD bool reaches(const ListEntry<T>& e, const TilePixel& p) {
    return p.y >= e.row_lo && p.y <= e.row_hi;
}

int32_t tile_launch_check(const LrfRaster& a, const char* stage, Error& error) {
    const int64_t tiles = int64_t(a.tiles_x) * a.tiles_y;
    if (tiles > 0x7fffffff) return error.fail("%s: %lld tiles exceed one launch", stage, (long long)tiles);
    return 0;
}

template <typename T, int CM>
__global__ void __launch_bounds__(BLOCK) rasterize_forward_kernel(LrfRaster a) {
    const int64_t tile = blockIdx.x;
    const TilePixel px = tile_pixel(a, tile, threadIdx.x);
    // The tile's list is read in batches of BLOCK entries, one loaded by each thread.
    __shared__ ListEntry<T> batch[BLOCK];
    ForwardPixel<T, CM> p;
    forward_init(p, px.on_image);
    const T cx = pixel_center<T>(px.x), cy = pixel_center<T>(px.y);
    const T* colors = static_cast<const T*>(a.colors_c);
    const int64_t start = a.tile_offsets[tile], end = a.tile_offsets[tile + 1];
    for (int64_t first = start; first < end; first += BLOCK) {
        // Also the barrier that keeps the previous batch in shared memory until every thread has used it.
        if (__syncthreads_count(!p.live) == BLOCK) break;
        if (first + threadIdx.x < end) batch[threadIdx.x] = list_entry<T>(a, px, first + threadIdx.x);
        __syncthreads();
        const int count = int(end - first < BLOCK ? end - first : BLOCK);
        for (int j = 0; j < count && p.live; ++j) {
            const ListEntry<T>& e = batch[j];
            if (!reaches(e, px)) continue;
            // Racing stores of the same value: any one of them marks the splat visible.
            if (forward_step(p, e.splat, colors + int64_t(e.id) * a.channels, a.channels, cx, cy)) a.used[e.id] = 1;
        }
    }
    if (px.on_image) forward_finish(p, a, px.index);
}

template <typename T, int CM>
void rasterize_forward_host(const LrfRaster& a) {
    const T* colors = static_cast<const T*>(a.colors_c);
    for (int64_t tile = 0; tile < int64_t(a.tiles_x) * a.tiles_y; ++tile)
        for (int local = 0; local < BLOCK; ++local) {
            const TilePixel px = tile_pixel(a, tile, local);
            if (!px.on_image) continue;
            ForwardPixel<T, CM> p;
            forward_init(p, true);
            const T cx = pixel_center<T>(px.x), cy = pixel_center<T>(px.y);
            for (int64_t isect = a.tile_offsets[tile]; isect < a.tile_offsets[tile + 1] && p.live; ++isect) {
                const ListEntry<T> e = list_entry<T>(a, px, isect);
                if (!reaches(e, px)) continue;
                if (forward_step(p, e.splat, colors + int64_t(e.id) * a.channels, a.channels, cx, cy))
                    a.used[e.id] = 1;
            }
            forward_finish(p, a, px.index);
        }
}

// Either blend pass: its per-thread code in host loops (emulation), or one block of BLOCK threads per tile.
int32_t run_per_tile(const LrfRaster& a, const char* name, void (*host)(const LrfRaster&),
                     void (*kernel)(LrfRaster), Error& error) {
    if (a.on_host) {
        host(a);
        return 0;
    }
    if (tile_launch_check(a, name, error)) return 1;
    DeviceScope scope;
    if (scope.open(a.device, error)) return 1;
    kernel<<<unsigned(int64_t(a.tiles_x) * a.tiles_y), BLOCK, 0, scope.stream()>>>(a);
    return check_launch(name, error);
}

template <typename T, int CM>
int32_t rasterize_forward(const LrfRaster& a, Error& error) {
    return run_per_tile(a, "rasterize_forward", rasterize_forward_host<T, CM>, rasterize_forward_kernel<T, CM>, error);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    LRF_UNROLL
    for (int offset = WARP / 2; offset > 0; offset /= 2) v += __shfl_down_sync(FULL_MASK, v, offset);
    return v;
}

template <typename T, int CM>
__global__ void __launch_bounds__(BLOCK) rasterize_backward_kernel(LrfRaster a) {
    const int64_t tile = blockIdx.x;
    const TilePixel px = tile_pixel(a, tile, threadIdx.x);
    const bool leader = threadIdx.x % WARP == 0;
    __shared__ ListEntry<T> batch[BLOCK];
    BackwardPixel<T, CM> p;
    backward_init(p, a, px.index, px.on_image);
    const T cx = pixel_center<T>(px.x), cy = pixel_center<T>(px.y);
    const T* colors = static_cast<const T*>(a.colors_c);
    T* v_splats = static_cast<T*>(a.v_splats_c);
    T* v_colors = static_cast<T*>(a.v_colors_c);
    const int64_t start = a.tile_offsets[tile], end = a.tile_offsets[tile + 1];
    for (int64_t first = start; first < end; first += BLOCK) {
        if (__syncthreads_count(!p.live) == BLOCK) break;
        if (first + threadIdx.x < end) batch[threadIdx.x] = list_entry<T>(a, px, first + threadIdx.x);
        __syncthreads();
        const int count = int(end - first < BLOCK ? end - first : BLOCK);
        // Finished pixels keep walking the batch (contributing nothing) so that every warp's 32 lanes meet at
        // each splat: the warp sums its pixels' gradients, then one lane adds them to the splat's.
        for (int j = 0; j < count; ++j) {
            const ListEntry<T>& e = batch[j];
            PairGrad<T> g = {};
            bool composited = false;
            if (p.live && reaches(e, px))
                composited = backward_step(p, e.splat, colors + int64_t(e.id) * a.channels, a.channels, cx, cy, g);
            if (!__any_sync(FULL_MASK, composited)) continue;
            LRF_UNROLL
            for (int f = 0; f < LRF_SPLAT_GRAD_FIELDS; ++f) {
                const T v = warp_sum(composited ? g.geometry[f] : T(0));
                if (leader) atomicAdd(v_splats + int64_t(e.id) * LRF_SPLAT_GRAD_FIELDS + f, v);
            }
            LRF_UNROLL
            for (int k = 0; k < CM; ++k)
                if (k < a.channels) {
                    const T v = warp_sum(composited ? g.weight * p.g[k] : T(0));
                    if (leader) atomicAdd(v_colors + int64_t(e.id) * a.channels + k, v);
                }
        }
    }
}

template <typename T, int CM>
void rasterize_backward_host(const LrfRaster& a) {
    const T* colors = static_cast<const T*>(a.colors_c);
    T* v_splats = static_cast<T*>(a.v_splats_c);
    T* v_colors = static_cast<T*>(a.v_colors_c);
    for (int64_t tile = 0; tile < int64_t(a.tiles_x) * a.tiles_y; ++tile)
        for (int local = 0; local < BLOCK; ++local) {
            const TilePixel px = tile_pixel(a, tile, local);
            if (!px.on_image) continue;
            BackwardPixel<T, CM> p;
            backward_init(p, a, px.index, true);
            const T cx = pixel_center<T>(px.x), cy = pixel_center<T>(px.y);
            for (int64_t isect = a.tile_offsets[tile]; isect < a.tile_offsets[tile + 1] && p.live; ++isect) {
                const ListEntry<T> e = list_entry<T>(a, px, isect);
                PairGrad<T> g;
                if (!reaches(e, px) ||
                    !backward_step(p, e.splat, colors + int64_t(e.id) * a.channels, a.channels, cx, cy, g))
                    continue;
                for (int f = 0; f < LRF_SPLAT_GRAD_FIELDS; ++f)
                    v_splats[int64_t(e.id) * LRF_SPLAT_GRAD_FIELDS + f] += g.geometry[f];
                for (int k = 0; k < a.channels; ++k) v_colors[int64_t(e.id) * a.channels + k] += g.weight * p.g[k];
            }
        }
}

template <typename T, int CM>
int32_t rasterize_backward(const LrfRaster& a, Error& error) {
    return run_per_tile(a, "rasterize_backward", rasterize_backward_host<T, CM>, rasterize_backward_kernel<T, CM>,
                        error);
}

// ---------------------------------------------------------------------------------------------------------------
// Dispatch on the float type and the channel capacity.

// The rasterize kernels keep per-pixel arrays of CM channels in registers, so CM is a compile-time constant:
// 4, 16 and 32 (the latent widths of SD kl-f8, kl-f8-d16 and TAEF2), 8 and 64 for the rest. Any C ≤ 64 runs
// on the smallest capacity that holds it, with the unused channels masked off.
int channel_capacity(int channels) {
    static const int capacities[] = {4, 8, 16, 32, LRF_MAX_CHANNELS};
    for (int capacity : capacities)
        if (channels <= capacity) return capacity;
    return 0;
}

int32_t check_args(const LrfRaster* a, Error& error) {
    if (!a) return error.fail("null arguments");
    if (a->dtype != 0 && a->dtype != 1) return error.fail("unknown dtype %d", a->dtype);
    if (a->channels < 1 || a->channels > LRF_MAX_CHANNELS)
        return error.fail("%d channels: the CUDA kernel supports 1 to %d", a->channels, LRF_MAX_CHANNELS);
    if (a->sh_degree < -1 || a->sh_degree > 3) return error.fail("SH degree %d outside -1..3", a->sh_degree);
    const int64_t active = a->sh_degree < 0 ? a->channels : int64_t(sh_coeffs(a->sh_degree)) * a->channels;
    if (a->color_stride < active)
        return error.fail("colour stride %d below the %lld coefficients in use", a->color_stride, (long long)active);
    if (a->camera.width < 1 || a->camera.height < 1)
        return error.fail("empty image %dx%d", a->camera.width, a->camera.height);
    if (int64_t(a->tiles_x) * TILE < a->camera.width || int64_t(a->tiles_y) * TILE < a->camera.height)
        return error.fail("%dx%d tiles do not cover %dx%d pixels", a->tiles_x, a->tiles_y, a->camera.width,
                          a->camera.height);
    return 0;
}

template <template <typename> class Body>
int32_t for_each_typed(const LrfRaster* a, int64_t n, const char* stage, Error& error) {
    return a->dtype == 0 ? for_each<Body<float>>(*a, n, stage, error) : for_each<Body<double>>(*a, n, stage, error);
}

// The blend passes as types, so that one dispatcher serves both.
struct ForwardPass {
    static constexpr const char* name = "rasterize_forward";
    template <typename T, int CM>
    static int32_t run(const LrfRaster& a, Error& error) { return rasterize_forward<T, CM>(a, error); }
};

struct BackwardPass {
    static constexpr const char* name = "rasterize_backward";
    template <typename T, int CM>
    static int32_t run(const LrfRaster& a, Error& error) { return rasterize_backward<T, CM>(a, error); }
};

// A blend pass instantiated for `a`'s precision and the compiled channel capacity that fits its channels.
template <typename Pass, typename T>
int32_t by_channels(const LrfRaster& a, Error& error) {
    switch (channel_capacity(a.channels)) {
        case 4: return Pass::template run<T, 4>(a, error);
        case 8: return Pass::template run<T, 8>(a, error);
        case 16: return Pass::template run<T, 16>(a, error);
        case 32: return Pass::template run<T, 32>(a, error);
        case LRF_MAX_CHANNELS: return Pass::template run<T, LRF_MAX_CHANNELS>(a, error);
        default:
            return error.fail("%s: %d channels: the CUDA kernel supports 1 to %d", Pass::name, a.channels,
                              LRF_MAX_CHANNELS);
    }
}

template <typename Pass>
int32_t by_precision_and_channels(const LrfRaster& a, Error& error) {
    return a.dtype == 0 ? by_channels<Pass, float>(a, error) : by_channels<Pass, double>(a, error);
}

}  // namespace
}  // namespace lrf

using lrf::Error;

extern "C" void lrf_splat_abi(uint64_t out[4]) {
    out[0] = sizeof(LrfRaster);
    out[1] = LRF_SPLAT_FIELDS;
    out[2] = LRF_SPLAT_GRAD_FIELDS;
    out[3] = LRF_MAX_CHANNELS;
}

extern "C" int32_t lrf_splat_project_forward(const LrfRaster* a, char* error_buffer, size_t error_len) {
    Error error{error_buffer, error_len};
    if (lrf::check_args(a, error)) return 1;
    return lrf::for_each_typed<lrf::ProjectForward>(a, a->count, "project_forward", error);
}

extern "C" int32_t lrf_splat_emit_intersections(const LrfRaster* a, char* error_buffer, size_t error_len) {
    Error error{error_buffer, error_len};
    if (lrf::check_args(a, error)) return 1;
    return lrf::for_each<lrf::EmitIntersections>(*a, a->visible, "emit_intersections", error);
}

extern "C" int32_t lrf_splat_rasterize_forward(const LrfRaster* a, char* error_buffer, size_t error_len) {
    Error error{error_buffer, error_len};
    if (lrf::check_args(a, error)) return 1;
    return lrf::by_precision_and_channels<lrf::ForwardPass>(*a, error);
}

extern "C" int32_t lrf_splat_rasterize_backward(const LrfRaster* a, char* error_buffer, size_t error_len) {
    Error error{error_buffer, error_len};
    if (lrf::check_args(a, error)) return 1;
    return lrf::by_precision_and_channels<lrf::BackwardPass>(*a, error);
}

extern "C" int32_t lrf_splat_project_backward(const LrfRaster* a, char* error_buffer, size_t error_len) {
    Error error{error_buffer, error_len};
    if (lrf::check_args(a, error)) return 1;
    return lrf::for_each_typed<lrf::ProjectBackward>(a, a->count, "project_backward", error);
}
