//! Training: the backward pass derived from the graph IR
//! ([`autodiff`]), run by [`exec`] on the kernels of [`kernels`] (GEMM
//! micro-kernels under im2col/col2im), updated by [`optim`], fed by
//! [`data`] with [`augment`]ed batches.

pub mod augment;
pub mod autodiff;
pub mod data;
pub mod exec;
pub mod kernels;
pub mod optim;
pub mod real;

pub use autodiff::{Loss, TrainGraph};
pub use exec::Executor;

/// Ready the process for training steps on `threads` threads (0: one per
/// core): both thread pools the step uses (rayon's for its own kernels,
/// the runtime's for the inference kernels it borrows) sized alike, and
/// freed step buffers kept by the allocator. Call before the first step.
pub fn prepare(threads: usize) {
    netc_runtime::alloc::keep_freed_memory();
    if threads > 0 {
        // Fails only if the pool already exists; it then keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
        netc_runtime::threads::set_global_threads(threads);
    }
}
