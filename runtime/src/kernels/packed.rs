//! Convolutions as GEMMs on packed B blocks.
//!
//! `C = A·B` per (item, group) with A the packed weights (out × K) and B
//! the im2col matrix (K × output positions), whose rows are slices of a
//! source the caller prepared: the input planes themselves for a 1×1
//! convolution ([`run_pointwise`]), or zero-padded phase planes for any
//! other stride ≤ 4 (`super::gemm::run_shifted`). Each task copies a block of B —
//! `kc` rows of a few micro-panels of columns, together at most
//! [`B_BLOCK_BYTES`] so it stays in L2 — into contiguous panels and runs
//! every row panel of its rows over it, the A panel staying in L1 across
//! the block's column panels and each output tile's rows written as short
//! sequential runs.
//!
//! Against reading B where it lies (through a row-offset table, as the
//! micro-kernel can), the copy pays for itself: source rows are strided
//! and straddle cache lines (a 7×7 plane is 196 bytes), and the strided
//! layers' B working set did not fit L2 next to the streamed weights
//! (measured: docs/performance.md, "packed B").
//!
//! Tasks are (item, group, column block, row split): rows are split only
//! when there are too few column blocks to keep the threads busy (late
//! layers at batch 1). Those blocks are then packed once, in parallel,
//! before the multiply, and every split reads the same copy.

use super::desc::{GemmDesc, Ptrs};
use super::micro::{MicroKernel, MR};
use super::planes;
use super::schedule::{with_scratch, Run, Scratch, Segment, Tasks};
use super::store::{multiply_store, prefetch_dest, TileDest};
use super::Shared;
use crate::threads::{current_threads, parallel_for};
use std::cell::RefCell;

/// Bytes of packed B one task keeps in L2 (about half of Zen 3's and
/// Skylake-X's L2, leaving room for the streamed weights and the output).
const B_BLOCK_BYTES: usize = 288 << 10;
/// The longest K block: 128 channels of a 3×3 window. Longer reductions
/// are split and accumulate through the output, so the block can still
/// hold several column panels.
pub(super) const KC_MAX: usize = 1152;
/// The widest column block, so large planes still make many tasks.
pub(super) const MAX_BLOCK_COLS: usize = 256;
/// Below this many output channels a contiguous B is read in place: a
/// block is then multiplied by too few row panels to repay its copy (the
/// 7×7/2 stems, deep_convnet's 64-channel layers).
const PACK_MIN_ROWS: usize = 128;

/// The largest column stride [`Columns::run_stride`] copies in runs.
const MAX_RUN_STRIDE: usize = 4;

/// How B's columns sit in the source rows.
#[derive(Clone, Copy, Debug)]
pub(super) enum Columns {
    /// Column `j` is at `row + j`; the output has the first `ow` of every
    /// `wq` columns (phase planes; `wq == ow` for a plane read as it is).
    Grid { wq: usize, ow: usize },
    /// Column `j = y·ow + x` is at `row + y·sh·w + x·sw` (a strided 1×1
    /// convolution reading its input in place); every column is an output.
    Strided {
        ow: usize,
        w: usize,
        sh: usize,
        sw: usize,
    },
}

impl Columns {
    /// Whether the source runs of a block's columns are copied whole when
    /// packing, rather than gathered column by column.
    fn copied_in_runs(self) -> bool {
        self.run_stride().is_some()
    }

    /// The source stride of the columns within a run, when they are copied
    /// in runs: 1, or a strided 1×1 convolution's column stride up to 4
    /// (a constant-stride copy of each output row's piece; gathering them
    /// one offset at a time had made ResNet-18's 1×1/2 downsample layers
    /// at batch 8 1.6× slower than ONNX Runtime's).
    fn run_stride(self) -> Option<usize> {
        match self {
            Columns::Grid { .. } => Some(1),
            Columns::Strided { sw, .. } if sw <= MAX_RUN_STRIDE => Some(sw),
            Columns::Strided { .. } => None,
        }
    }

