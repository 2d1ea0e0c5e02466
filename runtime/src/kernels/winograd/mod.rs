//! Winograd F(4×4, 3×3) and F(2×2, 3×3) for stride-1, undilated,
//! ungrouped 3×3 convolutions, and F(2×2, 5×5) for such 5×5 ones.
//!
//! Contract: the same output as the direct convolution up to float
//! rounding (a few 1e-6 relative at these channel counts; the unit tests
//! compare with the direct path and the differential tests with the
//! reference interpreter), with 36 multiplies per 4×4 output tile and input
//! channel instead of 144 — 4× fewer — or 16 per 2×2 tile instead of 36
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016, whose Bᵀ, G and Aᵀ these are), or 36 per 2×2 tile of a 5×5
//! kernel instead of 100. F(2×2, 5×5) interpolates at the same six points
//! as F(4×4, 3×3) (0, ±1, ±2, ∞), so it shares its Bᵀ and input transform;
//! only G (6×5) and Aᵀ (2×6) differ. [`choose`] picks the variant.
//!
//! The tiles of the whole batch are numbered in raster order and taken a
//! micro-kernel panel (`nr` tiles; half of one, on the narrow kernel, when
//! that holds them all — see `block_kernel`) at a time — a *block*. Per
//! block:
//! 1. every input channel's 6×6 (4×4) patches are transformed, `V = Bᵀ d
//!    B`, into `V[ξ][c][tile]` — 36 (16) packed B panels, so the GEMMs read
//!    them with a plain `k·nr` offset table;
//! 2. `M[ξ] = U[ξ] · V[ξ]` on the micro-kernel, a few row panels of
//!    output channels at a time, each panel for every ξ in turn (`U = G g
//!    Gᵀ`, transformed and packed panel-major at compile time by
//!    [`pack_weights`]);
//! 3. each output channel's tile values are transformed back, `Y = Aᵀ M A`,
//!    and stored through the bias and epilogue.
//!
//! With a few blocks per thread (or one, when the transformed weights fit
//! in L2), each block is one task through all three steps; with fewer
//! blocks than threads (one block at batch 1 on 14×14 and 7×7), each
//! block is several such tasks, each transforming all of it and
//! multiplying its own share of the output channels. In between, steps
//! run as two parallel loops over a batch of blocks — transforms over
//! (block, channel chunk), then GEMMs plus output transforms over (block,
//! output-channel chunk). The transforms are written over lanes of
//! eight tiles, one AVX2 vector each (by hand on registers, with 8×8
//! transposes to gather patch rows; F(2×2, 3×3)'s had gone element by
//! element, and deep_convnet's 8×8 layers ran 14–17% slower). With
//! AVX-512 the patch rows are read, and F(4×4)'s output rows written, as
//! whole runs along each output row instead (see [`avx512`]): eight
//! 64-channel 3×3 layers at 56×56 0.918 of the AVX2 transforms' time,
//! ResNet-18 at batch 1 0.931, GoogLeNet 0.976 (alternated `netc bench`,
//! 2 threads, Zen 5).

use super::desc::{self, GemmDesc, Ptrs, STEP_ADD, STEP_RELU};
use super::micro;
use super::micro::{KernelFn, MicroKernel, MR};
use super::store;
use super::Shared;
use crate::threads::{current_threads, parallel_for};
use std::cell::RefCell;
use std::ops::Range;

/// Transformed-domain positions of a 6×6 input tile (the size of every
/// per-tile array; F(2×2, 3×3) uses the first 16).
const XI: usize = 36;

/// Which variant: F(4×4, 3×3), or F(2×2, 3×3) for layers with too few
/// 4×4 tiles (7×7 outputs at batch 1: 4 tiles would fill a quarter of a
/// micro-kernel panel, 16 tiles of 2×2 fill one), or F(2×2, 5×5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F4,
    F2,
    F2K5,
}

impl Tile {
    /// Output tile side.
    pub const fn m(self) -> usize {
        match self {
            Tile::F4 => 4,
            Tile::F2 | Tile::F2K5 => 2,
        }
    }

    /// Kernel side.
    pub const fn r(self) -> usize {
        match self {
            Tile::F4 | Tile::F2 => 3,
            Tile::F2K5 => 5,
        }
    }

    /// Input tile side: `m + r − 1`.
    pub const fn alpha(self) -> usize {
        self.m() + self.r() - 1
    }

