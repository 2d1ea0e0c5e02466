//! GEMM micro-kernels: `tile[MR×NR] = A_panel[MR×kc] · B[kc×NR]`, A packed
//! k-major in groups of MR rows, B row `k` (NR contiguous floats) at
//! `b + offs[k]`. The offset table lets one kernel read B from a packed
//! buffer (`offs[k] = k·NR`), from a 1×1 convolution's input in place
//! (`k·H·W`) or from a zero-padded input shifted per (channel, kernel row,
//! kernel column) for a stride-1 convolution — no B packing at all. One
//! variant per instruction set, chosen once at run time from the CPU's
//! features (never at compile time: the same binary must run on machines
//! without AVX-512).

/// Rows of A per micro-tile; weights are packed for this at compile time,
/// so it is the same for every kernel (an object file compiled on one
/// machine runs on another).
pub const MR: usize = 6;

/// `(kc, a, b, offs, tile)`: B row `k` starts at `b + offs[k]`; `tile`
/// receives MR×(the kernel's width) floats, row-major.
pub type KernelFn = unsafe fn(usize, *const f32, *const f32, *const usize, *mut f32);

/// A micro-kernel and the number of columns it produces.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    pub nr: usize,
    pub name: &'static str,
    pub run: KernelFn,
    /// The same product over only the first `nr / 2` columns of each B
    /// row, for a last column panel at most half full: a 7×7 plane is
    /// 3 × 16 + 1 columns, so the full kernel would spend a quarter of a
    /// layer's multiplies on padding, this one an eighth.
    pub narrow: Option<KernelFn>,
    /// Kernels over only the first 1, 2, … [`THIN_MAX`] columns, for a last
    /// panel of that many: a 7×7 plane at batch 1 is 3 × 16 + 1 columns,
    /// and the narrow kernel spent as long on its one column as on eight.
    pub thin: Option<[KernelFn; THIN_MAX]>,
    /// Kernels over the first `nr / 2 + 1`, … `nr / 2 + THIN_MAX` columns
    /// (the narrow product plus a thin one), writing a full-width tile:
    /// a 7×7 plane on the 32-wide kernel is 32 + 17 columns, and the full
    /// kernel spent as long on the 17 as on 32.
    pub half_thin: Option<[KernelFn; THIN_MAX]>,
    /// The full kernel with the common epilogues applied in registers and
    /// the tile written straight to the output, indexed by
    /// [`fused_index`]`(add, relu)`.
    pub fused: Option<[FusedFn; 4]>,
}

/// Where a fused kernel writes its `MR × nr` tile: row `m` to
/// `out + m·ld` as `max(acc + bias[m] + res[m·res_ld ..], 0)`, the
/// residual and the maximum only in the variants that have them.
pub struct TileOut {
    pub out: *mut f32,
    pub ld: usize,
    /// `MR` floats.
    pub bias: *const f32,
    pub res: *const f32,
    pub res_ld: usize,
}

/// `(kc, a, b, offs, out)`: as [`KernelFn`], the tile going to `out`.
pub type FusedFn = unsafe fn(usize, *const f32, *const f32, *const usize, &TileOut);

/// Which of a kernel's `fused` variants applies the epilogue `(add, relu)`.
pub fn fused_index(add: bool, relu: bool) -> usize {
    2 * add as usize + relu as usize
}

/// The widest panel a `thin` kernel covers.
pub const THIN_MAX: usize = 4;

impl MicroKernel {
    /// Whether a panel of `width` columns runs on a thin kernel.
    pub fn is_thin(&self, width: usize) -> bool {
        self.thin.is_some() && (1..=THIN_MAX).contains(&width)
    }

    /// The kernel for a column panel of `width` columns, and its width.
    pub fn for_width(&self, width: usize) -> (KernelFn, usize) {
        let half = self.nr / 2;
        match (self.thin, self.narrow, self.half_thin) {
            (Some(thin), _, _) if self.is_thin(width) => (thin[width - 1], width),
            (_, Some(narrow), _) if width <= half => (narrow, half),
            (_, _, Some(half_thin)) if width - half <= THIN_MAX => {
                (half_thin[width - half - 1], self.nr)
            }
            _ => (self.run, self.nr),
        }
    }
}