    /// The output segments of item `item`'s B columns `c0 .. c0 + len`,
    /// which sit at tile column `tile_col` on, appended to `out`. Only a
    /// grid wider than the output rows breaks them: otherwise they are one
    /// run, so a tile across a row end is still one segment the fused
    /// kernel writes (half the tiles of a 56×56 plane).
    fn segments(self, item: usize, c0: usize, len: usize, tile_col: usize, out: &mut Vec<Segment>) {
        let (wq, ow) = match self {
            Columns::Grid { wq, ow } if wq > ow => (wq, ow),
            _ => {
                out.push(Segment {
                    item,
                    tile_col,
                    out_col: c0,
                    len,
                });
                return;
            }
        };
        let mut j = c0;
        while j < c0 + len {
            let (y, x) = (j / wq, j % wq);
            if x >= ow {
                j += wq - x;
                continue;
            }
            let run = (ow - x).min(c0 + len - j);
            out.push(Segment {
                item,
                tile_col: tile_col + j - c0,
                out_col: y * ow + x,
                len: run,
            });
            j += run;
        }
    }
}

/// B of one convolution: row `k` of group `g` of item `n` starts at
/// `base + (n − first_item)·item_stride + g·group_stride + rows[k]`.
#[derive(Clone, Copy)]
pub(super) struct Source {
    pub(super) base: *const f32,
    pub(super) first_item: usize,
    pub(super) item_stride: usize,
    pub(super) group_stride: usize,
    /// `d.k()` row offsets.
    pub(super) rows: *const usize,
    /// Columns of B (on the phase grid, for [`Columns::Grid`]).
    pub(super) cols: usize,
    pub(super) columns: Columns,
    /// Whether a row may be read up to 32 floats past its last column (a
    /// ragged column panel is then read in place like the others).
    pub(super) slack: bool,
    /// Whether the rows are the layer's input where it lies, likely not in
    /// cache (rather than phase planes this call just wrote): worth
    /// prefetching when read in place.
    pub(super) streamed: bool,
}

// SAFETY: the pointers address buffers the caller keeps alive and
// unchanged for the call; tasks only read through them.
unsafe impl Sync for Source {}

impl Source {
    /// The same B without the grid columns between output rows, which are
    /// computed and never stored: every column an output, so a 7×7 output
    /// on a grid 8 wide is 49 columns (3 panels of 16 and one of 1), not
    /// 55 (3 and a half-empty one), and every tile is one output run the
    /// fused kernel can write. For packed blocks only: a block read in
    /// place needs the grid's contiguous rows.
    fn dense(&self) -> Source {
        match self.columns {
            Columns::Grid { wq, ow } if wq > ow => Source {
                // A grid holds (rows − 1)·wq + ow columns.
                cols: ((self.cols - ow) / wq + 1) * ow,
                columns: Columns::Strided {
                    ow,
                    w: wq,
                    sh: 1,
                    sw: 1,
                },
                ..*self
            },
            _ => *self,
        }
    }
}

/// How one layer's K and columns are cut: K in even blocks of at most
/// [`KC_MAX`], the columns' micro-panels in `blocks` runs of at most what
/// fits [`B_BLOCK_BYTES`], as even as whole panels allow. Blocks are the
/// unit of load balance, so evenness is in panels: 196 columns (13 panels
/// of 16) in blocks of at most 4 panels are 4 + 3 + 3 + 3 panels. Rounding
/// each block's width up to whole panels instead had made them 64, 64, 64
/// and 4 columns — on two threads one did 128 columns, the other 68.
///
/// K is not shortened to widen the blocks: each further K block is one
/// more pass accumulating through the output, and that cost more than the
/// weight reads it saves (docs/performance.md, "K blocking").
#[derive(Clone, Copy, Debug, PartialEq)]
struct Blocking {
    kc: usize,
    cols: usize,
    nr: usize,
    panels: usize,
    blocks: usize,
}

impl Blocking {
    fn new(k: usize, cols: usize, nr: usize) -> Blocking {
        let kc = k.div_ceil(k.div_ceil(KC_MAX).max(1)).max(1);
        let fit = B_BLOCK_BYTES / (4 * kc);
        let most = (fit.min(MAX_BLOCK_COLS) / nr).max(1);
        let panels = cols.div_ceil(nr).max(1);
        Blocking {
            kc,
            cols,
            nr,
            panels,
            blocks: panels.div_ceil(most),
        }
    }

    /// The columns of block `b`.
    fn block(&self, b: usize) -> std::ops::Range<usize> {
        let panel = |b: usize| b * self.panels / self.blocks;
        panel(b) * self.nr..(panel(b + 1) * self.nr).min(self.cols)
    }
}

