//! Convolution and dense layers as blocked matrix multiplies.
//!
//! Every conv/dense is `C = A·B` per (batch item, group): A is the weight
//! matrix (out × K), packed once at compile time ([`pack_weights`]); B is
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

use super::micro::{self, fused_index, KernelFn, MicroKernel, TileOut, MR};
use super::packed::{self, Columns, Source};
use super::Shared;
use crate::threads::{current_threads, parallel_for};
use std::cell::RefCell;
use std::sync::OnceLock;

/// How B is read from the input.
pub const KIND_IM2COL: u32 = 0;
pub const KIND_POINTWISE: u32 = 1;
pub const KIND_DENSE: u32 = 2;
/// A dense layer at a batch of at most [`GEMV_MAX_BATCH`], weights packed
/// by [`super::gemv::pack_weights`].
pub const KIND_GEMV: u32 = 3;
/// A 3×3 stride-1 convolution by Winograd F(4×4, 3×3), weights packed by
/// [`super::winograd::pack_weights`].
pub const KIND_WINOGRAD: u32 = 4;
/// The same by Winograd F(2×2, 3×3).
pub const KIND_WINOGRAD_F2: u32 = 5;
/// A 5×5 stride-1 convolution by Winograd F(2×2, 5×5).
pub const KIND_WINOGRAD_F2K5: u32 = 6;
/// A convolution vectorised over output channels, weights packed by
/// [`super::mvec::pack_weights`] (see `mvec.rs`).
pub const KIND_MVEC: u32 = 7;

/// Dense layers up to this batch use the matrix-vector path: a GEMM tile
/// would waste most of its columns, and the layer is bound by reading the
/// weights once. (At 8 the GEMM path had used a quarter of its tiles'
/// columns: VGG-16's dense layers at batch 8 took 49 ms there against
/// ONNX Runtime's 19.5.)
pub const GEMV_MAX_BATCH: usize = 8;

/// Epilogue step codes.
pub const STEP_ADD: u32 = 0;
pub const STEP_RELU: u32 = 1;
pub const STEP_LEAKY: u32 = 2;
pub const STEP_SIGMOID: u32 = 3;
pub const STEP_TANH: u32 = 4;
/// Max-pool the result over 2×2 windows at stride 2: only as the last
/// step and with no residual add. The output tensor is then the pooled
/// one, `out_c × ⌊oh/2⌋ × ⌊ow/2⌋` per item (`oh`, `ow` stay the
/// convolution's), so the full-size result is never written out.
pub const STEP_MAXPOOL2: u32 = 5;

pub const MAX_STEPS: usize = 8;
pub const MAX_RESIDUALS: usize = 4;

/// Everything a conv/dense call needs besides pointers; built by the code
/// generator and stored as constant data next to the generated code.
///
/// The pointer array passed alongside is `[x, out, packed_weights, bias
/// (or null), residual 0, …]`. Tensor item `n` starts at `base + n·stride`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmDesc {
    pub kind: u32,
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
    pub n_res: u32,
    pub n_steps: u32,
    pub steps: [u32; MAX_STEPS],
    pub alpha: [f32; MAX_STEPS],
    pub x_bstride: u64,
    pub out_bstride: u64,
    pub res_bstride: [u64; MAX_RESIDUALS],
}

impl GemmDesc {
    /// Rows of A per group.
    pub fn m(&self) -> usize {
        (self.out_c / self.groups) as usize
    }

    /// Reduction length per group.
    pub fn k(&self) -> usize {
        (self.in_c / self.groups * self.kh * self.kw) as usize
    }

    /// Columns of C per (item, group).
    pub fn cols(&self) -> usize {
        if self.is_dense() {
            self.batch as usize
        } else {
            (self.oh * self.ow) as usize
        }
    }

    /// Whether the last step is [`STEP_MAXPOOL2`].
    pub fn pooled(&self) -> bool {
        self.n_steps > 0 && self.steps[self.n_steps as usize - 1] == STEP_MAXPOOL2
    }

    fn is_dense(&self) -> bool {
        self.kind == KIND_DENSE || self.kind == KIND_GEMV
    }

    fn items(&self) -> usize {
        if self.is_dense() {
            1
        } else {
            self.batch as usize
        }
    }

    /// The descriptor as raw bytes, for embedding in generated code.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::pod_bytes(self)
    }
}

/// Floats of packed weights for `groups` blocks of `m × k`.
pub fn packed_len(groups: usize, m: usize, k: usize) -> usize {
    groups * m.div_ceil(MR) * MR * k
}

/// Pack weights for [`run`]: per group, panels of MR rows stored k-major,
/// zero-padded to a whole panel. `at(g, row, k)` reads the original.
pub fn pack_weights(
    groups: usize,
    m: usize,
    k: usize,
    at: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let panels = m.div_ceil(MR);
    let mut out = vec![0.0; packed_len(groups, m, k)];
    for g in 0..groups {
        for p in 0..panels {
            let base = (g * panels + p) * MR * k;
            for kk in 0..k {
                for r in 0..MR {
                    let row = p * MR + r;
                    if row < m {
                        out[base + kk * MR + r] = at(g, row, kk);
                    }
                }
            }
        }
    }
    out
}

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

