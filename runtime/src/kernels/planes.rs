//! Phase planes: a convolution with stride `s ≤ 4` reads a once-per-item
//! copy of its zero-padded input split into `s × s` phase planes, on which
//! every tap is a plain offset ([`Shifted`]); the strided row copies that
//! build them, vectorised for AVX-512.

use super::desc::*;
use super::Shared;
use crate::threads::parallel_for;

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
    pub(super) cols: usize,
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
    pub(super) fn channel(&self) -> usize {
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
    let wide = crate::cpu::host().avx512;
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
                    prefetch_row(src.as_ptr().wrapping_add(h * w + (y - pt) * w), w);
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

/// Prefetch the cache lines of `len` floats from `row` into L1.
#[inline(always)]
pub(super) fn prefetch_row(row: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..len).step_by(16).chain([len - 1]) {
        // SAFETY: prefetching never faults; the address is only computed.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(at) as *const i8);
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
                    2 => every_fast::<2>(&mut to, &from, fast && crate::cpu::host().avx512),
                    _ => every_fast::<4>(&mut to, &from, fast && crate::cpu::host().avx512),
                }
                let want: Vec<f32> = (0..n).map(|i| from[i * s]).collect();
                assert_eq!(to, want, "stride {s}, {n} floats");
            }
        }
    }
}
