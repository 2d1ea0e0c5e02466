//! Dense layers at small batches (at most [`GEMV_MAX_BATCH`] items):
//! `out[n][o] = W[o] · x[n]`, then the epilogue, each weight read from
//! memory once. At batch 1 these layers are bound by how fast the weights
//! arrive (AlexNet's fc6 is 151 MB for 38 MFLOP), so the layout is chosen
//! for the memory system, not the arithmetic.
//!
//! Layout ([`pack_weights`]): panels of [`MR`] rows; in each panel the
//! rows are interleaved in chunks of [`CHUNK`] floats (chunk 0 of rows
//! 0…5, then chunk 1 of rows 0…5, …), rows and columns zero-padded to
//! whole panels and chunks. A task then reads one contiguous run of
//! memory instead of six rows a whole row apart, which the memory system
//! serves faster (docs/performance.md, "GEMV layout").
//!
//! Contract of [`run`]: for every item `n < batch` and row `o < out_c`,
//! `out[n·out_bstride + o]` = the epilogue of `bias[o] + Σ_k W[o][k] ·
//! x[n·x_bstride + k]`, with `W` packed by [`pack_weights`]. Padding rows
//! and columns are never stored or read from `x`.

use super::desc::{GemmDesc, Ptrs, GEMV_MAX_BATCH};
use super::micro::MR;
use super::schedule::Segment;
use super::store::{self, TileDest};
use crate::threads::{current_threads, parallel_for};

/// Floats of one row in one chunk: one AVX-512 vector, two AVX2 ones.
pub const CHUNK: usize = 16;

/// Floats [`pack_weights`] produces for an `m × k` matrix.
pub fn packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(MR) * k.div_ceil(CHUNK) * MR * CHUNK
}

/// `W` (`m × k`, element `(row, col)` given by `at`) in the panel layout
/// of the module doc.
pub fn pack_weights(m: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let chunks = k.div_ceil(CHUNK);
    let mut out = vec![0.0f32; packed_len(m, k)];
    for row in 0..m {
        let (panel, r) = (row / MR, row % MR);
        for col in 0..k {
            let (c, j) = (col / CHUNK, col % CHUNK);
            out[((panel * chunks + c) * MR + r) * CHUNK + j] = at(row, col);
        }
    }
    out
}

/// `(w, x, k, out)`: `out[r]` = row `r` of the packed panel at `w` times
/// `x[..k]`, for all [`MR`] rows (padding rows give 0).
type DotsFn = unsafe fn(*const f32, *const f32, usize, &mut [f32; MR]);

/// The one-item kernel for machines without AVX-512 (with it, every
/// batch goes through [`items_fns`]), chosen once (an environment lookup
/// per layer would sit on the hot path).
fn dots_fn() -> DotsFn {
    static DOTS: std::sync::OnceLock<DotsFn> = std::sync::OnceLock::new();
    *DOTS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::cpu::host().avx2 {
                return dots_avx2;
            }
        }
        dots_portable
    })
}

/// `(w, x, x_stride, k, out)`: [`DotsFn`] for several items at once —
/// `out[n·MR + r]` = row `r` of the panel times item `n`'s `x`, at `x +
/// n·x_stride` — reading each weight vector once for all of them.
type ItemsFn = unsafe fn(*const f32, *const f32, usize, usize, &mut [f32]);

/// Floats ahead of the current chunk whose weights the several-item
/// kernel asks for, into L2: the weights stream from DRAM, and prefetches
/// into L1 had held the core's few L1 miss buffers for the whole trip.
/// Four times as far ahead was slower (docs/performance.md, "GEMV
/// prefetch").
const W_AHEAD: usize = 4 * MR * CHUNK;

/// Packed weights from which size on a layer read in one pass (at most
/// [`ITEMS`] items) prefetches them non-temporally (`prefetchnta`) rather
/// than into L2. Matrices this large cannot stay cached from one run to
/// the next anyway; through L2 each line was then also written into the
/// L3 (a victim cache on AMD's cores), where 234 MB of AlexNet's dense
/// weights evicted whatever else was there each run (docs/performance.md,
/// "GEMV streaming"). With several passes (batch 8: the second group of items reads
/// the panel back from L2, which a non-temporal line is not kept in) the
/// dense layers were level, so those keep the L2 hint.
const STREAM_MIN_BYTES: usize = 8 << 20;

/// Items per [`ItemsFn`] call: 6 rows × 4 items of accumulators, a weight
/// vector and four input vectors fill 29 of AVX-512's 32 registers.
const ITEMS: usize = 4;

/// The several-item kernels this machine runs (`by_count[n − 1]` takes `n`
/// items), if any: only AVX-512 has the registers for them.
/// `stream`: prefetch the weights non-temporally (see [`STREAM_MIN_BYTES`]).
fn items_fns(stream: bool) -> Option<&'static [ItemsFn; ITEMS]> {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: [[ItemsFn; ITEMS]; 2] = [
            [
                items_avx512::<1, false>,
                items_avx512::<2, false>,
                items_avx512::<3, false>,
                items_avx512::<4, false>,
            ],
            [
                items_avx512::<1, true>,
                items_avx512::<2, true>,
                items_avx512::<3, true>,
                items_avx512::<4, true>,
            ],
        ];
        if crate::cpu::host().avx512 {
            return Some(&AVX512[stream as usize]);
        }
    }
    let _ = stream;
    None
}

