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

#[cfg(test)]
pub(crate) mod testing {
    //! What the kernels' tests share.
    use super::gemm::{GemmDesc, KIND_IM2COL, STEP_ADD};

    /// Deterministic test data in [-1, 1).
    pub(crate) fn value(i: usize) -> f32 {
        ((i * 7919) % 23) as f32 / 11.0 - 1.0
    }

    /// A stride-1 convolution of `batch` items of `c × h × w` into `m`
    /// channels by a `kh × kw` kernel padded by `pad` on every side, with
    /// a bias and the epilogue `steps` (one residual, the output's shape,
    /// when they add).
    pub(crate) fn conv_desc(
        batch: usize,
        (c, h, w): (usize, usize, usize),
        m: usize,
        (kh, kw): (usize, usize),
        pad: usize,
        steps: &[u32],
    ) -> GemmDesc {
        let (oh, ow) = (h + 2 * pad + 1 - kh, w + 2 * pad + 1 - kw);
        let mut d = GemmDesc {
            kind: KIND_IM2COL,
            batch: batch as u32,
            groups: 1,
            in_c: c as u32,
            h: h as u32,
            w: w as u32,
            out_c: m as u32,
            oh: oh as u32,
            ow: ow as u32,
            kh: kh as u32,
            kw: kw as u32,
            sh: 1,
            sw: 1,
            pt: pad as u32,
            pl: pad as u32,
            dh: 1,
            dw: 1,
            has_bias: 1,
            n_res: u32::from(steps.contains(&STEP_ADD)),
            n_steps: steps.len() as u32,
            x_bstride: (c * h * w) as u64,
            out_bstride: (m * oh * ow) as u64,
            res_bstride: [(m * oh * ow) as u64, 0, 0, 0],
            ..GemmDesc::default()
        };
        d.steps[..steps.len()].copy_from_slice(steps);
        d
    }
}

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