/// Multiply items `items` of `src` by the packed weights into the output.
///
/// The items' columns are one column space, item after item, so a block
/// may span several small planes (7×7 and 14×14 layers at batch > 1) and
/// no micro-panel is padded at each item's end: 8 × 49 columns are 25
/// panels of 16, not 32. Only blocks that are read in place stay within
/// one item.
///
/// # Safety
/// As [`super::dispatch::run`]: `p` addresses buffers of the sizes `d` implies, and
/// `src` describes readable B rows for every item, group and column.
pub(super) unsafe fn run(
    kern: MicroKernel,
    d: &GemmDesc,
    p: &Ptrs,
    src: &Source,
    items: std::ops::Range<usize>,
) {
    let (m, k) = (d.m(), d.k());
    let per_item = reads_in_place(m, src);
    let dense;
    let src = if per_item {
        src
    } else {
        dense = src.dense();
        &dense
    };
    let (units, unit_cols) = if per_item {
        (items.len(), src.cols)
    } else {
        (1, items.len() * src.cols)
    };
    let blocking = Blocking::new(k, unit_cols, kern.nr);
    let split = Tasks::new(
        units,
        d.groups as usize,
        blocking.blocks,
        m.div_ceil(MR),
        2 * current_threads(),
    );
    let block_of = |item: usize, g: usize, cb: usize| {
        let cols = blocking.block(cb);
        // Column `start` of the items' column space.
        let start = item * unit_cols + cols.start;
        Block {
            item: items.start + start / src.cols,
            col0: start % src.cols,
            g,
            width: cols.len(),
        }
    };
    if per_item || split.row_splits() == 1 {
        return split.run(|t| {
            let block = block_of(t.item, t.g, t.cb);
            with_scratch(|s| {
                // SAFETY: forwarded from the caller's contract; tasks write
                // disjoint output tiles.
                unsafe { block_task(kern, d, p, src, s, blocking.kc, block, t.panels, None) }
            });
        });
    }
    // Rows are split: each block is packed once, in parallel, into a
    // buffer every split of it reads, rather than once per split (four
    // times for a 7×7 layer at batch 1 on two threads).
    let stride = k * blocking.panels.div_ceil(blocking.blocks) * kern.nr;
    let units = split.count() / split.row_splits();
    let pieces: Vec<(usize, std::ops::Range<usize>)> = (0..k)
        .step_by(blocking.kc)
        .flat_map(|k0| {
            let kc = blocking.kc.min(k - k0);
            (0..kc)
                .step_by(PREPACK_ROWS)
                .map(move |r| (k0, r..(r + PREPACK_ROWS).min(kc)))
        })
        .collect();
    let unit_of = |u: usize| {
        split
            .get(u * split.row_splits())
            .map(|t| block_of(t.item, t.g, t.cb))
    };
    SHARED_B.with(|buf| {
        let mut buf = buf.borrow_mut();
        super::grow(&mut buf, units * stride);
        let out = Shared(buf.as_mut_ptr());
        parallel_for(units * pieces.len(), |i| {
            let (u, (k0, rows)) = (i / pieces.len(), pieces[i % pieces.len()].clone());
            let Some(block) = unit_of(u) else { return };
            let kc = blocking.kc.min(k - k0);
            let panels = block.width.div_ceil(kern.nr);
            with_scratch(|s| {
                plan_block(src, s, block, kern.nr);
                // SAFETY: piece `i` writes rows `rows` of its unit's K
                // block at `k0`, which no other piece writes; the buffer
                // holds `units · stride` floats.
                let to = unsafe {
                    std::slice::from_raw_parts_mut(
                        out.get().add(u * stride + k0 * panels * kern.nr),
                        kc * panels * kern.nr,
                    )
                };
                // SAFETY: forwarded from the caller's contract.
                unsafe { pack_any(&kern, src, s, block, k0, kc, rows, to) };
            });
        });
        split.run(|t| {
            let block = block_of(t.item, t.g, t.cb);
            with_scratch(|s| {
                // SAFETY: as above; the unit's packed B was written above.
                unsafe {
                    let pre = out.get().add(t.unit * stride) as *const f32;
                    block_task(kern, d, p, src, s, blocking.kc, block, t.panels, Some(pre))
                }
            });
        });
    });
}

/// Rows of B one pre-packing task copies.
const PREPACK_ROWS: usize = 256;

