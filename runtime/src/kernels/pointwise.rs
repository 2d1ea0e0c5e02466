//! 1×1 convolutions (any stride, no padding) as GEMMs on packed B blocks.
//!
//! `C = A·B` per (item, group) with A the packed weights (out × in) and B
//! the input channels (in × output positions). Each task copies a block of
//! B — all K rows of a few micro-panels of columns, sized to stay in L2 —
//! into contiguous panels, then runs every row panel of its rows over it
//! with the whole K in registers, so each output is stored once, epilogue
//! included. Reading B in place instead (strided rows, often straddling
//! cache lines: a 7×7 plane is 196 bytes) ran the micro-kernel 25–35%
//! slower for every ResNet-50 shape, single-threaded, and a strided conv's
//! columns are gathered here instead of being copied into phase planes
//! first.
//!
//! Tasks are (item, group, column block, row split): row splits only when
//! there are too few column blocks to keep the threads busy (late layers
//! at batch 1), since each split packs its block again.

use super::gemm::{self, GemmDesc, Ptrs, Segment, TileDest};
use super::micro::{MicroKernel, MR};
use crate::threads::{current_threads, parallel_for};

/// Bytes of packed B a task keeps in L2 (half of Zen 3's and Skylake-X's
/// L2, leaving room for the streamed weights and the output tiles).
const B_BLOCK_BYTES: usize = 256 << 10;
/// The widest column block, so large planes still make many tasks.
const MAX_BLOCK_COLS: usize = 256;

/// Whether `d` is a convolution this path computes: a 1×1 window whose
/// reads all fall inside the input (no padding), any stride.
pub fn fits(d: &GemmDesc) -> bool {
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

/// Columns per task block for reduction length `k`: as many whole
/// micro-panels as fit [`B_BLOCK_BYTES`], at least one.
fn block_cols(k: usize, nr: usize) -> usize {
    let cols = B_BLOCK_BYTES / (4 * k.max(1));
    (cols.min(MAX_BLOCK_COLS) / nr).max(1) * nr
}

/// Run a convolution [`fits`] accepts.
///
/// # Safety
/// As [`gemm::run`]: `p` addresses buffers of the sizes `d` implies.
pub(super) unsafe fn run(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let (m, k, cols) = (d.m(), d.k(), (d.oh * d.ow) as usize);
    let block = block_cols(k, kern.nr);
    let col_blocks = cols.div_ceil(block);
    let row_panels = m.div_ceil(MR);
    let base_tasks = d.batch as usize * d.groups as usize * col_blocks;
    let target = 2 * current_threads();
    let row_splits = target.div_ceil(base_tasks).clamp(1, row_panels);
    let panels_per_split = row_panels.div_ceil(row_splits);
    let tasks = base_tasks * row_splits;
    let task = |t: usize| {
        let rs = t % row_splits;
        let rest = t / row_splits;
        let cb = rest % col_blocks;
        let rest = rest / col_blocks;
        let g = rest % d.groups as usize;
        let item = rest / d.groups as usize;
        let panels = rs * panels_per_split..((rs + 1) * panels_per_split).min(row_panels);
        if panels.is_empty() {
            return;
        }
        let col0 = cb * block;
        let width = block.min(cols - col0);
        gemm::with_scratch(|b, offs| {
            // SAFETY: forwarded from the caller's contract; tasks write
            // disjoint output tiles.
            unsafe {
                pack_block(d, p.x, b, offs, item, g, col0, width, kern.nr);
                multiply(kern, d, p, b, offs, item, g, col0, width, panels);
            }
        });
    };
    if tasks == 1 {
        task(0);
    } else {
        parallel_for(tasks, task);
    }
}

/// Copy columns `col0 .. col0 + width` of group `g`'s B (all K rows) into
/// `nr`-wide panels, k-major and zero-padded; `offs` becomes the panels'
/// row offsets.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_block(
    d: &GemmDesc,
    x: *const f32,
    b: &mut Vec<f32>,
    offs: &mut Vec<usize>,
    item: usize,
    g: usize,
    col0: usize,
    width: usize,
    nr: usize,
) {
    let k = d.k();
    let panels = width.div_ceil(nr);
    let plane = (d.h * d.w) as usize;
    let (w, ow, sh, sw) = (d.w as usize, d.ow as usize, d.sh as usize, d.sw as usize);
    if b.len() < panels * k * nr {
        b.resize(panels * k * nr, 0.0);
    }
    offs.clear();
    offs.extend((0..k).map(|kk| kk * nr));
    let src0 = x.add(item * d.x_bstride as usize + g * k * plane);
    // Stride 1 with no padding: output position j reads input position j.
    let contiguous = sh == 1 && sw == 1 && ow == w;
    for kk in 0..k {
        let src = src0.add(kk * plane);
        for panel in 0..panels {
            let j0 = col0 + panel * nr;
            let n = nr.min(col0 + width - j0);
            let dst = &mut b[(panel * k + kk) * nr..][..nr];
            if contiguous {
                dst[..n].copy_from_slice(std::slice::from_raw_parts(src.add(j0), n));
            } else {
                for (t, v) in dst[..n].iter_mut().enumerate() {
                    let j = j0 + t;
                    *v = *src.add((j / ow) * sh * w + (j % ow) * sw);
                }
            }
            dst[n..].fill(0.0);
        }
    }
}

/// Every row panel in `panels` times every packed column panel, stored
/// through the epilogue.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply(
    kern: MicroKernel,
    d: &GemmDesc,
    p: &Ptrs,
    b: &[f32],
    offs: &[usize],
    item: usize,
    g: usize,
    col0: usize,
    width: usize,
    panels: std::ops::Range<usize>,
) {
    let nr = kern.nr;
    let (m, k) = (d.m(), d.k());
    let a_group = p.a.add(g * m.div_ceil(MR) * MR * k);
    let mut tile = [0.0f32; MR * 32];
    for panel in panels {
        let a_panel = a_group.add(panel * MR * k);
        for cp in 0..width.div_ceil(nr) {
            let b_panel = b.as_ptr().add(cp * k * nr);
            let segment = [Segment {
                tile_col: 0,
                out_col: col0 + cp * nr,
                len: nr.min(width - cp * nr),
            }];
            (kern.run)(k, a_panel, b_panel, offs.as_ptr(), tile.as_mut_ptr());
            let to = TileDest {
                nr,
                item,
                g,
                row0: panel * MR,
                rows: MR.min(m - panel * MR),
                segments: &segment,
                first: true,
                last: true,
            };
            gemm::store(d, p, &mut tile, &to);
        }
    }
}