    /// Transformed-domain positions, `alpha²`.
    pub const fn xi(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// The descriptor kind ([`GemmDesc::kind`]) that runs this variant.
    pub const fn kind(self) -> u32 {
        match self {
            Tile::F4 => desc::KIND_WINOGRAD,
            Tile::F2 => desc::KIND_WINOGRAD_F2,
            Tile::F2K5 => desc::KIND_WINOGRAD_F2K5,
        }
    }

    /// The variant a descriptor kind runs, if it is a Winograd one.
    pub fn of_kind(kind: u32) -> Option<Tile> {
        [Tile::F4, Tile::F2, Tile::F2K5]
            .into_iter()
            .find(|t| t.kind() == kind)
    }
}
/// Tiles per transform vector: one AVX2 register of floats.
const LANES: usize = 8;
/// Row panels multiplied before their output transform: keeps the GEMM
/// results of one chunk (`36 · 8·MR · nr` floats, 108 KiB at nr = 16) in L2.
const PANELS_PER_CHUNK: usize = 8;
/// Bytes of transformed input kept per batch of blocks.
const V_BUDGET: usize = 4 << 20;
/// Blocks per thread from which every block is one task through all three
/// steps (see `run_with`; docs/performance.md, "Winograd fused blocks").
/// Fewer blocks keep the two loops, which split a block's channels across
/// threads.
const FUSED_BLOCKS_PER_THREAD: usize = 4;
/// Transformed weights (bytes) up to which a block per thread is enough
/// to run blocks whole: every task then reads all of them, which is cheap
/// only while they stay in L2 (see docs/performance.md, "Winograd fused
/// blocks").
const FUSED_SMALL_WEIGHTS: usize = 256 << 10;

type Lanes = [f32; LANES];

/// Floats from one ξ plane of `rows × nr` to the next. The transforms
/// touch all 36 planes per tile; at a power-of-two stride (64 channels ×
/// 16 tiles = 4 KiB) every one of them maps to the same L1 set, so one
/// cache line of padding spreads them (ResNet-18's 64-channel layers:
/// input transform ≈ 2× faster).
fn plane_stride(rows: usize, nr: usize) -> usize {
    rows * nr + 16
}

/// The variant a convolution takes, if any.
///
/// The transformed weights are 4× the direct ones for F(4×4) (36 vs 9 per
/// channel pair) and 1.8× for F(2×2), read once per block, and a block is
/// a whole micro-kernel panel of tiles: F(4×4) from one panel of tiles per
/// batch, else F(2×2) from one panel of its tiles, else the direct
/// convolution (the gains: docs/performance.md, "Winograd variants"). A
/// 5×5 kernel takes F(2×2, 5×5) from one panel of tiles: its weights are
/// 1.44× the direct ones, and it does 2.8× fewer multiplies.
pub fn choose(d: &GemmDesc) -> Option<Tile> {
    let plain = d.sh == 1
        && d.sw == 1
        && d.dh == 1
        && d.dw == 1
        && d.groups == 1
        && d.in_c >= 16
        && d.out_c >= 16;
    let tiles = |t: Tile| d.batch as usize * tiles_per_item(d, t.m());
    let candidates: &[Tile] = match (d.kh, d.kw) {
        _ if !plain => &[],
        (3, 3) => &[Tile::F4, Tile::F2],
        (5, 5) => &[Tile::F2K5],
        _ => &[],
    };
    candidates.iter().copied().find(|&t| tiles(t) >= 16)
}

fn tiles_per_item(d: &GemmDesc, m: usize) -> usize {
    d.oh.div_ceil(m as u32) as usize * d.ow.div_ceil(m as u32) as usize
}

/// `G x` for the `r` values of one kernel column (or row): the
/// polynomial with coefficients `x` evaluated at each interpolation point,
/// scaled as Lavin & Gray's G scales it, and its leading coefficient for
/// the point at infinity. F(2×2, 3×3) interpolates at 0, ±1 and ∞; the
/// others at 0, ±1, ±2 and ∞.
fn g_times(tile: Tile, x: &[f64]) -> [f64; 6] {
    let at = |p: f64| x.iter().rev().fold(0.0, |acc, &v| acc * p + v);
    let last = x[x.len() - 1];
    match tile {
        Tile::F2 => [at(0.0), at(1.0) / 2.0, at(-1.0) / 2.0, last, 0.0, 0.0],
        Tile::F4 | Tile::F2K5 => [
            at(0.0) / 4.0,
            -at(1.0) / 6.0,
            -at(-1.0) / 6.0,
            at(2.0) / 24.0,
            at(-2.0) / 24.0,
            last,
        ],
    }
}

/// `U[ξ] = G g Gᵀ` for every (out, in) pair, in the micro-kernel's panel
/// layout, panel-major: a panel of `MR` output channels holds its
/// `tile.xi()` weight panels (`in × MR` each) one after the other, so a
/// task multiplying its row panels for every ξ streams one contiguous run
/// (ξ-major, 36 jumps of a whole matrix per panel, the Winograd layers ran
/// 5–20% slower: ResNet-50 at batch 1 and 8, VGG-16 at batch 1). `w` holds
/// the kernels as PyTorch lays them out, `[out, in, r, r]`. Computed in
/// f64.
pub fn pack_weights(tile: Tile, out_c: usize, in_c: usize, w: &[f32]) -> Vec<f32> {
    let (a, r) = (tile.alpha(), tile.r());
    debug_assert_eq!(w.len(), out_c * in_c * r * r);
    let mut u = vec![[0.0f32; XI]; out_c * in_c];
    for (kernel, t) in w.chunks_exact(r * r).zip(u.iter_mut()) {
        // G g: a×r, column by column.
        let mut gg = [[0.0f64; 5]; 6];
        for j in 0..r {
            let column: [f64; 5] = std::array::from_fn(|i| {
                if i < r {
                    f64::from(kernel[i * r + j])
                } else {
                    0.0
                }
            });
            for (i, v) in g_times(tile, &column[..r]).into_iter().enumerate() {
                gg[i][j] = v;
            }
        }
        // (G g) Gᵀ: each row through G again.
        for (i, row) in gg.iter().take(a).enumerate() {
            for (j, v) in g_times(tile, &row[..r]).into_iter().take(a).enumerate() {
                t[a * i + j] = v as f32;
            }
        }
    }
    let per_xi: Vec<Vec<f32>> = (0..tile.xi())
        .map(|xi| micro::pack_weights(1, out_c, in_c, |_, o, c| u[o * in_c + c][xi]))
        .collect();
    let panel = MR * in_c;
    (0..out_c.div_ceil(MR))
        .flat_map(|p| {
            per_xi
                .iter()
                .flat_map(move |w| &w[p * panel..(p + 1) * panel])
        })
        .copied()
        .collect()
}

/// Floats of [`pack_weights`]' output.
pub fn packed_len(tile: Tile, out_c: usize, in_c: usize) -> usize {
    tile.xi() * micro::packed_len(1, out_c, in_c)
}

/// `Bᵀ d` for `A` lane vectors (one column of patches per lane; the
/// rest of the six are ignored): `A` = 4 points for F(2×2, 3×3), else 6.
#[inline(always)]
fn bt<const A: usize>(d: [&Lanes; 6]) -> [Lanes; 6] {
    let mut v = [[0.0f32; LANES]; 6];
    if A == 4 {
        for l in 0..LANES {
            let [d0, d1, d2, d3, _, _] = d.map(|x| x[l]);
            v[0][l] = d0 - d2;
            v[1][l] = d1 + d2;
            v[2][l] = d2 - d1;
            v[3][l] = d1 - d3;
        }
        return v;
    }
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = d.map(|x| x[l]);
        let (a, b) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
        let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
        v[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        v[1][l] = a + b;
        v[2][l] = a - b;
        v[3][l] = c + e;
        v[4][l] = c - e;
        v[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    v
}

/// `Aᵀ m` for `A` lane vectors, `M` results.
#[inline(always)]
fn at<const M: usize, const A: usize>(m: [&Lanes; 6]) -> [Lanes; 4] {
    let mut y = [[0.0f32; LANES]; 4];
    if A == 4 {
        for l in 0..LANES {
            let [m0, m1, m2, m3, _, _] = m.map(|x| x[l]);
            y[0][l] = m0 + m1 + m2;
            y[1][l] = m1 - m2 - m3;
        }
        return y;
    }
    if M == 2 {
        // F(2×2, 5×5): the rows of F(4×4, 3×3)'s Aᵀ for powers 0 and 1,
        // the point at infinity now feeding the highest, power 1.
        for l in 0..LANES {
            let [m0, m1, m2, m3, m4, m5] = m.map(|x| x[l]);
            y[0][l] = m0 + m1 + m2 + m3 + m4;
            y[1][l] = m1 - m2 + 2.0 * (m3 - m4) + m5;
        }
        return y;
    }
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = m.map(|x| x[l]);
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        y[0][l] = m0 + s12 + s34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = s12 + 4.0 * s34;
        y[3][l] = d12 + 8.0 * d34 + m5;
    }
    y
}

/// `Bᵀ d B` of `A²` lane vectors `d[A·row + col]`, in the same layout.
#[inline(always)]
fn input_transform<const A: usize>(d: &[Lanes; XI]) -> [Lanes; XI] {
    let a = A;
    let mut t = [[0.0f32; LANES]; XI];
    for col in 0..a {
        let v = bt::<A>(std::array::from_fn(|row| &d[a * row.min(a - 1) + col]));
        for (row, x) in v.into_iter().take(a).enumerate() {
            t[a * row + col] = x;
        }
    }
    let mut out = [[0.0f32; LANES]; XI];
    for row in 0..a {
        let v = bt::<A>(std::array::from_fn(|col| &t[a * row + col.min(a - 1)]));
        out[a * row..a * row + a].copy_from_slice(&v[..a]);
    }
    out
}

/// `Aᵀ M A` of `A²` lane vectors, as `M²` lane vectors `y[M·row + col]`.
#[inline(always)]
fn output_transform<const M: usize, const A: usize>(m: &[Lanes; XI]) -> [Lanes; 16] {
    let a = A;
    let mut t = [[0.0f32; LANES]; 24];
    for col in 0..a {
        let y = at::<M, A>(std::array::from_fn(|row| &m[a * row.min(a - 1) + col]));
        for (row, x) in y.into_iter().take(M).enumerate() {
            t[a * row + col] = x;
        }
    }
    let mut out = [[0.0f32; LANES]; 16];
    for row in 0..M {
        let y = at::<M, A>(std::array::from_fn(|col| &t[a * row + col.min(a - 1)]));
        out[M * row..M * row + M].copy_from_slice(&y[..M]);
    }
    out
}

/// Where tile `g` (numbered over the whole batch) sits.
#[derive(Clone, Copy)]
struct Tiles {
    /// Output tile side.
    m: usize,
    total: usize,
    per_item: usize,
    across: usize,
}

impl Tiles {
    fn new(d: &GemmDesc, m: usize) -> Tiles {
        Tiles {
            m,
            total: d.batch as usize * tiles_per_item(d, m),
            per_item: tiles_per_item(d, m),
            across: d.ow.div_ceil(m as u32) as usize,
        }
    }

    /// (item, top output row, left output column) of tile `g`.
    fn at(&self, g: usize) -> (usize, usize, usize) {
        let t = g % self.per_item;
        (
            g / self.per_item,
            self.m * (t / self.across),
            self.m * (t % self.across),
        )
    }

    /// [`Tiles::at`] of tiles `first`, `first + 1`, … in turn, stepping
    /// rather than dividing: two divisions per tile had been a tenth of
    /// the output transform's samples.
    fn from(&self, first: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (mut item, mut oy, mut ox) = self.at(first);
        let m = self.m;
        let (right, bottom) = (self.across * m, self.per_item / self.across * m);
        std::iter::from_fn(move || {
            let here = (item, oy, ox);
            ox += m;
            if ox == right {
                ox = 0;
                oy += m;
                if oy == bottom {
                    oy = 0;
                    item += 1;
                }
            }
            Some(here)
        })
    }
}

/// One block of `nr` tiles.
#[derive(Clone, Copy)]
struct Block {
    tiles: Tiles,
    index: usize,
    nr: usize,
}

impl Block {
    /// `(chunk, first tile)` of each of the block's chunks of [`LANES`]
    /// tiles that holds at least one tile (the layer's last block may be
    /// short).
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        let (start, total) = (self.index * self.nr, self.tiles.total);
        (0..self.nr / LANES)
            .map(move |chunk| (chunk, start + chunk * LANES))
            .take_while(move |&(_, first)| first < total)
    }
}

/// Step 1 for channel `c` of a block: `v[ξ][c][lane]` (`v` is the block's
/// buffer), eight tiles at a time; `gather(first, patch)` fills the
/// `A²` patches of tiles `first ..` (zero outside the input and past
/// the last tile).
#[inline(always)]
unsafe fn transform_channel<const A: usize>(
    d: &GemmDesc,
    blk: Block,
    c: usize,
    v: *mut f32,
    gather: impl Fn(usize, &mut [Lanes; XI]),
) {
    let c_in = d.in_c as usize;
    for chunk in 0..blk.nr / LANES {
        let mut patch = [[0.0f32; LANES]; XI];
        gather(blk.index * blk.nr + chunk * LANES, &mut patch);
        let out = input_transform::<A>(&patch);
        for (xi, lanes) in out.iter().take(A * A).enumerate() {
            let dst = v.add(xi * plane_stride(c_in, blk.nr) + c * blk.nr + chunk * LANES);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, LANES);
        }
    }
}