thread_local! {
    /// Blocks of B packed once for all their row splits (on the calling thread).
    static SHARED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether blocks of `src` are multiplied where they lie (see
/// [`PACK_MIN_ROWS`]) rather than packed.
fn reads_in_place(m: usize, src: &Source) -> bool {
    m < PACK_MIN_ROWS && matches!(src.columns, Columns::Grid { .. })
}

/// The columns one task owns: `width` columns from column `col0` of item
/// `item` on, running into the next items past the item's last column.
#[derive(Clone, Copy)]
struct Block {
    item: usize,
    col0: usize,
    g: usize,
    width: usize,
}

impl Block {
    /// Call `f(item, column, offset, len)` for each run of the block's
    /// columns `from .. from + len` that lies in one item: `len` columns
    /// from `column` of `item`, at `offset` from `from`.
    fn item_runs(
        &self,
        cols: usize,
        from: usize,
        len: usize,
        mut f: impl FnMut(usize, usize, usize, usize),
    ) {
        let mut done = 0;
        while done < len {
            let at = self.col0 + from + done;
            let (item, c) = (self.item + at / cols, at % cols);
            let run = (cols - c).min(len - done);
            f(item, c, done, run);
            done += run;
        }
    }

    /// Where row panel `panel`'s tile over `segments` goes.
    fn dest<'a>(
        &self,
        nr: usize,
        m: usize,
        panel: usize,
        segments: &'a [Segment],
        first: bool,
        last: bool,
    ) -> TileDest<'a> {
        TileDest {
            nr,
            g: self.g,
            row0: panel * MR,
            rows: MR.min(m - panel * MR),
            segments,
            first,
            last,
        }
    }
}

/// One task: for each K block, pack the block's B and multiply every row
/// panel in `panels` by it, accumulating through the output.
#[allow(clippy::too_many_arguments)]
unsafe fn block_task(
    kern: MicroKernel,
    d: &GemmDesc,
    p: &Ptrs,
    src: &Source,
    s: &mut Scratch,
    kc_max: usize,
    block: Block,
    panels: std::ops::Range<usize>,
    prepacked: Option<*const f32>,
) {
    let nr = kern.nr;
    let (m, k) = (d.m(), d.k());
    let col_panels = block.width.div_ceil(nr);
    plan_block(src, s, block, nr);
    if reads_in_place(m, src) {
        return in_place(kern, d, p, src, s, block, panels);
    }
    let a_group = p.a.add(block.g * m.div_ceil(MR) * MR * k);
    let mut tile = [0.0f32; MR * 32];
    s.packed.clear();
    s.packed.extend((0..kc_max).map(|kk| kk * nr));
    let last = last_stride(&kern, block.width);
    s.packed_last.clear();
    s.packed_last.extend((0..kc_max).map(|kk| kk * last));
    let mut k0 = 0;
    while k0 < k {
        let kc = kc_max.min(k - k0);
        let b = match prepacked {
            Some(b) => b.add(k0 * col_panels * nr),
            None => {
                super::grow(&mut s.b, col_panels * kc * nr);
                let mut b = std::mem::take(&mut s.b);
                pack_any(
                    &kern,
                    src,
                    s,
                    block,
                    k0,
                    kc,
                    0..kc,
                    &mut b[..col_panels * kc * nr],
                );
                s.b = b;
                s.b.as_ptr()
            }
        };
        let (first, last) = (k0 == 0, k0 + kc == k);
        for panel in panels.clone() {
            let a_panel = a_group.add(panel * MR * k + k0 * MR);
            for cp in 0..col_panels {
                let segments = &s.segments[s.spans[cp]..s.spans[cp + 1]];
                if segments.is_empty() {
                    continue;
                }
                let b_panel = b.add(cp * kc * nr);
                let kernel = kern.for_width(nr.min(block.width - cp * nr));
                let to = block.dest(kernel.1, m, panel, segments, first, last);
                prefetch_dest(d, p, &to);
                let offs = if cp + 1 == col_panels {
                    s.packed_last.as_ptr()
                } else {
                    s.packed.as_ptr()
                };
                let operands = (kc, a_panel, b_panel, offs);
                multiply_store(&kern, kernel, operands, d, p, &mut tile, &to);
            }
        }
        k0 += kc;
    }
}

