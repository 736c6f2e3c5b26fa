//! Run-time choice of the instruction set for numeric kernels: the rasterizer's blend loops, the Tri-Plane
//! queries, the photometric loss. Kernels are written as plain loops over fixed-width lanes; compiled inside a
//! function with AVX-512 or AVX2+FMA enabled, the compiler vectorises them (16 f32 lanes = one zmm register).
//! The portable baseline (SSE2) is the fallback on other CPUs, so one binary runs everywhere.
//!
//! Everything a task runs must be inlined into it to get those features: a closure or a function left out of
//! line is compiled for the baseline, where `f32::mul_add` is a library call.

/// A unit of work whose `run` is inlined into each instruction-set variant.
pub trait SimdTask {
    type Output;
    /// Must be `#[inline(always)]` so the body is compiled with the caller's target features.
    fn run(self) -> Self::Output;
}

/// Runs `task` compiled for the best instruction set this CPU has.
pub fn dispatch<T: SimdTask>(task: T) -> T::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU supports the features `run_avx512` is compiled for (checked just above).
            return unsafe { run_avx512(task) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above, for AVX2 and FMA.
            return unsafe { run_avx2(task) };
        }
    }
    task.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_avx512<T: SimdTask>(task: T) -> T::Output {
    task.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<T: SimdTask>(task: T) -> T::Output {
    task.run()
}

/// Asks the CPU to start loading `value`'s cache line; a hint with no effect on results.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, even for invalid addresses, and `value` is valid.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Prefetches every cache line of `values`.
#[inline(always)]
pub fn prefetch_slice<T>(values: &[T]) {
    const LINE: usize = 64;
    for i in (0..values.len()).step_by(LINE.div_ceil(size_of::<T>())) {
        prefetch(&values[i]);
    }
}