/// The 6×6 input patch of the tile at `(item, oy, ox)`, channel `c`, starts at input row `y0`
/// and column `x0` (either may be negative: padding) of `src`.
#[inline(always)]
unsafe fn patch_origin(
    d: &GemmDesc,
    x: *const f32,
    (item, oy, ox): (usize, usize, usize),
    c: usize,
) -> (*const f32, isize, isize) {
    let src = x.add(item * d.x_bstride as usize + c * (d.h * d.w) as usize);
    (
        src,
        oy as isize - d.pt as isize,
        ox as isize - d.pl as isize,
    )
}

/// Row `i` of a patch, `width` ≤ 8 values from column `x0`, zero where
/// it falls outside the input.
#[inline(always)]
unsafe fn patch_row(
    d: &GemmDesc,
    src: *const f32,
    y0: isize,
    x0: isize,
    i: usize,
    width: usize,
) -> [f32; 8] {
    let (h, w) = (d.h as isize, d.w as isize);
    let mut row = [0.0f32; 8];
    let yy = y0 + i as isize;
    if yy >= 0 && yy < h {
        // The columns inside the input, found once rather than per element.
        let lo = (-x0).clamp(0, width as isize) as usize;
        let hi = (w - x0).clamp(0, width as isize) as usize;
        for (j, e) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *e = *src.offset(yy * w + x0 + j as isize);
        }
    }
    row
}

/// Portable gather: element by element.
// `lane` indexes the inner dimension of every row.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn gather_scalar<const A: usize>(
    d: &GemmDesc,
    x: *const f32,
    tiles: Tiles,
    first: usize,
    c: usize,
    patch: &mut [Lanes; XI],
) {
    let lanes = LANES.min(tiles.total.saturating_sub(first));
    for (lane, at) in tiles.from(first).take(lanes).enumerate() {
        let (src, y0, x0) = patch_origin(d, x, at, c);
        let a = A;
        for i in 0..a {
            let row = patch_row(d, src, y0, x0, i, a);
            for (j, &e) in row.iter().take(a).enumerate() {
                patch[a * i + j][lane] = e;
            }
        }
    }
}

/// How a channel's outputs are finished: bias, then one of the fused
/// epilogues (`[]`, `[relu]`, `[add]`, `[add, relu]`) or, for anything
/// else, the general per-element store.
#[derive(Clone, Copy)]
struct Finish {
    bias: f32,
    relu: bool,
    add: bool,
    general: bool,
    /// Max-pooled 2×2/2 (see [`crate::kernels::desc::STEP_MAXPOOL2`]): the other steps
    /// are activations, applied to each window's maximum.
    pool: bool,
}

impl Finish {
    unsafe fn new(d: &GemmDesc, p: &Ptrs, oc: usize) -> Finish {
        let pool = d.pooled();
        let steps = &d.steps[..d.n_steps as usize - usize::from(pool)];
        Finish {
            pool,
            bias: if d.has_bias != 0 {
                *p.bias.add(oc)
            } else {
                0.0
            },
            relu: steps.last() == Some(&STEP_RELU),
            add: steps.first() == Some(&STEP_ADD),
            general: !matches!(steps, [] | [STEP_RELU] | [STEP_ADD] | [STEP_ADD, STEP_RELU]),
        }
    }

    /// Store `v` (bias added) at output position `at` of (item, oc).
    #[inline(always)]
    unsafe fn one(&self, d: &GemmDesc, p: &Ptrs, item: usize, oc: usize, at: usize, v: f32) {
        if self.general {
            return store::store_one(d, p, item, oc, at, v);
        }
        let plane = (d.oh * d.ow) as usize;
        let mut v = v;
        if self.add {
            v += *p.res[0].add(item * d.res_bstride[0] as usize + oc * plane + at);
        }
        if self.relu {
            v = v.max(0.0);
        }
        *p.out.add(item * d.out_bstride as usize + oc * plane + at) = v;
    }

    /// Store the maximum `v` (bias added) of a 2×2 window at position `at`
    /// of (item, oc)'s pooled plane.
    #[inline(always)]
    unsafe fn pooled(&self, d: &GemmDesc, p: &Ptrs, item: usize, oc: usize, at: usize, v: f32) {
        let plane = (d.oh / 2 * (d.ow / 2)) as usize;
        let v = if self.general {
            store::activate(d, v)
        } else if self.relu {
            v.max(0.0)
        } else {
            v
        };
        *p.out.add(item * d.out_bstride as usize + oc * plane + at) = v;
    }
}

/// Step 3 for output channel `oc` of a block: its GEMM results
/// (`m[ξ·stride + lane]`) transformed back, eight tiles at a time, and
/// handed to `scatter(first, y, finish)` with the bias added.
#[inline(always)]
unsafe fn store_channel<const M: usize, const A: usize>(
    d: &GemmDesc,
    p: &Ptrs,
    blk: Block,
    oc: usize,
    (m, stride): (*const f32, usize),
    scatter: impl Fn(usize, &[Lanes; 16], Finish),
) {
    let finish = Finish::new(d, p, oc);
    for (chunk, first) in blk.chunks() {
        let mut mv = [[0.0f32; LANES]; XI];
        for (xi, lanes) in mv.iter_mut().take(A * A).enumerate() {
            std::ptr::copy_nonoverlapping(
                m.add(xi * stride + chunk * LANES),
                lanes.as_mut_ptr(),
                LANES,
            );
        }
        let mut y = output_transform::<M, A>(&mv);
        // Row by row: a flattened iterator would not vectorise.
        for row in y.iter_mut() {
            for v in row.iter_mut() {
                *v += finish.bias;
            }
        }
        scatter(first, &y, finish);
    }
}

/// Portable scatter: element by element, clipped at the output's edges,
/// for the tiles `first + lanes` (lanes past the last tile are skipped).
// `lane` indexes the inner dimension of every row.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn scatter_scalar<const M: usize>(
    d: &GemmDesc,
    p: &Ptrs,
    tiles: Tiles,
    oc: usize,
    (first, lanes): (usize, std::ops::Range<usize>),
    y: &[Lanes; 16],
    finish: Finish,
) {
    let (oh, ow) = (d.oh as usize, d.ow as usize);
    let lanes = lanes.start..lanes.end.min(tiles.total - first);
    let positions = || lanes.clone().zip(tiles.from(first + lanes.start));
    if finish.pool {
        // Tiles start at even rows and columns, so each 2×2 window lies in
        // one tile; windows past the output's last even row or column are
        // dropped, as a floor-mode pool drops them.
        let (ph, pw) = (oh / 2, ow / 2);
        for (lane, (item, oy, ox)) in positions() {
            let (py, px) = (oy / 2, ox / 2);
            for r in 0..(M / 2).min(ph.saturating_sub(py)) {
                for s in 0..(M / 2).min(pw.saturating_sub(px)) {
                    let at = |i: usize, j: usize| y[M * (2 * r + i) + 2 * s + j][lane];
                    let v = at(0, 0).max(at(0, 1)).max(at(1, 0).max(at(1, 1)));
                    finish.pooled(d, p, item, oc, (py + r) * pw + px + s, v);
                }
            }
        }
        return;
    }
    for (lane, (item, oy, ox)) in positions() {
        for r in 0..M.min(oh - oy) {
            for s in 0..M.min(ow - ox) {
                finish.one(d, p, item, oc, (oy + r) * ow + ox + s, y[M * r + s][lane]);
            }
        }
    }
}

/// Step 1 for input channels `channels` of a block: `(d, x, blk,
/// channels, v)`.
type InputFn = unsafe fn(&GemmDesc, *const f32, Block, Range<usize>, *mut f32);
/// Step 3 for output channels `ocs` of a block, channel `oc`'s GEMM
/// results at `m + (oc − ocs.start)·nr`, `stride` from one ξ to the next:
/// `(d, p, blk, ocs, (m, stride))`.
type OutputFn = unsafe fn(&GemmDesc, &Ptrs, Block, Range<usize>, (*const f32, usize));

/// Steps 1 and 3 for a range of channels; the AVX2 versions gather patch rows
/// through 8×8 transposes and store whole output rows where they can, the
/// portable ones go element by element. Chosen once per call.
#[derive(Clone, Copy)]
struct Transforms {
    input: InputFn,
    output: OutputFn,
}

impl Transforms {
    fn select(tile: Tile) -> Transforms {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::host().avx512 {
            return match tile {
                Tile::F4 => Transforms {
                    input: avx512::transform_channel::<4, 6>,
                    output: avx512::store_channel,
                },
                Tile::F2 => Transforms {
                    input: avx512::transform_channel::<2, 4>,
                    output: avx2::store_channel_m2::<4>,
                },
                Tile::F2K5 => Transforms {
                    input: avx512::transform_channel::<2, 6>,
                    output: avx2::store_channel_m2::<6>,
                },
            };
        }
        Transforms::avx2(tile).unwrap_or_else(|| Transforms::portable(tile))
    }