/// Fill `s` with a block's output segments per column panel and how its
/// columns are copied (runs, or gathered columns).
unsafe fn plan_block(src: &Source, s: &mut Scratch, block: Block, nr: usize) {
    let col_panels = block.width.div_ceil(nr);
    // Each column panel's output segments: `segments[spans[i]..spans[i+1]]`.
    s.segments.clear();
    s.spans.clear();
    s.spans.push(0);
    s.runs.clear();
    s.cols.clear();
    for cp in 0..col_panels {
        let len = nr.min(block.width - cp * nr);
        block.item_runs(src.cols, cp * nr, len, |item, c, off, run| {
            src.columns.segments(item, c, run, off, &mut s.segments);
            match src.columns {
                Columns::Grid { .. } => s.runs.push(Run {
                    panel: cp,
                    off,
                    src: (item - src.first_item) * src.item_stride + c,
                    len: run,
                }),
                Columns::Strided { ow, w, sh, sw } if sw <= MAX_RUN_STRIDE => {
                    // Each output row's columns lie `sw` apart in the source.
                    let item_base = (item - src.first_item) * src.item_stride;
                    let mut j = c;
                    while j < c + run {
                        let (y, x) = (j / ow, j % ow);
                        let len = (ow - x).min(c + run - j);
                        s.runs.push(Run {
                            panel: cp,
                            off: off + j - c,
                            src: item_base + y * sh * w + x * sw,
                            len,
                        });
                        j += len;
                    }
                }
                Columns::Strided { ow, w, sh, sw } => {
                    s.cols.extend((c..c + run).map(|j| {
                        (item - src.first_item) * src.item_stride
                            + (j / ow) * sh * w
                            + (j % ow) * sw
                    }));
                }
            }
        });
        s.spans.push(s.segments.len());
    }
}

/// [`block_task`] without the copy: the micro-kernel reads B's rows where
/// they lie through the row-offset table, over the whole K, column panel by
/// column panel so each panel's rows stay in L1 across the row panels.
/// Only a ragged last panel of a source without slack is copied. The
/// block lies within one item (see [`run`]).
#[allow(clippy::too_many_arguments)]
unsafe fn in_place(
    kern: MicroKernel,
    d: &GemmDesc,
    p: &Ptrs,
    src: &Source,
    s: &mut Scratch,
    block: Block,
    panels: std::ops::Range<usize>,
) {
    let nr = kern.nr;
    let (m, k) = (d.m(), d.k());
    let a_group = p.a.add(block.g * m.div_ceil(MR) * MR * k);
    let base = src.base.add(
        (block.item - src.first_item) * src.item_stride + block.g * src.group_stride + block.col0,
    );
    let mut tile = [0.0f32; MR * 32];
    for cp in 0..block.width.div_ceil(nr) {
        let segments = &s.segments[s.spans[cp]..s.spans[cp + 1]];
        if segments.is_empty() {
            continue;
        }
        let width = nr.min(block.width - cp * nr);
        let (mut b, mut offs) = (base.add(cp * nr), src.rows);
        if width < nr && !src.slack {
            super::grow(&mut s.b, k * nr);
            for kk in 0..k {
                let from = std::slice::from_raw_parts(b.add(*offs.add(kk)), width);
                let dst = &mut s.b[kk * nr..(kk + 1) * nr];
                dst[..width].copy_from_slice(from);
                dst[width..].fill(0.0);
            }
            s.packed.clear();
            s.packed.extend((0..k).map(|kk| kk * nr));
            (b, offs) = (s.b.as_ptr(), s.packed.as_ptr());
        }
        let kernel = kern.for_width(width);
        // The next column panel's rows, fetched while this one is
        // multiplied: a row panel at a time, a share of the rows each.
        // Without it the first row panel of each column panel waited on
        // K rows from DRAM, strided a plane apart (ResNet-50's 256→64 1×1
        // convs at 56×56, batch 8: 6.9 → 6.2 ms alone, 5.9 → 5.4 ms in
        // the model). Phase planes were just written and are in cache;
        // prefetching rows ahead in `pack` the same way measured level.
        let next =
            (src.streamed && cp + 1 < block.width.div_ceil(nr)).then(|| base.add((cp + 1) * nr));
        let share = k.div_ceil(panels.len().max(1));
        for (i, panel) in panels.clone().enumerate() {
            if let Some(next) = next {
                for kk in (i * share).min(k)..((i + 1) * share).min(k) {
                    planes::prefetch_row(next.add(*src.rows.add(kk)), nr);
                }
            }
            let a_panel = a_group.add(panel * MR * k);
            let to = block.dest(kernel.1, m, panel, segments, true, true);
            multiply_store(&kern, kernel, (k, a_panel, b, offs), d, p, &mut tile, &to);
        }
    }
}

