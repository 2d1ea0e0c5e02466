//! Storing results: a tile of `C = A·B` goes to the output through the
//! epilogue (bias, residual adds, activations) as it is written, so every
//! output element is written once. Also the one-element store the direct
//! kernels use, and the multiply-then-store step packed kernels share.

use super::desc::*;
use super::micro::{fused_index, KernelFn, MicroKernel, TileOut, MR};
use super::schedule::Segment;

/// Where a tile of results goes: its rows `row0 .. row0 + rows` (of `nr`
/// columns) are output channels of group `g`, its columns land by
/// `segments` (which may belong to different items); `first`/`last` say whether its K block is the first or
/// the last (accumulate, and run the epilogue, accordingly).
#[derive(Clone, Copy)]
pub(super) struct TileDest<'a> {
    pub(super) nr: usize,
    pub(super) g: usize,
    pub(super) row0: usize,
    pub(super) rows: usize,
    pub(super) segments: &'a [Segment],
    pub(super) first: bool,
    pub(super) last: bool,
}
/// One activation step on one value, with the step's parameters; the
/// steps that are not activations (`STEP_ADD`, `STEP_MAXPOOL2`) leave it
/// as it is (their callers apply them). The one definition every store
/// path uses.
#[inline(always)]
pub(crate) fn act(step: u32, alpha: f32, beta: f32, v: f32) -> f32 {
    match step {
        STEP_RELU => v.max(0.0),
        STEP_LEAKY if v < 0.0 => v * alpha,
        STEP_SIGMOID => 1.0 / (1.0 + (-v).exp()),
        STEP_TANH => v.tanh(),
        STEP_HARDSIGMOID => (v + 3.0).clamp(0.0, 6.0) / 6.0,
        STEP_HARDSWISH => v * ((v + 3.0).clamp(0.0, 6.0) / 6.0),
        STEP_CLIP => v.max(alpha).min(beta),
        STEP_SILU => v / (1.0 + (-v).exp()),
        _ => v,
    }
}

/// `v` through the epilogue's activation steps (every step but residual
/// adds and the pooling).
pub(crate) fn activate(d: &GemmDesc, mut v: f32) -> f32 {
    for (s, &step) in d.steps[..d.n_steps as usize].iter().enumerate() {
        v = act(step, d.alpha[s], d.beta[s], v);
    }
    v
}

/// Store one conv output element (bias already added) through the
/// epilogue steps: residual adds read the same position.
///
/// # Safety
/// `(item, oc, col)` must be inside the output and residual tensors.
pub(crate) unsafe fn store_one(
    d: &GemmDesc,
    p: &Ptrs,
    item: usize,
    oc: usize,
    col: usize,
    value: f32,
) {
    let mut v = value;
    let mut residual = 0;
    for (s, &step) in d.steps[..d.n_steps as usize].iter().enumerate() {
        v = match step {
            STEP_ADD => {
                let bstride = d.res_bstride[residual];
                residual += 1;
                v + *p.res[residual - 1].add(c_offset(d, bstride, item, oc, col))
            }
            step => act(step, d.alpha[s], d.beta[s], v),
        };
    }
    *p.out.add(c_offset(d, d.out_bstride, item, oc, col)) = v;
}

/// Address offset of C element (row `oc`, column `j`) of item `item`.
fn c_offset(d: &GemmDesc, bstride: u64, item: usize, oc: usize, j: usize) -> usize {
    if d.is_dense() {
        j * bstride as usize + oc
    } else {
        item * bstride as usize + oc * d.cols() + j
    }
}

/// Ask for the cache lines a tile's fused residual add will touch — its
/// output and residual rows — so the misses overlap the micro-kernel call
/// made between this and [`store`]. Without it the store waits on each
/// line in turn: a tile's rows are `cols` floats apart, short interleaved
/// runs no hardware prefetcher follows. Tiles without a residual gained
/// nothing from it, and into L1 rather than L2 the lines evicted the
/// kernel's panels (docs/performance.md, "residual prefetch").
#[inline(always)]
pub(super) unsafe fn prefetch_dest(d: &GemmDesc, p: &Ptrs, to: &TileDest) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let residuals = d.n_res as usize;
        if d.is_dense() || !to.last || residuals == 0 {
            return;
        }
        let m = d.m();
        for r in 0..to.rows {
            let oc = to.g * m + to.row0 + r;
            for seg in to.segments {
                let at = |base: *const f32, bstride: u64| {
                    let first = base.add(c_offset(d, bstride, seg.item, oc, seg.out_col));
                    _mm_prefetch::<_MM_HINT_T1>(first as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(first.add(seg.len - 1) as *const i8);
                };
                at(p.out, d.out_bstride);
                for i in 0..residuals {
                    at(p.res[i], d.res_bstride[i]);
                }
            }
        }
    }
}

