//! Max and average pooling over NCHW planes.
//!
//! Contract: `out[n, c, oh, ow]` is the max (or average) of the input over
//! the window at `(oh·sh − pt + ki·dh, ow·sw − pl + kj·dw)`, skipping taps in
//! the padding. The average divides by the window clipped to the padded
//! input (`count_include_pad`, PyTorch's rule) or by the number of taps
//! inside the input; a window with no tap gives −∞ (max) or 0 (average),
//! as in the reference interpreter. Output sizes (ceil mode included) come
//! from the descriptor.
//!
//! Each output row is accumulated tap by tap over a contiguous run of
//! output columns, so the inner loop is a vectorisable slice operation with
//! no per-element bounds tests; planes run in parallel on the thread pool when there
//! is enough work. (This replaced generated scalar code that ran
//! GoogLeNet's stride-1 inception pools on one thread: 31% of its time.)
//! The shapes the networks use most have separable paths: 3×3 "same"
//! (GoogLeNet's inception pools), 3×3/2 (every stem), 2×2/2 (VGG, the book
//! ConvNet) and global averages. All of it is compiled twice, for baseline
//! x86-64 and for AVX2, and picked per layer ([`plane_fn`]); the one loop
//! LLVM would not vectorise, the 3×3/2 pool's stride-2 window maximum, is
//! written with AVX2 shuffles ([`stride2_max3`]).

use super::Shared;
use crate::threads::parallel_for;

pub const POOL_MAX: u32 = 0;
pub const POOL_AVG: u32 = 1;

/// A pooling layer's geometry, stored by the code generator as constant
/// data next to the generated code. Item `n` of a tensor starts at
/// `base + n·bstride`; channel planes within an item are contiguous.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolDesc {
    pub kind: u32,
    pub count_include_pad: u32,
    pub batch: u32,
    pub channels: u32,
    pub h: u32,
    pub w: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub dh: u32,
    pub dw: u32,
    /// Padding `[top, left, bottom, right]`.
    pub pad: [u32; 4],
    pub x_bstride: u64,
    pub out_bstride: u64,
}

impl PoolDesc {
    /// The descriptor as raw bytes, for embedding in generated code.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::pod_bytes(self)
    }
}

/// Output positions `[lo, hi)` along one axis whose tap at offset `tap`
/// (already times the dilation) lies inside `0 .. size`.
fn valid_range(out: usize, stride: usize, tap: usize, pad: usize, size: usize) -> (usize, usize) {
    // index(o) = o·stride + tap − pad
    let first = tap as isize - pad as isize;
    let lo = if first >= 0 {
        0
    } else {
        ((-first) as usize).div_ceil(stride)
    }
    .min(out);
    let hi = if (size as isize) > first {
        ((size as isize - first) as usize).div_ceil(stride).min(out)
    } else {
        0
    }
    .max(lo);
    (lo, hi)
}

/// Per-column facts shared by every plane of a layer.
struct Columns {
    /// For each kernel column `kj`: the output columns `[lo, hi)` whose tap
    /// is inside the input, and the input column of output 0's tap.
    ranges: Vec<(usize, usize, isize)>,
    /// Taps per output column inside the input (for averages).
    taps: Vec<u32>,
}

impl Columns {
    fn new(d: &PoolDesc) -> Columns {
        let (w, ow, sw, dw) = (d.w as usize, d.ow as usize, d.sw as usize, d.dw as usize);
        let pl = d.pad[1] as usize;
        let ranges: Vec<(usize, usize, isize)> = (0..d.kw as usize)
            .map(|kj| {
                let (lo, hi) = valid_range(ow, sw, kj * dw, pl, w);
                (lo, hi, (kj * dw) as isize - pl as isize)
            })
            .collect();
        let mut taps = vec![0u32; ow];
        for &(lo, hi, _) in &ranges {
            taps[lo..hi].iter_mut().for_each(|t| *t += 1);
        }
        Columns { ranges, taps }
    }
}

/// Run one pooling layer.
///
/// # Safety
/// `x` and `out` must address tensors of the shapes and item strides the
/// descriptor gives; they must not overlap.
pub unsafe fn run(d: &PoolDesc, x: *const f32, out: *mut f32) {
    run_with(plane_fn(d), d, x, out)
}