fn kernel() -> MicroKernel {
    static KERNEL: OnceLock<MicroKernel> = OnceLock::new();
    *KERNEL.get_or_init(micro::select)
}

/// Name of the micro-kernel in use.
pub fn kernel_name() -> &'static str {
    kernel().name
}

/// Per-thread buffers, kept between calls so steady-state runs allocate
/// nothing: packed B panels and the micro-kernel's B row offsets.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) b: Vec<f32>,
    /// `offs[k] = k·nr`: rows of a packed panel.
    pub(super) packed: Vec<usize>,
    /// The rows of a block's last packed panel (see `packed::last_stride`).
    pub(super) packed_last: Vec<usize>,
    /// Output segments of a task's column panels, and where each panel's
    /// start (see `packed::block_task`).
    pub(super) segments: Vec<Segment>,
    pub(super) spans: Vec<usize>,
    /// Source offsets of the columns a task gathers.
    pub(super) cols: Vec<usize>,
    /// The runs a task copies its contiguous columns in (see `packed::pack`).
    pub(super) runs: Vec<packed::Run>,
}

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
/// The (item, group, column block, row split) tasks of one layer: rows are
/// split only when there are fewer than `target` other tasks (late layers
/// at batch 1): a block is then packed once for all its splits, but each
/// split streams it again.
#[derive(Clone, Copy)]
pub(super) struct Tasks {
    groups: usize,
    col_blocks: usize,
    row_panels: usize,
    row_splits: usize,
    panels_per_split: usize,
    base: usize,
}

/// One task: item index (from 0), group, column block and its row panels.
pub(super) struct Task {
    /// The (item, group, column block) this task splits the rows of,
    /// numbered from 0.
    pub(super) unit: usize,
    pub(super) item: usize,
    pub(super) g: usize,
    pub(super) cb: usize,
    pub(super) panels: std::ops::Range<usize>,
}

impl Tasks {
    pub(super) fn new(
        items: usize,
        groups: usize,
        col_blocks: usize,
        row_panels: usize,
        target: usize,
    ) -> Tasks {
        let base = items * groups * col_blocks;
        let row_splits = target.div_ceil(base).clamp(1, row_panels);
        Tasks {
            groups,
            col_blocks,
            row_panels,
            row_splits,
            panels_per_split: row_panels.div_ceil(row_splits),
            base,
        }
    }

    pub(super) fn count(&self) -> usize {
        self.base * self.row_splits
    }

    /// Tasks per (item, group, column block): consecutive task indices.
    pub(super) fn row_splits(&self) -> usize {
        self.row_splits
    }

    /// Run `f` on every non-empty task, in parallel when there are several.
    pub(super) fn run(&self, f: impl Fn(Task) + Sync) {
        let task = |t: usize| {
            if let Some(task) = self.get(t) {
                f(task)
            }
        };
        match self.count() {
            1 => task(0),
            n => parallel_for(n, task),
        }
    }

    /// Task `t`, or `None` when its row split is empty.
    pub(super) fn get(&self, t: usize) -> Option<Task> {
        let rs = t % self.row_splits;
        let rest = t / self.row_splits;
        let cb = rest % self.col_blocks;
        let rest = rest / self.col_blocks;
        let panels =
            rs * self.panels_per_split..((rs + 1) * self.panels_per_split).min(self.row_panels);
        (!panels.is_empty()).then_some(Task {
            unit: t / self.row_splits,
            item: rest / self.groups,
            g: rest % self.groups,
            cb,
            panels,
        })
    }
}

/// A run of tile columns that lands contiguously in item `item`'s output.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub(super) item: usize,
    pub(super) tile_col: usize,
    pub(super) out_col: usize,
    pub(super) len: usize,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The zero-padded input of a stride-1 convolution (on the calling thread).
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Its im2col row offsets (see `Shifted::row_offsets`).
    static ROWS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy)]
pub(crate) struct Ptrs {
    pub(crate) x: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) a: *const f32,
    pub(crate) bias: *const f32,
    pub(crate) res: [*const f32; MAX_RESIDUALS],
}

// SAFETY: the pointers address buffers the caller keeps alive for the call;
// tasks write disjoint output tiles.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

/// Run one conv or dense layer.
///
/// # Safety
/// `ptrs` must hold `4 + d.n_res` pointers to buffers of the sizes the
/// descriptor implies; the output must not overlap the input.
pub unsafe fn run(d: &GemmDesc, ptrs: *const *mut f32) {
    run_with(kernel(), d, ptrs);
}

