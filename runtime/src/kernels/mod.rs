//! Native kernels that generated code calls. The code generator emits the
//! graph's control flow, addresses and simple loops; the heavy loops live
//! here, written with `std::arch` and chosen by CPU feature at run time.

pub mod conv_transpose;
pub mod depthwise;
pub mod desc;
pub mod dispatch;
pub mod gemm;
pub mod gemv;
pub mod matmul;
pub mod micro;
pub mod mvec;
pub mod packed;
pub mod planes;
pub mod pool;
pub mod resize;
pub mod schedule;
pub mod simple;
pub mod stencil;
pub mod store;
pub mod unpool;
pub mod winograd;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes the kernels' scratch buffers hold, over all threads.
static SCRATCH_HELD: AtomicU64 = AtomicU64::new(0);

/// Grow a kernel scratch buffer to at least `len` floats, counting what it
/// allocates: buffers are kept between calls (steady-state runs allocate
/// nothing) and never shrink, so the count is their high-water mark.
/// Returns the bytes it added.
pub(crate) fn grow(buf: &mut Vec<f32>, len: usize) -> usize {
    if buf.len() >= len {
        return 0;
    }
    let before = buf.capacity();
    buf.resize(len, 0.0);
    let added = (buf.capacity() - before) * std::mem::size_of::<f32>();
    SCRATCH_HELD.fetch_add(added as u64, Relaxed);
    added
}

/// Bytes held by kernel scratch buffers on every thread so far: B panels,
/// padded and phase planes, transformed Winograd input and products,
/// pooling rows (offset tables not counted). Freed only when their thread
/// exits, which for the pool's workers is when the pool is dropped.
pub fn scratch_bytes() -> u64 {
    SCRATCH_HELD.load(Relaxed)
}

#[cfg(test)]
pub mod testing {
    //! What the kernels' tests share.
    use super::desc::{
        GemmDesc, KIND_IM2COL, STEP_ADD, STEP_CLIP, STEP_HARDSIGMOID, STEP_HARDSWISH, STEP_LEAKY,
        STEP_RELU, STEP_SIGMOID, STEP_SILU, STEP_TANH,
    };

    /// Deterministic test data in [-1, 1).
    pub(crate) fn value(i: usize) -> f32 {
        ((i * 7919) % 23) as f32 / 11.0 - 1.0
    }

    /// The convolution a descriptor describes, by plain loops: every
    /// kernel's tests compare against this one definition. `x` is
    /// `batch × in_c × h × w`, `wts` PyTorch's `[out, in/g, kh, kw]`,
    /// `bias` per output channel (ignored unless `d.has_bias`), `res` one
    /// tensor of the (unpooled) output's shape per residual add. Padding is
    /// `pt`/`pl` before and whatever the output size implies after; the
    /// epilogue steps run in order, a trailing [`STEP_MAXPOOL2`] pooling
    /// the result 2×2. Contiguous tensors (batch strides are ignored).
    pub(crate) fn reference_conv(
        d: &GemmDesc,
        x: &[f32],
        wts: &[f32],
        bias: &[f32],
        res: &[&[f32]],
    ) -> Vec<f32> {
        let u = |v: u32| v as usize;
        let (batch, c, h, w, oc, oh, ow) = (
            u(d.batch),
            u(d.in_c),
            u(d.h),
            u(d.w),
            u(d.out_c),
            u(d.oh),
            u(d.ow),
        );
        let (groups, kh, kw) = (u(d.groups), u(d.kh), u(d.kw));
        let (cg, mg) = (c / groups, oc / groups);
        let mut out = vec![0.0f32; batch * oc * oh * ow];
        for n in 0..batch {
            for o in 0..oc {
                let g = o / mg;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = if d.has_bias != 0 { bias[o] as f64 } else { 0.0 };
                        for icg in 0..cg {
                            let ic = g * cg + icg;
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let iy = (y * u(d.sh) + ki * u(d.dh)) as isize - d.pt as isize;
                                    let ix = (xo * u(d.sw) + kj * u(d.dw)) as isize - d.pl as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                        continue;
                                    }
                                    let xv = x[((n * c + ic) * h + iy as usize) * w + ix as usize];
                                    let wv = wts[((o * cg + icg) * kh + ki) * kw + kj];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        let at = ((n * oc + o) * oh + y) * ow + xo;
                        let mut v = acc as f32;
                        let mut r = 0;
                        for (s, &step) in d.steps[..d.n_steps as usize].iter().enumerate() {
                            v = match step {
                                STEP_ADD => {
                                    r += 1;
                                    v + res[r - 1][at]
                                }
                                STEP_RELU => v.max(0.0),
                                STEP_LEAKY if v < 0.0 => v * d.alpha[s],
                                STEP_SIGMOID => 1.0 / (1.0 + (-v).exp()),
                                STEP_TANH => v.tanh(),
                                STEP_HARDSIGMOID => (v + 3.0).clamp(0.0, 6.0) / 6.0,
                                STEP_HARDSWISH => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
                                STEP_CLIP => v.clamp(d.alpha[s], d.beta[s]),
                                STEP_SILU => v / (1.0 + (-v).exp()),
                                _ => v,
                            };
                        }
                        out[at] = v;
                    }
                }
            }
        }
        if !d.pooled() {
            return out;
        }
        let (ph, pw) = (oh / 2, ow / 2);
        let mut pooled = vec![f32::NEG_INFINITY; batch * oc * ph * pw];
        for (i, p) in pooled.iter_mut().enumerate() {
            let (plane, y, xo) = (i / (ph * pw), i / pw % ph, i % pw);
            for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                *p = p.max(out[(plane * oh + 2 * y + a) * ow + 2 * xo + b]);
            }
        }
        pooled
    }

    /// Whether `got` is `want` within `tol` of `want`'s largest magnitude.
    pub(crate) fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * scale,
                "{what}: element {i}: {g} vs {w}"
            );
        }
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

#[cfg(test)]
mod tests {
    /// Growing counts the capacity added, once; a shorter request adds
    /// nothing.
    #[test]
    fn scratch_growth_is_counted() {
        let mut buf = Vec::new();
        let before = super::scratch_bytes();
        assert_eq!(super::grow(&mut buf, 1000), 4000);
        assert_eq!(super::grow(&mut buf, 10), 0);
        assert_eq!(buf.len(), 1000);
        // Other tests' kernels may grow their own buffers meanwhile.
        assert!(super::scratch_bytes() - before >= 4000);
    }
}