/// [`run`] with a given build of [`plane`] (tests drive each).
unsafe fn run_with(plane_fn: PlaneFn, d: &PoolDesc, x: *const f32, out: *mut f32) {
    let planes = (d.batch * d.channels) as usize;
    let per_plane = (d.oh * d.ow * d.kh * d.kw) as usize;
    let cols = Columns::new(d);
    // Planes are written by one task each; the input is only read.
    let (xs, outs) = (Shared::new(x), Shared(out));
    let planes_in = |range: std::ops::Range<usize>| {
        let (x, out) = (xs.get() as *const f32, outs.get());
        SCRATCH.with(|v| {
            let v = &mut v.borrow_mut();
            for i in range {
                let (n, c) = (i / d.channels as usize, i % d.channels as usize);
                // SAFETY: forwarded from the caller's contract.
                unsafe {
                    let src = x.add(n * d.x_bstride as usize + c * (d.h * d.w) as usize);
                    let dst = out.add(n * d.out_bstride as usize + c * (d.oh * d.ow) as usize);
                    plane_fn(d, &cols, v, src, dst);
                }
            }
        });
    };
    over_planes(planes, per_plane, planes_in);
}

/// Run `planes_in` over `0..planes` — on this thread when the layer is
/// small, else in tasks of at least ~16k units of `per_plane` work each,
/// which keeps the per-task overhead small.
pub(super) fn over_planes(
    planes: usize,
    per_plane: usize,
    planes_in: impl Fn(std::ops::Range<usize>) + Sync,
) {
    if planes * per_plane < 1 << 15 {
        planes_in(0..planes);
    } else {
        let chunk = (1usize << 14).div_ceil(per_plane.max(1)).max(1);
        parallel_for(planes.div_ceil(chunk), |t| {
            planes_in(t * chunk..((t + 1) * chunk).min(planes))
        });
    }
}

