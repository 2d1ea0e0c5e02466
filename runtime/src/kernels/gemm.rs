//! Convolution and dense layers as blocked matrix multiplies.
//!
//! Every conv/dense is `C = A·B` per (batch item, group): A is the weight
//! matrix (out × K), packed once at compile time ([`super::micro::pack_weights`]); B is
//! K × columns, the im2col matrix, which is never written out: a 1×1
//! conv without padding copies blocks of its input channels into panels
//! ([`super::packed`]), any other conv with stride ≤ 4 reads a
//! once-per-item copy of its input in padded phase planes through a
//! row-offset table (`Shifted`), and only larger strides and dense layers
//! pack im2col panels per block. The epilogue (bias, residual adds,
//! activations) is applied as each output tile is stored, so every output
//! element is written once.
//!
//! Work is split into (item, group, column block, row block) tasks run on
//! the thread pool (`crate::threads`); each thread keeps its B buffer
//! between calls, so steady-state runs allocate nothing.

use super::desc::*;
use super::micro::{MicroKernel, MR};
use super::packed::{self, Columns, Source};
use super::planes::{pad_items, Shifted, MAX_PHASE_STRIDE};
use super::schedule::{with_scratch, Scratch, Segment, Tasks};
use super::store::{store, TileDest};
use crate::threads::current_threads;
use std::cell::RefCell;

/// Columns per task block and reduction block; B blocks stay in L2.
const NC: usize = 128;
const KC: usize = 256;

/// The longest reduction a conv with strides `conv_strides` (or a dense
/// layer, `None`) computes in one pass, never split into K blocks: every
/// output element is then stored once, after its residual is read, so the
/// output may overwrite the residual (see the compiler's memory plan).
/// Convs with strides up to [`MAX_PHASE_STRIDE`] run on packed blocks of
/// up to `KC_MAX` rows, the rest on this driver's `KC`; Winograd and the
/// matrix-vector path never split.
pub fn single_pass_k(conv_strides: Option<[usize; 2]>) -> usize {
    match conv_strides {
        Some([sh, sw]) if sh.max(sw) <= MAX_PHASE_STRIDE => packed::KC_MAX,
        _ => KC,
    }
}

/// One task: columns `col0 .. col0+NC` of rows in `panels` for (item, g).
#[allow(clippy::too_many_arguments)]
unsafe fn tile_task(
    kern: MicroKernel,
    d: &GemmDesc,
    p: &Ptrs,
    scratch: &mut Scratch,
    item: usize,
    g: usize,
    col0: usize,
    panels: std::ops::Range<usize>,
) {
    let nr = kern.nr;
    let (m, k, cols) = (d.m(), d.k(), d.cols());
    let ncols = NC.min(cols - col0);
    let col_panels = ncols.div_ceil(nr);
    let need = KC * col_panels * nr;
    super::grow(&mut scratch.b, need);
    fill_offsets(&mut scratch.packed, KC, |kk| kk * nr);
    let a_group = p.a.add(g * m.div_ceil(MR) * MR * k);
    let mut tile = [0.0f32; MR * 32];
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        pack_b(d, p.x, &mut scratch.b, item, g, k0, kc, col0, ncols, nr);
        let first = k0 == 0;
        let last = k0 + kc == k;
        for panel in panels.clone() {
            let a_panel = a_group.add(panel * MR * k + k0 * MR);
            for cp in 0..col_panels {
                let b = scratch.b.as_ptr().add(cp * kc * nr);
                (kern.run)(kc, a_panel, b, scratch.packed.as_ptr(), tile.as_mut_ptr());
                let rows = MR.min(m - panel * MR);
                let segment = Segment {
                    item,
                    tile_col: 0,
                    out_col: col0 + cp * nr,
                    len: nr.min(ncols - cp * nr),
                };
                let to = TileDest {
                    nr,
                    g,
                    row0: panel * MR,
                    rows,
                    segments: &[segment],
                    first,
                    last,
                };
                store(d, p, &mut tile, &to);
            }
        }
        k0 += kc;
    }
}