/// [`ItemsFn`] for `N` items: per chunk, each of the panel's six weight
/// vectors is loaded once and multiplied into all `N` items' sums, so at
/// batch 8 a panel comes through L2 twice rather than eight times (and
/// the GEMM path, which these batches took before, used 8 of a tile's 32
/// columns).
///
/// # Safety
/// AVX-512F must be available; `w` holds one packed panel for `k`, `x +
/// n·x_stride` holds `k` floats for every `n < N`, `out` `N·MR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn items_avx512<const N: usize, const STREAM: bool>(
    w: *const f32,
    x: *const f32,
    x_stride: usize,
    k: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); N]; MR];
    let (full, rest) = (k / CHUNK, k % CHUNK);
    let mut wp = w;
    for c in 0..=full {
        let mask: __mmask16 = if c < full {
            0xffff
        } else if rest > 0 {
            (1 << rest) - 1
        } else {
            break;
        };
        let xv: [__m512; N] =
            std::array::from_fn(|n| _mm512_maskz_loadu_ps(mask, x.add(n * x_stride + c * CHUNK)));
        for (r, row) in acc.iter_mut().enumerate() {
            let ahead = wp.wrapping_add(W_AHEAD + r * CHUNK) as *const i8;
            if STREAM {
                _mm_prefetch::<_MM_HINT_NTA>(ahead);
            } else {
                _mm_prefetch::<_MM_HINT_T1>(ahead);
            }
            let wv = _mm512_loadu_ps(wp.add(r * CHUNK));
            for (a, &xn) in row.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(wv, xn, *a);
            }
        }
        wp = wp.add(MR * CHUNK);
    }
    for (r, row) in acc.iter().enumerate() {
        for (n, &a) in row.iter().enumerate() {
            out[n * MR + r] = _mm512_reduce_add_ps(a);
        }
    }
}

/// `x[c·CHUNK..k]` zero-padded to a whole chunk: the last, partial chunk
/// of `x`, which must not be read past its end.
///
/// # Safety
/// `x` holds `k` floats and `c·CHUNK < k`.
unsafe fn tail_chunk(x: *const f32, c: usize, k: usize) -> [f32; CHUNK] {
    let mut t = [0.0f32; CHUNK];
    let from = c * CHUNK;
    std::ptr::copy_nonoverlapping(x.add(from), t.as_mut_ptr(), k - from);
    t
}

/// # Safety
/// As [`DotsFn`]: `w` holds one packed panel for `k`, `x` `k` floats.
unsafe fn dots_portable(w: *const f32, x: *const f32, k: usize, out: &mut [f32; MR]) {
    let chunks = k.div_ceil(CHUNK);
    let mut acc = [[0.0f32; CHUNK]; MR];
    for c in 0..chunks {
        let xc = if (c + 1) * CHUNK <= k {
            std::ptr::read_unaligned(x.add(c * CHUNK) as *const [f32; CHUNK])
        } else {
            tail_chunk(x, c, k)
        };
        for (r, a) in acc.iter_mut().enumerate() {
            let wc = std::slice::from_raw_parts(w.add((c * MR + r) * CHUNK), CHUNK);
            for j in 0..CHUNK {
                a[j] += wc[j] * xc[j];
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a.iter().sum();
    }
}

/// Two ymm accumulators a row (a chunk is two vectors).
///
/// # Safety
/// AVX2 and FMA must be available; as [`DotsFn`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(w: *const f32, x: *const f32, k: usize, out: &mut [f32; MR]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let chunks = k.div_ceil(CHUNK);
    let mut wp = w;
    for c in 0..chunks {
        let tail;
        let xc = if (c + 1) * CHUNK <= k {
            x.add(c * CHUNK)
        } else {
            tail = tail_chunk(x, c, k);
            tail.as_ptr()
        };
        let (x0, x1) = (_mm256_loadu_ps(xc), _mm256_loadu_ps(xc.add(8)));
        for (r, a) in acc.iter_mut().enumerate() {
            let row = wp.add(r * CHUNK);
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(row), x0, a[0]);
            a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8)), x1, a[1]);
        }
        wp = wp.add(MR * CHUNK);
    }
    for (o, a) in out.iter_mut().zip(acc) {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a[0], a[1]));
        *o = lanes.iter().sum();
    }
}