/// The best kernel this CPU supports.
pub fn select() -> MicroKernel {
    let host = crate::cpu::host();
    // `available` lists the CPU's kernels widest first and always ends
    // with the scalar one.
    let all = available();
    match all.iter().find(|k| k.nr < 32 || host.avx512) {
        Some(k) => *k,
        None => all[all.len() - 1],
    }
}

/// Every kernel this CPU supports, best first, the scalar one last. The
/// tests run each of them, so a machine with AVX-512 also checks the AVX2
/// kernels a machine without it would take.
pub fn available() -> Vec<MicroKernel> {
    let mut all = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = crate::cpu::Features::detect();
        let avx2 = cpu.avx2;
        if cpu.avx512 {
            all.push(MicroKernel {
                nr: 32,
                name: "avx512f 6x32",
                run: avx512::kernel,
                narrow: Some(avx512::narrow),
                thin: Some(avx2::THIN),
                half_thin: Some(avx512::HALF_THIN),
                fused: Some(avx512::FUSED),
            });
        }
        if avx2 {
            all.push(MicroKernel {
                nr: 16,
                name: "avx2+fma 6x16",
                run: avx2::kernel,
                narrow: Some(avx2::narrow),
                thin: Some(avx2::THIN),
                half_thin: None,
                fused: Some(avx2::FUSED),
            });
        }
    }
    all.push(MicroKernel {
        nr: 8,
        name: "scalar 6x8",
        run: scalar_kernel,
        narrow: None,
        thin: None,
        half_thin: None,
        fused: None,
    });
    all
}

/// Portable fallback; also the reference the SIMD kernels are tested against.
///
/// # Safety
/// `a` must hold `MR·kc` floats, `offs` `kc` offsets of B rows of 8 floats,
/// `tile` `MR·8`.
pub unsafe fn scalar_kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    tile: *mut f32,
) {
    const NR: usize = 8;
    let mut acc = [[0.0f32; NR]; MR];
    for k in 0..kc {
        let bk = b.add(*offs.add(k));
        for (m, row) in acc.iter_mut().enumerate() {
            let av = *a.add(k * MR + m);
            for (n, c) in row.iter_mut().enumerate() {
                *c += av * *bk.add(n);
            }
        }
    }
    for (m, row) in acc.iter().enumerate() {
        for (n, c) in row.iter().enumerate() {
            *tile.add(m * NR + n) = *c;
        }
    }
}

/// How far ahead (in floats of A: 4 KiB) the narrow and full kernels
/// prefetch the weights. At batch 1 the late layers use each weight for
/// only 16–49 columns, so the kernels stream A from DRAM, where the
/// hardware prefetcher alone falls well short of the bandwidth. Where A
/// is reused from cache the extra instruction per k costs nothing
/// measurable (docs/performance.md, "A prefetch").
const A_PREFETCH: usize = 1024;

/// Prefetch the A floats [`A_PREFETCH`] past `ak` (the kernels' row of A
/// at step k) into L2; never faults, whatever the address.
///
/// L2, not L1: a prefetch into L1 holds one of the core's few L1 miss
/// buffers for the whole trip from DRAM, and streaming the weights those
/// were what the kernels waited on (perf put the narrow kernel's samples
/// on the instruction after its prefetch); the hardware's L1 prefetcher
/// brings the lines on from L2. Zen 4, 2 threads, both builds alternated
/// in one process (paired medians): chains of 256-channel 14×14 and
/// 512-channel 7×7 Winograd layers at batch 1 0.953 and 0.930,
/// ResNet-50 at batch 1 0.975, ResNet-18 0.979, GoogLeNet 0.965,
/// ResNet-50 at batch 8 0.984, VGG-16 0.993; 8 KiB ahead level with 4.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_a(ak: *const f32) {
    // SAFETY: a prefetch is a hint; the address is only computed.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(ak.wrapping_add(A_PREFETCH) as *const i8);
    }
}