/// [`run`] with a given micro-kernel (tests drive every panel width).
unsafe fn run_with(kern: MicroKernel, d: &GemmDesc, ptrs: *const *mut f32) {
    let mut res = [std::ptr::null(); MAX_RESIDUALS];
    for (i, r) in res.iter_mut().enumerate().take(d.n_res as usize) {
        *r = *ptrs.add(4 + i);
    }
    let p = Ptrs {
        x: *ptrs,
        out: *ptrs.add(1),
        a: *ptrs.add(2),
        bias: *ptrs.add(3),
        res,
    };
    if let Some(tile) = super::winograd::Tile::of_kind(d.kind) {
        // Every Winograd tile is an even number of outputs wide, so it
        // pools its own outputs.
        return super::winograd::run(kern, tile, d, &p);
    }
    if d.kind == KIND_MVEC {
        return super::mvec::run(d, &p);
    }
    if d.pooled() {
        return run_then_pool(kern, d, &p);
    }
    if !d.is_dense() && packed::pointwise_fits(d) {
        return packed::run_pointwise(kern, d, &p);
    }
    if super::stencil::fits(d) {
        return super::stencil::run(d, &p);
    }
    if d.kind == KIND_IM2COL && Shifted::fits(d) {
        return run_shifted(kern, d, &p);
    }
    if d.kind == KIND_GEMV {
        return super::gemv::run(d, &p);
    }
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

thread_local! {
    /// The full-size result of a pooled convolution the Winograd path does
    /// not compute (on the calling thread).
    static UNPOOLED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A [`STEP_MAXPOOL2`] convolution on a path that cannot pool as it
/// stores: the convolution into scratch, then the pooling layer's kernel.
///
/// # Safety
/// As [`run`].
unsafe fn run_then_pool(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let (oh, ow, out_c, batch) = (d.oh, d.ow, d.out_c, d.batch);
    let item = (out_c * oh * ow) as usize;
    let mut conv = *d;
    conv.n_steps -= 1;
    conv.steps[conv.n_steps as usize] = 0;
    conv.out_bstride = item as u64;
    UNPOOLED.with(|buf| {
        let mut buf = buf.borrow_mut();
        super::grow(&mut buf, batch as usize * item);
        let [r0, r1, r2, r3] = p.res.map(|r| r as *mut f32);
        let ptrs = [
            p.x as *mut f32,
            buf.as_mut_ptr(),
            p.a as *mut f32,
            p.bias as *mut f32,
            r0,
            r1,
            r2,
            r3,
        ];
        run_with(kern, &conv, ptrs.as_ptr());
        let pool = super::pool::PoolDesc {
            kind: super::pool::POOL_MAX,
            batch,
            channels: out_c,
            h: oh,
            w: ow,
            oh: oh / 2,
            ow: ow / 2,
            kh: 2,
            kw: 2,
            sh: 2,
            sw: 2,
            dh: 1,
            dw: 1,
            x_bstride: item as u64,
            out_bstride: d.out_bstride,
            ..Default::default()
        };
        super::pool::run(&pool, buf.as_ptr(), p.out);
    });
}

/// `v` through the epilogue's activation steps (every step but residual
/// adds and the pooling).
pub(crate) fn activate(d: &GemmDesc, mut v: f32) -> f32 {
    for (s, &step) in d.steps[..d.n_steps as usize].iter().enumerate() {
        v = match step {
            STEP_RELU => v.max(0.0),
            STEP_LEAKY if v < 0.0 => v * d.alpha[s],
            STEP_SIGMOID => 1.0 / (1.0 + (-v).exp()),
            STEP_TANH => v.tanh(),
            _ => v,
        };
    }
    v
}

/// Run `f` on this thread's scratch buffers.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
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
            STEP_RELU => v.max(0.0),
            STEP_LEAKY => {
                if v >= 0.0 {
                    v
                } else {
                    v * d.alpha[s]
                }
            }
            STEP_SIGMOID => 1.0 / (1.0 + (-v).exp()),
            STEP_TANH => v.tanh(),
            _ => v,
        };
    }
    *p.out.add(c_offset(d, d.out_bstride, item, oc, col)) = v;
}

/// `offs[kk] = f(kk)` for `kk < n`.
fn fill_offsets(offs: &mut Vec<usize>, n: usize, f: impl Fn(usize) -> usize) {
    offs.clear();
    offs.extend((0..n).map(f));
}

/// Multiply-adds below which [`run_shifted`] pads and multiplies several
/// items in one go (about 40 µs of work on two cores).
const MIN_GROUP_MACS: usize = 8 << 20;
/// Floats of padded input one such group may take.
const PADDED_BUDGET: usize = 256 << 10;

/// The largest stride computed on phase planes (AlexNet's stem has 4);
/// larger strides pack im2col panels.
pub const MAX_PHASE_STRIDE: usize = 4;