/// Run one small-batch dense layer; see the module contract.
///
/// # Safety
/// As [`super::dispatch::run`]; the packed weights must come from [`pack_weights`].
pub(crate) unsafe fn run(d: &GemmDesc, p: &Ptrs) {
    let (m, k, batch) = (d.out_c as usize, d.in_c as usize, d.batch as usize);
    debug_assert!(batch <= GEMV_MAX_BATCH);
    let panel_floats = k.div_ceil(CHUNK) * MR * CHUNK;
    // Tasks of at most five panels, at least two per thread: deep_convnet's
    // 1024 → 50 layer had run as one 32-row and one 18-row task, and below
    // 65536 weights on one thread (4.6 µs of its 0.17 ms at batch 1).
    let panels = m.div_ceil(MR);
    let per_task = panels.div_ceil(2 * current_threads().max(1)).clamp(1, 5);
    let dots = dots_fn();
    let stream = batch <= ITEMS && 4 * panels * panel_floats >= STREAM_MIN_BYTES;
    let items = items_fns(stream);
    let task = |t: usize| {
        let mut tile = [0.0f32; MR * GEMV_MAX_BATCH];
        for panel in t * per_task..((t + 1) * per_task).min(panels) {
            let (row0, rows) = (panel * MR, MR.min(m - panel * MR));
            let w = p.a.add(panel * panel_floats);
            let xs = d.x_bstride as usize;
            if let Some(by_count) = items {
                for n0 in (0..batch).step_by(ITEMS) {
                    let count = ITEMS.min(batch - n0);
                    let mut cols = [0.0f32; ITEMS * MR];
                    // SAFETY: the caller's contract covers W and items
                    // `n0 .. n0 + count` of x; later groups read the panel
                    // back from L2.
                    unsafe { by_count[count - 1](w, p.x.add(n0 * xs), xs, k, &mut cols) };
                    for n in 0..count {
                        for r in 0..rows {
                            tile[r * batch + n0 + n] = cols[n * MR + r];
                        }
                    }
                }
            } else {
                for n in 0..batch {
                    let mut col = [0.0f32; MR];
                    // SAFETY: the caller's contract covers W and x; items
                    // after the first read the panel back from L2.
                    unsafe { dots(w, p.x.add(n * xs), k, &mut col) };
                    for (r, &v) in col.iter().enumerate().take(rows) {
                        tile[r * batch + n] = v;
                    }
                }
            }
            let all = Segment {
                item: 0,
                tile_col: 0,
                out_col: 0,
                len: batch,
            };
            let to = TileDest {
                nr: batch,
                g: 0,
                row0,
                rows,
                segments: &[all],
                first: true,
                last: true,
            };
            // SAFETY: this task alone writes these rows.
            unsafe { store::store(d, p, &mut tile, &to) };
        }
    };
    let tasks = panels.div_ceil(per_task);
    if m * k < 1 << 14 {
        (0..tasks).for_each(task);
    } else {
        parallel_for(tasks, task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The several-item kernels against the one-item kernel, item by item,
    /// with items spaced apart and lengths with and without a partial chunk.
    #[test]
    fn item_kernels_match_one_item_dots() {
        for stream in [false, true] {
            item_kernels_match(stream);
        }
    }

    fn item_kernels_match(stream: bool) {
        let Some(by_count) = items_fns(stream) else {
            return;
        };
        let value = |i: usize| ((i * 7919) % 61) as f32 / 30.0 - 1.0;
        for k in [1, 15, 16, 17, 75, 160] {
            let w = pack_weights(5, k, |r, c| value(r * 1000 + c));
            let stride = k + 3;
            let x: Vec<f32> = (0..ITEMS * stride).map(|i| value(i + 11)).collect();
            for (count, kernel) in by_count.iter().enumerate().map(|(i, f)| (i + 1, f)) {
                let mut got = [f32::NAN; ITEMS * MR];
                unsafe { kernel(w.as_ptr(), x.as_ptr(), stride, k, &mut got) };
                for n in 0..count {
                    let mut want = [0.0f32; MR];
                    unsafe { dots_portable(w.as_ptr(), x.as_ptr().add(n * stride), k, &mut want) };
                    for r in 0..MR {
                        let g = got[n * MR + r];
                        assert!(
                            (g - want[r]).abs() < 1e-4,
                            "{count} items, k {k}, item {n} row {r}: {g} vs {}",
                            want[r]
                        );
                    }
                }
                assert!(
                    got[count * MR..].iter().all(|v| v.is_nan()),
                    "{count} items wrote past their sums"
                );
            }
        }
    }

    /// Every kernel this machine has, on lengths with and without a
    /// partial last chunk, against a plain dot product.
    #[test]
    fn kernels_match_plain_dots() {
        let mut kernels: Vec<(&str, DotsFn)> = vec![("portable", dots_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::cpu::host().avx2 {
                kernels.push(("avx2", dots_avx2));
            }
        }
        let value = |i: usize| ((i * 7919) % 61) as f32 / 30.0 - 1.0;
        for k in [1, 15, 16, 17, 75, 160] {
            let w = pack_weights(5, k, |r, c| value(r * 1000 + c));
            let x: Vec<f32> = (0..k).map(|i| value(i + 3)).collect();
            for &(name, dots) in &kernels {
                let mut out = [f32::NAN; MR];
                unsafe { dots(w.as_ptr(), x.as_ptr(), k, &mut out) };
                for (r, &got) in out.iter().enumerate() {
                    let want: f32 = if r < 5 {
                        (0..k).map(|c| value(r * 1000 + c) * x[c]).sum()
                    } else {
                        0.0
                    };
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{name} k {k} row {r}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
