//! Steps 1 and 3 with AVX-512: patch rows read and output rows written
//! as whole runs of a row, not tile by tile.
//!
//! A chunk's eight tiles are, in raster order, one or a few *segments*:
//! tiles side by side in one output row, `m` columns apart. Along a
//! segment, column `j` of every tile's patch row is a stride-`m` slice of
//! one input row, so two (or four) 16-float loads and one two-source
//! permute give the pair of columns `(j | j + 1)` of all its tiles — where
//! the AVX2 transforms load a row per tile and transpose 8×8 (eight loads
//! and 24 shuffles per patch row; with this, four loads and three
//! permutes for F(4×4)). A segment that does not start at lane 0 is read
//! from `m · lane` floats earlier, so its tiles land in their own lanes,
//! and blended in. Loads and stores are masked to the columns inside the
//! row, so padding reads as zero and nothing outside the row is touched.
//!
//! The output transform is the same in reverse for F(4×4): each output
//! row of a segment's tiles is 4·len consecutive floats, built by two
//! permutes from the tiles' four columns and written (with the residual
//! read the same way) as two masked stores, or pooled 2×2/2 first and
//! stored the same way. General epilogues, and the 2×2-tile variants'
//! outputs, stay on the AVX2 code.
//!
//! Contract: the same values as the AVX2 transforms (same arithmetic,
//! same order; only data movement differs); the Winograd tests run both.

use super::avx2;
use super::{plane_stride, Block, Finish, GemmDesc, Ptrs, Tiles, LANES};
use std::arch::x86_64::*;
use std::ops::Range;

/// Channel planes ahead that rows are prefetched: the AVX2 code's.
const PREFETCH_PLANES: usize = avx2::PREFETCH_PLANES as usize;

/// Lanes `lane .. lane + len` of a chunk: tiles `ox, ox + m, …` of output
/// row `oy` of item `item`.
#[derive(Clone, Copy, Default)]
struct Segment {
    lane: usize,
    len: usize,
    item: usize,
    oy: usize,
    ox: usize,
}

/// The segments of the chunk of tiles from `first` (fewer than
/// [`LANES`] tiles at the batch's end; lanes past it belong to none).
#[inline(always)]
fn segments(tiles: Tiles, first: usize) -> ([Segment; LANES], usize) {
    let mut segs = [Segment::default(); LANES];
    let mut n = 0;
    let lanes = LANES.min(tiles.total.saturating_sub(first));
    for (lane, (item, oy, ox)) in tiles.from(first).take(lanes).enumerate() {
        if n > 0 {
            let s = &mut segs[n - 1];
            if s.item == item && s.oy == oy {
                s.len += 1;
                continue;
            }
        }
        segs[n] = Segment {
            lane,
            len: 1,
            item,
            oy,
            ox,
        };
        n += 1;
    }
    (segs, n)
}

/// Lanes `l` of a 16-float vector whose column `start + l` lies in
/// `0 .. width`.
#[inline(always)]
fn inside(start: isize, width: isize) -> __mmask16 {
    let lo = (-start).clamp(0, 16);
    let hi = (width - start).clamp(0, 16);
    if hi <= lo {
        return 0;
    }
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
}

/// Lanes of a column pair `(j | j + 1)` that segment lanes `lane .. lane
/// + len` fill.
#[inline(always)]
fn pair_lanes(lane: usize, len: usize) -> __mmask16 {
    let eight = ((1u32 << len) - 1) << lane;
    (eight | eight << 8) as __mmask16
}

/// A permute's index vector: lane `l` ← `at(l)`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn lane_index(at: impl Fn(usize) -> usize) -> __m512i {
    let lanes: [i32; 16] = std::array::from_fn(|l| at(l) as i32);
    _mm512_loadu_si512(lanes.as_ptr() as *const _)
}

/// The permute that takes column pair `(j | j + 1)` of 8 tiles `m`
/// columns apart from 32 consecutive floats (two registers): lane `t` ←
/// float `m·t + j`, lane `8 + t` ← `m·t + j + 1`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pair_index(m: usize, j: usize) -> __m512i {
    lane_index(|l| m * (l % 8) + j + l / 8)
}

/// Where column pair `q` (columns `2q`, `2q + 1`) of tiles `M` apart is
/// read: the offset of its 32-float window from the lane-0 tile's first
/// column, and the column within it. A window holds pairs whose last
/// float, `7·M + j + 1`, is below 32.
const fn window<const M: usize>(q: usize) -> (usize, usize) {
    let j = 2 * q;
    if 7 * M + j + 1 < 32 {
        (0, j)
    } else {
        (M, j - M)
    }
}

/// The low and high eight floats of a register.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn halves(v: __m512) -> [__m256; 2] {
    [
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    ]
}

