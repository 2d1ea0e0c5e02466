//! Convolutions with a tiny reduction — at most [`MAX_K`] taps over all
//! input channels, such as deep_convnet's first layer (one channel, 3×3)
//! — computed directly on the zero-padded input.
//!
//! Contract: the same output as the GEMM path up to float rounding, for
//! any epilogue. As a GEMM such a layer is all overhead: a micro-kernel
//! call multiplies 9 rows of B and then stores its whole tile, a small
//! fraction of the FMA peak. Here the taps of 8
//! neighbouring outputs are loaded into registers once and every output
//! channel is a chain of `K` FMAs against broadcast weights, stored as one
//! vector. The last 8 outputs of a row overlap the previous ones rather
//! than being masked; those overlapping lanes are stored again only when
//! the epilogue does not read the output's place (a residual may share
//! it). Items × output-channel slices are the tasks; each pads its item
//! into a per-thread buffer.

use super::desc::{GemmDesc, Ptrs, KIND_IM2COL, MAX_STEPS, STEP_RELU};
use super::micro::MR;
use super::planes::{self, Shifted};
use super::store;
use crate::threads::{current_threads, parallel_for};
use std::cell::RefCell;

/// The most taps (`in_c · kh · kw`) a stencil convolution has: nine
/// registers of inputs, an accumulator and a broadcast weight.
pub const MAX_K: usize = 9;
/// Outputs per vector of the AVX2 build (rows must be this wide).
const LANES: usize = 8;
/// Outputs per vector of the AVX-512 build, taken for rows this wide.
const WIDE_LANES: usize = 16;

thread_local! {
    /// One item's zero-padded input (each worker) and the taps' offsets.
    static PLANES: RefCell<(Vec<f32>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether `d` runs here: an ungrouped stride-1 convolution with at most
/// [`MAX_K`] taps and output rows of at least 8, on a CPU with AVX2 and FMA.
pub fn fits(d: &GemmDesc) -> bool {
    d.kind == KIND_IM2COL
        && d.groups == 1
        && d.sh == 1
        && d.sw == 1
        && d.k() <= MAX_K
        && d.ow as usize >= LANES
        && crate::cpu::host().avx2
}

/// Run one layer that [`fits`].
///
/// # Safety
/// As [`super::dispatch::run`]; `d` must satisfy [`fits`].
pub(super) unsafe fn run(d: &GemmDesc, p: &Ptrs) {
    run_with(
        d,
        p,
        crate::cpu::host().avx512 && d.ow as usize >= WIDE_LANES,
    )
}

/// [`run`] on the AVX-512 build (`wide`) or the AVX2 one (tests run both).
unsafe fn run_with(d: &GemmDesc, p: &Ptrs, wide: bool) {
    let geo = Shifted::new(d);
    let (batch, m) = (d.batch as usize, d.m());
    // Enough tasks for every thread at batch 1: slices of output channels.
    let slices = (2 * current_threads()).div_ceil(batch).clamp(1, m);
    let per_slice = m.div_ceil(slices);
    parallel_for(batch * slices, |t| {
        let (item, s) = (t / slices, t % slices);
        let outs = s * per_slice..((s + 1) * per_slice).min(m);
        if outs.is_empty() {
            return;
        }
        PLANES.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (planes, taps) = &mut *buf;
            super::grow(planes, geo.len(d));
            geo.row_offsets(d, taps);
            // SAFETY: forwarded from the caller's contract; each task
            // writes the output channels `outs` of its item only.
            unsafe {
                planes::pad_input(d, geo, p.x, item, planes);
                #[cfg(target_arch = "x86_64")]
                if wide {
                    avx512::item(d, p, geo.wq, planes, taps, item, outs);
                } else {
                    avx2::item(d, p, geo.wq, planes, taps, item, outs);
                }
            }
        });
    });
}

