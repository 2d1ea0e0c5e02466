//! How the C allocator treats the large buffers a training step frees.
//!
//! A training step allocates and frees tens of megabytes of activations
//! and gradients. glibc's malloc serves blocks above its mmap threshold
//! with fresh `mmap`s and returns freed memory to the kernel, so every
//! step page-faults its buffers in again (the deep ConvNet at batch 100
//! spent about a fifth of a step in the kernel's page zeroing). Raising
//! the thresholds keeps freed blocks for the next step.

/// Keep freed blocks of up to 32 MiB (glibc's largest mmap threshold) in
/// the heap for reuse, and never trim the heap. A no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only sets allocator parameters; it is called
        // before the step's buffers exist and the values are in range.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
