//! Winograd F(4×4, 3×3) for stride-1, undilated, ungrouped 3×3 convolutions.
//!
//! Contract: the same output as the direct convolution up to float
//! rounding (a few 1e-6 relative at these channel counts; the unit tests
//! compare with the direct path and the differential tests with the
//! reference interpreter), with 36 multiplies per 4×4 output tile and input
//! channel instead of 144 — 4× fewer (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016, whose Bᵀ, G and Aᵀ these are).
//!
//! The tiles of the whole batch are numbered in raster order and taken a
//! micro-kernel panel (`nr` tiles) at a time — a *block*. Per block:
//! 1. every input channel's 6×6 patches are transformed, `V = Bᵀ d B`, into
//!    `V[ξ][c][tile]` — 36 packed B panels, so the GEMMs read them with a
//!    plain `k·nr` offset table;
//! 2. for each ξ, `M[ξ] = U[ξ] · V[ξ]` on the micro-kernel, a few row
//!    panels of output channels at a time (`U = G g Gᵀ`, transformed and
//!    packed at compile time by [`pack_weights`]);
//! 3. each output channel's tile values are transformed back, `Y = Aᵀ M A`,
//!    and stored through the bias and epilogue.
//!
//! Steps run as two parallel loops over a batch of blocks — transforms over
//! (block, channel chunk), then GEMMs plus output transforms over (block,
//! output-channel chunk) — so a layer with one block (batch 1 at 14×14)
//! still keeps every thread busy. The transforms are written over lanes of
//! eight tiles, which the compiler turns into one AVX2 vector each.

use super::gemm::{self, GemmDesc, Ptrs, STEP_ADD, STEP_RELU};
use super::micro::{MicroKernel, MR};
use super::Shared;
use crate::threads::{current_threads, parallel_for};
use std::cell::RefCell;

/// Transformed-domain positions of a 6×6 input tile.
const XI: usize = 36;
/// Tiles per transform vector: one AVX2 register of floats.
const LANES: usize = 8;
/// Row panels multiplied before their output transform: keeps the GEMM
/// results of one chunk (`36 · 8·MR · nr` floats, 108 KiB at nr = 16) in L2.
const PANELS_PER_CHUNK: usize = 8;
/// Bytes of transformed input kept per batch of blocks.
const V_BUDGET: usize = 4 << 20;

type Lanes = [f32; LANES];

/// Whether a convolution takes this path.
///
/// The transformed weights are 4× the direct ones (36 vs 9 per channel
/// pair) and are read once per block, so a layer with few tiles is bound
/// by reading them: below about 48 tiles per batch the direct convolution
/// wins (measured per layer with `netc bench`, 2 threads).
pub fn eligible(d: &GemmDesc) -> bool {
    let tiles = d.batch as usize * tiles_per_item(d);
    d.kh == 3
        && d.kw == 3
        && d.sh == 1
        && d.sw == 1
        && d.dh == 1
        && d.dw == 1
        && d.groups == 1
        && d.in_c >= 16
        && d.out_c >= 16
        && tiles >= 16
}

fn tiles_per_item(d: &GemmDesc) -> usize {
    (d.oh.div_ceil(4) * d.ow.div_ceil(4)) as usize
}

/// `U[ξ] = G g Gᵀ` for every (out, in) pair, packed as 36 consecutive
/// weight matrices (`out × in` each) in the micro-kernel's panel layout.
/// `g(o, c)` returns the 3×3 kernel row-major. Computed in f64.
pub fn pack_weights(out_c: usize, in_c: usize, g: impl Fn(usize, usize) -> [f32; 9]) -> Vec<f32> {
    // G (6×3) applied to three values.
    fn gmul(a: f64, b: f64, c: f64) -> [f64; 6] {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    }
    let mut u = vec![[0.0f32; XI]; out_c * in_c];
    for o in 0..out_c {
        for c in 0..in_c {
            let k = g(o, c).map(f64::from);
            // G g: 6×3, column by column.
            let mut gg = [[0.0f64; 3]; 6];
            for j in 0..3 {
                for (i, v) in gmul(k[j], k[3 + j], k[6 + j]).into_iter().enumerate() {
                    gg[i][j] = v;
                }
            }
            // (G g) Gᵀ: each row through G again.
            let t = &mut u[o * in_c + c];
            for (i, row) in gg.iter().enumerate() {
                for (j, v) in gmul(row[0], row[1], row[2]).into_iter().enumerate() {
                    t[6 * i + j] = v as f32;
                }
            }
        }
    }
    (0..XI)
        .flat_map(|xi| gemm::pack_weights(1, out_c, in_c, |_, o, c| u[o * in_c + c][xi]))
        .collect()
}