/// The kernel for one instruction set: `$lanes` outputs per vector of
/// `$v`, built with `$feat`.
macro_rules! stencil_kernel {
    ($feat:literal, $v:ty, $lanes:expr, $load:ident, $set1:ident, $zero:ident, $fma:ident,
     $add:ident, $max:ident, $store:ident) => {
        use super::*;
        use std::arch::x86_64::*;

        const LANES: usize = $lanes;

        /// Output channels `outs` of item `item`, from its padded `planes`
        /// (rows `wq` wide) and the taps' offsets in them.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn item(
            d: &GemmDesc,
            p: &Ptrs,
            wq: usize,
            planes: &[f32],
            taps: &[usize],
            item: usize,
            outs: std::ops::Range<usize>,
        ) {
            match taps.len() {
                1 => rows::<1>(d, p, wq, planes, taps, item, outs),
                2 => rows::<2>(d, p, wq, planes, taps, item, outs),
                3 => rows::<3>(d, p, wq, planes, taps, item, outs),
                4 => rows::<4>(d, p, wq, planes, taps, item, outs),
                5 => rows::<5>(d, p, wq, planes, taps, item, outs),
                6 => rows::<6>(d, p, wq, planes, taps, item, outs),
                7 => rows::<7>(d, p, wq, planes, taps, item, outs),
                8 => rows::<8>(d, p, wq, planes, taps, item, outs),
                _ => rows::<9>(d, p, wq, planes, taps, item, outs),
            }
        }

        /// [`item`] with `K` taps, so the inputs stay in registers.
        #[target_feature(enable = $feat)]
        unsafe fn rows<const K: usize>(
            d: &GemmDesc,
            p: &Ptrs,
            wq: usize,
            planes: &[f32],
            taps: &[usize],
            item: usize,
            outs: std::ops::Range<usize>,
        ) {
            let (oh, ow) = (d.oh as usize, d.ow as usize);
            let plane = oh * ow;
            let steps = &d.steps[..(d.n_steps as usize).min(MAX_STEPS)];
            let relu = steps == [STEP_RELU];
            let general = !(steps.is_empty() || relu);
            let zero = $zero();
            let taps: [usize; K] = std::array::from_fn(|kk| taps[kk]);
            // Each output channel's bias and weights, unpacked once from the
            // panels (MR rows, k-major): per output vector, the panel
            // arithmetic had cost as much as the FMAs.
            let channels: Vec<(f32, [f32; K])> = outs
                .clone()
                .map(|o| {
                    let bias = if d.has_bias != 0 { *p.bias.add(o) } else { 0.0 };
                    let panel = p.a.add((o / MR) * MR * K + o % MR);
                    (bias, std::array::from_fn(|kk| *panel.add(kk * MR)))
                })
                .collect();
            let base = planes.as_ptr();
            for y in 0..oh {
                let mut x = 0;
                while x < ow {
                    let x0 = x.min(ow - LANES);
                    let at = base.add(y * wq + x0);
                    let inputs: [$v; K] = std::array::from_fn(|kk| $load(at.add(taps[kk])));
                    for (o, (bias, w)) in outs.clone().zip(&channels) {
                        // Two chains of FMAs, half as long as one.
                        let mut even = $set1(*bias);
                        let mut odd = zero;
                        for (kk, v) in inputs.iter().enumerate() {
                            let wv = $set1(w[kk]);
                            if kk % 2 == 0 {
                                even = $fma(wv, *v, even);
                            } else {
                                odd = $fma(wv, *v, odd);
                            }
                        }
                        let mut acc = $add(even, odd);
                        let col = y * ow + x0;
                        if general {
                            let mut vals = [0.0f32; LANES];
                            $store(vals.as_mut_ptr(), acc);
                            // Only the lanes not stored before: the epilogue
                            // may read a residual that shares the output's
                            // place.
                            for (lane, &v) in vals.iter().enumerate().skip(x - x0) {
                                store::store_one(d, p, item, o, col + lane, v);
                            }
                            continue;
                        }
                        if relu {
                            acc = $max(acc, zero);
                        }
                        let to = p.out.add(item * d.out_bstride as usize + o * plane + col);
                        $store(to, acc);
                    }
                    x = x0 + LANES;
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    stencil_kernel!(
        "avx2,fma",
        __m256,
        super::LANES,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_setzero_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_max_ps,
        _mm256_storeu_ps
    );
}

/// Rows of 16 and more: half the instructions per output of the AVX2
/// build (deep_convnet's 28-wide first layer is 2 vectors a row, not 4).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    stencil_kernel!(
        "avx512f",
        __m512,
        WIDE_LANES,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_max_ps,
        _mm512_storeu_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::desc::{STEP_ADD, STEP_LEAKY};
    use crate::kernels::testing::{assert_close, conv_desc, reference_conv, value};

    /// Against a plain loop: several tap counts, paddings, rows of 8 and
    /// longer (the overlapping last vector), batch 3 in output-channel
    /// slices, and each epilogue kind — none, ReLU, and a residual add
    /// (with leaky ReLU) through the general store, the output written
    /// over the residual.
    #[test]
    fn matches_a_direct_loop() {
        if !crate::cpu::host().avx2 {
            return;
        }
        for (c, kh, kw, h, w, pad, m, steps) in [
            (1, 3, 3, 28, 28, 1, 16, vec![STEP_RELU]),
            (1, 3, 3, 8, 10, 0, 5, vec![]),
            (2, 2, 2, 9, 13, 1, 7, vec![STEP_ADD, STEP_LEAKY]),
            (1, 1, 5, 6, 21, 2, 3, vec![STEP_RELU]),
            (3, 3, 1, 10, 11, 1, 13, vec![STEP_ADD]),
        ] {
            let (oh, ow) = (h + 2 * pad + 1 - kh, w + 2 * pad + 1 - kw);
            let batch = 3;
            let k = c * kh * kw;
            let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
            let wts: Vec<f32> = (0..m * k).map(|i| value(i + 5)).collect();
            let bias: Vec<f32> = (0..m).map(|i| value(i + 9)).collect();
            let res: Vec<f32> = (0..batch * m * oh * ow).map(|i| value(i + 3)).collect();
            let mut d = conv_desc(batch, (c, h, w), m, (kh, kw), pad, &steps);
            d.alpha[1] = 0.1;
            assert!(fits(&d));
            let packed = crate::kernels::micro::pack_weights(1, m, k, |_, o, kk| wts[o * k + kk]);
            // With a residual, the output is written over it (as the memory
            // plan may place it): each output must be stored exactly once.
            // Each build (AVX-512 on rows wide enough) from a fresh output.
            for wide in [false, true] {
                if wide && !(crate::cpu::host().avx512 && ow >= WIDE_LANES) {
                    continue;
                }
                let mut out = if d.n_res > 0 {
                    res.clone()
                } else {
                    vec![f32::NAN; batch * m * oh * ow]
                };
                let p = Ptrs {
                    x: x.as_ptr(),
                    out: out.as_mut_ptr(),
                    a: packed.as_ptr(),
                    bias: bias.as_ptr(),
                    res: [
                        out.as_ptr(),
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null(),
                    ],
                };
                unsafe { run_with(&d, &p, wide) };
                let want = reference_conv(&d, &x, &wts, &bias, &[&res]);
                let what = format!("{c}x{kh}x{kw} {h}x{w} pad {pad}, wide {wide}");
                assert_close(&out, &want, 1e-5, &what);
            }
        }
    }
}