/// `max` that compiles to one vector instruction (`f32::max` also orders
/// NaNs, which costs a compare and a blend per vector).
#[inline(always)]
fn max2(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

thread_local! {
    /// The scratch row or plane of the separable max pools.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[i] = max(a[i], b[i])`. Each loop below writes a buffer it does not
/// read: a read-modify-write `*a = max(*a, b)` is a conditional store to
/// LLVM, which with AVX2 becomes `vmaskmovps` (microcoded on AMD; a pool
/// built that way ran 2.4× slower).
#[inline(always)]
fn max2_of(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((y, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *y = max2(a, b);
    }
}

/// `out[i] = max(a[i], b[i], c[i])`.
#[inline(always)]
fn max3_of(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((y, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *y = max2(max2(a, b), c);
    }
}

/// `out` = the element-wise max of input rows `rows` (at most three, −∞
/// for none), each `out.len()` floats from row starts `w` apart.
#[inline(always)]
fn column_max(out: &mut [f32], x: &[f32], w: usize, rows: std::ops::Range<usize>) {
    let n = out.len();
    let row = |i: usize| &x[i * w..i * w + n];
    match rows.len() {
        0 => out.fill(f32::NEG_INFINITY),
        1 => out.copy_from_slice(row(rows.start)),
        2 => max2_of(out, row(rows.start), row(rows.start + 1)),
        _ => max3_of(
            out,
            row(rows.start),
            row(rows.start + 1),
            row(rows.start + 2),
        ),
    }
}

/// Whether `d` is a 3×3 stride-1 max pool with padding 1 on every side
/// (output as large as the input): GoogLeNet's inception pools, on
/// 28×28, 14×14 and 7×7 planes.
fn is_max_3x3_same(d: &PoolDesc) -> bool {
    d.kind == POOL_MAX
        && (d.kh, d.kw, d.sh, d.sw, d.dh, d.dw) == (3, 3, 1, 1, 1, 1)
        && d.pad == [1; 4]
        && (d.oh, d.ow) == (d.h, d.w)
}

/// [`is_max_3x3_same`] pooling of one plane, separably over the plane as
/// one flat array: each element the max of itself and the elements a row
/// above and below (those inside) into a scratch plane, then the max of
/// each scratch element and its left and right neighbours into the
/// output. The flat horizontal pass wraps across row ends, so each row's
/// first and last outputs are then redone from their own row.
///
/// Each pass is one loop over the whole plane that reads three slices and
/// writes one: the input is read once and the output written once. Loops
/// per row cost more than the maxima on these short rows (28 floats and
/// fewer): row by row through a scratch plane, with read-modify-write
/// passes, the 256-channel 28×28 layer ran 3 cycles an output.
#[inline(always)]
unsafe fn plane_max_3x3_same(d: &PoolDesc, v: &mut Vec<f32>, src: *const f32, dst: *mut f32) {
    let (h, w) = (d.h as usize, d.w as usize);
    let n = h * w;
    let x = std::slice::from_raw_parts(src, n);
    let out = std::slice::from_raw_parts_mut(dst, n);
    super::grow(v, n);
    let v = &mut v[..n];
    if h == 1 {
        v.copy_from_slice(x);
    } else {
        max2_of(&mut v[..w], &x[..w], &x[w..2 * w]);
        max3_of(&mut v[w..n - w], &x[..n - 2 * w], &x[w..n - w], &x[2 * w..]);
        max2_of(&mut v[n - w..], &x[n - 2 * w..n - w], &x[n - w..]);
    }
    if w == 1 {
        out.copy_from_slice(v);
        return;
    }
    max3_of(&mut out[1..n - 1], &v[..n - 2], &v[1..n - 1], &v[2..]);
    for (y, r) in out.chunks_exact_mut(w).zip(v.chunks_exact(w)) {
        y[0] = max2(r[0], r[1]);
        y[w - 1] = max2(r[w - 2], r[w - 1]);
    }
}

/// Whether `d` is a 2×2 stride-2 max pool without padding (VGG's and the
/// book ConvNet's pools).
fn is_max_2x2(d: &PoolDesc) -> bool {
    d.kind == POOL_MAX
        && (d.kh, d.kw, d.sh, d.sw, d.dh, d.dw) == (2, 2, 2, 2, 1, 1)
        && d.pad == [0; 4]
        && 2 * d.oh <= d.h
        && 2 * d.ow <= d.w
}

/// [`is_max_2x2`] pooling of one plane: each output the max of two
/// adjacent pairs, a loop the compiler vectorises with even/odd shuffles
/// (the general path below reads one strided tap at a time).
#[inline(always)]
unsafe fn plane_max_2x2(d: &PoolDesc, src: *const f32, dst: *mut f32) {
    let (w, oh, ow) = (d.w as usize, d.oh as usize, d.ow as usize);
    for o in 0..oh {
        let r0 = std::slice::from_raw_parts(src.add(2 * o * w), 2 * ow);
        let r1 = std::slice::from_raw_parts(src.add((2 * o + 1) * w), 2 * ow);
        let out = std::slice::from_raw_parts_mut(dst.add(o * ow), ow);
        for ((y, a), b) in out
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            *y = max2(max2(a[0], a[1]), max2(b[0], b[1]));
        }
    }
}

/// Whether `d` has a 1×1 window and no padding: each output is the one
/// tap at `(oh·sh, ow·sw)`, for max and average alike. The optimiser adds
/// these in front of strided 1×1 convs it merges into a matrix multiply
/// (see the compiler's `merge_residual` pass).
fn is_subsample(d: &PoolDesc) -> bool {
    (d.kh, d.kw) == (1, 1)
        && d.pad == [0; 4]
        && d.oh > 0
        && d.ow > 0
        && (d.oh - 1) * d.sh < d.h
        && (d.ow - 1) * d.sw < d.w
}

/// Output rows ahead of the one being copied whose source row is
/// prefetched (an address past the plane is harmless: prefetches do not
/// fault).
const AHEAD_ROWS: usize = 4;

/// [`is_subsample`] pooling of one plane: every `sh`-th row, every
/// `sw`-th float of it, by the packing code's strided copies (AVX-512
/// permutes for strides 2 and 4; the general path's tap loop ran this far
/// below the copy bandwidth).
#[inline(always)]
unsafe fn plane_subsample(d: &PoolDesc, src: *const f32, dst: *mut f32) {
    let (w, oh, ow) = (d.w as usize, d.oh as usize, d.ow as usize);
    let (sh, sw) = (d.sh as usize, d.sw as usize);
    let wide = crate::cpu::host().avx512;
    for o in 0..oh {
        let row = std::slice::from_raw_parts(src.add(o * sh * w), w);
        let out = std::slice::from_raw_parts_mut(dst.add(o * ow), ow);
        super::planes::prefetch_row(src.wrapping_add((o + AHEAD_ROWS) * sh * w), w);
        match sw {
            1 => out.copy_from_slice(&row[..ow]),
            2 => super::planes::every_fast::<2>(out, row, wide),
            4 => super::planes::every_fast::<4>(out, row, wide),
            _ => out
                .iter_mut()
                .zip(row.iter().step_by(sw))
                .for_each(|(y, &v)| *y = v),
        }
    }
}

/// Whether `d` is a 3×3 stride-2 max pool with padding 0 or 1 on every
/// side (the ResNet stem's pool, 3×3/2 pad 1 on 112×112 planes).
fn is_max_3x3_s2(d: &PoolDesc) -> bool {
    d.kind == POOL_MAX
        && (d.kh, d.kw, d.sh, d.sw, d.dh, d.dw) == (3, 3, 2, 2, 1, 1)
        && d.pad.iter().all(|&p| p <= 1)
}

/// [`is_max_3x3_s2`] pooling of one plane, separably and row by row: the
/// max of output row `o`'s three input rows (clipped to the plane) into
/// one scratch row, then each output column the max of three scratch
/// columns at stride 2 (windows wholly inside the row as one loop over
/// (pair, next pair) the compiler vectorises, windows touching the edge
/// one by one). Taps in the padding are skipped, as in [`plane`].
#[inline(always)]
unsafe fn plane_max_3x3_s2(d: &PoolDesc, v: &mut Vec<f32>, src: *const f32, dst: *mut f32) {
    let (h, w, oh, ow) = (d.h as usize, d.w as usize, d.oh as usize, d.ow as usize);
    let (pt, pl) = (d.pad[0] as usize, d.pad[1] as usize);
    let x = std::slice::from_raw_parts(src, h * w);
    let out = std::slice::from_raw_parts_mut(dst, oh * ow);
    // Output column j reads input columns 2j − pl .. 2j − pl + 3; inside
    // the row for j in `lo .. hi`.
    let lo = pl.min(ow);
    let hi = ((w + pl).saturating_sub(3) / 2 + 1).clamp(lo, ow);
    let window = |row: &[f32], j: usize| {
        let first = (2 * j) as isize - pl as isize;
        (first..first + 3)
            .filter(|&c| c >= 0 && (c as usize) < w)
            .map(|c| row[c as usize])
            .fold(f32::NEG_INFINITY, max2)
    };
    super::grow(v, w);
    let v = &mut v[..w];
    for (o, y) in out.chunks_exact_mut(ow).enumerate() {
        let first = (2 * o).saturating_sub(pt);
        column_max(v, x, w, first.min(h)..(2 * o + 3 - pt).min(h));
        for j in (0..lo).chain(hi..ow) {
            y[j] = window(v, j);
        }
        if hi > lo {
            let n = hi - lo;
            stride2_max3(&mut y[lo..hi], &v[2 * lo - pl..][..2 * n + 1]);
        }
    }
}

/// `y[i] = max(row[2i], row[2i + 1], row[2i + 2])`; `row` holds
/// `2·y.len() + 1` floats. LLVM leaves this loop one float at a time
/// (58% of a 112×112 3×3/2 pool's samples), so with AVX2 it deinterleaves
/// by hand.
#[inline(always)]
fn stride2_max3(y: &mut [f32], row: &[f32]) {
    debug_assert_eq!(row.len(), 2 * y.len() + 1);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::host().avx2 {
        // SAFETY: AVX2 is available; the lengths are as documented.
        done = unsafe { stride2_max3_avx2(y, row) };
    }
    for (i, m) in y.iter_mut().enumerate().skip(done) {
        *m = max2(max2(row[2 * i], row[2 * i + 1]), row[2 * i + 2]);
    }
}

/// [`stride2_max3`] eight outputs at a time, as far as whole vectors of
/// `row` reach; returns how many outputs it wrote.
///
/// # Safety
/// AVX2 must be available; `row` holds `2·y.len() + 1` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stride2_max3_avx2(y: &mut [f32], row: &[f32]) -> usize {
    use std::arch::x86_64::*;
    let mut i = 0;
    // Outputs i .. i + 8 read row[2i .. 2i + 18) (the last vector's final
    // float is not used).
    while 2 * i + 18 <= row.len() {
        let p = row.as_ptr().add(2 * i);
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        let (c, d) = (_mm256_loadu_ps(p.add(2)), _mm256_loadu_ps(p.add(10)));
        // Within each 128-bit half: a's then b's even (odd) floats, so the
        // results come as 64-bit blocks 0, 2, 1, 3 of the output.
        let even = _mm256_shuffle_ps::<0x88>(a, b);
        let odd = _mm256_shuffle_ps::<0xDD>(a, b);
        let next = _mm256_shuffle_ps::<0x88>(c, d);
        let m = _mm256_max_ps(_mm256_max_ps(even, odd), next);
        let m = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(m)));
        _mm256_storeu_ps(y.as_mut_ptr().add(i), m);
        i += 8;
    }
    i
}