/// `lo` in the low eight floats, `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn join(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castps_pd(_mm512_castps256_ps512(lo)),
        _mm256_castps_pd(hi),
    ))
}

/// Chunks planned at once (a block of the widest kernel's 32 tiles).
const PLANNED: usize = 4;

/// What a chunk's loads need of a segment, whatever the channel: the
/// input offset of its item, its top patch row, the column lane 0 would
/// start at (`m · lane` before the segment's first), and the masks of
/// the column windows at offsets 0, 16, `m`, `m + 16` from there.
#[derive(Clone, Copy)]
struct Reads {
    seg: Segment,
    item: usize,
    y0: isize,
    col: isize,
    masks: [__mmask16; 4],
    /// The column pairs' lanes the segment fills (see [`pair_lanes`]).
    keep: __mmask16,
}

/// The [`Reads`] of each segment of each chunk `chunks` of a block.
#[inline(always)]
fn plan_reads<const M: usize>(
    d: &GemmDesc,
    blk: Block,
    chunks: Range<usize>,
) -> [([Reads; LANES], usize); PLANNED] {
    let w = d.w as isize;
    let none = Reads {
        seg: Segment::default(),
        item: 0,
        y0: 0,
        col: 0,
        masks: [0; 4],
        keep: 0,
    };
    let mut plan = [([none; LANES], 0); PLANNED];
    for (slot, chunk) in plan.iter_mut().zip(chunks) {
        let (segs, n) = segments(blk.tiles, blk.index * blk.nr + chunk * LANES);
        slot.1 = n;
        for (r, seg) in slot.0.iter_mut().zip(&segs[..n]) {
            let col = seg.ox as isize - d.pl as isize - (M * seg.lane) as isize;
            let m = M as isize;
            *r = Reads {
                seg: *seg,
                item: seg.item * d.x_bstride as usize,
                y0: seg.oy as isize - d.pt as isize,
                col,
                masks: [
                    inside(col, w),
                    inside(col + 16, w),
                    inside(col + m, w),
                    inside(col + m + 16, w),
                ],
                keep: pair_lanes(seg.lane, seg.len),
            };
        }
    }
    plan
}

/// Step 1 for input channels `channels`, tiles `M` outputs apart with
/// `A`-point patches (F(4×4, 3×3): 4, 6; F(2×2, 3×3): 2, 4; F(2×2,
/// 5×5): 2, 6): each patch row of a chunk's tiles gathered as column
/// pairs along its segments, transformed along the row by the AVX2
/// code's Bᵀ, then down the columns into `v`. The segments are planned
/// once per block, not per channel.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn transform_channel<const M: usize, const A: usize>(
    d: &GemmDesc,
    x: *const f32,
    blk: Block,
    channels: Range<usize>,
    v: *mut f32,
) {
    let (h, w) = (d.h as isize, d.w as isize);
    let plane = (d.h * d.w) as usize;
    let stride = plane_stride(d.in_c as usize, blk.nr);
    let pairs = A / 2;
    let index = [
        pair_index(M, window::<M>(0).1),
        pair_index(M, window::<M>(1).1),
        pair_index(M, window::<M>(2).1),
    ];
    let chunks = blk.nr / LANES;
    for group in (0..chunks).step_by(PLANNED) {
        let group = group..(group + PLANNED).min(chunks);
        let plan = plan_reads::<M>(d, blk, group.clone());
        for c in channels.clone() {
            let src = x.add(c * plane);
            for (chunk, (reads, n)) in group.clone().zip(&plan) {
                let reads = &reads[..*n];
                let whole = reads.len() == 1 && reads[0].seg.len == LANES;
                let mut u = [[_mm256_setzero_ps(); 6]; 6];
                for (i, u) in u.iter_mut().enumerate().take(A) {
                    let mut cols = [_mm512_setzero_ps(); 3];
                    for r in reads {
                        let y = r.y0 + i as isize;
                        if y < 0 || y >= h {
                            continue;
                        }
                        let row = src.wrapping_add(r.item).wrapping_offset(y * w + r.col);
                        let first_col = (M * r.seg.lane) as isize;
                        let span = (M * r.seg.len + A - M) as isize;
                        let ahead = row.wrapping_add(PREFETCH_PLANES * plane);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_offset(first_col) as *const i8);
                        if span > 16 {
                            _mm_prefetch::<_MM_HINT_T0>(
                                ahead.wrapping_offset(first_col + 16) as *const i8
                            );
                        }
                        _mm_prefetch::<_MM_HINT_T0>(
                            ahead.wrapping_offset(first_col + span - 1) as *const i8
                        );
                        let near = [
                            _mm512_maskz_loadu_ps(r.masks[0], row),
                            _mm512_maskz_loadu_ps(r.masks[1], row.wrapping_add(16)),
                        ];
                        let far = if window::<M>(pairs - 1).0 > 0 {
                            [
                                _mm512_maskz_loadu_ps(r.masks[2], row.wrapping_add(M)),
                                _mm512_maskz_loadu_ps(r.masks[3], row.wrapping_add(M + 16)),
                            ]
                        } else {
                            near
                        };
                        let keep = r.keep;
                        for (q, out) in cols.iter_mut().enumerate().take(pairs) {
                            let [lo, hi] = if window::<M>(q).0 > 0 { far } else { near };
                            let val = _mm512_permutex2var_ps(lo, index[q], hi);
                            *out = if whole {
                                val
                            } else {
                                _mm512_mask_mov_ps(*out, keep, val)
                            };
                        }
                    }
                    let [c0, c1] = halves(cols[0]);
                    let [c2, c3] = halves(cols[1]);
                    let [c4, c5] = halves(cols[2]);
                    *u = avx2::bt_of::<A>([c0, c1, c2, c3, c4, c5]);
                }
                avx2::store_columns::<A>(u, v.add(c * blk.nr + chunk * LANES), stride);
            }
        }
    }
}