/// [`pack`] for a kernel `nr` wide.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_any(
    kern: &MicroKernel,
    src: &Source,
    s: &Scratch,
    block: Block,
    k0: usize,
    kc: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let last = last_stride(kern, block.width);
    match kern.nr {
        8 => pack::<8>(src, s, block, (k0, kc, rows), last, out),
        12 => pack::<12>(src, s, block, (k0, kc, rows), last, out),
        16 => pack::<16>(src, s, block, (k0, kc, rows), last, out),
        32 => pack::<32>(src, s, block, (k0, kc, rows), last, out),
        nr => unreachable!("no micro-kernel is {nr} wide"),
    }
}

/// The row stride of the packed last panel of a block `width` columns
/// wide: its own width when a thin kernel reads it (one cache line then
/// holds 16 of its rows, not one — the thin kernel had been waiting on a
/// line per k), else the kernel's width.
fn last_stride(kern: &MicroKernel, width: usize) -> usize {
    let tail = width % kern.nr;
    if kern.is_thin(tail) {
        tail
    } else {
        kern.nr
    }
}

/// Copy rows `rows` of the K block `k0 .. k0 + kc` of the block's columns
/// into `NR`-wide panels in `out` (panel `p`'s row `kk` at
/// `p·kc·NR + kk·NR`, zero-padded; the last panel's rows `last_stride`
/// apart, see [`last_stride`]). Grid columns and output-row pieces are
/// copied run by run (`s.runs`, at the column stride for strided 1×1
/// convolutions), wider strides gathered through `s.cols`. `NR` is a constant so a whole panel row is a few vector
/// moves, not a `memcpy` call (which cost as much as the copy itself).
#[allow(clippy::too_many_arguments)]
unsafe fn pack<const NR: usize>(
    src: &Source,
    s: &Scratch,
    block: Block,
    (k0, kc, rows): (usize, usize, std::ops::Range<usize>),
    last_stride: usize,
    out: &mut [f32],
) {
    let panels = block.width.div_ceil(NR);
    let base = src.base.add(block.g * src.group_stride);
    // Columns past the block's end in its last panel are zero.
    let tail = block.width % NR;
    let stride = |panel: usize| if panel + 1 == panels { last_stride } else { NR };
    let wide = crate::cpu::host().avx512;
    for kk in rows.clone() {
        let row = base.add(*src.rows.add(k0 + kk));
        let panel_row = |panel: usize| panel * kc * NR + kk * stride(panel);
        if let Some(sw @ 2..) = src.columns.run_stride() {
            for r in &s.runs {
                let at = panel_row(r.panel) + r.off;
                let to = &mut out[at..at + r.len];
                let from = std::slice::from_raw_parts(row.add(r.src), (r.len - 1) * sw + 1);
                match sw {
                    2 => planes::every_fast::<2>(to, from, wide),
                    3 => planes::every::<3>(to, from),
                    _ => planes::every_fast::<4>(to, from, wide),
                }
            }
        } else if src.columns.copied_in_runs() {
            for r in &s.runs {
                let at = panel_row(r.panel) + r.off;
                // Whole 8-float chunks when the source may be over-read:
                // what they write past the run is the next run's place
                // (runs go left to right), the zeroed tail, or the start
                // of the panel's next row, which this call writes after
                // this one — so not past its last row. A `memcpy` call per
                // short run (7×7 output rows) cost more than the copy.
                let chunks = r.len.div_ceil(8);
                if r.len == NR {
                    let from = row.add(r.src) as *const [f32; NR];
                    out[at..at + NR].copy_from_slice(&from.read_unaligned());
                } else if stride(r.panel) < NR {
                    // A thin panel's few columns, one by one.
                    for i in 0..r.len {
                        out[at + i] = *row.add(r.src + i);
                    }
                } else if src.slack && (kk + 1 < rows.end || r.off + 8 * chunks <= NR) {
                    for ch in 0..chunks {
                        let from = row.add(r.src + 8 * ch) as *const [f32; 8];
                        out[at + 8 * ch..at + 8 * ch + 8].copy_from_slice(&from.read_unaligned());
                    }
                } else {
                    let from = std::slice::from_raw_parts(row.add(r.src), r.len);
                    out[at..at + r.len].copy_from_slice(from);
                }
            }
        } else {
            for (panel, offs) in s.cols.chunks(NR).enumerate() {
                let dst = &mut out[panel_row(panel)..][..offs.len()];
                for (v, &off) in dst.iter_mut().zip(offs) {
                    *v = *row.add(off);
                }
            }
        }
        if tail > 0 && last_stride == NR {
            out[panel_row(panels - 1) + tail..panel_row(panels - 1) + NR].fill(0.0);
        }
    }
}