    /// The AVX2 transforms, if this CPU has AVX2 and FMA.
    fn avx2(tile: Tile) -> Option<Transforms> {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::host().avx2 {
            return Some(match tile {
                Tile::F4 => Transforms {
                    input: avx2::transform_channel::<6>,
                    output: avx2::store_channel,
                },
                Tile::F2 => Transforms {
                    input: avx2::transform_channel::<4>,
                    output: avx2::store_channel_m2::<4>,
                },
                // Same points, so the same input transform: only the tiles'
                // origins (every 2 outputs) differ, and `Block` has them.
                Tile::F2K5 => Transforms {
                    input: avx2::transform_channel::<6>,
                    output: avx2::store_channel_m2::<6>,
                },
            });
        }
        None
    }

    fn portable(tile: Tile) -> Transforms {
        match tile {
            Tile::F4 => Transforms {
                input: portable_input::<6>,
                output: portable_output::<4, 6>,
            },
            Tile::F2 => Transforms {
                input: portable_input::<4>,
                output: portable_output::<2, 4>,
            },
            Tile::F2K5 => Transforms {
                input: portable_input::<6>,
                output: portable_output::<2, 6>,
            },
        }
    }
}

/// Step 1 element by element.
#[inline(always)]
unsafe fn portable_input<const A: usize>(
    d: &GemmDesc,
    x: *const f32,
    blk: Block,
    channels: Range<usize>,
    v: *mut f32,
) {
    for c in channels {
        transform_channel::<A>(d, blk, c, v, |first, patch| {
            gather_scalar::<A>(d, x, blk.tiles, first, c, patch)
        })
    }
}

