//! Winograd F(2×2, 3×3) for stride-1, undilated, ungrouped 3×3 convolutions.
//!
//! Contract: the same output as the direct convolution (up to float
//! rounding; measured against the reference interpreter on every model by
//! the differential tests), with 16 multiplies per 2×2 output tile and
//! input channel instead of 36 — 2.25× fewer (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016).
//!
//! Per batch item: every 4×4 input patch (stride 2, zero-padded) is
//! transformed, `V = Bᵀ d B`, into 16 planes `V[ξ][c][tile]`; 16 GEMMs
//! `M[ξ] = U[ξ] · V[ξ]` run on the micro-kernel, B read in place; each
//! tile's 16 values are transformed back, `Y = Aᵀ M A`, and stored with the
//! bias and epilogue. `U[ξ] = G g Gᵀ` is computed at compile time
//! ([`pack_weights`]). The tile count is rounded up to a whole number of
//! the widest micro-kernel panel, so no panel is ragged.

use super::gemm::{self, GemmDesc, Ptrs};
use super::micro::{MicroKernel, MR};
use super::Shared;
use crate::threads::parallel_for;
use std::cell::RefCell;

/// Transformed-domain positions of a 4×4 tile.
const XI: usize = 16;
/// Tile columns are padded to a multiple of this (every kernel's panel).
const COL_ALIGN: usize = 32;

/// Whether a convolution takes this path.
pub fn eligible(d: &GemmDesc) -> bool {
    d.kh == 3
        && d.kw == 3
        && d.sh == 1
        && d.sw == 1
        && d.dh == 1
        && d.dw == 1
        && d.groups == 1
        // The transforms cost a pass over the input and output per item and
        // the tile count is padded to 32: measured per layer on ResNet-18
        // and VGG-16 (2 threads), Winograd lost at 64 channels × 56² (5.6
        // vs 3.0 ms), 128 × 28² and 512 × 7² and won from 256 channels at
        // 14² and up (VGG-16 ≈ 400 → 360 ms).
        && d.in_c >= 256
        && d.out_c >= 256
        && d.oh * d.ow >= 196
}