/// Geometry of a convolution computed on its zero-padded input split into
/// stride phases.
///
/// The padded input of each channel is split into `sh × sw` phase planes,
/// phase `(a, b)` holding padded rows `a, a + sh, …` and columns `b,
/// b + sw, …` (stride 1: one phase, the padded plane itself). Tap
/// `(ki, kj)` of output `(y, x)` reads padded `(y·sh + r, x·sw + q)` with
/// `r = ki·dh`, `q = kj·dw`, which is phase `(r mod sh, q mod sw)` at
/// `(y + r / sh, x + q / sw)`. So on phase planes of width `wq`, output
/// column `j = y·wq + x` of im2col row `(c, ki, kj)` is at a fixed offset
/// from `j`: every B row is a contiguous slice, the micro-kernel reads B straight from the
/// planes through an offset table and nothing is packed. The price is one
/// copy of the input and computing the `wq − ow` columns between output
/// rows, which are never stored (3% of the work at 56×56, 22% at 7×7).
/// Only phases some tap reads are stored (a strided 1×1 conv keeps one).
#[derive(Clone, Copy, Debug)]
pub(super) struct Shifted {
    pub(super) hq: usize,
    pub(super) wq: usize,
    /// Columns on the phase grid: `(oh − 1)·wq + ow`.
    cols: usize,
    /// Stored phase planes per channel; which phases some tap reads, and
    /// the slot each of those is stored in.
    phases: usize,
    used: [[bool; MAX_PHASE_STRIDE]; MAX_PHASE_STRIDE],
    slot: [[u8; MAX_PHASE_STRIDE]; MAX_PHASE_STRIDE],
}

impl Shifted {
    /// Whether `d` can be computed on phase planes.
    pub(super) fn fits(d: &GemmDesc) -> bool {
        (1..=MAX_PHASE_STRIDE).contains(&(d.sh as usize))
            && (1..=MAX_PHASE_STRIDE).contains(&(d.sw as usize))
    }

    pub(super) fn new(d: &GemmDesc) -> Shifted {
        let (h, w, oh, ow) = (d.h as usize, d.w as usize, d.oh as usize, d.ow as usize);
        let (sh, sw) = (d.sh as usize, d.sw as usize);
        let span_h = (d.kh as usize - 1) * d.dh as usize;
        let span_w = (d.kw as usize - 1) * d.dw as usize;
        let hq = (h + d.pt as usize).div_ceil(sh).max(oh + span_h / sh);
        let wq = (w + d.pl as usize).div_ceil(sw).max(ow + span_w / sw);
        let mut used = [[false; MAX_PHASE_STRIDE]; MAX_PHASE_STRIDE];
        for ki in 0..d.kh as usize {
            for kj in 0..d.kw as usize {
                used[ki * d.dh as usize % sh][kj * d.dw as usize % sw] = true;
            }
        }
        let mut slot = [[0u8; MAX_PHASE_STRIDE]; MAX_PHASE_STRIDE];
        let mut phases = 0;
        for a in 0..sh {
            for b in 0..sw {
                if used[a][b] {
                    slot[a][b] = phases as u8;
                    phases += 1;
                }
            }
        }
        Shifted {
            hq,
            wq,
            cols: (oh - 1) * wq + ow,
            phases,
            used,
            slot,
        }
    }

    /// Columns on the phase grid.
    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// Floats of one channel's phase planes.
    fn channel(&self) -> usize {
        self.phases * self.hq * self.wq
    }

    /// Floats of the phase planes of one item, plus slack for the ragged
    /// last panel's reads past the final output column.
    pub(super) fn len(&self, d: &GemmDesc) -> usize {
        d.in_c as usize * self.channel() + 64
    }

    /// The offset of every im2col row (channel-major, then taps) of one
    /// group from the start of the group's planes, into `out`. Computed
    /// once per call on the calling thread: per task, the divisions cost
    /// as much as a small layer's multiply.
    pub(super) fn row_offsets(&self, d: &GemmDesc, out: &mut Vec<usize>) {
        let (sh, sw) = (d.sh as usize, d.sw as usize);
        out.clear();
        for c in 0..(d.in_c / d.groups) as usize {
            for ki in 0..d.kh as usize {
                let r = ki * d.dh as usize;
                for kj in 0..d.kw as usize {
                    let q = kj * d.dw as usize;
                    let slot = self.slot[r % sh][q % sw] as usize;
                    let plane = (c * self.phases + slot) * self.hq * self.wq;
                    out.push(plane + (r / sh) * self.wq + q / sw);
                }
            }
        }
    }
}

/// [`every`], on AVX-512 when `wide` (S = 2 or 4).
#[inline(always)]
pub(super) fn every_fast<const S: usize>(to: &mut [f32], from: &[f32], wide: bool) {
    #[cfg(target_arch = "x86_64")]
    if wide && !to.is_empty() && from.len() > (to.len() - 1) * S {
        // SAFETY: AVX-512 is present (`wide`), and `from` holds the
        // `(len − 1)·S + 1` floats read.
        return unsafe { every_avx512::<S>(to, from) };
    }
    every::<S>(to, from)
}

