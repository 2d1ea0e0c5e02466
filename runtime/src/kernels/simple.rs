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

/// `dst[n, c, i] = src[n, c, i] · gate[n, c]`: a per-channel gate (squeeze
/// and excitation) over `inner` positions, items at their strides, one task
/// per (item, channel) plane. `dst` may be `src` (in place).
///
/// # Safety
/// Items of `channels·inner` floats at `src + n·src_stride` and
/// `dst + n·dst_stride`, and of `channels` floats at `gate + n·gate_stride`,
/// for `n < items`, must be valid.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gate_mul(
    src: *const f32,
    gate: *const f32,
    dst: *mut f32,
    items: usize,
    channels: usize,
    inner: usize,
    strides: [usize; 3],
) {
    let [src_stride, gate_stride, dst_stride] = strides;
    let (src, gate, dst) = (src as usize, gate as usize, dst as usize);
    crate::threads::parallel_for(items * channels, |t| {
        let (n, c) = (t / channels, t % channels);
        // SAFETY: the caller's contract; each task writes plane (n, c) only.
        unsafe {
            let g = *(gate as *const f32).add(n * gate_stride + c);
            let s = (src as *const f32).add(n * src_stride + c * inner);
            let d = (dst as *mut f32).add(n * dst_stride + c * inner);
            for i in 0..inner {
                *d.add(i) = *s.add(i) * g;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_mul_scales_each_plane_by_its_gate_in_place_or_not() {
        let (items, channels, inner) = (2, 3, 5);
        let src: Vec<f32> = (0..items * channels * inner).map(|i| i as f32).collect();
        let gate: Vec<f32> = (0..items * channels).map(|i| 0.5 + i as f32).collect();
        let want: Vec<f32> = src
            .iter()
            .enumerate()
            .map(|(i, v)| v * gate[i / inner])
            .collect();
        let mut out = vec![f32::NAN; src.len()];
        let strides = [channels * inner, channels, channels * inner];
        unsafe {
            gate_mul(
                src.as_ptr(),
                gate.as_ptr(),
                out.as_mut_ptr(),
                items,
                channels,
                inner,
                strides,
            )
        };
        assert_eq!(out, want);
        let mut inplace = src.clone();
        let p = inplace.as_mut_ptr();
        unsafe { gate_mul(p, gate.as_ptr(), p, items, channels, inner, strides) };
        assert_eq!(inplace, want);
    }
}