/// Multiply one tile (`run` over `kc` rows of the A panel `a` and the B
/// rows at `b + offs[k]`, `width` columns) and store it as [`store`] does
/// — but through the kernel's fused variant, without the tile, when the
/// tile is a whole `MR × nr` rectangle of one output run with a common
/// [`Epilogue`] and a single K block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn multiply_store(
    kern: &MicroKernel,
    (run, width): (KernelFn, usize),
    (kc, a, b, offs): (usize, *const f32, *const f32, *const usize),
    d: &GemmDesc,
    p: &Ptrs,
    tile: &mut [f32],
    to: &TileDest,
) {
    if let (Some(fused), Some(ep), [seg]) = (kern.fused, Epilogue::of(d), to.segments) {
        if width == kern.nr && to.rows == MR && to.first && to.last && seg.len == width {
            const NO_BIAS: [f32; MR] = [0.0; MR];
            let oc = to.g * d.m() + to.row0;
            let out = TileOut {
                out: p
                    .out
                    .add(c_offset(d, d.out_bstride, seg.item, oc, seg.out_col)),
                ld: d.cols(),
                bias: if d.has_bias != 0 {
                    p.bias.add(oc)
                } else {
                    NO_BIAS.as_ptr()
                },
                res: if ep.add {
                    p.res[0].add(c_offset(d, d.res_bstride[0], seg.item, oc, seg.out_col))
                } else {
                    std::ptr::null()
                },
                res_ld: d.cols(),
            };
            return fused[fused_index(ep.add, ep.relu)](kc, a, b, offs, &out);
        }
    }
    run(kc, a, b, offs, tile.as_mut_ptr());
    store(d, p, tile, to);
}

/// Read `width` floats at `src` spaced `stride` apart into `out`.
unsafe fn gather(out: &mut [f32], src: *const f32, stride: usize) {
    if stride == 1 {
        out.copy_from_slice(std::slice::from_raw_parts(src, out.len()));
    } else {
        for (c, o) in out.iter_mut().enumerate() {
            *o = *src.add(c * stride);
        }
    }
}

/// Store rows of a tile, segment by segment: accumulate onto earlier K
/// blocks, and on the last block add the bias and run the epilogue steps,
/// so every output element is written once per K block. A conv's segment
/// is contiguous; a dense layer's "row" (one output feature across the
/// batch) is strided. The epilogue runs in place on the tile.
///
/// With AVX2 the common [`Epilogue`]s take [`store_simple`]; the rest
/// is compiled twice: with AVX2 (chosen at run time when the CPU has it)
/// and for the x86-64 baseline the crate is built for.
pub(super) unsafe fn store(d: &GemmDesc, p: &Ptrs, tile: &mut [f32], to: &TileDest) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::host().avx2 {
        return match Epilogue::of(d).map(|e| (e.add, e.relu)) {
            Some((false, false)) => store_simple::<false, false>(d, p, tile, to),
            Some((false, true)) => store_simple::<false, true>(d, p, tile, to),
            Some((true, false)) => store_simple::<true, false>(d, p, tile, to),
            Some((true, true)) => store_simple::<true, true>(d, p, tile, to),
            None => store_avx2(d, p, tile, to),
        };
    }
    store_any(d, p, tile, to)
}

/// The epilogues almost every conv tile has: a contiguous output and steps
/// `[]`, `[relu]`, `[add]` or `[add, relu]`, over any K block.
#[derive(Clone, Copy)]
pub(super) struct Epilogue {
    pub(super) add: bool,
    pub(super) relu: bool,
}

impl Epilogue {
    pub(super) fn of(d: &GemmDesc) -> Option<Epilogue> {
        if d.is_dense() {
            return None;
        }
        let (add, relu) = match &d.steps[..d.n_steps as usize] {
            [] => (false, false),
            [STEP_RELU] => (false, true),
            [STEP_ADD] => (true, false),
            [STEP_ADD, STEP_RELU] => (true, true),
            _ => return None,
        };
        Some(Epilogue { add, relu })
    }
}