/// [`every`] for `S` = 2 or 4, 16 outputs at a time: `S` masked loads
/// and one permute (S = 2) or three (S = 4), one masked store. Element
/// by element this copy was 21% of a 3×3/2 256→256 layer's samples at
/// 28×28 → 14×14, batch 1.
///
/// # Safety
/// AVX-512F must be present; `from` must hold `(to.len() − 1)·S + 1`
/// floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn every_avx512<const S: usize>(to: &mut [f32], from: &[f32]) {
    use std::arch::x86_64::*;
    let n = to.len();
    let need = (n - 1) * S + 1;
    // Lanes `0 .. count` of a 16-float register.
    let first = |count: usize| ((1u32 << count.min(16)) - 1) as __mmask16;
    let step = S as i32;
    let pick = _mm512_setr_epi32(
        0,
        step,
        2 * step,
        3 * step,
        4 * step,
        5 * step,
        6 * step,
        7 * step,
        8 * step,
        9 * step,
        10 * step,
        11 * step,
        12 * step,
        13 * step,
        14 * step,
        15 * step,
    );
    let src = from.as_ptr();
    for i in (0..n).step_by(16) {
        let base = i * S;
        let load = |k: usize| {
            let at = base + 16 * k;
            _mm512_maskz_loadu_ps(first(need.saturating_sub(at)), src.wrapping_add(at))
        };
        let out = if S == 2 {
            _mm512_permutex2var_ps(load(0), pick, load(1))
        } else {
            // Lanes 0–7 of each: every fourth of 32 floats.
            let lo = _mm512_permutex2var_ps(load(0), pick, load(1));
            let hi = _mm512_permutex2var_ps(load(2), pick, load(3));
            _mm512_shuffle_f32x4::<0b01_00_01_00>(lo, hi)
        };
        _mm512_mask_storeu_ps(to.as_mut_ptr().add(i), first(n - i), out);
    }
}

/// `to[i] = from[i·S]`, with `S` a constant and one bounds check up front
/// rather than a run-time stride and a check per element: the phase-plane
/// copy had been 9% of a 3×3/2 layer's `perf` samples (128 channels,
/// 56×56 → 28×28).
#[inline(always)]
pub(super) fn every<const S: usize>(to: &mut [f32], from: &[f32]) {
    // By chunks: indexing `from[i·S]` kept a bounds check per element.
    let from = &from[..(to.len() - 1) * S + 1];
    for (v, chunk) in to.iter_mut().zip(from.chunks(S)) {
        *v = chunk[0];
    }
}

/// Copy item `item` of the input into zero-padded phase planes.
pub(super) unsafe fn pad_input(
    d: &GemmDesc,
    geo: Shifted,
    x: *const f32,
    item: usize,
    out: &mut [f32],
) {
    let (h, w) = (d.h as usize, d.w as usize);
    let (pt, pl) = (d.pt as usize, d.pl as usize);
    let (sh, sw) = (d.sh as usize, d.sw as usize);
    let (hq, wq) = (geo.hq, geo.wq);
    let xi = Shared::new(x.add(item * d.x_bstride as usize));
    let wide = super::has_avx512();
    // Phase column x' holds input column x'·sw + b − pl: the columns
    // `x_lo .. x_hi` of phase `b`'s rows that come from the input.
    let inside: [(usize, usize); MAX_PHASE_STRIDE] = std::array::from_fn(|b| {
        (
            pl.saturating_sub(b).div_ceil(sw),
            (w + pl).saturating_sub(b).div_ceil(sw).min(wq),
        )
    });
    let fill_channel = |(c, dst): (usize, &mut [f32])| {
        // SAFETY: the caller's contract covers the input tensor.
        let src = unsafe { std::slice::from_raw_parts(xi.get().add(c * h * w), h * w) };
        // Input rows in order, each copied into every phase that uses it
        // while it is in L1: phase by phase, a strided layer read each
        // plane four times, half its rows per pass (the copy was 14% of a
        // 3×3/2 layer's samples at batch 8).
        for yq in 0..hq {
            for a in 0..sh {
                let y = yq * sh + a;
                if y >= pt && y - pt < h {
                    // The next channel's row, read by this task next
                    // (channels are consecutive tasks).
                    packed::prefetch_row(src.as_ptr().wrapping_add(h * w + (y - pt) * w), w);
                }
                for b in 0..sw {
                    if !geo.used[a][b] {
                        continue;
                    }
                    let plane = &mut dst[geo.slot[a][b] as usize * hq * wq..][..hq * wq];
                    let row = &mut plane[yq * wq..][..wq];
                    let (x_lo, x_hi) = inside[b];
                    if y < pt || y - pt >= h || x_lo >= x_hi {
                        row.fill(0.0);
                        continue;
                    }
                    let line = &src[(y - pt) * w..][..w];
                    row[..x_lo].fill(0.0);
                    let from = &line[x_lo * sw + b - pl..];
                    let to = &mut row[x_lo..x_hi];
                    match sw {
                        1 => to.copy_from_slice(&from[..to.len()]),
                        2 => every_fast::<2>(to, from, wide),
                        3 => every::<3>(to, from),
                        _ => every_fast::<4>(to, from, wide),
                    }
                    row[x_hi..].fill(0.0);
                }
            }
        }
    };
    let (channels, per) = (d.in_c as usize, geo.channel());
    let body = Shared(out.as_mut_ptr());
    let one = |c: usize| {
        // SAFETY: channel `c`'s planes are written by this task only.
        fill_channel((c, unsafe {
            std::slice::from_raw_parts_mut(body.get().add(c * per), per)
        }))
    };
    // Parallel from a few thousand floats: the copy is short rows and
    // padding fills, slow for its size, and on one thread it left the
    // other waiting (deep_convnet's 64-channel 7×7 layer at batch 1, 5184
    // padded floats: 0.051 → 0.035 ms parallel, alternated medians of 10).
    if channels * per > 1 << 11 {
        parallel_for(channels, one);
    } else {
        (0..channels).for_each(one);
    }
    out[channels * per..].fill(0.0);
}