/// Step 3 element by element.
#[inline(always)]
unsafe fn portable_output<const M: usize, const A: usize>(
    d: &GemmDesc,
    p: &Ptrs,
    blk: Block,
    ocs: Range<usize>,
    (m, stride): (*const f32, usize),
) {
    for oc in ocs.clone() {
        let m = (m.add((oc - ocs.start) * blk.nr), stride);
        store_channel::<M, A>(d, p, blk, oc, m, |first, y, finish| {
            scatter_scalar::<M>(d, p, blk.tiles, oc, (first, 0..LANES), y, finish)
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{plane_stride, Block, Finish, GemmDesc, Ptrs, LANES};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Rows of an 8×8 block become columns.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// [`super::bt`] on registers: `A` = 4 points (F(2×2, 3×3); the last
    /// two results are zero) or 6.
    #[inline(always)]
    pub(super) unsafe fn bt_of<const A: usize>(d: [__m256; 6]) -> [__m256; 6] {
        if A == 4 {
            let zero = _mm256_setzero_ps();
            return [
                _mm256_sub_ps(d[0], d[2]),
                _mm256_add_ps(d[1], d[2]),
                _mm256_sub_ps(d[2], d[1]),
                _mm256_sub_ps(d[1], d[3]),
                zero,
                zero,
            ];
        }
        bt(d)
    }

    /// [`super::bt`] on registers, 6 points.
    #[inline(always)]
    unsafe fn bt(d: [__m256; 6]) -> [__m256; 6] {
        let (two, four, five) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(5.0),
        );
        let a = _mm256_fnmadd_ps(four, d[2], d[4]);
        let b = _mm256_fnmadd_ps(four, d[1], d[3]);
        let c = _mm256_sub_ps(d[4], d[2]);
        let e = _mm256_mul_ps(two, _mm256_sub_ps(d[3], d[1]));
        [
            _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4])),
            _mm256_add_ps(a, b),
            _mm256_sub_ps(a, b),
            _mm256_add_ps(c, e),
            _mm256_sub_ps(c, e),
            _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5])),
        ]
    }

    /// [`super::at`] on registers.
    #[inline(always)]
    unsafe fn at(m: [__m256; 6]) -> [__m256; 4] {
        let (two, four, eight) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(8.0),
        );
        let (s12, d12) = (_mm256_add_ps(m[1], m[2]), _mm256_sub_ps(m[1], m[2]));
        let (s34, d34) = (_mm256_add_ps(m[3], m[4]), _mm256_sub_ps(m[3], m[4]));
        [
            _mm256_add_ps(_mm256_add_ps(m[0], s12), s34),
            _mm256_fmadd_ps(two, d34, d12),
            _mm256_fmadd_ps(four, s34, s12),
            _mm256_add_ps(_mm256_fmadd_ps(eight, d34, d12), m[5]),
        ]
    }

    /// [`transform_channel_one`] for each of `channels`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transform_channel<const A: usize>(
        d: &GemmDesc,
        x: *const f32,
        blk: Block,
        channels: Range<usize>,
        v: *mut f32,
    ) {
        for c in channels {
            transform_channel_one::<A>(d, x, blk, c, v);
        }
    }

    /// [`store_channel_m2_one`] for each of `ocs`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn store_channel_m2<const A: usize>(
        d: &GemmDesc,
        p: &Ptrs,
        blk: Block,
        ocs: Range<usize>,
        (m, stride): (*const f32, usize),
    ) {
        for oc in ocs.clone() {
            store_channel_m2_one::<A>(d, p, blk, oc, (m.add((oc - ocs.start) * blk.nr), stride));
        }
    }

    /// [`store_channel_one`] for each of `ocs`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn store_channel(
        d: &GemmDesc,
        p: &Ptrs,
        blk: Block,
        ocs: Range<usize>,
        (m, stride): (*const f32, usize),
    ) {
        for oc in ocs.clone() {
            store_channel_one(d, p, blk, oc, (m.add((oc - ocs.start) * blk.nr), stride));
        }
    }

    /// How many channel planes ahead the transforms prefetch the input
    /// rows they will read, and the output rows they will write: per
    /// channel, a block's rows are a few short runs a plane apart, which
    /// the hardware prefetchers do not follow. ResNet-50's 3×3 layers at
    /// batch 8 ran 6–22% faster (alternated `netc bench`, 2 threads); at
    /// batch 1, where the planes are in cache, level.
    pub(super) const PREFETCH_PLANES: isize = 2;

    /// The first `n` floats of `v` stored at `dst`, nothing after them: a
    /// tile at the output's right edge writes only the columns inside it.
    /// Plain stores of 4, 2 and 1 floats rather than a masked store, which
    /// is microcoded and slow on AMD cores before Zen 4.
    #[inline(always)]
    unsafe fn store_prefix4(dst: *mut f32, v: __m128, n: usize) {
        match n {
            4.. => _mm_storeu_ps(dst, v),
            3 => {
                _mm_storel_epi64(dst as *mut __m128i, _mm_castps_si128(v));
                _mm_store_ss(dst.add(2), _mm_movehl_ps(v, v));
            }
            2 => _mm_storel_epi64(dst as *mut __m128i, _mm_castps_si128(v)),
            1 => _mm_store_ss(dst, v),
            0 => {}
        }
    }

    /// The first `n` floats at `src` (zero after them), reading nothing
    /// past them.
    #[inline(always)]
    unsafe fn load_prefix4(src: *const f32, n: usize) -> __m128 {
        let two = || _mm_castsi128_ps(_mm_loadl_epi64(src as *const __m128i));
        match n {
            4.. => _mm_loadu_ps(src),
            3 => _mm_movelh_ps(two(), _mm_load_ss(src.add(2))),
            2 => two(),
            1 => _mm_load_ss(src),
            0 => _mm_setzero_ps(),
        }
    }

    /// [`store_prefix4`] for up to eight floats.
    #[inline(always)]
    unsafe fn store_prefix8(dst: *mut f32, v: __m256, n: usize) {
        if n >= 8 {
            _mm256_storeu_ps(dst, v);
        } else if n >= 4 {
            _mm_storeu_ps(dst, _mm256_castps256_ps128(v));
            store_prefix4(dst.add(4), _mm256_extractf128_ps::<1>(v), n - 4);
        } else {
            store_prefix4(dst, _mm256_castps256_ps128(v), n);
        }
    }

    /// [`load_prefix4`] for up to eight floats.
    #[inline(always)]
    unsafe fn load_prefix8(src: *const f32, n: usize) -> __m256 {
        if n >= 8 {
            _mm256_loadu_ps(src)
        } else if n >= 4 {
            _mm256_set_m128(load_prefix4(src.add(4), n - 4), _mm_loadu_ps(src))
        } else {
            _mm256_castps128_ps256(load_prefix4(src, n))
        }
    }

    /// Eight floats of input row `y` from column `x0`, zero outside the
    /// input: a masked load, which never touches the masked-off columns.
    /// Built in memory float by float instead, the row's vector load
    /// waited for the stores to retire (16% of F(2×2, 5×5)'s input
    /// transform samples, where 44% of a 27×27 plane's tiles are at an
    /// edge).
    #[inline(always)]
    unsafe fn edge_row(d: &GemmDesc, src: *const f32, y: isize, x0: isize) -> __m256 {
        let (h, w) = (d.h as isize, d.w as isize);
        if y < 0 || y >= h {
            return _mm256_setzero_ps();
        }
        let lo = (-x0).clamp(0, 8) as i32;
        let hi = (w - x0).clamp(0, 8) as i32;
        let j = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_and_si256(
            _mm256_cmpgt_epi32(j, _mm256_set1_epi32(lo - 1)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), j),
        );
        _mm256_maskload_ps(src.wrapping_offset(y * w + x0), mask)
    }

    /// Step 1 for one channel: patch rows are loaded 8 wide (a tile whose
    /// row and the two floats after it lie inside the input loads
    /// directly; others through a mask, zero outside the input), transposed into lanes of
    /// eight tiles and transformed along the row at once; then down the
    /// columns, straight into `v`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn transform_channel_one<const A: usize>(
        d: &GemmDesc,
        x: *const f32,
        blk: Block,
        c: usize,
        v: *mut f32,
    ) {
        let (h, w) = (d.h as isize, d.w as isize);
        let stride = plane_stride(d.in_c as usize, blk.nr);
        for chunk in 0..blk.nr / LANES {
            let first = blk.index * blk.nr + chunk * LANES;
            let lanes = LANES.min(blk.tiles.total.saturating_sub(first));
            let mut origin = [(std::ptr::null::<f32>(), 0isize, 0isize); LANES];
            let mut direct = [false; LANES];
            for (lane, at) in blk.tiles.from(first).take(lanes).enumerate() {
                let o = super::patch_origin(d, x, at, c);
                direct[lane] = o.1 >= 0 && o.2 >= 0 && o.1 + A as isize <= h && o.2 + 8 <= w;
                origin[lane] = o;
            }
            // Row by row along the patch; built in place, so no 1 KiB of
            // zeros is written first (a memset call per chunk had been 6% of
            // deep_convnet's samples).
            let u: [[__m256; 6]; 6] = std::array::from_fn(|i| {
                if i >= A {
                    return [_mm256_setzero_ps(); 6];
                }
                let mut rows = [_mm256_setzero_ps(); 8];
                for (lane, row) in rows.iter_mut().enumerate().take(lanes) {
                    let (src, y0, x0) = origin[lane];
                    let ahead =
                        src.wrapping_offset(PREFETCH_PLANES * h * w + (y0 + i as isize) * w + x0);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    *row = if direct[lane] {
                        _mm256_loadu_ps(src.offset((y0 + i as isize) * w + x0))
                    } else {
                        edge_row(d, src, y0 + i as isize, x0)
                    };
                }
                let cols = transpose8(rows);
                bt_of::<A>([cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]])
            });
            store_columns::<A>(u, v.add(c * blk.nr + chunk * LANES), stride);
        }
    }

    /// The second half of step 1: `u[i][j]` (patch row `i` transformed
    /// along the row, column `j`; lanes are tiles) transformed down each
    /// column into `dst[(A·i + j)·stride ..]`.
    #[inline(always)]
    pub(super) unsafe fn store_columns<const A: usize>(
        u: [[__m256; 6]; 6],
        dst: *mut f32,
        stride: usize,
    ) {
        let columns: [[__m256; 6]; 6] = std::array::from_fn(|j| std::array::from_fn(|i| u[i][j]));
        for (j, column) in columns.into_iter().take(A).enumerate() {
            let col = bt_of::<A>(column);
            for (i, val) in col.into_iter().take(A).enumerate() {
                _mm256_storeu_ps(dst.add((A * i + j) * stride), val);
            }
        }
    }

    /// [`super::at`] on registers for the 2×2-tile variants: F(2×2, 3×3)
    /// (`A` = 4 points) and F(2×2, 5×5) (6).
    #[inline(always)]
    unsafe fn at_m2<const A: usize>(m: [__m256; 6]) -> [__m256; 2] {
        let (s12, d12) = (_mm256_add_ps(m[1], m[2]), _mm256_sub_ps(m[1], m[2]));
        if A == 4 {
            return [_mm256_add_ps(m[0], s12), _mm256_sub_ps(d12, m[3])];
        }
        let (s34, d34) = (_mm256_add_ps(m[3], m[4]), _mm256_sub_ps(m[3], m[4]));
        [
            _mm256_add_ps(_mm256_add_ps(m[0], s12), s34),
            _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(2.0), d34, d12), m[5]),
        ]
    }

    /// Step 3 of the 2×2-tile variants (`A` = 4 or 6 points) for one
    /// output channel: `Aᵀ M A` on registers, bias added. Four tiles side
    /// by side in one tile row are two output rows of 8 values (or, pooled,
    /// 4 neighbouring maxima): interleaved and stored as vectors, clipped
    /// at the output's edges. A half chunk across a row end, or a general
    /// epilogue, goes tile by tile. At 7×7 every tile row is such a half
    /// and reaches the right edge, so before this all of it went tile by
    /// tile.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store_channel_m2_one<const A: usize>(
        d: &GemmDesc,
        p: &Ptrs,
        blk: Block,
        oc: usize,
        (m, stride): (*const f32, usize),
    ) {
        let (oh, ow) = (d.oh as usize, d.ow as usize);
        let plane = oh * ow;
        let finish = Finish::new(d, p, oc);
        let (bias, zero) = (_mm256_set1_ps(finish.bias), _mm256_setzero_ps());
        for (chunk, first) in blk.chunks() {
            let src = m.add(chunk * LANES);
            // rows[i][s]: row i of the 6×6 through Aᵀ, its column s.
            let rows: [[__m256; 2]; 6] = std::array::from_fn(|i| {
                if i >= A {
                    return [_mm256_setzero_ps(); 2];
                }
                at_m2::<A>(std::array::from_fn(|j| {
                    if j < A {
                        _mm256_loadu_ps(src.add((A * i + j) * stride))
                    } else {
                        _mm256_setzero_ps()
                    }
                }))
            });
            // y[2·r + s]: output (r, s) of each lane's tile.
            let mut y = [_mm256_setzero_ps(); 4];
            for s in 0..2 {
                let col = at_m2::<A>(std::array::from_fn(|i| rows[i][s]));
                y[s] = _mm256_add_ps(col[0], bias);
                y[2 + s] = _mm256_add_ps(col[1], bias);
            }
            // Each half of the chunk (four tiles) that lies in one tile row
            // is stored as vectors, clipped at the output's right and
            // bottom edges; the rest (a half across a row end, a general
            // epilogue) goes tile by tile.
            let count = LANES.min(blk.tiles.total - first);
            let mut at = blk.tiles.from(first);
            let halves = [at.next(), at.nth(3)];
            let mut scalar = [false; 2];
            // Each tile's 2×2 window maximum, once for both halves.
            let maxima = if finish.pool {
                let v = _mm256_max_ps(_mm256_max_ps(y[0], y[1]), _mm256_max_ps(y[2], y[3]));
                if finish.relu {
                    _mm256_max_ps(v, zero)
                } else {
                    v
                }
            } else {
                zero
            };
            for (h, start) in halves.into_iter().enumerate() {
                let tiles_here = count.saturating_sub(4 * h).min(4);
                let Some((item, oy, ox)) = start.filter(|_| tiles_here > 0) else {
                    continue;
                };
                if finish.general || ox / 2 + tiles_here > blk.tiles.across {
                    scalar[h] = true;
                    continue;
                }
                if finish.pool {
                    let half = if h == 0 {
                        _mm256_castps256_ps128(maxima)
                    } else {
                        _mm256_extractf128_ps::<1>(maxima)
                    };
                    store_pooled_m2(d, p, oc, (item, oy, ox), tiles_here, half);
                    continue;
                }
                let at = oc * plane + oy * ow + ox;
                let out = p.out.add(item * d.out_bstride as usize + at);
                let res = if finish.add {
                    p.res[0].add(item * d.res_bstride[0] as usize + at)
                } else {
                    std::ptr::null()
                };
                let cols = (2 * tiles_here).min(ow - ox);
                for r in 0..2.min(oh - oy) {
                    let (a, b) = (y[2 * r], y[2 * r + 1]);
                    let (lo, hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                    // Tiles 4h … 4h+3's output row r, interleaved.
                    let mut v = if h == 0 {
                        _mm256_permute2f128_ps::<0x20>(lo, hi)
                    } else {
                        _mm256_permute2f128_ps::<0x31>(lo, hi)
                    };
                    if finish.add {
                        v = _mm256_add_ps(v, load_prefix8(res.add(r * ow), cols));
                    }
                    if finish.relu {
                        v = _mm256_max_ps(v, zero);
                    }
                    store_prefix8(out.add(r * ow), v, cols);
                }
            }
            if scalar.iter().any(|&s| s) {
                let mut lanes = [[0.0f32; LANES]; 16];
                for (k, v) in y.into_iter().enumerate() {
                    _mm256_storeu_ps(lanes[k].as_mut_ptr(), v);
                }
                for (h, _) in scalar.iter().enumerate().filter(|(_, &s)| s) {
                    let lanes_here = (first, 4 * h..4 * h + 4);
                    super::scatter_scalar::<2>(d, p, blk.tiles, oc, lanes_here, &lanes, finish);
                }
            }
        }
    }

    /// The pooled store of `tiles` 2×2 tiles from `(item, oy, ox)` in one
    /// tile row, whose windows are the tiles themselves: their maxima
    /// (`maxima`, activated) are `tiles` neighbouring outputs of one pooled
    /// row. Windows past the pooled plane's edge are dropped, as in
    /// [`super::scatter_scalar`].
    #[inline(always)]
    unsafe fn store_pooled_m2(
        d: &GemmDesc,
        p: &Ptrs,
        oc: usize,
        (item, oy, ox): (usize, usize, usize),
        tiles: usize,
        maxima: __m128,
    ) {
        let (ph, pw) = ((d.oh / 2) as usize, (d.ow / 2) as usize);
        let (py, px) = (oy / 2, ox / 2);
        if py >= ph || px >= pw {
            return;
        }
        let at = item * d.out_bstride as usize + oc * ph * pw + py * pw + px;
        store_prefix4(p.out.add(at), maxima, tiles.min(pw - px));
    }

    /// The pooled store of eight 4×4 tiles' outputs `y` (bias added): the
    /// four 2×2 windows' maxima and the ReLU on registers, then each tile's
    /// 2×2 pooled outputs stored (a general activation through
    /// `Finish::pooled`). Windows past the pooled plane's edge are dropped,
    /// as in [`super::scatter_scalar`].
    #[inline(always)]
    unsafe fn store_pooled_m4(
        d: &GemmDesc,
        p: &Ptrs,
        tiles: super::Tiles,
        oc: usize,
        first: usize,
        y: &[__m256; 16],
        finish: Finish,
    ) {
        let window = |a: usize| {
            let top = _mm256_max_ps(y[a], y[a + 1]);
            _mm256_max_ps(top, _mm256_max_ps(y[a + 4], y[a + 5]))
        };
        let mut lanes = [[0.0f32; LANES]; 4];
        for (k, at) in [0, 2, 8, 10].into_iter().enumerate() {
            let mut v = window(at);
            if finish.relu && !finish.general {
                v = _mm256_max_ps(v, _mm256_setzero_ps());
            }
            _mm256_storeu_ps(lanes[k].as_mut_ptr(), v);
        }
        let (ph, pw) = ((d.oh / 2) as usize, (d.ow / 2) as usize);
        let count = LANES.min(tiles.total - first);
        for (lane, (item, oy, ox)) in tiles.from(first).take(count).enumerate() {
            let (py, px) = (oy / 2, ox / 2);
            let base = item * d.out_bstride as usize + oc * ph * pw;
            for r in 0..2.min(ph.saturating_sub(py)) {
                for s in 0..2.min(pw.saturating_sub(px)) {
                    let (at, v) = ((py + r) * pw + px + s, lanes[2 * r + s][lane]);
                    if finish.general {
                        finish.pooled(d, p, item, oc, at, v);
                    } else {
                        *p.out.add(base + at) = v;
                    }
                }
            }
        }
    }

    /// `Aᵀ M A` plus `bias` for the eight tiles whose 36 GEMM results are
    /// at `src`, `stride` apart: `y[4r + s]` is output row `r`, column
    /// `s` (lanes are tiles).
    #[inline(always)]
    pub(super) unsafe fn tile_outputs(src: *const f32, stride: usize, bias: f32) -> [__m256; 16] {
        let bias = _mm256_set1_ps(bias);
        let mut t = [_mm256_setzero_ps(); 24];
        for i in 0..6 {
            let row = at(std::array::from_fn(|j| {
                _mm256_loadu_ps(src.add((6 * i + j) * stride))
            }));
            for (s, val) in row.into_iter().enumerate() {
                t[6 * s + i] = val;
            }
        }
        let mut y = [_mm256_setzero_ps(); 16];
        for s in 0..4 {
            let col = at(std::array::from_fn(|i| t[6 * s + i]));
            for (r, val) in col.into_iter().enumerate() {
                y[4 * r + s] = _mm256_add_ps(val, bias);
            }
        }
        y
    }

    /// Step 3 for one output channel: `Aᵀ M A` on registers, bias added,
    /// then transposed so each tile's output rows are 4-float vectors,
    /// stored clipped at the output's edges (element by element only for
    /// a general epilogue): at 14×14, 7 of 16 tiles are at an edge.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store_channel_one(
        d: &GemmDesc,
        p: &Ptrs,
        blk: Block,
        oc: usize,
        (m, stride): (*const f32, usize),
    ) {
        let (oh, ow) = (d.oh as usize, d.ow as usize);
        let plane = oh * ow;
        let finish = Finish::new(d, p, oc);
        let zero = _mm_setzero_ps();
        for (chunk, first) in blk.chunks() {
            let y = tile_outputs(m.add(chunk * LANES), stride, finish.bias);
            if finish.pool {
                store_pooled_m4(d, p, blk.tiles, oc, first, &y, finish);
                continue;
            }
            // Lane `l` of `top` holds tile l's output row 0 in its low half
            // and row 1 in its high half; `bottom` rows 2 and 3.
            let top = transpose8(std::array::from_fn(|k| y[k]));
            let bottom = transpose8(std::array::from_fn(|k| y[8 + k]));
            let lanes = LANES.min(blk.tiles.total - first);
            for (lane, (item, oy, ox)) in blk.tiles.from(first).take(lanes).enumerate() {
                let at_lane = |r: usize| {
                    let half = if r < 2 { top[lane] } else { bottom[lane] };
                    if r.is_multiple_of(2) {
                        _mm256_castps256_ps128(half)
                    } else {
                        _mm256_extractf128_ps::<1>(half)
                    }
                };
                let (rows, cols) = (4.min(oh - oy), 4.min(ow - ox));
                if finish.general {
                    for r in 0..rows {
                        let mut vals = [0.0f32; 4];
                        _mm_storeu_ps(vals.as_mut_ptr(), at_lane(r));
                        for (s, &val) in vals.iter().enumerate().take(cols) {
                            finish.one(d, p, item, oc, (oy + r) * ow + ox + s, val);
                        }
                    }
                    continue;
                }
                let offset = item * d.out_bstride as usize + oc * plane + oy * ow + ox;
                let res = if finish.add {
                    p.res[0].add(item * d.res_bstride[0] as usize + oc * plane + oy * ow + ox)
                } else {
                    std::ptr::null()
                };
                let row = |r: usize, cols: usize| {
                    let ahead = p
                        .out
                        .wrapping_add(offset + PREFETCH_PLANES as usize * plane + r * ow);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    let mut val = at_lane(r);
                    if finish.add {
                        _mm_prefetch::<_MM_HINT_T0>(
                            res.wrapping_add(PREFETCH_PLANES as usize * plane + r * ow)
                                as *const i8,
                        );
                        val = _mm_add_ps(val, load_prefix4(res.add(r * ow), cols));
                    }
                    if finish.relu {
                        val = _mm_max_ps(val, zero);
                    }
                    store_prefix4(p.out.add(offset + r * ow), val, cols);
                };
                // Inside tiles on a loop of constant shape, which compiles
                // to straight-line full-width stores.
                if rows == 4 && cols == 4 {
                    (0..4).for_each(|r| row(r, 4));
                } else {
                    (0..rows).for_each(|r| row(r, cols));
                }
            }
        }
    }
}

