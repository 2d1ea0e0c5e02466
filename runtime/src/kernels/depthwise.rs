//! Depthwise convolutions (`groups` = input channels = output channels,
//! MobileNet's), computed directly: one output plane per task, each row a
//! vector accumulated tap by tap from the input row the tap reads.
//!
//! Contract: the same output as the GEMM path up to float rounding, for
//! any stride, padding, dilation and epilogue; reads the GEMM path's packed
//! weights (per channel one `MR`-row panel, tap-major), so choosing it
//! changes no packed data. As a GEMM a depthwise layer is one row of A per
//! group: a micro-kernel of `MR` rows does a sixth of useful work and every
//! group repacks its im2col columns.
//!
//! Two schedules, both vectorised by the compiler (AVX-512, AVX2+FMA or SSE
//! builds of the same loops, chosen by the running CPU):
//! - **rows**, for wide planes at stride 1: one channel per task, each tap
//!   one multiply-add over an output row slice;
//! - **blocks of [`LANES`] channels**, for narrow planes (a 33-wide row
//!   leaves most of a tap's loop in its setup and tail) and strided ones
//!   (a strided row is a gather): the block's input
//!   is copied once, zero-padded, channel-interleaved, so every output
//!   position is `kh·kw` multiply-adds of whole vectors; each output row is
//!   transposed back to channel planes through the epilogue.

use super::desc::{GemmDesc, Ptrs, KIND_IM2COL, STEP_ADD};
use super::micro::MR;
use super::store::act;
use crate::threads::parallel_for;
use std::cell::RefCell;

/// Channels per block of the blocked schedule (one AVX-512 vector).
pub const LANES: usize = 16;
/// Output rows at least this wide take the rows schedule: a tap's loop is
/// then several vectors long, and the blocked schedule's copy of the
/// input would be pure cost.
const WIDE_ROW: usize = 4 * LANES;

thread_local! {
    /// One output row's accumulators, and for the blocked schedule the
    /// padded interleaved input block (each worker).
    static ROW: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether `d` is a depthwise convolution this kernel runs: one input and
/// one output channel per group, no fused pooling.
pub fn fits(d: &GemmDesc) -> bool {
    d.kind == KIND_IM2COL
        && d.groups > 1
        && d.in_c == d.groups
        && d.out_c == d.groups
        && !d.pooled()
}

/// Run one layer that [`fits`].
///
/// # Safety
/// As [`super::dispatch::run`]; `d` must satisfy [`fits`].
pub(super) unsafe fn run(d: &GemmDesc, p: &Ptrs) {
    let host = crate::cpu::host();
    let build = if host.avx512 {
        Build::Avx512
    } else if host.avx2 {
        Build::Avx2
    } else {
        Build::Baseline
    };
    run_with(d, p, build)
}

/// The instruction set the row loops are compiled for.
#[derive(Clone, Copy, Debug)]
enum Build {
    Avx512,
    Avx2,
    Baseline,
}

unsafe fn run_with(d: &GemmDesc, p: &Ptrs, build: Build) {
    // Strided rows read every other input: a gather in the rows schedule,
    // whole vectors in the blocked one.
    let narrow = (d.ow as usize) < WIDE_ROW || d.sw > 1;
    let blocked = narrow && d.out_c as usize >= LANES;
    run_schedule(d, p, build, blocked)
}

/// Run with the blocked schedule (channels in blocks of [`LANES`], the
/// last block's missing channels computed on zeros and not stored) or the
/// rows one.
unsafe fn run_schedule(d: &GemmDesc, p: &Ptrs, build: Build, blocked: bool) {
    let (batch, channels) = (d.batch as usize, d.out_c as usize);
    let p = *p;
    let per_item = if blocked {
        channels.div_ceil(LANES)
    } else {
        channels
    };
    parallel_for(batch * per_item, |t| {
        let (item, c) = (t / per_item, t % per_item);
        ROW.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (row, block) = &mut *buf;
            // SAFETY: forwarded from the caller's contract; each task
            // writes output planes of its channels of item `item` only.
            unsafe {
                if blocked {
                    super::grow(row, LANES * d.ow as usize);
                    super::grow(block, LANES * padded_len(d));
                    match build {
                        Build::Avx512 => block_avx512(d, &p, item, c * LANES, row, block),
                        Build::Avx2 => block_avx2(d, &p, item, c * LANES, row, block),
                        Build::Baseline => {
                            channel_block::<false>(d, &p, item, c * LANES, row, block)
                        }
                    }
                } else {
                    super::grow(row, d.ow as usize);
                    match build {
                        Build::Avx512 => plane_avx512(d, &p, item, c, row),
                        Build::Avx2 => plane_avx2(d, &p, item, c, row),
                        Build::Baseline => plane::<false>(d, &p, item, c, row),
                    }
                }
            }
        });
    });
}

