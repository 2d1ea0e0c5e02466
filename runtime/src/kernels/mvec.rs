//! Convolutions vectorised over output channels.
//!
//! The GEMM path ([`super::packed`]) puts output *positions* in the vector
//! lanes: a tile is 6 output channels × 32 columns, B is copied into
//! panels, and a layer whose columns are few or ragged (7×7 at batch 1 is
//! 32 + 17 columns) wastes lanes. Here a tile is [`MV`] = 32 output
//! channels (two zmm) × `J` output columns: per k, two vector loads of the
//! weights (packed at compile time as `[panel][k][32]`, see
//! [`pack_weights`]) and `J` broadcasts of input values taken where they
//! lie — no B panel is ever written, and the only ragged edge is the last
//! few columns of a plane.
//!
//! B's rows are the input planes themselves (a 1×1 convolution, read at
//! its stride — see [`Direct`]) or zero-padded phase planes
//! ([`super::planes::Shifted`], the same copy the GEMM path makes), on which every
//! im2col row is a contiguous slice at a fixed offset, so a tile's `J`
//! columns are `J` consecutive floats of each row. Tiles stay within an
//! output row there, or hold two whole rows of 5–7 outputs, so the phase
//! grid's columns between output rows are never computed (the GEMM path
//! computes and drops them).
//!
//! The accumulators hold an output *column* per register pair, so the
//! store transposes: each of the tile's 32 channels is written as a run of
//! up to `J` outputs, with the bias, residual add and ReLU applied on the
//! way ([`super::store::Epilogue`]'s four epilogues; others are not chosen). That
//! store is a few percent of a tile with K ≥ 256, which is what
//! [`choose`] asks for (a tenth with the 7×7/2 stems' K = 147).
//!
//! What it gained is in docs/performance.md ("mvec"). Without the 4 KiB
//! weight prefetch the 1×1 convs lost to the GEMM path inside a model,
//! where their weights come from DRAM.

use super::desc::{self, GemmDesc, Ptrs};
use super::planes::{self, Shifted};
use super::store::Epilogue;
use super::Shared;
use crate::threads::{current_threads, parallel_for};
use std::cell::RefCell;

/// Output channels per panel and tile.
pub const MV: usize = 32;

/// The widest tile any kernel set uses (AVX-512's).
const J_MAX: usize = 14;

/// Floats of packed weights for `m × k`.
pub fn packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(MV) * MV * k
}

/// Weights `at(row, kk)` packed as panels of [`MV`] rows, k-major within a
/// panel (`[panel][kk][row % MV]`), the last panel's missing rows zero.
pub fn pack_weights(m: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut out = vec![0.0; packed_len(m, k)];
    for (panel, chunk) in out.chunks_mut(MV * k).enumerate() {
        for (kk, row) in chunk.chunks_mut(MV).enumerate() {
            for (r, v) in row.iter_mut().enumerate() {
                let oc = panel * MV + r;
                if oc < m {
                    *v = at(oc, kk);
                }
            }
        }
    }
    out
}

/// Whether `d` runs here rather than on the GEMM path: an ungrouped,
/// unpooled convolution with stride ≤ 4, one of the four common
/// epilogues, at least [`MV`] output channels and a reduction of at least
/// 256 (with shorter ones the transposing store and the per-k broadcasts
/// cost more than the GEMM path's packing: 64→256 and 128→512 1×1 convs
/// were 4–12% slower here; the 7×7/2 stems, K = 147, level), being a 1×1
/// convolution read in place or a strided window (the GEMM path packs B
/// from phase planes for those, a second copy). Measured against the GEMM
/// path at batch 1 and 8, two threads (medians of pairs of alternated
/// runs): ResNet's
/// 256→64 1×1 at 56×56 0.72/0.74, 512→128 at 28×28 0.84/0.78, 1024→256
/// at 14×14 0.81/0.89, 256→1024 at 14×14 0.92/0.89.
///
/// Only for a target with AVX-512 (the portable kernels are plain loops):
/// elsewhere the GEMM path is the faster one. An object file compiled for
/// such a target still runs on any x86-64, on those loops.
pub fn choose(d: &GemmDesc, target: crate::cpu::Features) -> bool {
    if !target.avx512 {
        return false;
    }
    let k = d.k();
    let plain = d.kind == desc::KIND_IM2COL || d.kind == desc::KIND_POINTWISE;
    let fits = plain
        && d.groups == 1
        && d.out_c as usize >= MV
        && Shifted::fits(d)
        && !d.pooled()
        && Epilogue::of(d).is_some()
        && k >= 256;
    let pointwise = d.kh == 1 && d.kw == 1;
    let strided = d.sh > 1 || d.sw > 1;
    // Strided 1×1 convolutions come here only when they can be read in
    // place (see [`Direct`]) in tiles of a whole kernel width: ResNet-50's
    // 1×1/2 downsamples, against the GEMM path (whose packing was 17% of
    // the 256→512 one's time), one thread at batch 1, 10 alternated pairs:
    // 256→512 at 56×56 0.946, 512→1024 at 28×28 0.916 (two threads:
    // 0.99 and 0.90; batch 8: 0.96 and 0.97); 1024→2048 at 14×14, whose
    // 7-wide rows made half tiles, 1.12 — and with two rows a tile (see
    // [`Direct::two_rows`]) 0.974 at batch 4 on one thread, 0.979 at batch
    // 8 on two. Through phase planes they had been level with the GEMM
    // path. Strided windows gain
    // from skipping B's packing even with short reductions (AlexNet's
    // 11×11/4 stem, K = 363: 0.94–0.96 of the GEMM path's time).
    let ow = d.ow as usize;
    fits && if pointwise {
        !strided || (Direct::of(d).is_some() && (ow >= J_MAX || pairs_rows(ow, J_MAX)))
    } else {
        strided
    }
}