/// [`store`] for an [`Epilogue`] tile, eight floats at a time: onto the
/// earlier K blocks' sums unless `to.first`, and on the last block with
/// the bias, residual and ReLU applied on the way:
/// `out = max(tile + bias + res, 0)`. The compiler's own vectorisation of
/// the same loop was four wide and one vector per iteration, and on
/// ResNet's expand convs (K = 64, 56×56) storing took two thirds as long
/// as the multiply.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_simple<const ADD: bool, const RELU: bool>(
    d: &GemmDesc,
    p: &Ptrs,
    tile: &[f32],
    to: &TileDest,
) {
    use std::arch::x86_64::*;
    let m = d.m();
    let zero = _mm256_setzero_ps();
    let (first, last) = (to.first, to.last);
    for r in 0..to.rows {
        let oc = to.g * m + to.row0 + r;
        let b = if last && d.has_bias != 0 {
            *p.bias.add(oc)
        } else {
            0.0
        };
        let bias = _mm256_set1_ps(b);
        for seg in to.segments {
            let dst = p
                .out
                .add(c_offset(d, d.out_bstride, seg.item, oc, seg.out_col));
            let res = if ADD && last {
                p.res[0].add(c_offset(d, d.res_bstride[0], seg.item, oc, seg.out_col))
            } else {
                std::ptr::null()
            };
            let v = tile.as_ptr().add(r * to.nr + seg.tile_col);
            let mut j = 0;
            while j + 8 <= seg.len {
                let mut x = _mm256_loadu_ps(v.add(j));
                if !first {
                    x = _mm256_add_ps(x, _mm256_loadu_ps(dst.add(j)));
                }
                if last {
                    x = _mm256_add_ps(x, bias);
                    if ADD {
                        x = _mm256_add_ps(x, _mm256_loadu_ps(res.add(j)));
                    }
                    if RELU {
                        x = _mm256_max_ps(x, zero);
                    }
                }
                _mm256_storeu_ps(dst.add(j), x);
                j += 8;
            }
            while j < seg.len {
                let mut x = *v.add(j);
                if !first {
                    x += *dst.add(j);
                }
                if last {
                    x += b;
                    if ADD {
                        x += *res.add(j);
                    }
                    if RELU {
                        x = x.max(0.0);
                    }
                }
                *dst.add(j) = x;
                j += 1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_avx2(d: &GemmDesc, p: &Ptrs, tile: &mut [f32], to: &TileDest) {
    store_any(d, p, tile, to)
}

/// [`store`] for any epilogue: every step in order on the tile, then
/// copied out (strided for a dense layer's output). Machines with AVX2
/// take [`store_simple`] for the common epilogues instead.
#[inline(always)]
unsafe fn store_any(d: &GemmDesc, p: &Ptrs, tile: &mut [f32], to: &TileDest) {
    let TileDest {
        nr,
        g,
        row0,
        rows,
        segments,
        first,
        last,
    } = *to;
    let dense = d.is_dense();
    let col_stride = |bstride: u64| if dense { bstride as usize } else { 1 };
    let out_stride = col_stride(d.out_bstride);
    let steps = &d.steps[..d.n_steps as usize];
    let mut extra = [0.0f32; 32];
    let m = d.m();
    for r in 0..rows {
        let oc = g * m + row0 + r;
        let bias = if last && d.has_bias != 0 {
            *p.bias.add(oc)
        } else {
            0.0
        };
        for seg in segments {
            let width = seg.len;
            let dst = p
                .out
                .add(c_offset(d, d.out_bstride, seg.item, oc, seg.out_col));
            let start = r * nr + seg.tile_col;
            let v = &mut tile[start..start + width];
            if !first {
                let acc = &mut extra[..width];
                gather(acc, dst, out_stride);
                v.iter_mut().zip(acc.iter()).for_each(|(x, a)| *x += a);
            }
            if last {
                v.iter_mut().for_each(|x| *x += bias);
                let mut residual = 0;
                for (s, &step) in steps.iter().enumerate() {
                    match step {
                        STEP_ADD => {
                            let bstride = d.res_bstride[residual];
                            let res = p.res[residual].add(c_offset(
                                d,
                                bstride,
                                seg.item,
                                oc,
                                seg.out_col,
                            ));
                            if !dense {
                                let add = std::slice::from_raw_parts(res, width);
                                v.iter_mut().zip(add.iter()).for_each(|(x, a)| *x += a);
                            } else {
                                let add = &mut extra[..width];
                                gather(add, res, col_stride(bstride));
                                v.iter_mut().zip(add.iter()).for_each(|(x, a)| *x += a);
                            }
                            residual += 1;
                        }
                        STEP_RELU => v.iter_mut().for_each(|x| *x = x.max(0.0)),
                        STEP_LEAKY => {
                            let a = d.alpha[s];
                            v.iter_mut()
                                .for_each(|x| *x = if *x >= 0.0 { *x } else { *x * a });
                        }
                        step => {
                            let (a, b) = (d.alpha[s], d.beta[s]);
                            v.iter_mut().for_each(|x| *x = act(step, a, b, *x));
                        }
                    }
                }
            }
            if out_stride == 1 {
                std::slice::from_raw_parts_mut(dst, width).copy_from_slice(v);
            } else {
                for (c, x) in v.iter().enumerate() {
                    *dst.add(c * out_stride) = *x;
                }
            }
        }
    }
}