thread_local! {
    /// Transformed input of a batch of blocks (calling thread) and the
    /// `k·nr` offset table of its packed panels.
    static INPUT: RefCell<(Vec<f32>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// GEMM results of one chunk of row panels (each worker).
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One block's transformed input and GEMM results (each worker, when
    /// blocks run whole).
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Run one eligible convolution (see the module doc).
///
/// # Safety
/// As [`crate::kernels::dispatch::run`]; the packed weights must come from [`pack_weights`].
pub(crate) unsafe fn run(kern: MicroKernel, tile: Tile, d: &GemmDesc, p: &Ptrs) {
    run_with(kern, tile, Transforms::select(tile), d, p)
}

unsafe fn run_with(kern: MicroKernel, tile: Tile, fns: Transforms, d: &GemmDesc, p: &Ptrs) {
    let (c_in, m) = (d.in_c as usize, d.out_c as usize);
    let tiles = Tiles::new(d, tile.m());
    let threads = current_threads();
    let small_weights = 4 * packed_len(tile, m, c_in) <= FUSED_SMALL_WEIGHTS;
    let (gemm, nr) = block_kernel(&kern, tiles.total);
    let blocks = tiles.total.div_ceil(nr);
    let block_floats = tile.xi() * plane_stride(c_in, nr);
    let per_batch = (V_BUDGET / 4 / block_floats).clamp(1, blocks);
    let row_panels = m.div_ceil(MR);
    // Fewer blocks than threads (one block of 16 tiles at batch 1 on 14×14
    // and 7×7 planes): each block goes to several tasks, each transforming
    // the whole block for itself and multiplying its own share of the
    // output channels. The transform is a small part of a layer (a few
    // adds per input value against `out_c` multiplies), so doing it twice
    // costs less than sharing it: split across threads it had to wait for
    // both halves and then read half of them from the other core, and
    // 8-tile blocks (a whole block per thread) ran on 8-wide AVX2
    // registers. deep_convnet at batch 1: 0.048 → 0.043 ms against the
    // 8-tile blocks (alternated runs, 2 threads, vCPUs close; 0.895 of
    // the time with them far apart), its 16-tile layers 0.63–0.96;
    // against the two loops GoogLeNet's 3×3 layers 0.91 at batch 1,
    // ResNet-50's and ResNet-18's level.
    let splits = if blocks < threads {
        threads.div_ceil(blocks).min(row_panels)
    } else {
        1
    };
    let per_split = row_panels.div_ceil(splits);
    let whole_blocks = splits > 1
        || blocks >= FUSED_BLOCKS_PER_THREAD * threads
        || (small_weights && blocks >= threads);
    INPUT.with(|input| {
        let mut input = input.borrow_mut();
        let (v, offs) = &mut *input;
        // Whole blocks keep their transformed input in each worker's own
        // buffer; this one is for the batches of the two loops.
        if !whole_blocks {
            super::grow(v, per_batch * block_floats);
        }
        offs.clear();
        offs.extend((0..c_in).map(|k| k * nr));
        let vp = Shared(v.as_mut_ptr());
        let layer = Layer {
            gemm,
            nr,
            fns,
            d,
            p,
            offs: Shared::new(offs.as_ptr()),
            xis: tile.xi(),
        };
        if whole_blocks {
            // Many blocks: each task takes a whole block through all three
            // steps, its transformed input staying in L2 (one block of 64
            // channels is 297 KiB; a batch of them had gone out to L3 between
            // the two loops) and no thread waiting between them. Few: see
            // `splits`.
            parallel_for(blocks * splits, |t| {
                let (b, s) = (t / splits, t % splits);
                let panels = s * per_split..((s + 1) * per_split).min(row_panels);
                BLOCK.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    let need = block_floats + tile.xi() * plane_stride(PANELS_PER_CHUNK * MR, nr);
                    super::grow(&mut buf, need);
                    let (v, prod) = buf.split_at_mut(block_floats);
                    let blk = Block {
                        tiles,
                        index: b,
                        nr,
                    };
                    // SAFETY: the task writes its own block's output tiles
                    // of its own output channels.
                    unsafe {
                        (fns.input)(d, p.x, blk, 0..c_in, v.as_mut_ptr());
                        multiply_and_store(&layer, blk, v.as_ptr(), panels, prod);
                    }
                });
            });
            return;
        }
        let mut b0 = 0;
        while b0 < blocks {
            let nb = per_batch.min(blocks - b0);
            // Transforms: (block, channel chunk) tasks.
            let splits = (4 * threads).div_ceil(nb).clamp(1, c_in);
            let per_split = c_in.div_ceil(splits);
            parallel_for(nb * splits, |t| {
                let (b, s) = (t / splits, t % splits);
                let block_v = vp.get().add(b * block_floats);
                let channels = s * per_split..((s + 1) * per_split).min(c_in);
                let blk = Block {
                    tiles,
                    index: b0 + b,
                    nr,
                };
                // SAFETY: each task writes its own channels of its block.
                unsafe { (fns.input)(d, p.x, blk, channels, block_v) };
            });
            // GEMMs and output transforms: (block, row-panel range) tasks.
            let splits = (4 * threads).div_ceil(nb).clamp(1, row_panels);
            let per_split = row_panels.div_ceil(splits);
            parallel_for(nb * splits, |t| {
                let (b, s) = (t / splits, t % splits);
                let panels = s * per_split..((s + 1) * per_split).min(row_panels);
                PRODUCTS.with(|prod| {
                    let mut prod = prod.borrow_mut();
                    let need = tile.xi() * plane_stride(PANELS_PER_CHUNK * MR, nr);
                    super::grow(&mut prod, need);
                    // SAFETY: each task reads its block's transformed input
                    // and writes its own output channels.
                    unsafe {
                        let blk = Block {
                            tiles,
                            index: b0 + b,
                            nr,
                        };
                        let v = vp.get().add(b * block_floats);
                        multiply_and_store(&layer, blk, v, panels, &mut prod)
                    };
                });
            });
            b0 += nb;
        }
    });
}