/// Whether `d` averages each whole plane (global average pooling).
fn is_global_avg(d: &PoolDesc) -> bool {
    d.kind == POOL_AVG && (d.oh, d.ow, d.kh, d.kw) == (1, 1, d.h, d.w) && d.pad == [0; 4]
}

/// [`is_global_avg`] pooling of one plane: one contiguous sum, eight
/// partial sums wide so it vectorises.
#[inline(always)]
unsafe fn plane_global_avg(d: &PoolDesc, src: *const f32, dst: *mut f32) {
    let x = std::slice::from_raw_parts(src, (d.h * d.w) as usize);
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    *dst = (lanes.iter().sum::<f32>() + tail) / x.len() as f32;
}

type PlaneFn = unsafe fn(&PoolDesc, &Columns, &mut Vec<f32>, *const f32, *mut f32);

/// Every build of [`plane`] this CPU runs.
#[cfg(test)]
fn plane_fns() -> Vec<PlaneFn> {
    let mut all: Vec<PlaneFn> = vec![plane];
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::host().avx2 {
        all.push(plane_avx2);
    }
    all
}

/// The build of [`plane`] for `d`: the pools are loops over slices,
/// which LLVM vectorises 4 wide for baseline x86-64 and 8 wide with AVX2.
/// Only the 2×2 pools stay 4 wide: their one loop per output row runs
/// scalar at 8 wide on 7-column outputs (docs/performance.md, "2×2
/// pools").
fn plane_fn(d: &PoolDesc) -> PlaneFn {
    #[cfg(target_arch = "x86_64")]
    {
        if !is_max_2x2(d) && crate::cpu::host().avx2 {
            return plane_avx2;
        }
    }
    plane
}