/// The padded input the output reads: rows `(oh-1)·sh + (kh-1)·dh + 1`
/// and columns likewise, starting `pt` above and `pl` left of the input.
fn padded_dims(d: &GemmDesc) -> (usize, usize) {
    let u = |v: u32| v as usize;
    (
        (u(d.oh) - 1) * u(d.sh) + (u(d.kh) - 1) * u(d.dh) + 1,
        (u(d.ow) - 1) * u(d.sw) + (u(d.kw) - 1) * u(d.dw) + 1,
    )
}

fn padded_len(d: &GemmDesc) -> usize {
    let (hp, wp) = padded_dims(d);
    hp * wp
}

/// Channels `c0..c0 + LANES` (those that exist) of item `item`.
#[inline(always)]
unsafe fn channel_block<const FMA: bool>(
    d: &GemmDesc,
    p: &Ptrs,
    item: usize,
    c0: usize,
    row: &mut [f32],
    block: &mut [f32],
) {
    let u = |v: u32| v as usize;
    let (h, w, oh, ow) = (u(d.h), u(d.w), u(d.oh), u(d.ow));
    let (kh, kw, sh, sw) = (u(d.kh), u(d.kw), u(d.sh), u(d.sw));
    let (dh, dw, pt, pl) = (u(d.dh), u(d.dw), u(d.pt), u(d.pl));
    let (hp, wp) = padded_dims(d);
    let taps = kh * kw;
    let n = (u(d.out_c) - c0).min(LANES);
    // The block's input, zero-padded and interleaved: position (y, x) of
    // channel c0 + l at `(y·wp + x)·LANES + l`.
    let block = &mut block[..hp * wp * LANES];
    // Written position by position (16 sequential reads, one contiguous
    // vector written): channel by channel, the stride-16 writes would
    // sweep the whole block 16 times through a cache it does not fit.
    block.fill(0.0);
    let mut planes = [std::ptr::null::<f32>(); LANES];
    for (l, plane) in planes.iter_mut().enumerate().take(n) {
        // SAFETY: channel c0 + l of the item (caller's contract).
        *plane = unsafe { p.x.add(item * d.x_bstride as usize + (c0 + l) * h * w) };
    }
    for y in 0..h.min(hp.saturating_sub(pt)) {
        let dst = (y + pt) * wp + pl;
        for x in 0..w.min(wp.saturating_sub(pl)) {
            let v = &mut block[(dst + x) * LANES..(dst + x + 1) * LANES];
            for (l, slot) in v.iter_mut().enumerate().take(n) {
                // SAFETY: (y, x) is inside channel c0 + l's plane.
                *slot = unsafe { *planes[l].add(y * w + x) };
            }
        }
    }
    // Weights and bias per lane (zero for missing channels).
    let mut wts = [[0.0f32; LANES]; 49];
    let mut wts_big = Vec::new();
    let wv: &mut [[f32; LANES]] = if taps <= wts.len() {
        &mut wts[..taps]
    } else {
        wts_big.resize(taps, [0.0f32; LANES]);
        &mut wts_big
    };
    let mut bias = [0.0f32; LANES];
    for l in 0..n {
        // SAFETY: group c0 + l's panel (the GEMM packing).
        let panel = unsafe { std::slice::from_raw_parts(p.a.add((c0 + l) * MR * taps), MR * taps) };
        for (t, v) in wv.iter_mut().enumerate() {
            v[l] = panel[t * MR];
        }
        if d.has_bias != 0 {
            bias[l] = unsafe { *p.bias.add(c0 + l) };
        }
    }
    let acc_row = &mut row[..ow * LANES];
    // One channel's row on its way through a residual epilogue.
    let mut out_row = vec![0.0f32; ow];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = bias;
            for ki in 0..kh {
                let base = ((oy * sh + ki * dh) * wp + ox * sw) * LANES;
                for kj in 0..kw {
                    let at = base + kj * dw * LANES;
                    let Ok(xs) = <&[f32; LANES]>::try_from(&block[at..at + LANES]) else {
                        continue;
                    };
                    let ws = &wv[ki * kw + kj];
                    for l in 0..LANES {
                        acc[l] = if FMA {
                            xs[l].mul_add(ws[l], acc[l])
                        } else {
                            acc[l] + xs[l] * ws[l]
                        };
                    }
                }
            }
            acc_row[ox * LANES..(ox + 1) * LANES].copy_from_slice(&acc);
        }
        // Back to channel planes, one row per channel, through the epilogue:
        // activations on the interleaved row (whole vectors) when there is
        // no residual to add, else per channel row.
        let residual = d.steps[..d.n_steps as usize].contains(&STEP_ADD);
        if !residual {
            for (s, &step) in d.steps[..d.n_steps as usize].iter().enumerate() {
                let (alpha, beta) = (d.alpha[s], d.beta[s]);
                for v in acc_row.iter_mut() {
                    *v = act(step, alpha, beta, *v);
                }
            }
            let cols = oh * ow;
            for l in 0..n {
                let at = item * d.out_bstride as usize + (c0 + l) * cols + oy * ow;
                for ox in 0..ow {
                    // SAFETY: inside channel c0 + l's output row.
                    unsafe { *p.out.add(at + ox) = acc_row[ox * LANES + l] };
                }
            }
            continue;
        }
        for l in 0..n {
            let out_row = &mut out_row[..ow];
            for (ox, v) in out_row.iter_mut().enumerate() {
                *v = acc_row[ox * LANES + l];
            }
            unsafe { finish_row(d, p, item, c0 + l, oy * ow, out_row) };
        }
    }
}