/// Where output `(y, x)` reads B's rows: at `y·row_step + x·col_step`.
/// A 1×1 convolution without padding is read in place this way (B's row
/// `kk` is input plane `kk`): with `col_step` 1 and rows read whole
/// (stride 1) the columns are one grid; otherwise tiles stay within an
/// output row, and the kernel broadcasts every `col_step`-th float — a
/// strided 1×1 is read where it lies, with no phase planes and no packed
/// panel. A strided window reads its phase planes at `row_step` = the
/// planes' width, in row tiles too.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Direct {
    row_step: usize,
    col_step: usize,
    /// Whether a tile holds two whole output rows (rows of 5–7 outputs on
    /// a kernel 14 wide): as single rows they would fill half of every
    /// tile, as a grid compute the columns between rows (ResNet's 3×3/2
    /// 512→512 at 14×14 → 7×7: an eighth of its multiplies).
    two_rows: bool,
}

impl Direct {
    /// The widest column step the kernels take.
    const MAX_COL_STEP: usize = 2;

    fn of(d: &GemmDesc) -> Option<Direct> {
        let pointwise = d.kh == 1 && d.kw == 1 && d.pt == 0 && d.pl == 0;
        (pointwise && d.sw as usize <= Self::MAX_COL_STEP).then_some(Direct {
            row_step: (d.sh * d.w) as usize,
            col_step: d.sw as usize,
            two_rows: false,
        })
    }

    /// Whether the output's rows follow each other in the input as one
    /// grid (a stride-1 1×1 convolution).
    fn is_grid(self, d: &GemmDesc) -> bool {
        self.col_step == 1 && self.row_step == d.ow as usize
    }
}

/// `tile[j][0..MV] = Σ_k a[k][0..MV] · b[offs[k] + S·j]` for `j < W`,
/// asking for the cache line at `ahead + 16·k` on the way (see
/// [`Ahead`]) and for B's row `k` `lead` floats on (the next tiles'). A
/// two-row kernel (columns `H ..` on the second of two output rows) reads
/// those at `b[offs[k] + second + S·(j − H)]`; the others ignore `second`.
type KernelFn =
    unsafe fn(usize, *const f32, *const f32, *const usize, *mut f32, *const f32, usize, usize);

/// One instruction set's kernels: `by_width[s − 1][w − 1]` computes `w`
/// columns `s` floats apart (see [`Direct`]); `two_rows[s − 1][h −
/// TWO_ROWS_MIN]` two output rows of `h` columns each (see
/// [`Direct::two_rows`]), if the set has them; `vector_store` whether
/// tiles are stored by [`avx512_store`].
#[derive(Clone, Copy)]
struct Kernels {
    j: usize,
    by_width: [&'static [KernelFn]; Direct::MAX_COL_STEP],
    two_rows: Option<[&'static [KernelFn]; Direct::MAX_COL_STEP]>,
    vector_store: bool,
}

/// The narrowest output rows read two to a tile.
const TWO_ROWS_MIN: usize = 5;

/// Whether rows of `ow` outputs are read two to a tile on kernels `j`
/// wide that have two-row variants.
fn pairs_rows(ow: usize, j: usize) -> bool {
    (TWO_ROWS_MIN..=j / 2).contains(&ow)
}

const PORTABLE: Kernels = Kernels {
    j: portable::J,
    by_width: [&portable::BY_WIDTH[0], &portable::BY_WIDTH[1]],
    two_rows: None,
    vector_store: false,
};

/// The kernel set this machine runs, chosen once.
fn kernels() -> Kernels {
    static KERNELS: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::host().avx512 {
            return Kernels {
                j: avx512::J,
                by_width: [&avx512::BY_WIDTH[0], &avx512::BY_WIDTH[1]],
                two_rows: Some([&avx512::TWO_ROWS[0], &avx512::TWO_ROWS[1]]),
                vector_store: true,
            };
        }
        PORTABLE
    })
}