/// # Safety
/// As [`plane`], and AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2(
    d: &PoolDesc,
    cols: &Columns,
    scratch: &mut Vec<f32>,
    src: *const f32,
    dst: *mut f32,
) {
    plane(d, cols, scratch, src, dst)
}

#[inline(always)]
unsafe fn plane(
    d: &PoolDesc,
    cols: &Columns,
    scratch: &mut Vec<f32>,
    src: *const f32,
    dst: *mut f32,
) {
    if is_global_avg(d) {
        return plane_global_avg(d, src, dst);
    }
    if is_max_3x3_same(d) {
        return plane_max_3x3_same(d, scratch, src, dst);
    }
    if is_max_2x2(d) {
        return plane_max_2x2(d, src, dst);
    }
    if is_max_3x3_s2(d) {
        return plane_max_3x3_s2(d, scratch, src, dst);
    }
    if is_subsample(d) {
        return plane_subsample(d, src, dst);
    }
    let (h, w, oh, ow) = (d.h as usize, d.w as usize, d.oh as usize, d.ow as usize);
    let (sh, sw, dh) = (d.sh as usize, d.sw as usize, d.dh as usize);
    let [pt, pl, pb, pr] = d.pad.map(|p| p as usize);
    let max = d.kind == POOL_MAX;
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    for o in 0..oh {
        let acc = dst.add(o * ow);
        for j in 0..ow {
            *acc.add(j) = init;
        }
        let mut rows = 0;
        for ki in 0..d.kh as usize {
            let ih = (o * sh + ki * dh) as isize - pt as isize;
            if ih < 0 || ih >= h as isize {
                continue;
            }
            rows += 1;
            let row = src.add(ih as usize * w);
            for &(lo, hi, shift) in &cols.ranges {
                // Input column of output `t`'s tap: t·sw + shift, inside
                // the row for every t in lo..hi (see `valid_range`).
                let base = row.wrapping_offset(shift);
                if max {
                    for t in lo..hi {
                        let a = acc.add(t);
                        *a = (*a).max(*base.wrapping_add(t * sw));
                    }
                } else {
                    for t in lo..hi {
                        *acc.add(t) += *base.wrapping_add(t * sw);
                    }
                }
            }
        }
        if max {
            continue;
        }
        let acc = std::slice::from_raw_parts_mut(acc, ow);
        if d.count_include_pad != 0 {
            let extent = |o: usize, s: usize, k: usize, size: usize| {
                let start = o * s;
                (start + k).min(size) - start.min(size)
            };
            let rows_in = extent(o, sh, d.kh as usize, h + pt + pb);
            for (j, a) in acc.iter_mut().enumerate() {
                let cols_in = extent(j, sw, d.kw as usize, w + pl + pr);
                *a /= (rows_in * cols_in).max(1) as f32;
            }
        } else {
            for (a, &t) in acc.iter_mut().zip(&cols.taps) {
                *a /= (rows * t as usize).max(1) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct definition, for comparison.
    fn naive(d: &PoolDesc, x: &[f32]) -> Vec<f32> {
        let (h, w, oh, ow) = (d.h as usize, d.w as usize, d.oh as usize, d.ow as usize);
        let [pt, pl, pb, pr] = d.pad.map(|p| p as usize);
        let mut y = vec![0.0; (d.batch * d.channels) as usize * oh * ow];
        for p in 0..(d.batch * d.channels) as usize {
            for o in 0..oh {
                for j in 0..ow {
                    let (mut m, mut s, mut n) = (f32::NEG_INFINITY, 0.0, 0);
                    for ki in 0..d.kh as usize {
                        for kj in 0..d.kw as usize {
                            let ih =
                                (o * d.sh as usize + ki * d.dh as usize) as isize - pt as isize;
                            let iw =
                                (j * d.sw as usize + kj * d.dw as usize) as isize - pl as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                                let v = x[p * h * w + ih as usize * w + iw as usize];
                                m = m.max(v);
                                s += v;
                                n += 1;
                            }
                        }
                    }
                    let div = if d.count_include_pad != 0 {
                        let e = |o: usize, s: usize, k: usize, size: usize| {
                            (o * s + k).min(size) - (o * s).min(size)
                        };
                        e(o, d.sh as usize, d.kh as usize, h + pt + pb)
                            * e(j, d.sw as usize, d.kw as usize, w + pl + pr)
                    } else {
                        n
                    };
                    y[(p * oh + o) * ow + j] = if d.kind == POOL_MAX {
                        m
                    } else {
                        s / div.max(1) as f32
                    };
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition() {
        // (k, s, d, pad, ceil extra output) over odd sizes, both kinds.
        let cases = [
            (3, 1, 1, [1, 1, 1, 1], 0),
            // 3×3 stride-2 max pools with padding ≤ 1 take the separable
            // strided path (AlexNet's, ceil mode, and ResNet's).
            (3, 2, 1, [0, 0, 0, 0], 1),
            (3, 2, 1, [1, 1, 1, 1], 0),
            (3, 2, 1, [1, 0, 0, 1], 1),
            // 2×2 stride-2 max pools take the pairwise path (odd sizes:
            // the last row and column are dropped), except in ceil mode.
            (2, 2, 1, [0, 0, 0, 0], 0),
            (2, 2, 1, [0, 0, 0, 0], 1),
            (3, 2, 2, [2, 1, 2, 1], 0),
            (5, 3, 1, [2, 0, 1, 2], 1),
            // 1×1 windows take the subsampling copy (stride 3: the
            // general stride; 2 and 4: the packing code's AVX-512 copies).
            (1, 1, 1, [0, 0, 0, 0], 0),
            (1, 2, 1, [0, 0, 0, 0], 0),
            (1, 3, 1, [0, 0, 0, 0], 1),
            (1, 4, 1, [0, 0, 0, 0], 0),
            (1, 2, 1, [1, 0, 0, 1], 0),
            // Other stride-1 "same" windows take the general path.
            (5, 1, 1, [2, 2, 2, 2], 0),
            (9, 1, 1, [4, 4, 4, 4], 0),
        ];
        for (k, s, dil, pad, extra) in cases {
            for kind in [POOL_MAX, POOL_AVG] {
                for cip in [0, 1] {
                    let dil = if kind == POOL_MAX { dil } else { 1 };
                    check(kind, cip, (11, 9), (k, s, dil), pad, extra);
                }
            }
        }
    }

    /// The separable max pools (3×3 "same", 3×3/2) on planes down to one
    /// row or column, where their row-end and plane-end cases meet, and
    /// rows wide enough for the strided pool's vector loop and its tail.
    #[test]
    fn separable_max_pools_on_small_planes() {
        for h in [1, 2, 3, 4, 7] {
            for w in [1, 2, 3, 5, 8, 17, 36, 53] {
                check(POOL_MAX, 0, (h, w), (3, 1, 1), [1; 4], 0);
                for (pad, extra) in [([0; 4], 1), ([1; 4], 0), ([1, 1, 0, 0], 1)] {
                    if h + pad[0] + pad[2] >= 3 && w + pad[1] + pad[3] >= 3 {
                        check(POOL_MAX, 0, (h, w), (3, 2, 1), pad, extra);
                    }
                }
            }
        }
    }

    /// 1×1 subsampling on rows long enough for the 16-lane copies and
    /// their masked tails.
    #[test]
    fn subsampling_matches_the_definition_on_wide_rows() {
        for w in [31, 32, 33, 70, 112] {
            for s in [2, 3, 4] {
                check(POOL_MAX, 0, (5, w), (1, s, 1), [0; 4], 0);
                check(POOL_AVG, 1, (5, w), (1, s, 1), [0; 4], 0);
            }
        }
    }

    /// Pool two items of three `h × w` channels with a `k × k` window at
    /// stride `s` and dilation `dil` by every build of [`plane`], against
    /// the definition.
    fn check(
        kind: u32,
        cip: u32,
        (h, w): (usize, usize),
        (k, s, dil): (usize, usize, usize),
        pad: [usize; 4],
        extra: usize,
    ) {
        let span = dil * (k - 1) + 1;
        let oh = (h + pad[0] + pad[2] - span) / s + 1 + extra;
        let ow = (w + pad[1] + pad[3] - span) / s + 1 + extra;
        let d = PoolDesc {
            kind,
            count_include_pad: cip,
            batch: 2,
            channels: 3,
            h: h as u32,
            w: w as u32,
            oh: oh as u32,
            ow: ow as u32,
            kh: k as u32,
            kw: k as u32,
            sh: s as u32,
            sw: s as u32,
            dh: dil as u32,
            dw: dil as u32,
            pad: pad.map(|p| p as u32),
            x_bstride: (3 * h * w) as u64,
            out_bstride: (3 * oh * ow) as u64,
        };
        let x: Vec<f32> = (0..2 * 3 * h * w)
            .map(|i| ((i * 37) % 17) as f32 - 8.0)
            .collect();
        let want = naive(&d, &x);
        for f in plane_fns() {
            let mut y = vec![f32::NAN; 2 * 3 * oh * ow];
            unsafe { run_with(f, &d, x.as_ptr(), y.as_mut_ptr()) };
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    a == b || (a - b).abs() < 1e-5,
                    "{d:?}: element {i}: {a} vs {b}"
                );
            }
        }
    }

    /// A window as large as the plane (global average pooling, odd size)
    /// against the definition.
    #[test]
    fn global_average_matches_the_definition() {
        let (h, w) = (7usize, 13usize);
        let d = PoolDesc {
            kind: POOL_AVG,
            count_include_pad: 0,
            batch: 2,
            channels: 3,
            h: h as u32,
            w: w as u32,
            oh: 1,
            ow: 1,
            kh: h as u32,
            kw: w as u32,
            sh: h as u32,
            sw: w as u32,
            dh: 1,
            dw: 1,
            pad: [0; 4],
            x_bstride: (3 * h * w) as u64,
            out_bstride: 3,
        };
        assert!(is_global_avg(&d));
        let x: Vec<f32> = (0..6 * h * w)
            .map(|i| ((i * 37) % 17) as f32 - 8.0)
            .collect();
        let mut y = vec![f32::NAN; 6];
        unsafe { run(&d, x.as_ptr(), y.as_mut_ptr()) };
        for (a, b) in y.iter().zip(naive(&d, &x)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