/// `U[ξ] = G g Gᵀ` for every (out, in) pair, packed as 16 consecutive
/// weight matrices (`out × in` each) in the micro-kernel's panel layout.
/// `g(o, c)` returns the 3×3 kernel row-major.
pub fn pack_weights(out_c: usize, in_c: usize, g: impl Fn(usize, usize) -> [f32; 9]) -> Vec<f32> {
    let mut u = vec![[0.0f32; XI]; out_c * in_c];
    for o in 0..out_c {
        for c in 0..in_c {
            let k = g(o, c);
            // G g: 4×3, rows g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2 (per column).
            let mut gg = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, e) = (k[j], k[3 + j], k[6 + j]);
                gg[0][j] = a;
                gg[1][j] = 0.5 * (a + b + e);
                gg[2][j] = 0.5 * (a - b + e);
                gg[3][j] = e;
            }
            let t = &mut u[o * in_c + c];
            for (i, row) in gg.iter().enumerate() {
                let (a, b, e) = (row[0], row[1], row[2]);
                t[4 * i] = a;
                t[4 * i + 1] = 0.5 * (a + b + e);
                t[4 * i + 2] = 0.5 * (a - b + e);
                t[4 * i + 3] = e;
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

thread_local! {
    /// Transformed input and GEMM output of one item (calling thread).
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Run one eligible convolution (see the module doc).
///
/// # Safety
/// As [`gemm::run`]; the packed weights must come from [`pack_weights`].
pub(crate) unsafe fn run(kern: MicroKernel, d: &GemmDesc, p: &Ptrs) {
    let (c_in, m) = (d.in_c as usize, d.out_c as usize);
    let (oh, ow) = (d.oh as usize, d.ow as usize);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    let tp = tiles.next_multiple_of(COL_ALIGN);
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        let (v, mm) = &mut *b;
        if v.len() < XI * c_in * tp {
            v.resize(XI * c_in * tp, 0.0);
        }
        if mm.len() < XI * m * tp {
            mm.resize(XI * m * tp, 0.0);
        }
        for item in 0..d.batch as usize {
            transform_input(d, p.x.add(item * d.x_bstride as usize), v, tp, tw);
            multiply(kern, d, p.a, v, mm, tp);
            transform_output(d, p, item, mm, tp, tw);
        }
    });
}

/// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for every channel and tile; columns past the
/// last tile are zero.
unsafe fn transform_input(d: &GemmDesc, x: *const f32, v: &mut [f32], tp: usize, tw: usize) {
    let (h, w) = (d.h as isize, d.w as isize);
    let (pt, pl) = (d.pt as isize, d.pl as isize);
    let (c_in, tiles) = (d.in_c as usize, d.oh.div_ceil(2) as usize * tw);
    let plane = c_in * tp;
    let vp = Shared::new(v.as_mut_ptr());
    let xs = Shared::new(x);
    let channel = |c: usize| {
        let (v, x) = (vp.get(), xs.get() as *const f32);
        // SAFETY: channel `c` writes only its own rows of each ξ plane.
        unsafe {
            let src = x.add(c * (h * w) as usize);
            for t in 0..tiles {
                let (y0, x0) = (2 * (t / tw) as isize - pt, 2 * (t % tw) as isize - pl);
                let mut dd = [[0.0f32; 4]; 4];
                let inside = y0 >= 0 && x0 >= 0 && y0 + 4 <= h && x0 + 4 <= w;
                for (i, row) in dd.iter_mut().enumerate() {
                    let yy = y0 + i as isize;
                    if !inside && (yy < 0 || yy >= h) {
                        continue;
                    }
                    for (j, e) in row.iter_mut().enumerate() {
                        let xx = x0 + j as isize;
                        if inside || (xx >= 0 && xx < w) {
                            *e = *src.add((yy * w + xx) as usize);
                        }
                    }
                }
                // Bᵀ d: rows d0−d2, d1+d2, d2−d1, d1−d3; then the same on columns.
                let mut r = [[0.0f32; 4]; 4];
                for j in 0..4 {
                    r[0][j] = dd[0][j] - dd[2][j];
                    r[1][j] = dd[1][j] + dd[2][j];
                    r[2][j] = dd[2][j] - dd[1][j];
                    r[3][j] = dd[1][j] - dd[3][j];
                }
                for (i, row) in r.iter().enumerate() {
                    let o = [
                        row[0] - row[2],
                        row[1] + row[2],
                        row[2] - row[1],
                        row[1] - row[3],
                    ];
                    for (j, val) in o.into_iter().enumerate() {
                        *v.add((4 * i + j) * plane + c * tp + t) = val;
                    }
                }
            }
            for xi in 0..XI {
                for t in tiles..tp {
                    *v.add(xi * plane + c * tp + t) = 0.0;
                }
            }
        }
    };
    if c_in * tiles < 4096 {
        (0..c_in).for_each(channel);
    } else {
        parallel_for(c_in, channel);
    }
}

/// `M[ξ] = U[ξ] · V[ξ]` for the 16 positions, tiles of the micro-kernel
/// stored raw (the epilogue comes after the output transform).
unsafe fn multiply(
    kern: MicroKernel,
    d: &GemmDesc,
    a: *const f32,
    v: &[f32],
    mm: &mut [f32],
    tp: usize,
) {
    let (c_in, m) = (d.in_c as usize, d.out_c as usize);
    let nr = kern.nr;
    let row_panels = m.div_ceil(MR);
    let col_panels = tp / nr;
    // Tasks: (ξ, block of row panels, block of column panels).
    const COLS: usize = 8;
    let col_blocks = col_panels.div_ceil(COLS);
    let per_task_rows = row_panels.div_ceil(row_panels.min(4));
    let row_blocks = row_panels.div_ceil(per_task_rows);
    let tasks = XI * row_blocks * col_blocks;
    let offs: Vec<usize> = (0..c_in).map(|c| c * tp).collect();
    let (vp, mp, ap) = (
        Shared::new(v.as_ptr()),
        Shared::new(mm.as_mut_ptr()),
        Shared::new(a),
    );
    let a_len = gemm::packed_len(1, m, c_in);
    let task = |t: usize| {
        let cb = t % col_blocks;
        let rb = (t / col_blocks) % row_blocks;
        let xi = t / (col_blocks * row_blocks);
        let mut tile = [0.0f32; MR * 32];
        // SAFETY: each task writes its own rows × columns of plane ξ.
        unsafe {
            let b_plane = vp.get().add(xi * c_in * tp) as *const f32;
            let a_plane = (ap.get() as *const f32).add(xi * a_len);
            let out = mp.get().add(xi * m * tp);
            for panel in rb * per_task_rows..((rb + 1) * per_task_rows).min(row_panels) {
                let a_panel = a_plane.add(panel * MR * c_in);
                let rows = MR.min(m - panel * MR);
                for cp in cb * COLS..((cb + 1) * COLS).min(col_panels) {
                    (kern.run)(
                        c_in,
                        a_panel,
                        b_plane.add(cp * nr),
                        offs.as_ptr(),
                        tile.as_mut_ptr(),
                    );
                    for r in 0..rows {
                        let dst = out.add((panel * MR + r) * tp + cp * nr);
                        std::ptr::copy_nonoverlapping(tile.as_ptr().add(r * nr), dst, nr);
                    }
                }
            }
        }
    };
    parallel_for(tasks, task);
}

/// `Y = Aᵀ M A` per tile and output channel, plus bias and epilogue, into
/// the output (the last row/column of tiles may hang over the edge).
unsafe fn transform_output(d: &GemmDesc, p: &Ptrs, item: usize, mm: &[f32], tp: usize, tw: usize) {
    let m = d.out_c as usize;
    let (oh, ow) = (d.oh as usize, d.ow as usize);
    let tiles = oh.div_ceil(2) * tw;
    let mp = Shared::new(mm.as_ptr());
    let channel = |o: usize| {
        let mm = mp.get() as *const f32;
        let bias = if d.has_bias != 0 {
            // SAFETY: the bias holds out_c floats.
            unsafe { *p.bias.add(o) }
        } else {
            0.0
        };
        for t in 0..tiles {
            let mut q = [[0.0f32; 4]; 4];
            for (xi, e) in q.iter_mut().flatten().enumerate() {
                // SAFETY: ξ, o, t are inside the buffer.
                *e = unsafe { *mm.add((xi * m + o) * tp + t) };
            }
            // Aᵀ M: rows m0+m1+m2, m1−m2−m3; then the same on columns.
            let mut r = [[0.0f32; 4]; 2];
            for j in 0..4 {
                r[0][j] = q[0][j] + q[1][j] + q[2][j];
                r[1][j] = q[1][j] - q[2][j] - q[3][j];
            }
            let (y0, x0) = (2 * (t / tw), 2 * (t % tw));
            for (a, row) in r.iter().enumerate() {
                let y = [row[0] + row[1] + row[2], row[1] - row[2] - row[3]];
                for (b, val) in y.into_iter().enumerate() {
                    let (yy, xx) = (y0 + a, x0 + b);
                    if yy < oh && xx < ow {
                        // SAFETY: (item, o, yy, xx) is inside the output.
                        unsafe { gemm::store_one(d, p, item, o, yy * ow + xx, val + bias) };
                    }
                }
            }
        }
    };
    if m * tiles < 4096 {
        (0..m).for_each(channel);
    } else {
        parallel_for(m, channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{KIND_IM2COL, KIND_WINOGRAD, STEP_ADD, STEP_RELU};

    fn value(i: usize) -> f32 {
        ((i * 7919) % 23) as f32 / 11.0 - 1.0
    }

    /// Winograd against the direct path on odd sizes, both paddings, with
    /// bias, a residual add and ReLU, batch 2.
    #[test]
    fn matches_the_direct_convolution() {
        for (c, m, h, w, pad) in [
            (16, 16, 7, 9, 1),
            (19, 22, 6, 5, 0),
            (32, 17, 14, 14, 1),
            (16, 40, 3, 3, 1),
            (256, 256, 14, 15, 1),
        ] {
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let batch = 2;
            let x: Vec<f32> = (0..batch * c * h * w).map(value).collect();
            let wts: Vec<f32> = (0..m * c * 9).map(|i| value(i + 5)).collect();
            let bias: Vec<f32> = (0..m).map(|i| value(i + 9)).collect();
            let res: Vec<f32> = (0..batch * m * oh * ow).map(|i| value(i + 3)).collect();
            let mut outs = Vec::new();
            for kind in [KIND_IM2COL, KIND_WINOGRAD] {
                let d = GemmDesc {
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
                // Small shapes run the path too; only the last is one the
                // code generator would choose.
                assert_eq!(eligible(&d), c == 256, "{d:?}");
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
            for (i, (a, b)) in outs[0].iter().zip(&outs[1]).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{c}x{h}x{w}->{m} pad {pad}: element {i}: direct {a}, winograd {b}"
                );
            }
        }
    }
}
