//! Native kernels that generated code calls. The code generator emits the
//! graph's control flow, addresses and simple loops; the heavy loops live
//! here, written with `std::arch` and chosen by CPU feature at run time.

pub mod gemm;
pub mod micro;
pub mod packed;
pub mod pool;
pub mod simple;
pub mod stencil;
pub mod winograd;

/// A raw pointer shared with pool tasks. Each use documents why the
/// tasks' accesses do not race (disjoint writes, or reads only).
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub(crate) *mut T);

// SAFETY: see the type's doc; the wrapper only carries the address.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) fn new(p: *const T) -> Self {
        Shared(p as *mut T)
    }

    /// A method, so closures capture the wrapper rather than its field.
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// A `repr(C)` descriptor's bytes, for embedding in generated code.
pub fn pod_bytes<T: Copy>(value: &T) -> Vec<u8> {
    let size = std::mem::size_of::<T>();
    let mut out = vec![0u8; size];
    // SAFETY: callers pass plain-old-data descriptors (no padding reads
    // matter: the bytes are copied verbatim and read back as the same type).
    unsafe {
        std::ptr::copy_nonoverlapping(value as *const T as *const u8, out.as_mut_ptr(), size)
    };
    out
}