/// Positions `q` of a 4·8-float output row run: the first (`HIGH` =
/// false) or second 16 of `out[4t + s] = y_s[t]`, taken from `(y_0 | y_1)`
/// and `(y_2 | y_3)`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn row_index<const HIGH: bool>() -> __m512i {
    let at = |q: usize| {
        let (t, s) = (q / 4 + if HIGH { 4 } else { 0 }, q % 4);
        if s < 2 {
            8 * s + t
        } else {
            16 + 8 * (s - 2) + t
        }
    };
    lane_index(at)
}

/// Step 3 of F(4×4, 3×3) for output channels `ocs`: `Aᵀ M A` and the
/// bias by the AVX2 code, then each output row of a segment's tiles
/// interleaved into 4·len consecutive floats and stored (residual added,
/// ReLU) through masks clipped at the output's right edge, or pooled
/// 2×2/2 first ([`store_pooled`]). General epilogues go to the AVX2
/// store.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn store_channel(
    d: &GemmDesc,
    p: &Ptrs,
    blk: Block,
    ocs: Range<usize>,
    (m, stride): (*const f32, usize),
) {
    let Some(first_oc) = ocs.clone().next() else {
        return;
    };
    let finish = Finish::new(d, p, first_oc);
    if finish.general {
        return avx2::store_channel(d, p, blk, ocs, (m, stride));
    }
    let mut chunks = blk.chunks().peekable();
    while chunks.peek().is_some() {
        let mut plan = [([Segment::default(); LANES], [[0; 3]; LANES], 0, 0); PLANNED];
        let mut planned = 0;
        for (slot, (chunk, first)) in plan.iter_mut().zip(chunks.by_ref().take(PLANNED)) {
            let (segs, n) = segments(blk.tiles, first);
            let mut masks = [[0; 3]; LANES];
            for (mask, seg) in masks.iter_mut().zip(&segs[..n]) {
                *mask = store_masks(d, seg);
            }
            *slot = (segs, masks, n, chunk);
            planned += 1;
        }
        store_planned(
            d,
            p,
            blk.nr,
            &plan[..planned],
            ocs.clone(),
            (m, stride),
            finish,
        );
    }
}

/// A chunk's segments, their [`store_masks`], how many, and the chunk.
type Planned = ([Segment; LANES], [[__mmask16; 3]; LANES], usize, usize);

/// The masks a segment's output rows are stored through, the same for
/// every row and channel (so found once per block, not per store): the
/// two 16-float runs of an output row (its lanes' floats, columns inside
/// the output), then the pooled row's (see [`store_pooled`]).
fn store_masks(d: &GemmDesc, seg: &Segment) -> [__mmask16; 3] {
    let (ow, pw) = (d.ow as isize, (d.ow / 2) as isize);
    let (lane, len) = (seg.lane as isize, seg.len as isize);
    // Float 0 of a run would land at column `col`.
    let col = seg.ox as isize - 4 * lane;
    let run = |off: isize| inside(off - 4 * lane, 4 * len) & inside(col + off, ow);
    let pooled = inside(-2 * lane, 2 * len) & inside(seg.ox as isize / 2 - 2 * lane, pw);
    [run(0), run(16), pooled]
}