/// Copy items `items` of the input into consecutive slots of
/// `geo.len(d)` floats of `buf`, in parallel over the items (or, for one,
/// over its channels inside [`pad_input`]).
///
/// # Safety
/// As [`pad_input`]; `buf` holds at least `items.len()` slots.
pub(super) unsafe fn pad_items(
    d: &GemmDesc,
    geo: Shifted,
    x: *const f32,
    items: std::ops::Range<usize>,
    buf: &mut [f32],
) {
    let item_len = geo.len(d);
    let to = Shared(buf[..items.len() * item_len].as_mut_ptr());
    let x = Shared::new(x);
    parallel_for(items.len(), |i| {
        // SAFETY: item `items.start + i` writes its own slot of the
        // buffer; the caller's contract covers the input.
        unsafe {
            let slot = std::slice::from_raw_parts_mut(to.get().add(i * item_len), item_len);
            pad_input(d, geo, x.get(), items.start + i, slot);
        }
    });
}

/// A convolution with stride ≤ [`MAX_PHASE_STRIDE`]: copy each item once
/// into padded phase planes (see `Shifted`), whose slices are B's rows;
/// the multiply packs blocks of them ([`packed::run`]).
///
/// Small planes (fewer columns than a block holds) are padded for every
/// item at once so blocks can span items; larger ones one item at a time,
/// which keeps the buffer to one item's planes (VGG's 224×224×64 input is
/// 13 MB padded).
unsafe fn run_shifted(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
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
/// runs no hardware prefetcher follows (ResNet-50's 256→1024 expand with
/// its residual at batch 8, one thread: 16.7 → 14.0 ms median of seven
/// alternated runs). Tiles without a residual gained nothing from it, and
/// into L1 rather than L2 the lines evicted the kernel's panels (ResNet-50
/// at batch 1 ≈ 10% slower); into L2 it is level there.
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
    if std::arch::is_x86_feature_detected!("avx2") {
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
                        STEP_SIGMOID => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
                        STEP_TANH => v.iter_mut().for_each(|x| *x = x.tanh()),
                        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stride-2 and stride-4 copy length up to three registers and a
    /// ragged tail, on AVX-512 and element by element, against the
    /// definition; the source exactly as long as the copy reads.
    #[test]
    fn strided_copies_match_the_definition() {
        for n in 1..50 {
            for (s, fast) in [(2, false), (2, true), (4, false), (4, true)] {
                let from: Vec<f32> = (0..(n - 1) * s + 1).map(|i| i as f32 + 0.5).collect();
                let mut to = vec![f32::NAN; n];
                match s {
                    2 => every_fast::<2>(&mut to, &from, fast && crate::kernels::has_avx512()),
                    _ => every_fast::<4>(&mut to, &from, fast && crate::kernels::has_avx512()),
                }
                let want: Vec<f32> = (0..n).map(|i| from[i * s]).collect();
                assert_eq!(to, want, "stride {s}, {n} floats");
            }
        }
    }
    use crate::kernels::testing::value;

    /// Every (item, group, column block, row panel) is in exactly one task,
    /// rows are split only up to the target, and empty splits are skipped.
    #[test]
    fn tasks_cover_every_tile_once() {
        for (items, groups, col_blocks, row_panels, target) in [
            (1, 1, 1, 86, 4),
            (8, 1, 1, 171, 4),
            (1, 2, 3, 5, 16),
            (2, 1, 1, 3, 7),
            (1, 1, 1, 1, 2),
        ] {
            let split = Tasks::new(items, groups, col_blocks, row_panels, target);
            let mut seen = vec![0; items * groups * col_blocks * row_panels];
            let mut nonempty = 0;
            for t in 0..split.count() {
                let Some(task) = split.get(t) else { continue };
                nonempty += 1;
                for panel in task.panels {
                    let at =
                        ((task.item * groups + task.g) * col_blocks + task.cb) * row_panels + panel;
                    seen[at] += 1;
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{items} {groups} {col_blocks} {row_panels} {target}"
            );
            let base = items * groups * col_blocks;
            assert!(nonempty < target + base);
            assert_eq!(split.count() > base, base < target && row_panels > 1);
        }
    }

    /// A scalar micro-kernel `NR` columns wide, to exercise the driver with
    /// every panel width the SIMD kernels use (12 for AVX2, 32 for AVX-512)
    /// on any machine.
    unsafe fn scalar<const NR: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
    ) {
        for m in 0..MR {
            for n in 0..NR {
                let mut acc = 0.0;
                for k in 0..kc {
                    acc += *a.add(k * MR + m) * *b.add(*offs.add(k) + n);
                }
                *tile.add(m * NR + n) = acc;
            }
        }
    }

    /// The epilogues `conv_matches` cycles through: (bias, steps).
    const EPILOGUES: [(bool, &[u32]); 4] = [
        (true, &[STEP_RELU]),
        (false, &[STEP_ADD, STEP_RELU]),
        (true, &[STEP_ADD]),
        (false, &[]),
    ];

    /// A conv through the driver against plain loops, for one kernel,
    /// with epilogue `EPILOGUES[epilogue]` (a residual add reads a tensor
    /// of the output's shape).
    fn conv_matches(
        kern: MicroKernel,
        epilogue: usize,
        kind: u32,
        (c, h, w, oc, k, stride, pad, groups): (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        ),
    ) {
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let batch = 3;
        let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
        let kg = c / groups * k * k;
        let wts: Vec<f32> = (0..oc * kg).map(|i| value(i + 5)).collect();
        let (has_bias, steps) = EPILOGUES[epilogue];
        let bias: Vec<f32> = (0..oc)
            .map(|i| if has_bias { value(i + 9) } else { 0.0 })
            .collect();
        let res: Vec<f32> = (0..batch * oc * oh * ow).map(|i| value(i + 3)).collect();
        let add = steps.first() == Some(&STEP_ADD);
        let mut step_codes = [0; 8];
        step_codes[..steps.len()].copy_from_slice(steps);
        let d = GemmDesc {
            kind,
            batch: batch as u32,
            groups: groups as u32,
            in_c: c as u32,
            h: h as u32,
            w: w as u32,
            out_c: oc as u32,
            oh: oh as u32,
            ow: ow as u32,
            kh: k as u32,
            kw: k as u32,
            sh: stride as u32,
            sw: stride as u32,
            pt: pad as u32,
            pl: pad as u32,
            dh: 1,
            dw: 1,
            has_bias: has_bias as u32,
            n_steps: steps.len() as u32,
            steps: step_codes,
            n_res: add as u32,
            x_bstride: (c * h * w) as u64,
            out_bstride: (oc * oh * ow) as u64,
            res_bstride: [(oc * oh * ow) as u64; MAX_RESIDUALS],
            ..GemmDesc::default()
        };
        let m = oc / groups;
        let packed = pack_weights(groups, m, kg, |g, r, kk| wts[(g * m + r) * kg + kk]);
        let mut out = vec![f32::NAN; batch * oc * oh * ow];
        let ptrs = [
            x.as_ptr() as *mut f32,
            out.as_mut_ptr(),
            packed.as_ptr() as *mut f32,
            bias.as_ptr() as *mut f32,
            res.as_ptr() as *mut f32,
        ];
        unsafe { run_with(kern, &d, ptrs.as_ptr()) };
        for n in 0..batch {
            for o in 0..oc {
                let g = o / m;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = bias[o];
                        for icg in 0..c / groups {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let (iy, ix) = (
                                        (y * stride + ki) as isize - pad as isize,
                                        (xo * stride + kj) as isize - pad as isize,
                                    );
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        let ic = g * (c / groups) + icg;
                                        acc += x
                                            [((n * c + ic) * h + iy as usize) * w + ix as usize]
                                            * wts[(o * (c / groups) + icg) * k * k + ki * k + kj];
                                    }
                                }
                            }
                        }
                        let at = ((n * oc + o) * oh + y) * ow + xo;
                        if add {
                            acc += res[at];
                        }
                        let got = out[at];
                        let want = if steps.last() == Some(&STEP_RELU) {
                            acc.max(0.0)
                        } else {
                            acc
                        };
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{}: ({n},{o},{y},{xo}) {got} vs {want}",
                            kern.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn driver_handles_every_panel_width() {
        let mut kernels = vec![
            MicroKernel {
                nr: 8,
                name: "scalar 8",
                run: scalar::<8>,
                narrow: Some(scalar::<4>),
                thin: None,
                half_thin: None,
                fused: None,
            },
            MicroKernel {
                nr: 12,
                name: "scalar 12",
                run: scalar::<12>,
                narrow: Some(scalar::<6>),
                thin: Some([scalar::<1>, scalar::<2>, scalar::<3>, scalar::<4>]),
                half_thin: None,
                fused: None,
            },
            MicroKernel {
                nr: 32,
                name: "scalar 32",
                run: scalar::<32>,
                narrow: Some(scalar::<16>),
                thin: None,
                half_thin: None,
                fused: None,
            },
        ];
        kernels.extend(micro::available());
        let cases = [
            // 3×3 pad 1 with a ragged last panel; strided on phase planes
            // (grouped 3×3/2, a 7×7/2 stem, 1×1/2 keeping one phase,
            // 11×11/4, 3×3/3); stride 5 through packed im2col; grouped
            // with K beyond one KC block; 1×1 read in place.
            (KIND_IM2COL, (3, 9, 7, 10, 3, 1, 1, 1)),
            (KIND_IM2COL, (4, 11, 11, 6, 3, 2, 1, 2)),
            (KIND_IM2COL, (3, 17, 15, 7, 7, 2, 3, 1)),
            (KIND_IM2COL, (5, 9, 10, 4, 1, 2, 0, 1)),
            (KIND_IM2COL, (3, 27, 25, 5, 11, 4, 2, 1)),
            (KIND_IM2COL, (2, 10, 11, 3, 3, 3, 0, 1)),
            (KIND_IM2COL, (2, 16, 17, 3, 5, 5, 1, 1)),
            (KIND_IM2COL, (64, 6, 6, 9, 3, 1, 1, 1)),
            (KIND_POINTWISE, (40, 13, 11, 17, 1, 1, 0, 1)),
            // 1×1 on packed blocks: several column blocks; K long enough
            // for blocks narrower than the plane; grouped; strided with
            // odd sizes.
            (KIND_POINTWISE, (8, 21, 19, 13, 1, 1, 0, 1)),
            (KIND_POINTWISE, (1500, 7, 7, 7, 1, 1, 0, 1)),
            (KIND_POINTWISE, (12, 9, 8, 10, 1, 1, 0, 2)),
            (KIND_IM2COL, (6, 15, 13, 9, 1, 2, 0, 1)),
            (KIND_IM2COL, (6, 15, 13, 9, 1, 3, 0, 3)),
            // 1×1 at stride 5: columns gathered one by one, not in runs.
            (KIND_IM2COL, (4, 16, 17, 6, 1, 5, 0, 1)),
            // At least 128 rows: B copied into packed blocks (the cases
            // above read it in place) — 3×3 stride 1 and 2, K split into
            // two blocks, 1×1 contiguous and with K split.
            (KIND_IM2COL, (5, 9, 7, 130, 3, 1, 1, 1)),
            (KIND_IM2COL, (6, 11, 11, 134, 3, 2, 1, 1)),
            (KIND_IM2COL, (140, 6, 6, 128, 3, 1, 1, 1)),
            (KIND_POINTWISE, (20, 13, 11, 129, 1, 1, 0, 1)),
            (KIND_POINTWISE, (1300, 5, 5, 128, 1, 1, 0, 1)),
            (KIND_POINTWISE, (20, 13, 11, 129, 1, 2, 0, 1)),
        ];
        // Each kernel runs each case with a different epilogue.
        for (j, kern) in kernels.into_iter().enumerate() {
            for (i, &(kind, dims)) in cases.iter().enumerate() {
                conv_matches(kern, (i + j) % EPILOGUES.len(), kind, dims);
            }
        }
    }

    /// Dense layers through the GEMM and GEMV paths,
    /// with a bias, a residual add and a ReLU, against plain loops.
    #[test]
    fn dense_paths_match_plain_loops() {
        let (m, k) = (37, 75);
        for batch in [1usize, 3, 4] {
            let w: Vec<f32> = (0..m * k).map(|i| value(i + 1)).collect();
            let x: Vec<f32> = (0..batch * k).map(|i| value(i + 2)).collect();
            let bias: Vec<f32> = (0..m).map(|i| value(i + 3)).collect();
            let res: Vec<f32> = (0..batch * m).map(|i| value(i + 4)).collect();
            for kind in [KIND_DENSE, KIND_GEMV] {
                let packed = if kind == KIND_GEMV {
                    super::super::gemv::pack_weights(m, k, |r, kk| w[r * k + kk])
                } else {
                    pack_weights(1, m, k, |_, r, kk| w[r * k + kk])
                };
                let d = GemmDesc {
                    kind,
                    batch: batch as u32,
                    groups: 1,
                    in_c: k as u32,
                    h: 1,
                    w: 1,
                    out_c: m as u32,
                    oh: 1,
                    ow: 1,
                    kh: 1,
                    kw: 1,
                    sh: 1,
                    sw: 1,
                    dh: 1,
                    dw: 1,
                    has_bias: 1,
                    n_res: 1,
                    n_steps: 2,
                    steps: [STEP_ADD, STEP_RELU, 0, 0, 0, 0, 0, 0],
                    x_bstride: k as u64,
                    out_bstride: m as u64,
                    res_bstride: [m as u64, 0, 0, 0],
                    ..GemmDesc::default()
                };
                let mut out = vec![f32::NAN; batch * m];
                let ptrs = [
                    x.as_ptr() as *mut f32,
                    out.as_mut_ptr(),
                    packed.as_ptr() as *mut f32,
                    bias.as_ptr() as *mut f32,
                    res.as_ptr() as *mut f32,
                ];
                unsafe { run(&d, ptrs.as_ptr()) };
                for n in 0..batch {
                    for o in 0..m {
                        let dot: f32 = (0..k).map(|kk| w[o * k + kk] * x[n * k + kk]).sum();
                        let want = (dot + bias[o] + res[n * m + o]).max(0.0);
                        let got = out[n * m + o];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "kind {kind} batch {batch}: ({n},{o}) {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
