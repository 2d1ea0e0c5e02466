//! A plain matrix product `C (+)= A·B` over strided operands, on the same
//! micro-kernels as the compiled convolutions.
//!
//! The compiled inference path packs its weights once at compile time and
//! reads activations through descriptors; the training step multiplies
//! matrices whose both sides change every step (weights, activations,
//! gradients, in either orientation), so it packs both operands per call:
//! A into the micro-kernel's MR-row panels, B in blocks of `KC` rows of
//! one kernel width. Single-threaded by contract: callers split the work
//! (the training step runs one image per task).

use super::micro::{self, MicroKernel, MR};
use std::sync::OnceLock;

/// Rows of B per packed block: `KC × NR` floats stay in L1/L2 while every
/// A panel passes over them.
const KC: usize = 256;

/// A read-only strided matrix: element `(r, c)` at `data[r·rs + c·cs]`
/// (f32 for [`matmul`]; the training step's f64 checks use the same view).
#[derive(Debug)]
pub struct MatRef<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for MatRef<'_, T> {}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, without moving data.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows `r0 .. r0 + rows`.
    pub fn row_block(self, r0: usize, rows: usize) -> Self {
        MatRef {
            data: &self.data[r0 * self.rs..],
            rows,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

fn kernel() -> MicroKernel {
    static BEST: OnceLock<MicroKernel> = OnceLock::new();
    *BEST.get_or_init(micro::select)
}

/// `C = A·B`, or `C += A·B` when `accumulate`; C is row-major with rows
/// `ldc` apart and `A.rows × B.cols` in size.
///
/// # Panics
/// If the inner dimensions disagree or an operand is smaller than its
/// shape and strides say: callers derive both from checked graph shapes.
pub fn matmul(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions {k} and {}", b.rows);
    assert!(
        a.in_bounds() && b.in_bounds(),
        "matmul: operand out of bounds"
    );
    assert!(
        m == 0 || n == 0 || (m - 1) * ldc + n <= c.len(),
        "matmul: C too small"
    );
    if !accumulate {
        for r in 0..m {
            c[r * ldc..][..n].fill(0.0);
        }
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let kern = kernel();
    let nr = kern.nr;
    let panels = m.div_ceil(MR);
    let packed_a = pack_a(&a);
    let mut block = vec![0.0f32; KC * nr];
    let packed_offs: Vec<usize> = (0..KC).map(|kk| kk * nr).collect();
    let mut direct_offs = vec![0usize; KC];
    let mut tile = vec![0.0f32; MR * nr];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        // Row-major B is read in place for whole panels: the offset table
        // points the kernel at each row, no copy.
        for (kk, o) in direct_offs.iter_mut().enumerate().take(kc) {
            *o = (k0 + kk) * b.rs;
        }
        for j0 in (0..n).step_by(nr) {
            let w = nr.min(n - j0);
            let (base, offs) = if b.cs == 1 && w == nr {
                (b.data[j0..].as_ptr(), &direct_offs)
            } else {
                pack_b(&b, k0, kc, j0, w, nr, &mut block);
                (block.as_ptr(), &packed_offs)
            };
            for p in 0..panels {
                let a_block = &packed_a[p * MR * k + k0 * MR..][..MR * kc];
                // SAFETY: `a_block` holds MR·kc floats; `base + offs[kk]`
                // starts `nr` readable floats for every kk < kc (a packed
                // block, or a whole panel of B's row k0 + kk, which
                // `in_bounds` checked); `tile` holds MR·nr floats: the
                // kernel's contract.
                unsafe { (kern.run)(kc, a_block.as_ptr(), base, offs.as_ptr(), tile.as_mut_ptr()) };
                let rows = MR.min(m - p * MR);
                for r in 0..rows {
                    let out = &mut c[(p * MR + r) * ldc + j0..][..w];
                    for (o, t) in out.iter_mut().zip(&tile[r * nr..][..w]) {
                        *o += t;
                    }
                }
            }
        }
    }
}

/// A in the micro-kernel's layout: panels of MR rows, k-major, the last
/// panel zero-padded.
fn pack_a(a: &MatRef) -> Vec<f32> {
    let (m, k) = (a.rows, a.cols);
    let mut out = vec![0.0f32; m.div_ceil(MR) * MR * k];
    for (p, panel) in out.chunks_mut(MR * k).enumerate() {
        let rows = MR.min(m - p * MR);
        if a.cs == 1 && rows == MR {
            // Six contiguous rows interleaved: one pass, no index checks
            // in the inner loop.
            let at = |r: usize| &a.data[(p * MR + r) * a.rs..][..k];
            let src = [at(0), at(1), at(2), at(3), at(4), at(5)];
            for (kk, dst) in panel.chunks_exact_mut(MR).enumerate() {
                for (d, s) in dst.iter_mut().zip(&src) {
                    *d = s[kk];
                }
            }
            continue;
        }
        for r in 0..rows {
            let base = (p * MR + r) * a.rs;
            for kk in 0..k {
                panel[kk * MR + r] = a.data[base + kk * a.cs];
            }
        }
    }
    out
}

/// Rows `k0 .. k0 + kc`, columns `j0 .. j0 + w` of B into `block` as `kc`
/// rows of `nr` floats, zero beyond `w`.
fn pack_b(b: &MatRef, k0: usize, kc: usize, j0: usize, w: usize, nr: usize, block: &mut [f32]) {
    if w < nr {
        block[..kc * nr].fill(0.0);
    }
    if b.cs == 1 {
        for kk in 0..kc {
            let src = &b.data[(k0 + kk) * b.rs + j0..][..w];
            block[kk * nr..kk * nr + w].copy_from_slice(src);
        }
    } else {
        // Column by column: each B column is contiguous when B is a
        // transposed row-major matrix (rs = 1).
        for jj in 0..w {
            let base = (j0 + jj) * b.cs + k0 * b.rs;
            for kk in 0..kc {
                block[kk * nr + jj] = b.data[base + kk * b.rs];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, value};

    /// Against plain loops, over shapes that cross every panel and block
    /// boundary, with transposed operands and accumulation.
    #[test]
    fn matches_plain_loops() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 300, 33),
            (13, 5, 70),
            (6, 513, 32),
            (20, 17, 3),
        ] {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 11)).collect();
            for transposed in [false, true] {
                let (ar, br) = if transposed {
                    (MatRef::rows(&a, k, m).t(), MatRef::rows(&b, n, k).t())
                } else {
                    (MatRef::rows(&a, m, k), MatRef::rows(&b, k, n))
                };
                let ldc = n + 3;
                let mut c: Vec<f32> = (0..m * ldc).map(|i| value(i + 5)).collect();
                let before = c.clone();
                matmul(ar, br, &mut c, ldc, true);
                let mut want = before.clone();
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|kk| {
                                ar.data[i * ar.rs + kk * ar.cs] as f64
                                    * br.data[kk * br.rs + j * br.cs] as f64
                            })
                            .sum();
                        want[i * ldc + j] += dot as f32;
                    }
                }
                assert_close(&c, &want, 1e-4, &format!("{m}x{k}x{n} t={transposed}"));
                matmul(ar, br, &mut c, ldc, false);
                for i in 0..m {
                    for j in 0..n {
                        want[i * ldc + j] -= before[i * ldc + j];
                    }
                }
                assert_close(&c, &want, 1e-4, "overwrite");
            }
        }
    }
}