thread_local! {
    /// A 1×1 convolution's row offsets (on the calling thread).
    static ROWS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether [`run_pointwise`] computes `d`: a 1×1 window whose reads all
/// fall inside the input (no padding), any stride.
pub(super) fn pointwise_fits(d: &GemmDesc) -> bool {
    let (oh, ow, sh, sw) = (d.oh as usize, d.ow as usize, d.sh as usize, d.sw as usize);
    d.kh == 1
        && d.kw == 1
        && d.pt == 0
        && d.pl == 0
        && oh > 0
        && ow > 0
        && (oh - 1) * sh < d.h as usize
        && (ow - 1) * sw < d.w as usize
}

/// A 1×1 convolution [`pointwise_fits`] accepts: B's rows are the input
/// planes, read in place (strided columns gathered while packing).
///
/// # Safety
/// As [`super::dispatch::run`].
pub(super) unsafe fn run_pointwise(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let plane = (d.h * d.w) as usize;
    let (ow, w, sh, sw) = (d.ow as usize, d.w as usize, d.sh as usize, d.sw as usize);
    let columns = if sh == 1 && sw == 1 && ow == w {
        Columns::Grid { wq: w, ow: w }
    } else {
        Columns::Strided { ow, w, sh, sw }
    };
    ROWS.with(|rows| {
        let mut rows = rows.borrow_mut();
        rows.clear();
        rows.extend((0..d.k()).map(|kk| kk * plane));
        let src = Source {
            base: p.x,
            first_item: 0,
            item_stride: d.x_bstride as usize,
            group_stride: d.k() * plane,
            rows: rows.as_ptr(),
            cols: (d.oh * d.ow) as usize,
            columns,
            slack: false,
            streamed: true,
        };
        run(kern, d, p, &src, 0..d.batch as usize);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_even_and_fit_l2() {
        // (kc, blocks, columns of each block).
        let cut = |k, cols| {
            let b = Blocking::new(k, cols, 16);
            let widths: Vec<usize> = (0..b.blocks).map(|i| b.block(i).len()).collect();
            (b.kc, widths)
        };
        // ResNet-50's strided 1×1 at 28×28 (K = 256): 49 panels in four
        // blocks of at most 16.
        assert_eq!(cut(256, 784), (256, vec![192, 192, 192, 208]));
        // K = 1024 at 14×14: 13 panels in blocks of at most 4 panels —
        // 4 + 3 + 3 + 3, not 64, 64, 64 and 4 columns.
        assert_eq!(cut(1024, 196), (1024, vec![48, 48, 48, 52]));
        // K = 2048 at 7×7: two K blocks, one column block of four panels.
        assert_eq!(cut(2048, 49), (1024, vec![49]));
        // 3×3 over 512 channels: four K blocks of 128 channels.
        assert_eq!(cut(4608, 55), (1152, vec![55]));
        // Small planes take one block; long reductions split K rather
        // than narrow the block.
        assert_eq!(cut(64, 49), (64, vec![49]));
        assert_eq!(cut(100_000, 49), (1150, vec![49]));
        // The stem (K = 147) over 112×115 grid columns: the widest blocks
        // (805 panels in 51 blocks of 15 or 16 panels).
        let (kc, widths) = cut(147, 12878);
        assert_eq!((kc, widths.len()), (147, 51));
        assert!(widths.iter().all(|&w| (15 * 16 - 2..=256).contains(&w)));
        assert_eq!(widths.iter().sum::<usize>(), 12878);
    }

    #[test]
    fn grid_segments_skip_the_columns_between_rows() {
        let mut out = Vec::new();
        // Rows of 3 outputs on a grid 5 wide: columns 2..12 hold outputs
        // (0,2), (1,0..3), (2,0..2).
        Columns::Grid { wq: 5, ow: 3 }.segments(4, 2, 10, 7, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|s| (s.item, s.tile_col, s.out_col, s.len))
            .collect();
        assert_eq!(got, vec![(4, 7, 2, 1), (4, 10, 3, 3), (4, 15, 6, 2)]);
    }
}