/// A full `MR × 2·lanes` kernel, written once for each vector width:
/// twelve accumulators, two B vectors and a broadcast of A per k
/// (`accumulate`); `kernel` stores the tile, and the fused variants
/// (`FUSED`, one per `fused_index(add, relu)`) write `max(acc + bias
/// (+ res), 0)` straight to the output rows — the tile's round trip through
/// memory and the separate store pass cost as much as a fifth of a 1×1
/// convolution with a short K. `|p| splat` broadcasts the float at `p`.
#[cfg(target_arch = "x86_64")]
macro_rules! full_kernel {
    ($feature:literal, $lanes:literal, $v:ty, |$p:ident| $splat:expr,
     $zero:ident, $fma:ident, $add:ident, $load:ident, $max:ident, $store:ident) => {
        /// See `full_kernel!`.
        ///
        /// # Safety
        /// The CPU must have the target features; `a` holds `MR·kc`
        /// floats, B rows `2·lanes`, `tile` `MR·2·lanes`.
        #[target_feature(enable = $feature)]
        pub unsafe fn kernel(
            kc: usize,
            a: *const f32,
            b: *const f32,
            offs: *const usize,
            tile: *mut f32,
        ) {
            let c = accumulate(kc, a, b, offs);
            for (m, cm) in c.iter().enumerate() {
                $store(tile.add(m * 2 * $lanes), cm[0]);
                $store(tile.add(m * 2 * $lanes + $lanes), cm[1]);
            }
        }

        /// The product's accumulators.
        #[inline(always)]
        unsafe fn accumulate(
            kc: usize,
            a: *const f32,
            b: *const f32,
            offs: *const usize,
        ) -> [[$v; 2]; MR] {
            let mut c = [[$zero(); 2]; MR];
            for k in 0..kc {
                let bk = b.add(*offs.add(k));
                let b0 = $load(bk);
                let b1 = $load(bk.add($lanes));
                let ak = a.add(k * MR);
                super::prefetch_a(ak);
                for (m, cm) in c.iter_mut().enumerate() {
                    let av = {
                        let $p = ak.add(m);
                        $splat
                    };
                    cm[0] = $fma(av, b0, cm[0]);
                    cm[1] = $fma(av, b1, cm[1]);
                }
            }
            c
        }

        /// `fused::<ADD, RELU>` for each `fused_index(ADD, RELU)`.
        pub const FUSED: [super::FusedFn; 4] = [
            fused::<false, false>,
            fused::<false, true>,
            fused::<true, false>,
            fused::<true, true>,
        ];

        /// See `full_kernel!`.
        ///
        /// # Safety
        /// As `kernel`; `out` describes six rows of `2·lanes` writable
        /// floats (and as many readable residual floats when `ADD`) and six
        /// biases.
        #[target_feature(enable = $feature)]
        unsafe fn fused<const ADD: bool, const RELU: bool>(
            kc: usize,
            a: *const f32,
            b: *const f32,
            offs: *const usize,
            out: &super::TileOut,
        ) {
            let c = accumulate(kc, a, b, offs);
            let zero = $zero();
            for (m, cm) in c.iter().enumerate() {
                let bias = {
                    let $p = out.bias.add(m);
                    $splat
                };
                let mut x0 = $add(cm[0], bias);
                let mut x1 = $add(cm[1], bias);
                if ADD {
                    let r = out.res.add(m * out.res_ld);
                    x0 = $add(x0, $load(r));
                    x1 = $add(x1, $load(r.add($lanes)));
                }
                if RELU {
                    x0 = $max(x0, zero);
                    x1 = $max(x1, zero);
                }
                let o = out.out.add(m * out.ld);
                $store(o, x0);
                $store(o.add($lanes), x1);
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::MR;
    use std::arch::x86_64::*;

    // 6×32: twelve zmm accumulators, two B vectors and a broadcast per k.
    full_kernel!(
        "avx512f",
        16,
        __m512,
        |p| _mm512_set1_ps(*p),
        _mm512_setzero_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_loadu_ps,
        _mm512_max_ps,
        _mm512_storeu_ps
    );

    /// [`half_thin`] for each extra width up to [`super::THIN_MAX`].
    pub const HALF_THIN: [super::KernelFn; super::THIN_MAX] = [
        half_thin::<1>,
        half_thin::<2>,
        half_thin::<3>,
        half_thin::<4>,
    ];

    /// `MR × (16 + W)`: the first 16 columns as the narrow kernel computes
    /// them (one zmm per row, A broadcast by [`splat6`]), the next `W` as the AVX2 thin kernel does (a
    /// masked vector of A's six rows times a broadcast of B), in one pass
    /// over A and B. Writes a 32-wide tile, its last `16 − W` columns
    /// untouched.
    ///
    /// # Safety
    /// AVX-512F, AVX2 and FMA must be available; `a` holds `MR·kc` floats,
    /// B rows at least `16 + W` floats, `tile` `MR·32`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn half_thin<const W: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
    ) {
        let mask = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        let mut c = [_mm512_setzero_ps(); MR];
        let mut t = [_mm256_setzero_ps(); W];
        for k in 0..kc {
            let bk = b.add(*offs.add(k));
            let ak = a.add(k * MR);
            let b0 = _mm512_loadu_ps(bk);
            for (cm, am) in c.iter_mut().zip(splat6(ak)) {
                *cm = _mm512_fmadd_ps(am, b0, *cm);
            }
            let av = _mm256_maskload_ps(ak, mask);
            for (j, tj) in t.iter_mut().enumerate() {
                *tj = _mm256_fmadd_ps(av, _mm256_set1_ps(*bk.add(16 + j)), *tj);
            }
        }
        for (m, cm) in c.iter().enumerate() {
            _mm512_storeu_ps(tile.add(m * 32), *cm);
        }
        for (j, tj) in t.iter().enumerate() {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *tj);
            for (m, v) in lanes[..MR].iter().enumerate() {
                *tile.add(m * 32 + 16 + j) = *v;
            }
        }
    }

    /// A's six values at one k, each broadcast to a vector: two short
    /// loads and six in-lane shuffles rather than six broadcast loads. In
    /// kernels with one B vector per k the broadcasts are most of the
    /// loads, and with them the narrow kernel had run at two thirds of the
    /// full kernel's FMA rate on a full-rate 512-bit FMA unit (Zen 5); the
    /// shuffles run beside the FMAs.
    #[inline(always)]
    unsafe fn splat6(ak: *const f32) -> [__m512; MR] {
        let lo = _mm512_broadcast_f32x4(_mm_loadu_ps(ak));
        let hi = _mm512_broadcast_f32x4(_mm_castpd_ps(_mm_load_sd(ak.add(4) as *const f64)));
        [
            _mm512_shuffle_ps::<0x00>(lo, lo),
            _mm512_shuffle_ps::<0x55>(lo, lo),
            _mm512_shuffle_ps::<0xAA>(lo, lo),
            _mm512_shuffle_ps::<0xFF>(lo, lo),
            _mm512_shuffle_ps::<0x00>(hi, hi),
            _mm512_shuffle_ps::<0x55>(hi, hi),
        ]
    }

    /// The narrow kernel, `MR × 16`: one zmm per row, even and odd k in
    /// separate accumulators (twelve FMA chains), A's values broadcast by
    /// [`splat6`]. Only the first 16 floats of each B row are read.
    ///
    /// # Safety
    /// AVX-512F must be available; `a` holds `MR·kc` floats, B rows at
    /// least 16 floats, `tile` `MR·16`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn narrow(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
    ) {
        let mut c = [[_mm512_setzero_ps(); 2]; MR];
        let mut step = |k: usize, half: usize| {
            let bk = _mm512_loadu_ps(b.add(*offs.add(k)));
            let av = splat6(a.add(k * MR));
            for (cm, av) in c.iter_mut().zip(av) {
                cm[half] = _mm512_fmadd_ps(av, bk, cm[half]);
            }
        };
        let mut k = 0;
        while k + 1 < kc {
            super::prefetch_a(a.add(k * MR));
            step(k, 0);
            step(k + 1, 1);
            k += 2;
        }
        if k < kc {
            step(k, 0);
        }
        for (m, cm) in c.iter().enumerate() {
            _mm512_storeu_ps(tile.add(m * 16), _mm512_add_ps(cm[0], cm[1]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::MR;
    use std::arch::x86_64::*;

    // 6×16: twelve ymm accumulators, two B vectors and one broadcast —
    // fifteen of AVX2's sixteen registers. Per k: two B loads and six
    // broadcasts feed twelve FMAs (the 8×12 layout it replaced needed
    // thirteen loads for twelve FMAs and a transpose on every store).
    full_kernel!(
        "avx2,fma",
        8,
        __m256,
        |p| _mm256_broadcast_ss(&*p),
        _mm256_setzero_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_loadu_ps,
        _mm256_max_ps,
        _mm256_storeu_ps
    );

    /// [`thin`] for each width up to [`super::THIN_MAX`].
    pub const THIN: [super::KernelFn; super::THIN_MAX] =
        [thin::<1, 4>, thin::<2, 2>, thin::<3, 2>, thin::<4, 2>];

    /// `MR × W` for `W ≤ THIN_MAX` columns, turned around: a column of the
    /// tile is one vector (A's six rows at k, loaded with a mask so the
    /// last k does not read past the panel) times a broadcast of B's
    /// element, so each k costs `W` FMAs rather than the narrow kernel's
    /// six. `U` independent sums per column hide the FMA latency.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` holds `MR·kc` floats, B rows at
    /// least `W` floats, `tile` `MR·W`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn thin<const W: usize, const U: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
    ) {
        let mask = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        let mut c = [[_mm256_setzero_ps(); W]; U];
        let mut k = 0;
        while k + U <= kc {
            for (u, cu) in c.iter_mut().enumerate() {
                let av = _mm256_maskload_ps(a.add((k + u) * MR), mask);
                let bk = b.add(*offs.add(k + u));
                for (j, cj) in cu.iter_mut().enumerate() {
                    *cj = _mm256_fmadd_ps(av, _mm256_set1_ps(*bk.add(j)), *cj);
                }
            }
            k += U;
        }
        while k < kc {
            let av = _mm256_maskload_ps(a.add(k * MR), mask);
            let bk = b.add(*offs.add(k));
            for (j, cj) in c[0].iter_mut().enumerate() {
                *cj = _mm256_fmadd_ps(av, _mm256_set1_ps(*bk.add(j)), *cj);
            }
            k += 1;
        }
        for j in 0..W {
            let mut sum = c[0][j];
            for cu in &c[1..] {
                sum = _mm256_add_ps(sum, cu[j]);
            }
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            for (m, v) in lanes[..MR].iter().enumerate() {
                *tile.add(m * W + j) = *v;
            }
        }
    }

    /// The narrow kernel, `MR × 8` (one ymm per row): even and odd k go to
    /// separate accumulators, so twelve independent FMA chains still hide
    /// the FMA latency with half the full kernel's columns. Only the first
    /// 8 floats of each B row are read. (The AVX-512 one broadcasts A by
    /// shuffles instead; on AVX2 machines broadcast loads are not the
    /// bottleneck.)
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` holds `MR·kc` floats, B rows
    /// at least 8 floats, `tile` `MR·8`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn narrow(
        kc: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        tile: *mut f32,
    ) {
        let mut c = [[_mm256_setzero_ps(); 2]; MR];
        let mut k = 0;
        while k + 1 < kc {
            let b0 = _mm256_loadu_ps(b.add(*offs.add(k)));
            let b1 = _mm256_loadu_ps(b.add(*offs.add(k + 1)));
            let ak = a.add(k * MR);
            super::prefetch_a(ak);
            for (m, cm) in c.iter_mut().enumerate() {
                cm[0] = _mm256_fmadd_ps(_mm256_set1_ps(*ak.add(m)), b0, cm[0]);
                cm[1] = _mm256_fmadd_ps(_mm256_set1_ps(*ak.add(MR + m)), b1, cm[1]);
            }
            k += 2;
        }
        if k < kc {
            let b0 = _mm256_loadu_ps(b.add(*offs.add(k)));
            let ak = a.add(k * MR);
            for (m, cm) in c.iter_mut().enumerate() {
                cm[0] = _mm256_fmadd_ps(_mm256_set1_ps(*ak.add(m)), b0, cm[0]);
            }
        }
        for (m, cm) in c.iter().enumerate() {
            _mm256_storeu_ps(tile.add(m * 8), _mm256_add_ps(cm[0], cm[1]));
        }
    }
}

/// Floats of packed weights for `groups` blocks of `m × k`.
pub fn packed_len(groups: usize, m: usize, k: usize) -> usize {
    groups * m.div_ceil(MR) * MR * k
}

/// Pack a GEMM's weights (its A matrix) in this micro-kernel's layout: per group, panels of MR rows stored k-major,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each fused variant against plain loops: rows `ld` apart, a bias per
    /// row, a residual with its own stride, and columns past the tile
    /// left alone.
    #[test]
    fn fused_kernels_match_plain_loops() {
        for best in available() {
            fused_kernel_matches(best);
        }
    }

    fn fused_kernel_matches(best: MicroKernel) {
        let Some(fused) = best.fused else {
            return;
        };
        let (nr, kc, ld, res_ld) = (best.nr, 29, best.nr + 5, best.nr + 3);
        let a: Vec<f32> = (0..MR * kc).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..nr * kc).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();
        let offs: Vec<usize> = (0..kc).map(|kk| kk * nr).collect();
        let bias: Vec<f32> = (0..MR).map(|m| m as f32 * 3.0 - 40.0).collect();
        let res: Vec<f32> = (0..MR * res_ld).map(|i| (i % 17) as f32 - 8.0).collect();
        for add in [false, true] {
            for relu in [false, true] {
                let mut out = vec![f32::NAN; MR * ld];
                let to = TileOut {
                    out: out.as_mut_ptr(),
                    ld,
                    bias: bias.as_ptr(),
                    res: res.as_ptr(),
                    res_ld,
                };
                let run = fused[fused_index(add, relu)];
                unsafe { run(kc, a.as_ptr(), b.as_ptr(), offs.as_ptr(), &to) };
                for m in 0..MR {
                    for n in 0..nr {
                        let mut want: f32 = (0..kc).map(|kk| a[kk * MR + m] * b[kk * nr + n]).sum();
                        want += bias[m];
                        if add {
                            want += res[m * res_ld + n];
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let got = out[m * ld + n];
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{} add {add} relu {relu} at {m},{n}",
                            best.name
                        );
                    }
                    assert!(out[m * ld + nr..(m + 1) * ld].iter().all(|v| v.is_nan()));
                }
            }
        }
    }

    /// Every kernel this CPU has, against plain loops.
    #[test]
    fn kernels_match_plain_loops() {
        // (kernel, name, columns it computes, floats between tile rows,
        // floats between B rows).
        let mut cases: Vec<(KernelFn, &str, usize, usize, usize)> = Vec::new();
        for best in available() {
            let nr = best.nr;
            cases.push((best.run, best.name, nr, nr, nr));
            if let Some(narrow) = best.narrow {
                // Over rows as wide as the full kernel's: it must read
                // only their first half.
                cases.push((narrow, "narrow", nr / 2, nr / 2, nr));
            }
            for (w, &thin) in best.thin.iter().flatten().enumerate() {
                cases.push((thin, "thin", w + 1, w + 1, nr));
            }
            for (w, &half_thin) in best.half_thin.iter().flatten().enumerate() {
                cases.push((half_thin, "half_thin", nr / 2 + w + 1, nr, nr));
            }
        }
        for (run, name, cols, nr, stride) in cases {
            // Odd, so the narrow kernel's unpaired last k is exercised.
            let kc = 37;
            let a: Vec<f32> = (0..MR * kc).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let b: Vec<f32> = (0..stride * kc)
                .map(|i| ((i * 5) % 11) as f32 * 0.5)
                .collect();
            let mut tile = vec![0.0; MR * nr];
            let offs: Vec<usize> = (0..kc).map(|kk| kk * stride).collect();
            unsafe { run(kc, a.as_ptr(), b.as_ptr(), offs.as_ptr(), tile.as_mut_ptr()) };
            for m in 0..MR {
                for n in 0..cols {
                    let want: f32 = (0..kc).map(|kk| a[kk * MR + m] * b[kk * stride + n]).sum();
                    assert!((tile[m * nr + n] - want).abs() < 1e-3, "{name} at {m},{n}");
                }
            }
        }
    }
}