/// Each schedule's loops compiled for an instruction set (`FMA` builds
/// where the set has fused multiply-adds; the baseline elsewhere).
macro_rules! builds {
    ($($name:ident: $feature:literal => $inner:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name($($arg: $ty),*) {
            $inner::<true>($($arg),*)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unsafe fn $name($($arg: $ty),*) {
            $inner::<false>($($arg),*)
        }
    )*};
}

builds! {
    plane_avx512: "avx512f,avx2,fma" => plane(d: &GemmDesc, p: &Ptrs, item: usize, c: usize, row: &mut [f32]);
    plane_avx2: "avx2,fma" => plane(d: &GemmDesc, p: &Ptrs, item: usize, c: usize, row: &mut [f32]);
    block_avx512: "avx512f,avx2,fma" => channel_block(
        d: &GemmDesc, p: &Ptrs, item: usize, c0: usize, row: &mut [f32], block: &mut [f32]
    );
    block_avx2: "avx2,fma" => channel_block(
        d: &GemmDesc, p: &Ptrs, item: usize, c0: usize, row: &mut [f32], block: &mut [f32]
    );
}

/// Output columns `lo..hi` whose tap at offset `off` (input column
/// `ox · stride + off`) falls inside a row of `w` inputs.
#[inline(always)]
fn valid(off: isize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off < 0 { (-off + s - 1) / s } else { 0 };
    let lo = (lo as usize).min(ow);
    let end = w as isize - off;
    let hi = if end <= 0 {
        0
    } else {
        ((end + s - 1) / s).min(ow as isize) as usize
    };
    (lo, hi.max(lo))
}

/// Output plane `c` of item `item`. `FMA`: fused multiply-adds (only in
/// the builds whose target has them; elsewhere `mul_add` is a libm call).
#[inline(always)]
unsafe fn plane<const FMA: bool>(d: &GemmDesc, p: &Ptrs, item: usize, c: usize, row: &mut [f32]) {
    let u = |v: u32| v as usize;
    let (h, w, oh, ow) = (u(d.h), u(d.w), u(d.oh), u(d.ow));
    let (kh, kw, sh, sw) = (u(d.kh), u(d.kw), u(d.sh), u(d.sw));
    let (dh, dw, pt, pl) = (u(d.dh), u(d.dw), u(d.pt), u(d.pl));
    let taps = kh * kw;
    // SAFETY (all pointer reads below): the caller's contract gives every
    // buffer the sizes `d` implies.
    let x = unsafe {
        std::slice::from_raw_parts(p.x.add(item * d.x_bstride as usize + c * h * w), h * w)
    };
    // The GEMM packing: group `c`'s panel of MR rows, tap-major; row 0.
    let panel = unsafe { std::slice::from_raw_parts(p.a.add(c * MR * taps), MR * taps) };
    let bias = if d.has_bias != 0 {
        unsafe { *p.bias.add(c) }
    } else {
        0.0
    };
    let row = &mut row[..ow];
    for oy in 0..oh {
        row.fill(bias);
        for ki in 0..kh {
            let iy = (oy * sh + ki * dh) as isize - pt as isize;
            if iy < 0 || iy as usize >= h {
                continue;
            }
            let xrow = &x[iy as usize * w..(iy as usize + 1) * w];
            for kj in 0..kw {
                let wv = panel[(ki * kw + kj) * MR];
                let off = (kj * dw) as isize - pl as isize;
                let (lo, hi) = valid(off, sw, w, ow);
                if lo >= hi {
                    continue;
                }
                let start = (lo * sw) as isize + off;
                let acc = &mut row[lo..hi];
                if sw == 1 {
                    let xs = &xrow[start as usize..start as usize + acc.len()];
                    for (a, &xv) in acc.iter_mut().zip(xs) {
                        *a = if FMA {
                            xv.mul_add(wv, *a)
                        } else {
                            *a + xv * wv
                        };
                    }
                } else {
                    for (i, a) in acc.iter_mut().enumerate() {
                        let xv = xrow[start as usize + i * sw];
                        *a = if FMA {
                            xv.mul_add(wv, *a)
                        } else {
                            *a + xv * wv
                        };
                    }
                }
            }
        }
        unsafe { finish_row(d, p, item, c, oy * ow, row) };
    }
}

/// Run one output row through the epilogue (activations vectorised over
/// the row, residual rows added in place) and store it.
#[inline(always)]
unsafe fn finish_row(d: &GemmDesc, p: &Ptrs, item: usize, c: usize, col: usize, row: &mut [f32]) {
    let cols = (d.oh * d.ow) as usize;
    let mut residual = 0;
    for (s, &step) in d.steps[..d.n_steps as usize].iter().enumerate() {
        if step == STEP_ADD {
            let at = item * d.res_bstride[residual] as usize + c * cols + col;
            // SAFETY: the residual has the output's shape (caller's contract).
            let r = unsafe { std::slice::from_raw_parts(p.res[residual].add(at), row.len()) };
            for (v, &rv) in row.iter_mut().zip(r) {
                *v += rv;
            }
            residual += 1;
        } else {
            let (alpha, beta) = (d.alpha[s], d.beta[s]);
            for v in row.iter_mut() {
                *v = act(step, alpha, beta, *v);
            }
        }
    }
    let at = item * d.out_bstride as usize + c * cols + col;
    // SAFETY: the output row is inside the output (caller's contract); it
    // may be a residual's place, read above before this write.
    unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), p.out.add(at), row.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::desc::{STEP_HARDSWISH, STEP_RELU};
    use crate::kernels::testing::{assert_close, reference_conv, value};

    /// Against the plain loop: kernel sizes 3 and 5, strides 1 and 2,
    /// dilation 1 and 2, padding that keeps or shrinks the plane, rows
    /// narrower than the padding, with bias or not, and epilogues with
    /// activations and a residual add written over the residual — on
    /// every build the CPU has.
    #[test]
    fn matches_the_reference_convolution() {
        let host = crate::cpu::host();
        let builds = [
            (Build::Baseline, true),
            (Build::Avx2, host.avx2),
            (Build::Avx512, host.avx512),
        ];
        for (c, h, w, k, stride, dil, pad, bias, steps) in [
            (16, 13, 17, 3, 1, 1, 1, true, vec![STEP_RELU]),
            (8, 12, 9, 3, 2, 1, 1, false, vec![STEP_HARDSWISH]),
            (5, 11, 14, 5, 1, 2, 4, true, vec![STEP_ADD, STEP_HARDSWISH]),
            (3, 20, 21, 5, 2, 1, 2, true, vec![]),
            (4, 3, 2, 3, 1, 1, 1, true, vec![STEP_ADD]),
            (2, 9, 9, 3, 1, 3, 1, false, vec![STEP_RELU]),
            (37, 7, 8, 5, 1, 2, 4, true, vec![STEP_ADD, STEP_RELU]),
            (17, 5, 140, 3, 2, 1, 1, true, vec![STEP_ADD, STEP_RELU]),
        ] {
            let batch = 2;
            let oh = (h + 2 * pad - dil * (k - 1) - 1) / stride + 1;
            let ow = (w + 2 * pad - dil * (k - 1) - 1) / stride + 1;
            let u = |v: usize| v as u32;
            let n_res = steps.iter().filter(|&&s| s == STEP_ADD).count();
            let mut d = GemmDesc {
                kind: KIND_IM2COL,
                batch: u(batch),
                groups: u(c),
                in_c: u(c),
                h: u(h),
                w: u(w),
                out_c: u(c),
                oh: u(oh),
                ow: u(ow),
                kh: u(k),
                kw: u(k),
                sh: u(stride),
                sw: u(stride),
                pt: u(pad),
                pl: u(pad),
                dh: u(dil),
                dw: u(dil),
                has_bias: u(bias as usize),
                n_res: u(n_res),
                n_steps: u(steps.len()),
                x_bstride: (c * h * w) as u64,
                out_bstride: (c * oh * ow) as u64,
                ..GemmDesc::default()
            };
            d.steps[..steps.len()].copy_from_slice(&steps);
            d.res_bstride[0] = (c * oh * ow) as u64;
            assert!(fits(&d));
            let taps = k * k;
            let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
            let wts: Vec<f32> = (0..c * taps).map(|i| value(i + 5)).collect();
            let b: Vec<f32> = (0..c).map(|i| value(i + 9)).collect();
            let res: Vec<f32> = (0..batch * c * oh * ow).map(|i| value(i + 3)).collect();
            let packed =
                crate::kernels::micro::pack_weights(c, 1, taps, |g, _, kk| wts[g * taps + kk]);
            let want = reference_conv(&d, &x, &wts, &b, &[&res]);
            for ((build, available), blocked) in
                builds.into_iter().flat_map(|b| [(b, false), (b, true)])
            {
                if !available {
                    continue;
                }
                let mut out = if n_res > 0 {
                    res.clone()
                } else {
                    vec![f32::NAN; batch * c * oh * ow]
                };
                let p = Ptrs {
                    x: x.as_ptr(),
                    out: out.as_mut_ptr(),
                    a: packed.as_ptr(),
                    bias: b.as_ptr(),
                    res: [
                        out.as_ptr(),
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null(),
                    ],
                };
                unsafe { run_schedule(&d, &p, build, blocked) };
                let what = format!(
                    "{c}ch {h}x{w} k{k} s{stride} d{dil} p{pad} {build:?} blocked {blocked}"
                );
                assert_close(&out, &want, 1e-5, &what);
            }
        }
    }

    #[test]
    fn valid_columns_stay_inside_the_row() {
        // 3 taps, pad 1, stride 2 over 7 inputs: 4 outputs.
        assert_eq!(valid(-1, 2, 7, 4), (1, 4));
        assert_eq!(valid(0, 2, 7, 4), (0, 4));
        assert_eq!(valid(1, 2, 7, 4), (0, 3));
        // A tap entirely in the padding reads nothing.
        assert_eq!(valid(9, 1, 7, 7), (0, 0));
        assert_eq!(valid(-9, 1, 7, 7), (7, 7));
    }
}