/// `offs[kk] = f(kk)` for `kk < n`.
fn fill_offsets(offs: &mut Vec<usize>, n: usize, f: impl Fn(usize) -> usize) {
    offs.clear();
    offs.extend((0..n).map(f));
}

/// Multiply-adds below which [`run_shifted`] pads and multiplies several
/// items in one go (tens of microseconds of work on two cores).
const MIN_GROUP_MACS: usize = 8 << 20;
/// Floats of padded input one such group may take.
const PADDED_BUDGET: usize = 256 << 10;

thread_local! {
    /// The zero-padded input of a stride-1 convolution (on the calling thread).
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Its im2col row offsets (see `Shifted::row_offsets`).
    static ROWS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// A convolution with stride ≤ [`MAX_PHASE_STRIDE`]: copy each item once
/// into padded phase planes (see `Shifted`), whose slices are B's rows;
/// the multiply packs blocks of them ([`packed::run`]).
///
/// Small planes (fewer columns than a block holds) are padded for every
/// item at once so blocks can span items; larger ones one item at a time,
/// which keeps the buffer to one item's planes (VGG's 224×224×64 input is
/// 13 MB padded).
pub(super) unsafe fn run_shifted(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let geo = Shifted::new(d);
    let batch = d.batch as usize;
    let item_len = geo.len(d);
    let together = if geo.cols < packed::MAX_BLOCK_COLS {
        batch
    } else {
        // Enough items that each group's two parallel loops have work
        // worth their start and end: deep_convnet's 1-channel 3×3 at
        // batch 100 (113k multiply-adds an item) had spent 29% of its
        // time waiting item by item, and went 0.75 → 0.66 ms in groups
        // (alternated medians of 8). Bounded so the copies stay in L2.
        let item_macs = d.out_c as usize * d.k() * (d.oh * d.ow) as usize;
        MIN_GROUP_MACS
            .div_ceil(item_macs.max(1))
            .min(PADDED_BUDGET / item_len.max(1))
            .clamp(1, batch)
    };
    ROWS.with(|rows| {
        let mut rows = rows.borrow_mut();
        geo.row_offsets(d, &mut rows);
        PADDED.with(|buf| {
            let mut buf = buf.borrow_mut();
            super::grow(&mut buf, together * item_len);
            for first in (0..batch).step_by(together) {
                let items = first..(first + together).min(batch);
                pad_items(d, geo, p.x, items.clone(), &mut buf);
                let src = Source {
                    base: buf.as_ptr(),
                    first_item: first,
                    item_stride: item_len,
                    group_stride: (d.in_c / d.groups) as usize * geo.channel(),
                    rows: rows.as_ptr(),
                    cols: geo.cols,
                    columns: Columns::Grid {
                        wq: geo.wq,
                        ow: d.ow as usize,
                    },
                    slack: true,
                    streamed: false,
                };
                packed::run(kern, d, p, &src, items);
            }
        });
    });
}

/// Pack `kc` rows of B starting at `k0`, columns `col0 .. col0+ncols`, into
/// panels of `nr` columns (k-major, zero-padded). Loops run panel by panel
/// and row by row so the inner loop is a contiguous copy wherever the
/// source allows (no per-element division).
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b(
    d: &GemmDesc,
    x: *const f32,
    out: &mut [f32],
    item: usize,
    g: usize,
    k0: usize,
    kc: usize,
    col0: usize,
    ncols: usize,
    nr: usize,
) {
    let panels = ncols.div_ceil(nr);
    for p in 0..panels {
        let j0 = col0 + p * nr;
        let width = nr.min(ncols - p * nr);
        let panel = &mut out[p * kc * nr..(p + 1) * kc * nr];
        match d.kind {
            KIND_DENSE => {
                panel.fill(0.0);
                for jj in 0..width {
                    let row = x.add((j0 + jj) * d.x_bstride as usize + k0);
                    for kk in 0..kc {
                        panel[kk * nr + jj] = *row.add(kk);
                    }
                }
            }
            _ => pack_im2col(d, x, panel, item, g, k0, kc, j0, width, nr),
        }
    }
}

/// One B panel of a general convolution, read through im2col indexing.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_im2col(
    d: &GemmDesc,
    x: *const f32,
    panel: &mut [f32],
    item: usize,
    g: usize,
    k0: usize,
    kc: usize,
    j0: usize,
    width: usize,
    nr: usize,
) {
    let (h, w) = (d.h as usize, d.w as usize);
    let (kh, kw) = (d.kh as usize, d.kw as usize);
    let (sh, sw, dh, dw) = (d.sh as usize, d.sw as usize, d.dh as usize, d.dw as usize);
    let (pt, pl) = (d.pt as usize, d.pl as usize);
    let ow = d.ow as usize;
    let in_per_group = (d.in_c / d.groups) as usize;
    let xi = x.add(item * d.x_bstride as usize);
    let (oh0, ow0) = (j0 / ow, j0 % ow);
    for kk in 0..kc {
        let kidx = k0 + kk;
        let ic = g * in_per_group + kidx / (kh * kw);
        let r = kidx % (kh * kw);
        let (ki, kj) = (r / kw, r % kw);
        let plane = xi.add(ic * h * w);
        let dst = &mut panel[kk * nr..(kk + 1) * nr];
        dst[width..].fill(0.0);
        let (mut oh, mut owp) = (oh0, ow0);
        let mut jj = 0;
        while jj < width {
            // The run of columns left in this output row.
            let run = (ow - owp).min(width - jj);
            let ih = (oh * sh + ki * dh).wrapping_sub(pt);
            if ih >= h {
                dst[jj..jj + run].fill(0.0);
            } else {
                let row = plane.add(ih * w);
                // iw(t) = (owp + t)·sw + kj·dw − pl; the t with 0 ≤ iw < w
                // form one range, copied without per-element tests.
                let first = (owp * sw + kj * dw) as isize - pl as isize;
                let lo = if first >= 0 {
                    0
                } else {
                    ((-first) as usize).div_ceil(sw)
                }
                .min(run);
                let hi = if (w as isize) > first {
                    ((w as isize - first) as usize).div_ceil(sw).min(run)
                } else {
                    0
                }
                .max(lo);
                let out = &mut dst[jj..jj + run];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                let start = (first + (lo * sw) as isize) as usize;
                if sw == 1 {
                    out[lo..hi]
                        .copy_from_slice(std::slice::from_raw_parts(row.add(start), hi - lo));
                } else {
                    for (t, o) in out[lo..hi].iter_mut().enumerate() {
                        *o = *row.add(start + t * sw);
                    }
                }
            }
            jj += run;
            owp += run;
            if owp == ow {
                owp = 0;
                oh += 1;
            }
        }
    }
}

/// The im2col GEMM: (item, group, column block, row split) tasks, each
/// packing its B block and multiplying every row panel by it.
///
/// # Safety
/// As [`super::dispatch::run`].
pub(super) unsafe fn run(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let p = *p;
    let (m, cols) = (d.m(), d.cols());
    let col_blocks = cols.div_ceil(NC);
    let row_panels = m.div_ceil(MR);
    // Enough tasks to keep every thread busy even when there are few
    // columns (late layers at batch 1): split rows too.
    // Every row split re-packs B, so split only as far as the threads
    // (criterion, 2 threads: 3×3 256→256 at 14×14 went from 5.5 to 4.0 ms).
    let split = Tasks::new(
        d.items(),
        d.groups as usize,
        col_blocks,
        row_panels,
        current_threads(),
    );
    split.run(|t| {
        // SAFETY: forwarded from the caller's contract.
        with_scratch(|s| unsafe { tile_task(kern, d, &p, s, t.item, t.g, t.cb * NC, t.panels) });
    });
}
