//! Small kernels for ops that need `exp`/`tanh` (not available as a
//! Cranelift instruction). Unknown unary codes compute `tanh`: the code
//! generator only emits the codes below.

/// Unary op codes for [`unary`].
pub const UNARY_SIGMOID: u32 = 0;
pub const UNARY_TANH: u32 = 1;
pub const UNARY_SILU: u32 = 2;

/// `dst[i] = f(src[i])` for `len` contiguous floats (may be in place).
///
/// # Safety
/// `src` and `dst` must hold `len` floats.
pub unsafe fn unary(code: u32, src: *const f32, dst: *mut f32, len: usize) {
    for i in 0..len {
        let v = *src.add(i);
        *dst.add(i) = match code {
            UNARY_SIGMOID => 1.0 / (1.0 + (-v).exp()),
            UNARY_SILU => v / (1.0 + (-v).exp()),
            _ => v.tanh(),
        };
    }
}

/// Softmax over `channels` at each of `inner` positions of each item.
///
/// # Safety
/// Items of `channels·inner` floats at `src + n·src_stride` and
/// `dst + n·dst_stride` for `n < items` must be valid (may be in place).
pub unsafe fn softmax(
    src: *const f32,
    dst: *mut f32,
    items: usize,
    channels: usize,
    inner: usize,
    src_stride: usize,
    dst_stride: usize,
) {
    for n in 0..items {
        let (s, d) = (src.add(n * src_stride), dst.add(n * dst_stride));
        for i in 0..inner {
            let mut max = f32::NEG_INFINITY;
            for c in 0..channels {
                max = max.max(*s.add(c * inner + i));
            }
            let mut total = 0.0f64;
            for c in 0..channels {
                let e = ((*s.add(c * inner + i) - max) as f64).exp();
                *d.add(c * inner + i) = e as f32;
                total += e;
            }
            for c in 0..channels {
                *d.add(c * inner + i) = (*d.add(c * inner + i) as f64 / total) as f32;
            }
        }
    }
}
