//! The one entry point generated code calls for a conv or dense layer
//! (`netc_rt_gemm`): it reads the descriptor's kind and shape and hands the
//! call to the kernel that runs it. Kernel modules never import this one.

use super::desc::*;
use super::micro::{self, MicroKernel};
use super::{depthwise, gemm, gemv, mvec, packed, planes, pool, stencil, winograd};
use std::cell::RefCell;
use std::sync::OnceLock;

fn kernel() -> MicroKernel {
    static KERNEL: OnceLock<MicroKernel> = OnceLock::new();
    *KERNEL.get_or_init(micro::select)
}

/// Name of the micro-kernel in use.
pub fn kernel_name() -> &'static str {
    kernel().name
}

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
    if let Some(tile) = winograd::Tile::of_kind(d.kind) {
        // Every Winograd tile is an even number of outputs wide, so it
        // pools its own outputs.
        return winograd::run(kern, tile, d, &p);
    }
    if d.kind == KIND_MVEC {
        return mvec::run(d, &p);
    }
    if d.pooled() {
        return run_then_pool(kern, d, &p);
    }
    if !d.is_dense() && packed::pointwise_fits(d) {
        return packed::run_pointwise(kern, d, &p);
    }
    if depthwise::fits(d) {
        return depthwise::run(d, &p);
    }
    if stencil::fits(d) {
        return stencil::run(d, &p);
    }
    if d.kind == KIND_IM2COL && planes::Shifted::fits(d) {
        return gemm::run_shifted(kern, d, &p);
    }
    if d.kind == KIND_GEMV {
        return gemv::run(d, &p);
    }
    gemm::run(kern, d, &p);
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
        let pool = pool::PoolDesc {
            kind: pool::POOL_MAX,
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
        pool::run(&pool, buf.as_ptr(), p.out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::micro::{pack_weights, MR};
    use crate::kernels::schedule::Tasks;
    use crate::kernels::testing::{assert_close, reference_conv, value};

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
    const EPILOGUES: [(bool, &[u32]); 6] = [
        (true, &[STEP_RELU]),
        (false, &[STEP_ADD, STEP_RELU]),
        (true, &[STEP_ADD]),
        (false, &[]),
        (true, &[STEP_HARDSWISH]),
        (false, &[STEP_ADD, STEP_HARDSIGMOID]),
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
        let want = reference_conv(&d, &x, &wts, &bias, &[&res]);
        assert_close(&out, &want, 1e-4, kern.name);
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
                    super::gemv::pack_weights(m, k, |r, kk| w[r * k + kk])
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
