//! Per-layer timing and machine figures for `netc bench`.
//!
//! Code compiled for profiling calls [`netc_rt_mark`] before the first op
//! and after every op; the marks' differences are the ops' times.

use std::sync::Mutex;
use std::time::Instant;

static MARKS: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());

/// Record that op `index` (in plan order) has just finished
/// (`u32::MAX`: the run is starting).
#[no_mangle]
pub extern "C" fn netc_rt_mark(index: u32) {
    let now = Instant::now();
    if let Ok(mut m) = MARKS.lock() {
        m.push((index, now));
    }
}

/// Take the marks recorded since the last call.
pub fn take_marks() -> Vec<(u32, Instant)> {
    MARKS
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default()
}

/// Peak resident memory of this process in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Peak FP32 GFLOP/s of one thread: independent FMA chains, long enough
/// to hide latency, on the vectors the selected micro-kernel uses (some
/// AVX-512 machines split a 512-bit FMA into two 256-bit halves, others,
/// like Zen 5, do it at full rate: 2× the AVX2 figure). Run it on every
/// thread to get the machine's figure.
pub fn fma_gflops_one_thread(seconds: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::micro::select().nr == 32 {
            // SAFETY: the 32-wide kernel is only selected with AVX-512F.
            return unsafe { fma_avx512(seconds) };
        }
        if crate::cpu::host().avx2 {
            // SAFETY: the features were just detected.
            return unsafe { fma_avx2(seconds) };
        }
    }
    let start = Instant::now();
    let mut acc = [1.0f32; 8];
    let mut iters = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..1000 {
            for a in acc.iter_mut() {
                *a = a.mul_add(0.999_999, 1e-7);
            }
        }
        iters += 1000;
    }
    std::hint::black_box(acc);
    2.0 * 8.0 * iters as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// `$name(seconds)`: twelve independent chains of `$fma` on `$lanes`-wide
/// vectors for about `seconds`, in GFLOP/s (written once per width).
#[cfg(target_arch = "x86_64")]
macro_rules! fma_loop {
    ($name:ident, $feature:literal, $lanes:literal, $set1:ident, $fma:ident) => {
        #[target_feature(enable = $feature)]
        unsafe fn $name(seconds: f64) -> f64 {
            use std::arch::x86_64::*;
            let mut acc = [$set1(1.0); 12];
            let (m, a) = ($set1(0.999_999), $set1(1e-7));
            let start = Instant::now();
            let mut iters = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                for _ in 0..10_000 {
                    for v in acc.iter_mut() {
                        *v = $fma(*v, m, a);
                    }
                }
                iters += 10_000;
            }
            std::hint::black_box(acc);
            // 12 vectors × lanes × 2 flops per iteration.
            2.0 * $lanes as f64 * 12.0 * iters as f64 / start.elapsed().as_secs_f64() / 1e9
        }
    };
}

#[cfg(target_arch = "x86_64")]
fma_loop!(fma_avx2, "avx2,fma", 8, _mm256_set1_ps, _mm256_fmadd_ps);
#[cfg(target_arch = "x86_64")]
fma_loop!(fma_avx512, "avx512f", 16, _mm512_set1_ps, _mm512_fmadd_ps);

/// Copy bandwidth in GB/s (bytes read + written) over a buffer much
/// larger than the caches: the fastest of the copies made in `seconds`.
///
/// The destination is written once before timing, so its page faults
/// are not counted, and the fastest copy is taken rather than the mean,
/// so one slow moment on a shared host does not stand for the machine:
/// `netc bench` caches the figure, and a cache of the old measure read
/// a small fraction of the machine's bandwidth (which of the two caused
/// it was not established).
pub fn copy_bandwidth_gbs(seconds: f64) -> f64 {
    let n = 32 << 20; // 128 MiB of f32 per buffer
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while best.is_infinite() || start.elapsed().as_secs_f64() < seconds {
        let copy = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(copy.elapsed().as_secs_f64());
    }
    2.0 * 4.0 * n as f64 / best / 1e9
}
