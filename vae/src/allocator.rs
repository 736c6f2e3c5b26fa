//! Process-wide allocator setting for tensor-heavy work.

/// Keeps freed tensor memory in the process for reuse instead of handing it back to the OS.
///
/// glibc serves blocks above its mmap threshold (at most 32 MiB, adjusted dynamically) with fresh
/// mappings and unmaps them on free, so every large activation of every forward pass is faulted in
/// again page by page, zero-filled by the kernel: about four million page faults for seven SD-decoder
/// runs at 256², a sixth of their time. With the threshold raised and trimming off, freed blocks
/// are reused; the resident size then stays at its high-water mark instead of shrinking between
/// passes, which the peak already required. Call it first thing in `main`: blocks allocated before
/// it keep the old thresholds.
/// Returns whether the allocator accepted every setting (false off glibc, where nothing changes); each is
/// applied whether or not another was refused.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let settings = [
            (libc::M_MMAP_THRESHOLD, i32::MAX),
            (libc::M_TRIM_THRESHOLD, i32::MAX),
            (libc::M_TOP_PAD, 256 << 20),
        ];
        // SAFETY: mallopt takes the allocator's lock and only changes its parameters; no memory is touched.
        settings
            .map(|(option, value)| unsafe { libc::mallopt(option, value) } == 1)
            .iter()
            .all(|&accepted| accepted)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