/// Floats of [`pack_weights`]' output.
pub fn packed_len(out_c: usize, in_c: usize) -> usize {
    XI * gemm::packed_len(1, out_c, in_c)
}

/// `Bᵀ d` for six lane vectors (one column of six patches per lane).
#[inline(always)]
fn bt(d: [&Lanes; 6]) -> [Lanes; 6] {
    let mut v = [[0.0f32; LANES]; 6];
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

/// `Aᵀ m` for six lane vectors.
#[inline(always)]
fn at(m: [&Lanes; 6]) -> [Lanes; 4] {
    let mut y = [[0.0f32; LANES]; 4];
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

/// `Bᵀ d B` of 36 lane vectors `d[6·row + col]`, in the same layout.
#[inline(always)]
fn input_transform(d: &[Lanes; XI]) -> [Lanes; XI] {
    let mut t = [[0.0f32; LANES]; XI];
    for col in 0..6 {
        let v = bt(std::array::from_fn(|row| &d[6 * row + col]));
        for (row, x) in v.into_iter().enumerate() {
            t[6 * row + col] = x;
        }
    }
    let mut out = [[0.0f32; LANES]; XI];
    for row in 0..6 {
        let v = bt(std::array::from_fn(|col| &t[6 * row + col]));
        out[6 * row..6 * row + 6].copy_from_slice(&v);
    }
    out
}

/// `Aᵀ M A` of 36 lane vectors, as 16 lane vectors `y[4·row + col]`.
#[inline(always)]
fn output_transform(m: &[Lanes; XI]) -> [Lanes; 16] {
    let mut t = [[0.0f32; LANES]; 24];
    for col in 0..6 {
        let y = at(std::array::from_fn(|row| &m[6 * row + col]));
        for (row, x) in y.into_iter().enumerate() {
            t[6 * row + col] = x;
        }
    }
    let mut out = [[0.0f32; LANES]; 16];
    for row in 0..4 {
        let y = at(std::array::from_fn(|col| &t[6 * row + col]));
        out[4 * row..4 * row + 4].copy_from_slice(&y);
    }
    out
}

/// Where tile `g` (numbered over the whole batch) sits.
#[derive(Clone, Copy)]
struct Tiles {
    total: usize,
    per_item: usize,
    across: usize,
}

impl Tiles {
    fn new(d: &GemmDesc) -> Tiles {
        Tiles {
            total: d.batch as usize * tiles_per_item(d),
            per_item: tiles_per_item(d),
            across: d.ow.div_ceil(4) as usize,
        }
    }

    /// (item, top output row, left output column) of tile `g`.
    fn at(&self, g: usize) -> (usize, usize, usize) {
        let t = g % self.per_item;
        (
            g / self.per_item,
            4 * (t / self.across),
            4 * (t % self.across),
        )
    }
}

/// Transform channel `c` of the `nr` tiles of block `block` into
/// `v[ξ][c][lane]` (`v` is the block's buffer). Tiles past the last are
/// zero.
#[inline(always)]
unsafe fn transform_channel(
    d: &GemmDesc,
    x: *const f32,
    tiles: Tiles,
    block: usize,
    nr: usize,
    c: usize,
    v: *mut f32,
) {
    let (h, w) = (d.h as isize, d.w as isize);
    let (pt, pl) = (d.pt as isize, d.pl as isize);
    let c_in = d.in_c as usize;
    for chunk in 0..nr / LANES {
        let mut patch = [[0.0f32; LANES]; XI];
        for lane in 0..LANES {
            let g = block * nr + chunk * LANES + lane;
            if g >= tiles.total {
                break;
            }
            let (item, oy, ox) = tiles.at(g);
            let src = x.add(item * d.x_bstride as usize + c * (h * w) as usize);
            let (y0, x0) = (oy as isize - pt, ox as isize - pl);
            if y0 >= 0 && x0 >= 0 && y0 + 6 <= h && x0 + 6 <= w {
                for i in 0..6 {
                    let row = src.add(((y0 + i as isize) * w + x0) as usize);
                    for j in 0..6 {
                        patch[6 * i + j][lane] = *row.add(j);
                    }
                }
            } else {
                for i in 0..6 {
                    let yy = y0 + i as isize;
                    if yy < 0 || yy >= h {
                        continue;
                    }
                    for j in 0..6 {
                        let xx = x0 + j as isize;
                        if xx >= 0 && xx < w {
                            patch[6 * i + j][lane] = *src.add((yy * w + xx) as usize);
                        }
                    }
                }
            }
        }
        let out = input_transform(&patch);
        for (xi, lanes) in out.iter().enumerate() {
            let dst = v.add((xi * c_in + c) * nr + chunk * LANES);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, LANES);
        }
    }
}

/// Transform output channel `oc`'s GEMM results (`m[ξ·stride + lane]`) of
/// block `block` back and store them with the bias and epilogue.
#[inline(always)]
unsafe fn store_channel(
    d: &GemmDesc,
    p: &Ptrs,
    tiles: Tiles,
    block: usize,
    nr: usize,
    oc: usize,
    m: *const f32,
    stride: usize,
) {
    let (oh, ow) = (d.oh as usize, d.ow as usize);
    let bias = if d.has_bias != 0 {
        *p.bias.add(oc)
    } else {
        0.0
    };
    let steps = &d.steps[..d.n_steps as usize];
    let (relu, add) = (
        steps == [STEP_RELU] || steps == [STEP_ADD, STEP_RELU],
        steps.first() == Some(&STEP_ADD),
    );
    let simple = matches!(steps, [] | [STEP_RELU] | [STEP_ADD] | [STEP_ADD, STEP_RELU]);
    let plane = oh * ow;
    for chunk in 0..nr / LANES {
        let first = block * nr + chunk * LANES;
        if first >= tiles.total {
            break;
        }
        let mut mv = [[0.0f32; LANES]; XI];
        for (xi, lanes) in mv.iter_mut().enumerate() {
            std::ptr::copy_nonoverlapping(
                m.add(xi * stride + chunk * LANES),
                lanes.as_mut_ptr(),
                LANES,
            );
        }
        let mut y = output_transform(&mv);
        for v in y.iter_mut().flatten() {
            *v += bias;
        }
        if relu && !add {
            for v in y.iter_mut().flatten() {
                *v = v.max(0.0);
            }
        }
        for lane in 0..LANES.min(tiles.total - first) {
            let (item, oy, ox) = tiles.at(first + lane);
            let out = p.out.add(item * d.out_bstride as usize + oc * plane);
            let res = if add {
                p.res[0].add(item * d.res_bstride[0] as usize + oc * plane)
            } else {
                std::ptr::null()
            };
            for r in 0..4.min(oh - oy) {
                for s in 0..4.min(ow - ox) {
                    let at = (oy + r) * ow + ox + s;
                    let v = y[4 * r + s][lane];
                    if !simple {
                        gemm::store_one(d, p, item, oc, at, v);
                    } else if add {
                        let sum = v + *res.add(at);
                        *out.add(at) = if relu { sum.max(0.0) } else { sum };
                    } else {
                        *out.add(at) = v;
                    }
                }
            }
        }
    }
}

/// The transforms compiled for AVX2 (eight lanes = one register) and for
/// the baseline; chosen once per call.
#[derive(Clone, Copy)]
struct Transforms {
    input: unsafe fn(&GemmDesc, *const f32, Tiles, usize, usize, usize, *mut f32),
    output: unsafe fn(&GemmDesc, &Ptrs, Tiles, usize, usize, usize, *const f32, usize),
}

impl Transforms {
    fn select() -> Transforms {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Transforms {
                input: avx2::transform_channel,
                output: avx2::store_channel,
            };
        }
        Transforms {
            input: transform_channel,
            output: store_channel,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{GemmDesc, Ptrs, Tiles};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transform_channel(
        d: &GemmDesc,
        x: *const f32,
        tiles: Tiles,
        block: usize,
        nr: usize,
        c: usize,
        v: *mut f32,
    ) {
        super::transform_channel(d, x, tiles, block, nr, c, v)
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn store_channel(
        d: &GemmDesc,
        p: &Ptrs,
        tiles: Tiles,
        block: usize,
        nr: usize,
        oc: usize,
        m: *const f32,
        stride: usize,
    ) {
        super::store_channel(d, p, tiles, block, nr, oc, m, stride)
    }
}

thread_local! {
    /// Transformed input of a batch of blocks (calling thread) and the
    /// `k·nr` offset table of its packed panels.
    static INPUT: RefCell<(Vec<f32>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// GEMM results of one chunk of row panels (each worker).
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Run one eligible convolution (see the module doc).
///
/// # Safety
/// As [`gemm::run`]; the packed weights must come from [`pack_weights`].
pub(crate) unsafe fn run(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let nr = kern.nr;
    let (c_in, m) = (d.in_c as usize, d.out_c as usize);
    let tiles = Tiles::new(d);
    let blocks = tiles.total.div_ceil(nr);
    let block_floats = XI * c_in * nr;
    let per_batch = (V_BUDGET / 4 / block_floats).clamp(1, blocks);
    let row_panels = m.div_ceil(MR);
    let a_len = gemm::packed_len(1, m, c_in);
    let threads = current_threads();
    let fns = Transforms::select();
    INPUT.with(|input| {
        let mut input = input.borrow_mut();
        let (v, offs) = &mut *input;
        if v.len() < per_batch * block_floats {
            v.resize(per_batch * block_floats, 0.0);
        }
        offs.clear();
        offs.extend((0..c_in).map(|k| k * nr));
        let (vp, op) = (Shared(v.as_mut_ptr()), Shared::new(offs.as_ptr()));
        let mut b0 = 0;
        while b0 < blocks {
            let nb = per_batch.min(blocks - b0);
            // Transforms: (block, channel chunk) tasks.
            let splits = (4 * threads).div_ceil(nb).clamp(1, c_in);
            let per_split = c_in.div_ceil(splits);
            parallel_for(nb * splits, |t| {
                let (b, s) = (t / splits, t % splits);
                let block_v = vp.get().add(b * block_floats);
                for c in s * per_split..((s + 1) * per_split).min(c_in) {
                    // SAFETY: each task writes its own channels of its block.
                    unsafe { (fns.input)(d, p.x, tiles, b0 + b, nr, c, block_v) };
                }
            });
            // GEMMs and output transforms: (block, row-panel range) tasks.
            let splits = (4 * threads).div_ceil(nb).clamp(1, row_panels);
            let per_split = row_panels.div_ceil(splits);
            parallel_for(nb * splits, |t| {
                let (b, s) = (t / splits, t % splits);
                let panels = s * per_split..((s + 1) * per_split).min(row_panels);
                PRODUCTS.with(|prod| {
                    let mut prod = prod.borrow_mut();
                    let need = XI * PANELS_PER_CHUNK * MR * nr;
                    if prod.len() < need {
                        prod.resize(need, 0.0);
                    }
                    // SAFETY: each task reads its block's transformed input
                    // and writes its own output channels.
                    unsafe {
                        multiply_and_store(
                            kern,
                            fns,
                            d,
                            p,
                            tiles,
                            b0 + b,
                            vp.get().add(b * block_floats),
                            op.get(),
                            a_len,
                            panels,
                            &mut prod,
                        )
                    };
                });
            });
            b0 += nb;
        }
    });
}

/// Steps 2 and 3 for block `block` and the output channels of `panels`,
/// [`PANELS_PER_CHUNK`] row panels at a time.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_and_store(
    kern: MicroKernel,
    fns: Transforms,
    d: &GemmDesc,
    p: &Ptrs,
    tiles: Tiles,
    block: usize,
    v: *const f32,
    offs: *const usize,
    a_len: usize,
    panels: std::ops::Range<usize>,
    prod: &mut [f32],
) {
    let nr = kern.nr;
    let (c_in, m) = (d.in_c as usize, d.out_c as usize);
    let mut p0 = panels.start;
    while p0 < panels.end {
        let chunk = PANELS_PER_CHUNK.min(panels.end - p0);
        let stride = chunk * MR * nr;
        for xi in 0..XI {
            let a = p.a.add(xi * a_len);
            let b = v.add(xi * c_in * nr);
            for q in 0..chunk {
                let a_panel = a.add((p0 + q) * MR * c_in);
                let tile = prod.as_mut_ptr().add(xi * stride + q * MR * nr);
                (kern.run)(c_in, a_panel, b, offs, tile);
            }
        }
        for row in 0..(chunk * MR).min(m - p0 * MR) {
            let oc = p0 * MR + row;
            (fns.output)(
                d,
                p,
                tiles,
                block,
                nr,
                oc,
                prod.as_ptr().add(row * nr),
                stride,
            );
        }
        p0 += chunk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{KIND_IM2COL, KIND_WINOGRAD, STEP_ADD, STEP_RELU};

    fn value(i: usize) -> f32 {
        ((i * 7919) % 23) as f32 / 11.0 - 1.0
    }

    /// F(4×4) against the direct path on odd sizes (ragged tiles on both
    /// edges, tiles wrapping across rows and items), both paddings, with
    /// bias, a residual add and ReLU, batch 2; and with a non-fused
    /// epilogue step (leaky ReLU).
    #[test]
    fn matches_the_direct_convolution() {
        for (c, m, h, w, pad, leaky) in [
            (16, 16, 7, 9, 1, false),
            (19, 22, 6, 5, 0, false),
            (32, 17, 14, 14, 1, false),
            (16, 40, 3, 3, 1, true),
            (64, 64, 29, 31, 1, false),
            (128, 96, 14, 14, 1, true),
        ] {
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let batch = 2;
            let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
            let wts: Vec<f32> = (0..m * c * 9).map(|i| value(i + 5)).collect();
            let bias: Vec<f32> = (0..m).map(|i| value(i + 9)).collect();
            let res: Vec<f32> = (0..batch * m * oh * ow).map(|i| value(i + 3)).collect();
            let mut outs = Vec::new();
            for kind in [KIND_IM2COL, KIND_WINOGRAD] {
                let mut d = GemmDesc {
                    kind,
                    batch: batch as u32,
                    groups: 1,
                    in_c: c as u32,
                    h: h as u32,
                    w: w as u32,
                    out_c: m as u32,
                    oh: oh as u32,
                    ow: ow as u32,
                    kh: 3,
                    kw: 3,
                    sh: 1,
                    sw: 1,
                    pt: pad as u32,
                    pl: pad as u32,
                    dh: 1,
                    dw: 1,
                    has_bias: 1,
                    n_res: 1,
                    n_steps: 2,
                    steps: [STEP_ADD, STEP_RELU, 0, 0, 0, 0, 0, 0],
                    x_bstride: (c * h * w) as u64,
                    out_bstride: (m * oh * ow) as u64,
                    res_bstride: [(m * oh * ow) as u64, 0, 0, 0],
                    ..GemmDesc::default()
                };
                if leaky {
                    d.steps[1] = gemm::STEP_LEAKY;
                    d.alpha[1] = 0.1;
                }
                let packed = if kind == KIND_WINOGRAD {
                    let p = pack_weights(m, c, |o, ci| {
                        std::array::from_fn(|k| wts[(o * c + ci) * 9 + k])
                    });
                    assert_eq!(p.len(), packed_len(m, c));
                    p
                } else {
                    gemm::pack_weights(1, m, c * 9, |_, r, kk| wts[r * c * 9 + kk])
                };
                let mut out = vec![f32::NAN; batch * m * oh * ow];
                let ptrs = [
                    x.as_ptr() as *mut f32,
                    out.as_mut_ptr(),
                    packed.as_ptr() as *mut f32,
                    bias.as_ptr() as *mut f32,
                    res.as_ptr() as *mut f32,
                ];
                unsafe { gemm::run(&d, ptrs.as_ptr()) };
                outs.push(out);
            }
            let scale = outs[0].iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (i, (a, b)) in outs[0].iter().zip(&outs[1]).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * scale,
                    "{c}x{h}x{w}->{m} pad {pad}: element {i}: direct {a}, winograd {b}"
                );
            }
        }
    }

    /// The eligibility rule: 3×3 stride 1 with enough tiles only.
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
        assert!(eligible(&d));
        assert!(!eligible(&GemmDesc { sh: 2, ..d }));
        assert!(!eligible(&GemmDesc { oh: 7, ow: 7, ..d }));
        assert!(eligible(&GemmDesc {
            oh: 7,
            ow: 7,
            batch: 16,
            ..d
        }));
        assert!(!eligible(&GemmDesc { groups: 2, ..d }));
    }
}