/// The kernel and block width (tiles per block) for a layer of `total`
/// tiles: the kernel's full width, or its narrow half when every tile fits
/// in one half block (14×14 and 7×7 planes at batch 1 have 16 tiles,
/// half of the 32-wide AVX-512 kernel). Not for more tiles: a block reads
/// all of the layer's transformed weights, so halving the blocks doubles
/// that traffic (docs/performance.md, "Winograd half blocks").
fn block_kernel(kern: &MicroKernel, total: usize) -> (KernelFn, usize) {
    let half = kern.nr / 2;
    match kern.narrow {
        Some(narrow) if total <= half && half.is_multiple_of(LANES) => (narrow, half),
        _ => (kern.run, kern.nr),
    }
}

/// What every GEMM task of one call shares.
struct Layer<'a> {
    /// The micro-kernel for `nr`-tile blocks.
    gemm: KernelFn,
    nr: usize,
    fns: Transforms,
    d: &'a GemmDesc,
    p: &'a Ptrs,
    /// The `k·nr` row offsets of a packed B panel.
    offs: Shared<usize>,
    /// Transformed-domain positions, one GEMM each.
    xis: usize,
}

/// Steps 2 and 3 for one block (transformed input `v`) and the output
/// channels of `panels`, [`PANELS_PER_CHUNK`] row panels at a time.
unsafe fn multiply_and_store(
    layer: &Layer,
    blk: Block,
    v: *const f32,
    panels: std::ops::Range<usize>,
    prod: &mut [f32],
) {
    let Layer {
        gemm,
        nr,
        fns,
        d,
        p,
        offs,
        xis,
    } = *layer;
    let offs = offs.get() as *const usize;
    let (c_in, m) = (d.in_c as usize, d.out_c as usize);
    let mut p0 = panels.start;
    while p0 < panels.end {
        let chunk = PANELS_PER_CHUNK.min(panels.end - p0);
        let stride = plane_stride(chunk * MR, nr);
        for q in 0..chunk {
            let a = p.a.add((p0 + q) * xis * MR * c_in);
            for xi in 0..xis {
                let b = v.add(xi * plane_stride(c_in, nr));
                let tile = prod.as_mut_ptr().add(xi * stride + q * MR * nr);
                gemm(c_in, a.add(xi * MR * c_in), b, offs, tile);
            }
        }
        let ocs = p0 * MR..p0 * MR + (chunk * MR).min(m - p0 * MR);
        (fns.output)(d, p, blk, ocs, (prod.as_ptr(), stride));
        p0 += chunk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::desc::{KIND_IM2COL, STEP_ADD, STEP_RELU};
    use crate::kernels::testing::{conv_desc, value};

    /// F(4×4) and F(2×2) against the direct path on odd sizes (ragged tiles on both
    /// edges, tiles wrapping across rows and items), both paddings, with
    /// bias, a residual add and ReLU, batch 2; and with a non-fused
    /// epilogue step (leaky ReLU). F(2×2, 5×5) the same on 5×5 kernels.
    /// On two threads, so the first F(4×4) case (12 tiles, one block)
    /// runs each block as two tasks over halves of the output channels.
    #[test]
    fn matches_the_direct_convolution() {
        let pool = crate::threads::Pool::new(2).expect("a test thread pool");
        pool.enter(matches_direct);
    }

    fn matches_direct() {
        for (r, c, m, h, w, pad, leaky) in [
            (3, 16, 16, 7, 9, 1, false),
            (3, 19, 22, 6, 5, 0, false),
            (3, 32, 17, 14, 14, 1, false),
            (3, 16, 40, 3, 3, 1, true),
            (3, 64, 64, 29, 31, 1, false),
            (3, 128, 96, 14, 14, 1, true),
            (3, 32, 64, 7, 7, 1, false),
            (5, 16, 16, 9, 11, 2, false),
            (5, 19, 22, 8, 7, 0, false),
            (5, 16, 40, 3, 4, 2, true),
            (5, 64, 192, 27, 27, 2, false),
        ] {
            let (oh, ow) = (h + 2 * pad + 1 - r, w + 2 * pad + 1 - r);
            let batch = 2;
            let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
            let wts: Vec<f32> = (0..m * c * r * r).map(|i| value(i + 5)).collect();
            let bias: Vec<f32> = (0..m).map(|i| value(i + 9)).collect();
            let res: Vec<f32> = (0..batch * m * oh * ow).map(|i| value(i + 3)).collect();
            let mut outs = Vec::new();
            // The direct path, then each Winograd variant with this CPU's
            // transforms and with the portable ones.
            // Then every micro-kernel this CPU has, with its transforms.
            let kernels = crate::kernels::micro::available();
            let mut variants = vec![(KIND_IM2COL, Tile::F4, None)];
            let tiles: &[Tile] = match r {
                3 => &[Tile::F4, Tile::F2],
                _ => &[Tile::F2K5],
            };
            for &tile in tiles {
                let kind = tile.kind();
                variants.push((kind, tile, None));
                variants.push((kind, tile, Some((Transforms::portable(tile), kernels[0]))));
                for &kern in &kernels {
                    variants.push((kind, tile, Some((Transforms::select(tile), kern))));
                }
                if let Some(avx2) = Transforms::avx2(tile) {
                    variants.push((kind, tile, Some((avx2, kernels[0]))));
                }
            }
            for (kind, tile, transforms) in variants {
                let mut d = GemmDesc {
                    kind,
                    ..conv_desc(batch, (c, h, w), m, (r, r), pad, &[STEP_ADD, STEP_RELU])
                };
                if leaky {
                    d.steps[1] = crate::kernels::desc::STEP_LEAKY;
                    d.alpha[1] = 0.1;
                }
                let packed = if kind != KIND_IM2COL {
                    let p = pack_weights(tile, m, c, &wts);
                    assert_eq!(p.len(), packed_len(tile, m, c));
                    p
                } else {
                    crate::kernels::micro::pack_weights(1, m, c * r * r, |_, o, kk| {
                        wts[o * c * r * r + kk]
                    })
                };
                let mut out = vec![f32::NAN; batch * m * oh * ow];
                let ptrs = [
                    x.as_ptr() as *mut f32,
                    out.as_mut_ptr(),
                    packed.as_ptr() as *mut f32,
                    bias.as_ptr() as *mut f32,
                    res.as_ptr() as *mut f32,
                ];
                match transforms {
                    None => unsafe { crate::kernels::dispatch::run(&d, ptrs.as_ptr()) },
                    Some((fns, kern)) => {
                        let p = Ptrs {
                            x: ptrs[0],
                            out: ptrs[1],
                            a: ptrs[2],
                            bias: ptrs[3],
                            res: [
                                ptrs[4],
                                std::ptr::null(),
                                std::ptr::null(),
                                std::ptr::null(),
                            ],
                        };
                        unsafe { run_with(kern, tile, fns, &d, &p) }
                    }
                }
                outs.push(out);
            }
            let scale = outs[0].iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (v, out) in outs.iter().enumerate().skip(1) {
                for (i, (a, b)) in outs[0].iter().zip(out).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{c}x{h}x{w}->{m} pad {pad}, variant {v}: element {i}: direct {a}, winograd {b}"
                    );
                }
            }
        }
    }

    /// A convolution ending in a 2×2/2 max pool, on every Winograd variant
    /// and on the direct path (which pools a full-size result), against the
    /// direct convolution pooled here: even and odd output sizes (odd ones
    /// drop their last row or column), ReLU and a general activation
    /// (leaky ReLU, through `gemm::activate`), tiles across items.
    #[test]
    fn pooled_outputs_match_pooling_the_direct_convolution() {
        let pool = crate::threads::Pool::new(2).expect("a test thread pool");
        pool.enter(|| {
            for (r, c, m, h, w, pad, leaky) in [
                (3, 16, 16, 28, 28, 1, false),
                (3, 16, 24, 8, 8, 1, true),
                (3, 19, 22, 9, 7, 0, false),
                (3, 32, 17, 14, 14, 1, false),
                (3, 64, 64, 7, 7, 1, false),
                (5, 16, 16, 12, 11, 2, true),
            ] {
                let (oh, ow) = (h + 2 * pad + 1 - r, w + 2 * pad + 1 - r);
                let (ph, pw) = (oh / 2, ow / 2);
                let batch = 2;
                let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
                let wts: Vec<f32> = (0..m * c * r * r).map(|i| value(i + 3)).collect();
                let bias: Vec<f32> = (0..m).map(|i| value(i + 5)).collect();
                let act = if leaky {
                    crate::kernels::desc::STEP_LEAKY
                } else {
                    STEP_RELU
                };
                let run = |kind: u32, tile: Tile, pooled: bool| {
                    let steps: &[u32] = if pooled {
                        &[act, crate::kernels::desc::STEP_MAXPOOL2]
                    } else {
                        &[act]
                    };
                    let mut d = GemmDesc {
                        kind,
                        ..conv_desc(batch, (c, h, w), m, (r, r), pad, steps)
                    };
                    d.alpha[0] = 0.1;
                    let (plane, item) = if pooled {
                        (ph * pw, m * ph * pw)
                    } else {
                        (oh * ow, m * oh * ow)
                    };
                    d.out_bstride = item as u64;
                    let packed = if kind != KIND_IM2COL {
                        pack_weights(tile, m, c, &wts)
                    } else {
                        crate::kernels::micro::pack_weights(1, m, c * r * r, |_, o, kk| {
                            wts[o * c * r * r + kk]
                        })
                    };
                    let mut out = vec![f32::NAN; batch * m * plane];
                    let ptrs = [
                        x.as_ptr() as *mut f32,
                        out.as_mut_ptr(),
                        packed.as_ptr() as *mut f32,
                        bias.as_ptr() as *mut f32,
                    ];
                    unsafe { crate::kernels::dispatch::run(&d, ptrs.as_ptr()) };
                    out
                };
                let full = run(KIND_IM2COL, Tile::F4, false);
                let mut want = vec![0.0f32; batch * m * ph * pw];
                for (i, v) in want.iter_mut().enumerate() {
                    let (plane, at) = (i / (ph * pw), i % (ph * pw));
                    let (y, x) = (2 * (at / pw), 2 * (at % pw));
                    let f = |dy: usize, dx: usize| full[plane * oh * ow + (y + dy) * ow + x + dx];
                    *v = f(0, 0).max(f(0, 1)).max(f(1, 0)).max(f(1, 1));
                }
                let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let tiles: &[Tile] = if r == 3 {
                    &[Tile::F4, Tile::F2]
                } else {
                    &[Tile::F2K5]
                };
                let variants = tiles
                    .iter()
                    .map(|&t| (t.kind(), t))
                    .chain([(KIND_IM2COL, Tile::F4)]);
                for (kind, tile) in variants {
                    let got = run(kind, tile, true);
                    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * scale,
                            "{c}x{h}x{w}->{m} kind {kind}: element {i}: want {a}, got {b}"
                        );
                    }
                }
            }
        });
    }

    /// Blocks are the kernel's width, or its half for one half block's
    /// tiles when the kernel has a narrow variant.
    #[test]
    fn block_widths() {
        let kern = crate::kernels::micro::MicroKernel {
            nr: 32,
            name: "widths",
            run: crate::kernels::micro::scalar_kernel,
            narrow: Some(crate::kernels::micro::scalar_kernel),
            thin: None,
            half_thin: None,
            fused: None,
        };
        let width = |total| block_kernel(&kern, total).1;
        assert_eq!(width(16), 16);
        assert_eq!(width(8), 16);
        assert_eq!(width(17), 32);
        assert_eq!(width(1000), 32);
        let no_narrow = crate::kernels::micro::MicroKernel {
            narrow: None,
            ..kern
        };
        assert_eq!(block_kernel(&no_narrow, 16).1, 32);
    }

    /// The choice: 3×3 stride 1 only, F(4×4) from one panel of its tiles,
    /// then F(2×2).
    #[test]
    fn eligibility() {
        let d = GemmDesc {
            batch: 1,
            groups: 1,
            in_c: 64,
            out_c: 64,
            oh: 56,
            ow: 56,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            ..GemmDesc::default()
        };
        let sized = |oh: u32, base: GemmDesc| choose(&GemmDesc { oh, ow: oh, ..base });
        let wide = GemmDesc {
            in_c: 128,
            out_c: 256,
            ..d
        };
        assert_eq!(choose(&d), Some(Tile::F4));
        assert_eq!(choose(&GemmDesc { sh: 2, ..d }), None);
        assert_eq!(sized(14, d), Some(Tile::F4));
        assert_eq!(sized(7, d), Some(Tile::F2));
        assert_eq!(sized(7, wide), Some(Tile::F2));
        assert_eq!(sized(5, wide), None);
        assert_eq!(sized(7, GemmDesc { batch: 4, ..d }), Some(Tile::F4));
        assert_eq!(choose(&GemmDesc { groups: 2, ..d }), None);
        assert_eq!(choose(&GemmDesc { in_c: 8, ..d }), None);
        let five = GemmDesc { kh: 5, kw: 5, ..d };
        assert_eq!(sized(27, five), Some(Tile::F2K5));
        assert_eq!(sized(7, five), Some(Tile::F2K5));
        assert_eq!(sized(5, five), None);
        assert_eq!(choose(&GemmDesc { sh: 2, ..five }), None);
        assert_eq!(choose(&GemmDesc { kh: 5, kw: 3, ..d }), None);
        assert_eq!(choose(&GemmDesc { kh: 7, kw: 7, ..d }), None);
    }
}
