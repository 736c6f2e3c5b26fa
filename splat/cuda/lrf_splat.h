// The C ABI between splat/src/cuda.rs and the CUDA rasterizer (rasterizer.cu). Rust mirrors every struct here
// with #[repr(C)]; `lrf_splat_abi_size` lets it check at run time that both sides agree on the layout.
//
// One argument block (`LrfRaster`) carries every buffer of a frame; each stage reads and writes the subset its
// comment names and ignores the rest. Buffers are tch tensors' storage, contiguous and row-major, of element type
// f32 or f64 (`dtype`) unless typed here. They are device pointers, or host pointers in host-emulation mode
// (`on_host`), where the per-thread code of every kernel runs in plain host loops so tests can check it without a
// GPU.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Values per projected splat record: screen mean (2), conic (3), opacity, camera depth, screen extents (2).
#define LRF_SPLAT_FIELDS 9
// Values per splat gradient: screen mean (2), conic (3), opacity (the CPU kernel's PARTIAL_GEOMETRY).
#define LRF_SPLAT_GRAD_FIELDS 6
// Largest channel count the rasterize kernels are instantiated for.
#define LRF_MAX_CHANNELS 64

// The camera in f64, as the CPU kernel's PinholeCamera computes it before converting to the kernel's float type.
typedef struct LrfCamera {
    double rotation[9];  // world-to-camera, row-major
    double translation[3];
    double center[3];  // camera centre in world space
    double fx, fy, cx, cy;
    // Magnitudes of the clamp limits of x/z and y/z (negative side, positive side).
    double lim_x_neg, lim_x_pos, lim_y_neg, lim_y_pos;
    int32_t width, height;
} LrfCamera;

// Spherical-harmonics constants (splat/src/sh.rs), passed in so they are written down once.
typedef struct LrfShConstants {
    double c0;
    double c1;
    double c2[5];
    double c3[7];
} LrfShConstants;

typedef struct LrfRaster {
    // --- configuration ---
    int32_t dtype;        // 0: f32, 1: f64
    int32_t on_host;      // 1: run every stage's per-thread code in host loops (tests without a GPU)
    int32_t device;       // CUDA device index of every buffer
    int32_t antialiased;  // RasterMode::Antialiased
    int32_t channels;     // C
    int32_t color_stride; // colour coefficients per Gaussian: C (plain) or K·C (SH, K stored)
    int32_t sh_degree;    // active SH degree; -1: plain colours
    int32_t offset_clamp; // the 3DGS RGB convention: colour = max(value + SH_COLOR_OFFSET, 0)
    int32_t tiles_x, tiles_y;
    int64_t count;          // N Gaussians
    int64_t visible;        // projected splats (compact ids 0..visible, in depth order)
    int64_t intersections;  // (tile, splat) pairs
    LrfCamera camera;
    LrfShConstants sh;

    // --- Gaussians, [N, ...] (read by project_forward and project_backward) ---
    const void* means;           // [N, 3]
    const void* log_scales;      // [N, 3]
    const void* quats;           // [N, 4] w, x, y, z, unnormalised
    const void* opacity_logits;  // [N]
    const void* coeffs;          // [N, color_stride]

    // --- project_forward outputs, Gaussian order ---
    void* splats;         // [N, LRF_SPLAT_FIELDS]
    void* colors;         // [N, C] colour seen from the camera
    void* sort_depth;     // [N] camera depth of projected splats, +inf for culled Gaussians
    int32_t* radii;       // [N] screen radius in pixels, 0 when culled
    int32_t* tile_rect;   // [N, 4] tx0, tx1, ty0, ty1 inclusive; empty when tx0 > tx1
    int64_t* tile_count;  // [N] tiles the rectangle covers

    // --- emit_intersections ---
    const int64_t* order;          // [visible] Gaussian id of each compact id
    const int64_t* isect_offsets;  // [visible] inclusive prefix sum of tile_count in compact order
    int64_t* keys;                 // [intersections] out: tile << 32 | compact id

    // --- rasterize_forward / rasterize_backward, compact (depth) order ---
    const void* splats_c;          // [visible, LRF_SPLAT_FIELDS]
    const void* colors_c;          // [visible, C]
    const int64_t* tile_offsets;   // [tiles + 1] tile t's compact ids are ids[tile_offsets[t]..tile_offsets[t+1]]
    const int32_t* ids;            // [intersections] compact ids, sorted by (tile, depth)
    const void* background;        // [C]
    void* image;                   // [C, H, W] out (forward), in (backward)
    void* alpha;                   // [H, W] out (forward), in (backward)
    void* depth;                   // [H, W] out: expected depth
    uint8_t* used;                 // [visible] out: composited into at least one pixel (zeroed by the caller)
    const void* v_image;           // [C, H, W] ∂L/∂image
    const void* v_alpha;           // [H, W] ∂L/∂alpha, or null
    void* v_splats_c;              // [visible, LRF_SPLAT_GRAD_FIELDS] out, accumulated (zeroed by the caller)
    void* v_colors_c;              // [visible, C] out, accumulated (zeroed by the caller)

    // --- project_backward, Gaussian order ---
    const void* v_splats;        // [N, LRF_SPLAT_GRAD_FIELDS] (zero rows for culled Gaussians)
    const void* v_colors;        // [N, C]
    void* grad_means;            // [N, 3] out (zeroed by the caller: skipped Gaussians are not written)
    void* grad_log_scales;       // [N, 3]
    void* grad_quats;            // [N, 4]
    void* grad_opacity_logits;   // [N]
    void* grad_coeffs;           // [N, color_stride]
    void* mean2d_grad_norm;      // [N] ‖∂L/∂mean2d‖ in pixels
    void* mean2d_grad_norm_ndc;  // [N] the same in NDC units
} LrfRaster;

// What the Rust side checks its mirror of this header against: sizeof(LrfRaster), LRF_SPLAT_FIELDS,
// LRF_SPLAT_GRAD_FIELDS, LRF_MAX_CHANNELS.
void lrf_splat_abi(uint64_t out[4]);

// Every stage returns 0 on success, else writes a message into `error` (NUL-terminated, at most `error_len`
// bytes) and returns nonzero. Device stages are queued on torch's current stream of `device`; they do not wait.
//
// 1. Per Gaussian: cull, project, colour, screen extent and tile rectangle.
int32_t lrf_splat_project_forward(const LrfRaster* args, char* error, size_t error_len);
// 2. Per compact id: one key per covered tile, at isect_offsets.
int32_t lrf_splat_emit_intersections(const LrfRaster* args, char* error, size_t error_len);
// 3. Per tile: front-to-back blend of its list.
int32_t lrf_splat_rasterize_forward(const LrfRaster* args, char* error, size_t error_len);
// 4. Per tile: forward replay of the blend, accumulating each splat's gradient.
int32_t lrf_splat_rasterize_backward(const LrfRaster* args, char* error, size_t error_len);
// 5. Per Gaussian: the splat's gradient back to the Gaussian's parameters and colour coefficients.
int32_t lrf_splat_project_backward(const LrfRaster* args, char* error, size_t error_len);

#ifdef __cplusplus
}
#endif