thread_local! {
    /// The phase planes of the items padded together, and the im2col row
    /// offsets (on the calling thread).
    static PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROWS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Where B's rows lie: item `n`'s row `k` at `base + n·item_stride +
/// offs[k]`, its output column `(y, x)` at grid column `y·wq + x` of
/// `cols` — or, with `rows`, at `y·row_step + x·col_step` of the plane,
/// tiles never crossing an output row. (`base` may point before the
/// buffer when its first item is not item 0; only addresses of the items
/// in hand are read.)
#[derive(Clone, Copy)]
struct Source {
    base: *const f32,
    item_stride: usize,
    wq: usize,
    cols: usize,
    rows: Option<Direct>,
}

// SAFETY: `base` addresses input the caller keeps alive and unchanged for
// the call; tasks only read through it.
unsafe impl Sync for Source {}

/// One tile of [`Source`]: item, first grid column (which the store maps
/// back through `wq`), width, and where its B rows start.
struct Tile {
    item: usize,
    col0: usize,
    width: usize,
    b: *const f32,
}

impl Source {
    /// Tiles per item, `j` columns wide.
    fn tiles_per_item(&self, j: usize) -> usize {
        match self.rows {
            None => self.cols.div_ceil(j),
            Some(r) if r.two_rows => (self.cols / self.wq).div_ceil(2),
            Some(_) => (self.cols / self.wq) * self.wq.div_ceil(j),
        }
    }

    /// Tile `ti` of the items' sequence starting at `first`.
    fn tile(&self, j: usize, first: usize, ti: usize) -> Tile {
        let per_item = self.tiles_per_item(j);
        let (item, t) = (first + ti / per_item, ti % per_item);
        let at = self.base.wrapping_add(item * self.item_stride);
        match self.rows {
            None => {
                let col0 = t * j;
                Tile {
                    item,
                    col0,
                    width: j.min(self.cols - col0),
                    b: at.wrapping_add(col0),
                }
            }
            Some(r) if r.two_rows => {
                let y = 2 * t;
                let rows = (self.cols / self.wq - y).min(2);
                Tile {
                    item,
                    col0: y * self.wq,
                    width: rows * self.wq,
                    b: at.wrapping_add(y * r.row_step),
                }
            }
            Some(r) => {
                let per_row = self.wq.div_ceil(j);
                let (y, x0) = (t / per_row, (t % per_row) * j);
                Tile {
                    item,
                    col0: y * self.wq + x0,
                    width: j.min(self.wq - x0),
                    b: at.wrapping_add(y * r.row_step + x0 * r.col_step),
                }
            }
        }
    }

    /// Floats ahead of a tile's B at which the kernel prefetches a line
    /// per k: three tiles on along a grid; in row tiles, the next tile of
    /// the row, or three rows on when a row is one tile (one row on had
    /// been level with the grid).
    fn lead(&self, j: usize) -> usize {
        match self.rows {
            None => 3 * j,
            Some(r) if r.two_rows => 6 * r.row_step,
            Some(r) if self.wq <= j => 3 * r.row_step,
            Some(r) => j * r.col_step,
        }
    }
}

/// Run a convolution [`choose`] picked, weights packed by [`pack_weights`].
///
/// # Safety
/// As [`super::dispatch::run`]: `p` addresses buffers of the sizes `d` implies.
pub(super) unsafe fn run(d: &GemmDesc, p: &Ptrs) {
    run_with(kernels(), d, p)
}

/// [`run`] on a given kernel set (the tests run each).
unsafe fn run_with(kern: Kernels, d: &GemmDesc, p: &Ptrs) {
    let (h, w) = (d.h as usize, d.w as usize);
    let batch = d.batch as usize;
    ROWS.with(|rows| {
        let mut rows = rows.borrow_mut();
        if let Some(direct) = Direct::of(d) {
            rows.clear();
            rows.extend((0..d.k()).map(|kk| kk * h * w));
            let grid = direct.is_grid(d);
            let two_rows = kern.two_rows.is_some() && pairs_rows(d.ow as usize, kern.j);
            let src = Source {
                base: p.x,
                item_stride: d.x_bstride as usize,
                wq: d.ow as usize,
                cols: (d.oh * d.ow) as usize,
                rows: (!grid).then_some(Direct { two_rows, ..direct }),
            };
            return multiply(kern, d, p, 0..batch, src, &rows);
        }
        let geo = Shifted::new(d);
        geo.row_offsets(d, &mut rows);
        let item_len = geo.len(d);
        // Items padded (and then multiplied) together, so each weight
        // panel is read once for all of them rather than once per item:
        // at batch 8, 7×7 layers had read their weights eight times.
        let together = (PLANES_BUDGET / item_len).clamp(1, batch);
        PLANES.with(|planes| {
            let mut planes = planes.borrow_mut();
            super::grow(&mut planes, together * item_len);
            for first in (0..batch).step_by(together) {
                let items = first..(first + together).min(batch);
                planes::pad_items(d, geo, p.x, items.clone(), &mut planes);
                let base = planes.as_ptr().wrapping_sub(first * item_len);
                let src = phase_source(d, geo, base, item_len, &kern);
                multiply(kern, d, p, items, src, &rows);
            }
        });
    });
}

/// B read from phase planes at `base` (item `n`'s at `n·item_len` on) —
/// in tiles within output rows, or of two whole output rows (on kernels
/// that have them, see [`Direct::two_rows`]), when that makes no more
/// tiles than tiling the whole grid, so the grid's columns between output
/// rows (a phase plane is wider than the output) are never computed: a
/// fifteenth of the multiplies of a 3×3/2 layer with 14×14 outputs (14
/// tiles of 14 rather than 15), an eighth at 7×7 (4 tiles of two rows,
/// as many as on the grid; single rows would make 7 tiles of 7, each
/// streaming the weight panel again).
fn phase_source(
    d: &GemmDesc,
    geo: Shifted,
    base: *const f32,
    item_len: usize,
    kern: &Kernels,
) -> Source {
    let (oh, ow) = (d.oh as usize, d.ow as usize);
    let grid = Source {
        base,
        item_stride: item_len,
        wq: geo.wq,
        cols: geo.cols(),
        rows: None,
    };
    let in_rows = |two_rows| Source {
        wq: ow,
        cols: oh * ow,
        rows: Some(Direct {
            row_step: geo.wq,
            col_step: 1,
            two_rows,
        }),
        ..grid
    };
    let pairs = kern.two_rows.is_some() && pairs_rows(ow, kern.j);
    let rows = in_rows(pairs);
    if geo.wq > ow && rows.tiles_per_item(kern.j) <= grid.tiles_per_item(kern.j) {
        rows
    } else {
        grid
    }
}

/// Floats of phase planes padded at once (4 MiB).
const PLANES_BUDGET: usize = 1 << 20;

/// Weight bytes of the panels one task cycles through per tile, so the
/// tile's input rows are read once for all of them: 64 KiB makes pairs of
/// K = 256 panels (ResNet's 256→64 1×1 at 56×56, two panels in all).
/// Larger groups made the K = 1024 layers slower: their weights then no
/// longer stayed in L2 from one tile to the next.
const GROUP_BYTES: usize = 64 << 10;

/// The tiles of `items`: every item's grid cut into tiles of `kern.j`
/// columns, the items' tiles in one sequence. A task takes a group of
/// weight panels (as many as fit [`GROUP_BYTES`]) and a run of that
/// sequence, and computes each tile for every panel of its group in turn:
/// the tile's input rows are read once per group, and a panel is read
/// once per task whatever the batch.
unsafe fn multiply(
    kern: Kernels,
    d: &GemmDesc,
    p: &Ptrs,
    items: std::ops::Range<usize>,
    src: Source,
    rows: &[usize],
) {
    let (m, k) = (d.m(), d.k());
    let panels = m.div_ceil(MV);
    let per_group = (GROUP_BYTES / (4 * MV * k)).clamp(1, panels);
    let groups = panels.div_ceil(per_group);
    let tiles = items.len() * src.tiles_per_item(kern.j);
    let col_step = src.rows.map_or(1, |r| r.col_step);
    let by_width = kern.by_width[col_step - 1];
    // A whole pair of rows on the two-row kernel (the last, single row on
    // the plain one).
    let (two_rows, second) = match (src.rows, kern.two_rows) {
        (Some(r), Some(two)) if r.two_rows => (Some(two[col_step - 1]), r.row_step),
        _ => (None, 0),
    };
    let lead = src.lead(kern.j);
    // Enough tasks that two threads end together: at least four per
    // thread. With at least an item per thread, at least a tile run per
    // thread too, so each thread's home range covers its own items — the
    // ones it padded (`planes::pad_items` splits by item) or wrote in the
    // layer before — rather than every thread reading all of B for its
    // panels and the next copy invalidating lines in the other core:
    // batch 8, 2 threads, alternated in one process, the 3×3/2 256→256
    // at 28×28 0.78–0.87 of the time, ResNet's 1024↔256 1×1 blocks at
    // 14×14 0.90; ResNet-50 0.988, GoogLeNet 0.992, ResNet-18 1.005.
    let threads = current_threads();
    let chunks = (4 * threads).div_ceil(groups);
    let chunks = if items.len() >= threads {
        chunks.max(threads)
    } else {
        chunks
    }
    .clamp(1, tiles);
    let a = Shared::new(p.a);
    let tasks = groups * chunks;
    // Tile-run major, so that each thread's home range of tasks (see
    // `crate::threads`) is the same part of the image in every layer.
    parallel_for(tasks, |t| {
        let (chunk, group) = (t / groups, t % groups);
        let panels_of = |g: usize| g * per_group..((g + 1) * per_group).min(panels);
        let (group, next) = (panels_of(group), panels_of((t + 1) % groups));
        let mut ahead = Ahead::new(a.get(), k, next, t + 1 < tasks && groups > 1);
        let mut tile = [0.0f32; J_MAX * MV];
        for ti in chunk * tiles / chunks..(chunk + 1) * tiles / chunks {
            let Tile {
                item,
                col0,
                width,
                b,
            } = src.tile(kern.j, items.start, ti);
            for panel in group.clone() {
                let a_panel = a.get().wrapping_add(panel * MV * k);
                // SAFETY: row `kk`'s `width` columns of the tile lie in
                // item `item`'s planes (a grid holds `cols` columns on
                // every row; a row tile's last column is an output's
                // input); the tile holds `J_MAX · MV` floats.
                let run = match two_rows {
                    Some(two) if width == 2 * src.wq => two[src.wq - TWO_ROWS_MIN],
                    _ => by_width[width - 1],
                };
                unsafe {
                    run(
                        k,
                        a_panel,
                        b,
                        rows.as_ptr(),
                        tile.as_mut_ptr(),
                        ahead.next(a_panel),
                        lead,
                        second,
                    );
                    store(kern, d, p, item, panel * MV, &tile, col0, width, src.wq);
                }
            }
        }
    });
}

/// The weights of the task a thread will most likely take next (its home
/// range runs `t, t + 1, …`), fetched into L2 one line per k while this
/// task multiplies. At batch 1 each weight panel is used by a handful of
/// tiles: the first reads it from DRAM at the kernel's pace (two lines
/// per 14 cycles, more than one core's share of the memory bandwidth)
/// and the rest from L2, so without this the first tile of every task
/// waited on DRAM while the others never touched it.
struct Ahead {
    at: *const f32,
    end: *const f32,
    k: usize,
}

impl Ahead {
    fn new(a: *const f32, k: usize, panels: std::ops::Range<usize>, wanted: bool) -> Self {
        let panels = if wanted { panels } else { 0..0 };
        Ahead {
            at: a.wrapping_add(panels.start * MV * k),
            end: a.wrapping_add(panels.end * MV * k),
            k,
        }
    }

    /// Where the next kernel call prefetches its `k` lines: the next
    /// stretch of the following task's weights, or (once all of them are
    /// asked for) the panel in hand, whose lines are already cached.
    fn next(&mut self, own: *const f32) -> *const f32 {
        if self.at >= self.end {
            return own;
        }
        let at = self.at;
        self.at = self.at.wrapping_add(16 * self.k);
        at
    }
}

/// A run of a tile's columns `j0 .. j0 + len` that lands contiguously at
/// output index `at` (the grid's columns between output rows break runs).
#[derive(Clone, Copy, Default)]
struct Run {
    j0: usize,
    len: usize,
    at: usize,
}

/// Where one tile's outputs go: its first channel `oc0`, the channels it
/// has (≤ [`MV`]), and its runs.
struct Dest {
    out: *mut f32,
    res: *const f32,
    oc0: usize,
    channels: usize,
    plane: usize,
    runs: [Run; J_MAX],
    n_runs: usize,
}

/// Write a tile's channels `oc0 ..` (those below `d.m()`) at its grid
/// columns `col0 .. col0 + width` that are outputs, through the epilogue.
#[allow(clippy::too_many_arguments)]
unsafe fn store(
    kern: Kernels,
    d: &GemmDesc,
    p: &Ptrs,
    item: usize,
    oc0: usize,
    tile: &[f32],
    col0: usize,
    width: usize,
    wq: usize,
) {
    let Some(ep) = Epilogue::of(d) else { return };
    let ow = d.ow as usize;
    let mut to = Dest {
        out: p.out.add(item * d.out_bstride as usize),
        res: p.res[0].wrapping_add(item * d.res_bstride[0] as usize),
        oc0,
        channels: MV.min(d.m() - oc0),
        plane: (d.oh * d.ow) as usize,
        runs: [Run::default(); J_MAX],
        n_runs: 0,
    };
    let mut jj = 0;
    while jj < width {
        let (y, x) = ((col0 + jj) / wq, (col0 + jj) % wq);
        if x >= ow {
            jj += wq - x;
            continue;
        }
        let len = (ow - x).min(width - jj);
        to.runs[to.n_runs] = Run {
            j0: jj,
            len,
            at: y * ow + x,
        };
        to.n_runs += 1;
        jj += len;
    }
    let bias = (d.has_bias != 0).then_some(p.bias);
    #[cfg(target_arch = "x86_64")]
    if kern.vector_store {
        return avx512_store::store(ep, bias, tile, &to);
    }
    for r in 0..to.channels {
        let oc = oc0 + r;
        let bias = bias.map_or(0.0, |b| *b.add(oc));
        let (out_row, res_row) = (
            to.out.add(oc * to.plane),
            to.res.wrapping_add(oc * to.plane),
        );
        for run in &to.runs[..to.n_runs] {
            for i in 0..run.len {
                let mut v = tile[(run.j0 + i) * MV + r] + bias;
                if ep.add {
                    v += *res_row.add(run.at + i);
                }
                if ep.relu {
                    v = v.max(0.0);
                }
                *out_row.add(run.at + i) = v;
            }
        }
    }
}

/// Plain loops over the tile, four columns wide: the fallback without
/// AVX-512, and the reference the vector kernels are tested against.
mod portable {
    use super::{KernelFn, MV};

    pub(super) const J: usize = 4;

    pub(super) const BY_WIDTH: [[KernelFn; J]; 2] = [
        [
            kernel::<1, 1>,
            kernel::<2, 1>,
            kernel::<3, 1>,
            kernel::<4, 1>,
        ],
        [
            kernel::<1, 2>,
            kernel::<2, 2>,
            kernel::<3, 2>,
            kernel::<4, 2>,
        ],
    ];

    /// See [`super::KernelFn`].
    ///
    /// # Safety
    /// `a` holds `kc · MV` floats, `b + offs[k]` the `W` floats `S` apart
    /// for every `k < kc`, `tile` `W · MV`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const W: usize, const S: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
        _ahead: *const f32,
        _lead: usize,
        _second: usize,
    ) {
        let mut acc = [[0.0f32; MV]; W];
        for k in 0..kc {
            let ak = std::slice::from_raw_parts(a.add(k * MV), MV);
            let bk = b.add(*offs.add(k));
            for (j, cj) in acc.iter_mut().enumerate() {
                let x = *bk.add(S * j);
                for (c, &w) in cj.iter_mut().zip(ak) {
                    *c += w * x;
                }
            }
        }
        for (j, cj) in acc.iter().enumerate() {
            std::ptr::copy_nonoverlapping(cj.as_ptr(), tile.add(j * MV), MV);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KernelFn, MV};
    use std::arch::x86_64::*;

    /// Fourteen columns: 28 accumulators, two weight vectors and a
    /// broadcast — 31 of the 32 zmm registers. Per k: two loads and 14
    /// broadcasts feed 28 FMAs.
    pub(super) const J: usize = 14;

    /// Floats ahead of the current weight row to prefetch.
    const A_PREFETCH: usize = 1024;

    pub(super) const BY_WIDTH: [[KernelFn; J]; 2] = [by_width::<1>(), by_width::<2>()];

    /// Two rows of 5, 6 and 7 columns at column step `S`.
    pub(super) const TWO_ROWS: [[KernelFn; 3]; 2] = [two_rows::<1>(), two_rows::<2>()];

    const fn two_rows<const S: usize>() -> [KernelFn; 3] {
        [kernel::<10, S, 5>, kernel::<12, S, 6>, kernel::<14, S, 7>]
    }

    /// Every width at column step `S`.
    const fn by_width<const S: usize>() -> [KernelFn; J] {
        [
            narrow::<1, S>,
            narrow::<2, S>,
            kernel::<3, S, 3>,
            kernel::<4, S, 4>,
            kernel::<5, S, 5>,
            kernel::<6, S, 6>,
            kernel::<7, S, 7>,
            kernel::<8, S, 8>,
            kernel::<9, S, 9>,
            kernel::<10, S, 10>,
            kernel::<11, S, 11>,
            kernel::<12, S, 12>,
            kernel::<13, S, 13>,
            kernel::<14, S, 14>,
        ]
    }

    /// One or two columns (a squeeze-excite gate's 1×1 layers run on 1×1
    /// maps): with only 2·W accumulators each would be one FMA chain K
    /// long, waiting on the FMA latency at every k and rounding like a
    /// K-term sequential sum. Four interleaved accumulator sets, added at
    /// the end, make the chains K/4 long.
    ///
    /// # Safety
    /// As [`kernel`].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn narrow<const W: usize, const S: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
        ahead: *const f32,
        lead: usize,
        _second: usize,
    ) {
        let mut c = [[[_mm512_setzero_ps(); 2]; W]; 4];
        // A macro, not a closure: the FMAs must be compiled with this
        // function's AVX-512 features.
        macro_rules! step {
            ($cs:expr, $k:expr) => {{
                let k: usize = $k;
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(16 * k) as *const i8);
                let ak = a.add(k * MV);
                _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(A_PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(A_PREFETCH + 16) as *const i8);
                let (w0, w1) = (_mm512_loadu_ps(ak), _mm512_loadu_ps(ak.add(16)));
                let bk = b.add(*offs.add(k));
                _mm_prefetch::<_MM_HINT_T1>(bk.wrapping_add(lead) as *const i8);
                for (j, cj) in $cs.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*bk.add(S * j));
                    cj[0] = _mm512_fmadd_ps(x, w0, cj[0]);
                    cj[1] = _mm512_fmadd_ps(x, w1, cj[1]);
                }
            }};
        }
        let mut k = 0;
        while k + 4 <= kc {
            for (set, cs) in c.iter_mut().enumerate() {
                step!(cs, k + set);
            }
            k += 4;
        }
        for (set, k) in (k..kc).enumerate() {
            step!(c[set], k);
        }
        let [c0, c1, c2, c3] = c;
        for (j, (((a0, a1), a2), a3)) in c0.iter().zip(&c1).zip(&c2).zip(&c3).enumerate() {
            for h in 0..2 {
                let lo = _mm512_add_ps(a0[h], a1[h]);
                let hi = _mm512_add_ps(a2[h], a3[h]);
                _mm512_storeu_ps(tile.add(j * MV + 16 * h), _mm512_add_ps(lo, hi));
            }
        }
    }

    /// See [`super::KernelFn`].
    ///
    /// # Safety
    /// AVX-512F must be available; as the portable kernel otherwise.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const W: usize, const S: usize, const H: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
        ahead: *const f32,
        lead: usize,
        second: usize,
    ) {
        let mut c = [[_mm512_setzero_ps(); 2]; W];
        for k in 0..kc {
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(16 * k) as *const i8);
            let ak = a.add(k * MV);
            // The weights stream from DRAM at batch 1 (a panel is read once
            // per tile, and only the first read misses): ask for both of
            // the row's lines 4 KiB ahead, as the GEMM kernels do.
            _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(A_PREFETCH) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(A_PREFETCH + 16) as *const i8);
            let w0 = _mm512_loadu_ps(ak);
            let w1 = _mm512_loadu_ps(ak.add(16));
            let bk = b.add(*offs.add(k));
            // The input two tiles on, into L2 only: a prefetch into L1
            // holds one of its few fill buffers for the whole trip from
            // L3, and with a row of K planes per tile those were what the
            // loop waited on (one tile ahead into L1 had been 1.03× faster
            // than none; this, 0.93–0.94× of that on chains of ResNet's
            // 256↔64 1×1 layers at 56×56, one thread; the models level to
            // 0.96×).
            _mm_prefetch::<_MM_HINT_T1>(bk.wrapping_add(lead) as *const i8);
            if S > 1 {
                // A strided tile spans two lines of the row.
                _mm_prefetch::<_MM_HINT_T1>(bk.wrapping_add(lead + 16) as *const i8);
            }
            for (j, cj) in c.iter_mut().enumerate() {
                let at = if j < H { S * j } else { second + S * (j - H) };
                let x = _mm512_set1_ps(*bk.add(at));
                cj[0] = _mm512_fmadd_ps(x, w0, cj[0]);
                cj[1] = _mm512_fmadd_ps(x, w1, cj[1]);
            }
        }
        for (j, cj) in c.iter().enumerate() {
            _mm512_storeu_ps(tile.add(j * MV), cj[0]);
            _mm512_storeu_ps(tile.add(j * MV + 16), cj[1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_store {
    use super::{Dest, Epilogue, MV};
    use std::arch::x86_64::*;

    /// `c[j][i] = r[i][j]`: a 16×16 transpose in four rounds of shuffles
    /// (32-bit and 64-bit interleaves within 128-bit lanes, then two
    /// rounds across lanes).
    #[inline(always)]
    unsafe fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4g + c], lane L: rows 4g .. 4g + 4 at column 4L + c.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, c) = (i / 4, i % 4);
            let (a, b) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
            if c % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let (a, b, cc, dd) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
            let v0 = _mm512_shuffle_f32x4::<0x44>(a, b);
            let v1 = _mm512_shuffle_f32x4::<0xEE>(a, b);
            let w0 = _mm512_shuffle_f32x4::<0x44>(cc, dd);
            let w1 = _mm512_shuffle_f32x4::<0xEE>(cc, dd);
            out[c] = _mm512_shuffle_f32x4::<0x88>(v0, w0);
            out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, w0);
            out[8 + c] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
            out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, w1);
        }
        out
    }

    /// Ask for the lines the channel's next tile (the columns after
    /// `end`) will write and, with a residual, read: that tile is stored
    /// a kernel call or more from now, and without this every one of its
    /// channel rows — one plane apart, 32–64 rows per tile, more streams
    /// than the hardware prefetchers follow — missed L2 in the store.
    #[inline(always)]
    unsafe fn prefetch_next_tile(ep: Epilogue, out_row: *mut f32, res_row: *const f32, end: usize) {
        for line in [end, end + 15] {
            _mm_prefetch::<_MM_HINT_ET0>(out_row.wrapping_add(line) as *const i8);
            if ep.add {
                _mm_prefetch::<_MM_HINT_T0>(res_row.wrapping_add(line) as *const i8);
            }
        }
    }

    /// [`super::store`] sixteen channels at a time: the tile's columns
    /// transposed into one vector per channel, then each run written with
    /// one masked store (and its residual read with one masked load).
    ///
    /// # Safety
    /// AVX-512F must be available; `to` addresses the output (and the
    /// residual, when `ep.add`) of every channel and run it names.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store(ep: Epilogue, bias: Option<*const f32>, tile: &[f32], to: &Dest) {
        let zero = _mm512_setzero_ps();
        let width = to.runs[..to.n_runs]
            .iter()
            .map(|r| r.j0 + r.len)
            .max()
            .unwrap_or(0);
        for half in 0..to.channels.div_ceil(16) {
            let rows: [__m512; 16] = std::array::from_fn(|j| {
                if j < width {
                    _mm512_loadu_ps(tile.as_ptr().add(j * MV + 16 * half))
                } else {
                    zero
                }
            });
            let cols = transpose(rows);
            for (r, &col) in cols.iter().enumerate().take(to.channels - 16 * half) {
                let oc = to.oc0 + 16 * half + r;
                let v = match bias {
                    Some(b) => _mm512_add_ps(col, _mm512_set1_ps(*b.add(oc))),
                    None => col,
                };
                let out_row = to.out.add(oc * to.plane);
                let res_row = to.res.wrapping_add(oc * to.plane);
                for run in &to.runs[..to.n_runs] {
                    let mask = (((1u32 << run.len) - 1) << run.j0) as __mmask16;
                    // Lane j0 + i goes to `at + i`: the base sits j0 before.
                    let at = run.at.wrapping_sub(run.j0);
                    let mut x = v;
                    if ep.add {
                        let res = _mm512_maskz_loadu_ps(mask, res_row.wrapping_add(at));
                        x = _mm512_add_ps(x, res);
                    }
                    if ep.relu {
                        x = _mm512_max_ps(x, zero);
                    }
                    _mm512_mask_storeu_ps(out_row.wrapping_add(at), mask, x);
                }
                if let Some(last) = to.runs[..to.n_runs].last() {
                    prefetch_next_tile(ep, out_row, res_row, last.at + last.len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::desc::{STEP_ADD, STEP_RELU};
    use crate::kernels::testing::{conv_desc, value};

    /// The portable kernels with the scalar store, and the machine's own.
    fn kernel_sets() -> Vec<Kernels> {
        let mut sets = vec![PORTABLE];
        if kernels().vector_store {
            sets.push(kernels());
        }
        sets
    }

    /// Every kernel width and column step of every instruction set
    /// against plain loops, B rows scattered through an offset table.
    #[test]
    fn kernels_match_plain_loops() {
        let kc = 37;
        let a: Vec<f32> = (0..kc * MV).map(value).collect();
        let b: Vec<f32> = (0..kc * 40).map(|i| value(3 * i + 1)).collect();
        let offs: Vec<usize> = (0..kc).map(|k| (k * 17) % 23 + k * 13).collect();
        for Kernels { j, by_width, .. } in kernel_sets() {
            for (w, step) in (1..=j).flat_map(|w| (1..=Direct::MAX_COL_STEP).map(move |s| (w, s))) {
                let mut tile = vec![f32::NAN; J_MAX * MV];
                unsafe {
                    by_width[step - 1][w - 1](
                        kc,
                        a.as_ptr(),
                        b.as_ptr(),
                        offs.as_ptr(),
                        tile.as_mut_ptr(),
                        a.as_ptr(),
                        3 * j,
                        0,
                    )
                };
                for jj in 0..w {
                    for r in 0..MV {
                        let want: f32 = (0..kc)
                            .map(|k| a[k * MV + r] * b[offs[k] + step * jj])
                            .sum();
                        let got = tile[jj * MV + r];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "width {w} step {step} at {jj},{r}: {got} vs {want}"
                        );
                    }
                }
                assert!(
                    tile[w * MV..].iter().all(|v| v.is_nan()),
                    "width {w} wrote past its tile"
                );
            }
        }
    }

    /// The two-row kernels read columns `h ..` at the second row's offset.
    #[test]
    fn two_row_kernels_match_plain_loops() {
        let (kc, second) = (29, 45);
        let a: Vec<f32> = (0..kc * MV).map(value).collect();
        let b: Vec<f32> = (0..kc * 40 + 80).map(|i| value(3 * i + 1)).collect();
        let offs: Vec<usize> = (0..kc).map(|k| (k * 17) % 23 + k * 13).collect();
        for Kernels { two_rows, .. } in kernel_sets() {
            let Some(two_rows) = two_rows else { continue };
            for step in 1..=Direct::MAX_COL_STEP {
                for (i, run) in two_rows[step - 1].iter().enumerate() {
                    let h = TWO_ROWS_MIN + i;
                    let mut tile = vec![f32::NAN; J_MAX * MV];
                    let (a, b, offs) = (a.as_ptr(), b.as_ptr(), offs.as_ptr());
                    unsafe { run(kc, a, b, offs, tile.as_mut_ptr(), a, 0, second) };
                    for jj in 0..2 * h {
                        let at = if jj < h {
                            step * jj
                        } else {
                            second + step * (jj - h)
                        };
                        for r in 0..MV {
                            let want: f32 = (0..kc)
                                .map(|k| unsafe { *a.add(k * MV + r) * *b.add(*offs.add(k) + at) })
                                .sum();
                            let got = tile[jj * MV + r];
                            assert!(
                                (got - want).abs() < 1e-4,
                                "rows of {h}, step {step} at {jj},{r}: {got} vs {want}"
                            );
                        }
                    }
                    assert!(tile[2 * h * MV..].iter().all(|v| v.is_nan()));
                }
            }
        }
    }

    /// The prefetch stream covers the next task's panels exactly once, a
    /// line per k per call, then falls back to the panel in hand; a task
    /// with no successor asks for nothing new.
    #[test]
    fn ahead_walks_the_next_tasks_weights_once() {
        let k = 10;
        let w = vec![0.0f32; 4 * MV * k];
        let (base, own) = (w.as_ptr(), w.as_ptr().wrapping_add(3 * MV * k));
        let floats = |p: *const f32| (p as usize - base as usize) / 4;
        let mut ahead = Ahead::new(base, k, 1..3, true);
        let got: Vec<usize> = (0..6).map(|_| floats(ahead.next(own))).collect();
        let (first, step, own_at) = (MV * k, 16 * k, 3 * MV * k);
        let want = [
            first,
            first + step,
            first + 2 * step,
            first + 3 * step,
            own_at,
            own_at,
        ];
        assert_eq!(got, want);
        let mut none = Ahead::new(base, k, 1..3, false);
        assert_eq!(floats(none.next(own)), own_at);
    }

    /// Whole convolutions through [`run`] against the same convolutions on
    /// the GEMM path: 1×1 in place (on one grid; strided, in row tiles,
    /// with rows that end mid-tile and odd input sides; through phase
    /// planes at stride 3), 3×3 with padding at strides 1 and 2, a channel
    /// count that leaves the last panel partly empty, batches of two, and
    /// each of the four epilogues (the residual with its own batch
    /// stride).
    #[test]
    fn phase_planes_are_read_in_row_tiles_unless_that_makes_more_tiles() {
        // Only the width and whether two-row kernels exist matter here.
        let avx = Kernels {
            j: 14,
            two_rows: Some(PORTABLE.by_width),
            ..PORTABLE
        };
        let no_pairs = Kernels { j: 14, ..PORTABLE };
        let rows_for = |side: usize, kern: Kernels| {
            let mut d = conv_desc(1, (8, side, side), 32, (3, 3), 1, &[]);
            (d.sh, d.sw) = (2, 2);
            d.oh = (side / 2) as u32;
            d.ow = (side / 2) as u32;
            let base = std::ptr::null();
            phase_source(&d, Shifted::new(&d), base, 0, &kern).rows
        };
        let in_rows = |row_step, two_rows| {
            Some(Direct {
                row_step,
                col_step: 1,
                two_rows,
            })
        };
        assert_eq!(rows_for(28, avx), in_rows(15, false));
        assert_eq!(rows_for(56, avx), in_rows(29, false));
        // 7×7 outputs: two rows a tile, 4 tiles as on the grid.
        assert_eq!(rows_for(14, avx), in_rows(8, true));
        // Without two-row kernels, 7 single rows against 4 grid tiles.
        assert_eq!(rows_for(14, no_pairs), None);
    }

    #[test]
    fn convolutions_match_the_gemm_path() {
        let cases = [
            // (batch, (c, h, w), m, kernel, pad, stride, dilation)
            (2, (40, 7, 7), 48, 1, 0, 1, 1),
            (1, (16, 9, 11), 32, 3, 1, 2, 1),
            (2, (24, 12, 10), 70, 3, 1, 2, 1),
            (1, (8, 13, 13), 33, 3, 1, 1, 1),
            (1, (12, 15, 9), 40, 3, 0, 3, 1),
            (1, (6, 17, 16), 36, 3, 2, 2, 2),
            (1, (20, 6, 6), 32, 1, 1, 1, 1),
            (2, (40, 8, 8), 48, 1, 0, 2, 1),
            (1, (32, 9, 37), 40, 1, 0, 2, 1),
            (2, (24, 14, 14), 33, 1, 0, 2, 1),
            (1, (16, 10, 13), 32, 1, 0, 3, 1),
            // Strided windows in row tiles (see `phase_source`): 14×14
            // outputs on a grid 15 wide, rows of two tiles, and two rows a
            // tile (rows of 7, 6 and 5, the last tile a single row).
            (2, (8, 28, 28), 40, 3, 1, 2, 1),
            (1, (4, 56, 56), 32, 3, 1, 2, 1),
            (2, (24, 14, 14), 33, 3, 1, 2, 1),
            (1, (16, 12, 12), 32, 3, 1, 2, 1),
            (1, (16, 10, 9), 40, 3, 1, 2, 1),
        ];
        for (batch, (c, h, w), m, kk, pad, stride, dil) in cases {
            for steps in [&[][..], &[STEP_RELU], &[STEP_ADD], &[STEP_ADD, STEP_RELU]] {
                let mut d = conv_desc(batch, (c, h, w), m, (kk, kk), pad, steps);
                let span = dil * (kk - 1) + 1;
                (d.sh, d.sw, d.dh, d.dw) = (stride as u32, stride as u32, dil as u32, dil as u32);
                d.oh = ((h + 2 * pad - span) / stride + 1) as u32;
                d.ow = ((w + 2 * pad - span) / stride + 1) as u32;
                let out_len = m * (d.oh * d.ow) as usize;
                d.out_bstride = out_len as u64;
                d.res_bstride[0] = out_len as u64 + 5;
                let k = d.k();
                let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
                let weight: Vec<f32> = (0..m * k).map(|i| value(5 * i + 2) * 0.1).collect();
                let bias: Vec<f32> = (0..m).map(|i| value(i + 7)).collect();
                let res: Vec<f32> = (0..batch * (out_len + 5)).map(|i| value(i + 3)).collect();
                let mut want = vec![f32::NAN; batch * out_len];
                let a = crate::kernels::micro::pack_weights(1, m, k, |_, r, kk| weight[r * k + kk]);
                let ptrs = [
                    x.as_ptr() as *mut f32,
                    want.as_mut_ptr(),
                    a.as_ptr() as *mut f32,
                    bias.as_ptr() as *mut f32,
                    res.as_ptr() as *mut f32,
                ];
                unsafe { crate::kernels::dispatch::run(&d, ptrs.as_ptr()) };
                let a = pack_weights(m, k, |r, kk| weight[r * k + kk]);
                for kern in kernel_sets() {
                    let mut got = vec![f32::NAN; batch * out_len];
                    let p = Ptrs {
                        x: x.as_ptr(),
                        out: got.as_mut_ptr(),
                        a: a.as_ptr(),
                        bias: bias.as_ptr(),
                        res: [
                            res.as_ptr(),
                            std::ptr::null(),
                            std::ptr::null(),
                            std::ptr::null(),
                        ],
                    };
                    unsafe { run_with(kern, &d, &p) };
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                            "{c}x{h}x{w} -> {m}, {kk}x{kk}/{stride} d{dil}, steps {steps:?}, \
                             {} columns, at {i}: {g} vs {w}",
                            kern.j
                        );
                    }
                }
            }
        }
    }
}
