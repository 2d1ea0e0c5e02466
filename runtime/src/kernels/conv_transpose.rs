//! Transposed convolution (PyTorch's `ConvTranspose2d`), computed by
//! gathering: each output element sums the inputs whose scattered window
//! covers it, so output planes are independent tasks and nothing is
//! accumulated through memory.
//!
//! Contract of [`run`]: with `g = oc / (out_c / groups)` the group of
//! output channel `oc`, every output element is
//! `bias[oc] + Σ x[n, ic, iy, ix] · w[ic, oc mod (out_c/groups), ki, kj]`
//! over the group's input channels `ic` and the taps with
//! `iy·sh − pt + ki·dh = y` and `ix·sw − pl + kj·dw = x` inside the input.
//! `w` is PyTorch's layout `[in_c, out_c/groups, kh, kw]`.
//!
//! This is the straightforward kernel: a loop per tap with a divisibility
//! test, not yet the stride-phase decomposition into small convolutions
//! that would let the GEMM kernels run it.

use super::Shared;
use crate::threads::parallel_for;

/// Everything a transposed-convolution call needs besides its pointers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConvTransposeDesc {
    pub batch: u32,
    pub groups: u32,
    pub in_c: u32,
    pub h: u32,
    pub w: u32,
    pub out_c: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub pt: u32,
    pub pl: u32,
    pub dh: u32,
    pub dw: u32,
    pub has_bias: u32,
    pub x_bstride: u64,
    pub out_bstride: u64,
}

impl ConvTransposeDesc {
    /// The descriptor as raw bytes, for embedding in generated code.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::pod_bytes(self)
    }
}

/// The input index an output coordinate reads through tap `k`, if any:
/// `i` with `i·stride − pad + k·dilation = o`, inside `0..input`.
#[inline(always)]
fn source(
    o: usize,
    k: usize,
    (stride, pad, dilation, input): (usize, usize, usize, usize),
) -> Option<usize> {
    let at = (o + pad).checked_sub(k * dilation)?;
    (at % stride == 0 && at / stride < input).then_some(at / stride)
}

/// Compute one layer.
///
/// # Safety
/// `x`, `w`, `out` (and `bias` when `has_bias`) must hold the tensors the
/// descriptor implies at its batch strides; `out` must not overlap the
/// others.
pub unsafe fn run(
    d: &ConvTransposeDesc,
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    let u = |v: u32| v as usize;
    let (h, wd, oh, ow, kh, kw) = (u(d.h), u(d.w), u(d.oh), u(d.ow), u(d.kh), u(d.kw));
    let (in_c, out_c, groups) = (u(d.in_c), u(d.out_c), u(d.groups));
    let (cin_g, cout_g) = (in_c / groups, out_c / groups);
    let rows = (u(d.sh), u(d.pt), u(d.dh), h);
    let cols = (u(d.sw), u(d.pl), u(d.dw), wd);
    let (xs, ws, bs, os) = (
        Shared::new(x),
        Shared::new(w),
        Shared::new(bias),
        Shared::new(out),
    );
    // SAFETY (for the tasks): each task writes its own output plane and
    // only reads the input and weights.
    parallel_for(u(d.batch) * out_c, |task| {
        let (n, oc) = (task / out_c, task % out_c);
        let (g, ocg) = (oc / cout_g, oc % cout_g);
        let b = if d.has_bias != 0 {
            *bs.get().add(oc)
        } else {
            0.0
        };
        let xn = xs.get().add(n * d.x_bstride as usize) as *const f32;
        let plane = std::slice::from_raw_parts_mut(
            os.get().add(n * d.out_bstride as usize + oc * oh * ow),
            oh * ow,
        );
        for y in 0..oh {
            for xo in 0..ow {
                let mut acc = b;
                for ki in 0..kh {
                    let Some(iy) = source(y, ki, rows) else {
                        continue;
                    };
                    for kj in 0..kw {
                        let Some(ix) = source(xo, kj, cols) else {
                            continue;
                        };
                        for icg in 0..cin_g {
                            let ic = g * cin_g + icg;
                            let xv = *xn.add((ic * h + iy) * wd + ix);
                            let wv = *(ws.get() as *const f32)
                                .add(((ic * cout_g + ocg) * kh + ki) * kw + kj);
                            acc += xv * wv;
                        }
                    }
                }
                plane[y * ow + xo] = acc;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2×2 input, 2×2 kernel at stride 2 tiles the kernel scaled by each
    /// input; stride 1 overlaps them (worked by hand).
    #[test]
    fn scatters_the_kernel_by_each_input() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 10.0, 100.0, 1000.0];
        let call = |s: u32, o: u32| {
            let d = ConvTransposeDesc {
                batch: 1,
                groups: 1,
                in_c: 1,
                h: 2,
                w: 2,
                out_c: 1,
                oh: o,
                ow: o,
                kh: 2,
                kw: 2,
                sh: s,
                sw: s,
                dh: 1,
                dw: 1,
                x_bstride: 4,
                out_bstride: (o * o) as u64,
                ..Default::default()
            };
            let mut out = vec![f32::NAN; (o * o) as usize];
            unsafe {
                run(
                    &d,
                    x.as_ptr(),
                    w.as_ptr(),
                    std::ptr::null(),
                    out.as_mut_ptr(),
                )
            };
            out
        };
        assert_eq!(
            call(2, 4),
            [
                1., 10., 2., 20., 100., 1000., 200., 2000., 3., 30., 4., 40., 300., 3000., 400.,
                4000.
            ]
        );
        // Stride 1: the centre sums all four contributions.
        let overlap = call(1, 3);
        assert_eq!(overlap[4], 1000. + 2. * 100. + 3. * 10. + 4.);
    }
}