/// [`store_channel`] for the planned chunks.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn store_planned(
    d: &GemmDesc,
    p: &Ptrs,
    nr: usize,
    plan: &[Planned],
    ocs: Range<usize>,
    (m, stride): (*const f32, usize),
    finish: Finish,
) {
    let (oh, ow) = (d.oh as usize, d.ow as usize);
    let plane = oh * ow;
    let (index_lo, index_hi) = (row_index::<false>(), row_index::<true>());
    let zero = _mm512_setzero_ps();
    for oc in ocs.clone() {
        let bias = Finish::new(d, p, oc).bias;
        let m = m.add((oc - ocs.start) * nr);
        for (segs, masks, n, chunk) in plan {
            let y = avx2::tile_outputs(m.add(chunk * LANES), stride, bias);
            if finish.pool {
                store_pooled(d, p, oc, (&segs[..*n], &masks[..*n]), &y, finish);
                continue;
            }
            // Every row's runs first, on constant indices: built inside the
            // row loop, `y` went through the stack and each join reloaded
            // two 32-byte stores as one 64-byte load, which cannot be
            // forwarded (30% of this function's samples).
            let row_runs = |r: usize| {
                let z01 = join(y[4 * r], y[4 * r + 1]);
                let z23 = join(y[4 * r + 2], y[4 * r + 3]);
                [
                    _mm512_permutex2var_ps(z01, index_lo, z23),
                    _mm512_permutex2var_ps(z01, index_hi, z23),
                ]
            };
            let all = [row_runs(0), row_runs(1), row_runs(2), row_runs(3)];
            for (r, runs) in all.iter().enumerate() {
                for (seg, masks) in segs[..*n].iter().zip(masks) {
                    let oy = seg.oy + r;
                    if oy >= oh {
                        continue;
                    }
                    // Float 0 of `runs` would land at column `col`.
                    let col = seg.ox as isize - 4 * seg.lane as isize;
                    let row = (oc * plane + oy * ow) as isize + col;
                    let dst = p
                        .out
                        .wrapping_add(seg.item * d.out_bstride as usize)
                        .wrapping_offset(row);
                    let res = p.res[0]
                        .wrapping_add(seg.item * d.res_bstride[0] as usize)
                        .wrapping_offset(row);
                    let from = 4 * seg.lane as isize;
                    for (half, &run) in runs.iter().enumerate() {
                        let off = 16 * half as isize;
                        let mask = masks[half];
                        if mask == 0 {
                            continue;
                        }
                        let at = from.max(off);
                        _mm_prefetch::<_MM_HINT_T0>(
                            dst.wrapping_add(PREFETCH_PLANES * plane)
                                .wrapping_offset(at) as *const i8,
                        );
                        let mut val = run;
                        if finish.add {
                            _mm_prefetch::<_MM_HINT_T0>(
                                res.wrapping_add(PREFETCH_PLANES * plane)
                                    .wrapping_offset(at)
                                    as *const i8,
                            );
                            let skip = res.wrapping_offset(off);
                            val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(mask, skip));
                        }
                        if finish.relu {
                            val = _mm512_max_ps(val, zero);
                        }
                        _mm512_mask_storeu_ps(dst.wrapping_offset(off), mask, val);
                    }
                }
            }
        }
    }
}

/// The 2×2/2 max pool of eight tiles' outputs `y` (see
/// [`avx2::tile_outputs`]), stored for each segment: a tile's 4×4 outputs
/// are 2×2 pooled ones, so pooled row `r` of a segment is `2·len`
/// consecutive floats, built by one permute from the tiles' two window
/// maxima and written with a mask clipped at the pooled plane's right
/// edge (an odd output's last row and column are dropped, as by the
/// pooling layer). Element by element, through a buffer, this store had
/// been 16% of the MNIST ConvNet's samples at batch 100.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn store_pooled(
    d: &GemmDesc,
    p: &Ptrs,
    oc: usize,
    (segs, masks): (&[Segment], &[[__mmask16; 3]]),
    y: &[__m256; 16],
    finish: Finish,
) {
    let (ph, pw) = ((d.oh / 2) as usize, (d.ow / 2) as usize);
    // Lane `2t + s` ← window `s` of tile `t`: float `8s + t` of the join.
    let pairs = lane_index(|l| 8 * (l % 2) + l / 2);
    let window = |a: usize| {
        let top = _mm256_max_ps(y[a], y[a + 1]);
        _mm256_max_ps(top, _mm256_max_ps(y[a + 4], y[a + 5]))
    };
    let zero = _mm512_setzero_ps();
    for r in 0..2 {
        let mut row = _mm512_permutexvar_ps(pairs, join(window(8 * r), window(8 * r + 2)));
        if finish.relu {
            row = _mm512_max_ps(row, zero);
        }
        for (seg, masks) in segs.iter().zip(masks) {
            let py = seg.oy / 2 + r;
            if py >= ph {
                continue;
            }
            // Float 0 of `row` would land at pooled column `col`.
            let col = (seg.ox / 2) as isize - 2 * seg.lane as isize;
            let mask = masks[2];
            let at = seg.item * d.out_bstride as usize + oc * ph * pw + py * pw;
            let dst = p.out.wrapping_add(at).wrapping_offset(col);
            _mm512_mask_storeu_ps(dst, mask, row);
        }
    }
}
