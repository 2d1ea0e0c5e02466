//! Max unpooling (PyTorch's `max_unpool2d` after
//! `max_pool2d(return_indices=True)`), without stored indices.
//!
//! Contract: `out` has the source's shape; it is zero except that, for
//! every pooled position `(oh, ow)` of every plane, the value
//! `values[n, c, oh, ow]` is written where the max pool window (the
//! descriptor's geometry, as for [`super::pool`]) over `source` has its
//! winner: the first maximum in scan order (row by row), or the last NaN,
//! PyTorch's CPU rule. Windows are visited in scan order, so where
//! overlapping windows share a winner the later one's value stays.
//!
//! The winners are found again from the pool's input instead of being
//! stored by the pool: one more pass over the source (a max pool's worth
//! of work) in exchange for no index tensor and no second output in the
//! graph. Planes run in parallel; each task owns its output planes.

use super::pool::{over_planes, PoolDesc};
use super::Shared;

/// Item stride of the values tensor: the descriptor's own fields describe
/// the source (`x_bstride`, `h`, `w`) and the output (`out_bstride`); the
/// values are `oh × ow` planes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UnpoolDesc {
    pub pool: PoolDesc,
    pub values_bstride: u64,
}

impl UnpoolDesc {
    /// The descriptor as raw bytes, for embedding in generated code.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::pod_bytes(self)
    }
}

/// The input indices along one axis that output position `o`'s window
/// reads, in order (taps in the padding left out).
fn taps(o: usize, kernel: u32, stride: u32, dilation: u32, pad: u32, size: u32) -> Vec<u32> {
    (0..kernel)
        .filter_map(|k| {
            let i = (o as u32 * stride + k * dilation).checked_sub(pad)?;
            (i < size).then_some(i)
        })
        .collect()
}

/// One plane of the 2×2/2 unpool without padding (SegNet's, every VGG's):
/// windows tile the plane, so each of the four positions is written once,
/// with the value or zero, and only an odd last row or column is cleared
/// apart: no per-window tap lists, no separate zeroing pass.
fn plane_2x2(d: &PoolDesc, values: &[f32], src: &[f32], dst: &mut [f32]) {
    let (w, oh, ow) = (d.w as usize, d.oh as usize, d.ow as usize);
    for y in 0..oh {
        let (r0, r1) = (2 * y * w, (2 * y + 1) * w);
        let v = &values[y * ow..][..ow];
        for (x, &value) in v.iter().enumerate() {
            let at = [r0 + 2 * x, r0 + 2 * x + 1, r1 + 2 * x, r1 + 2 * x + 1];
            let mut best = 0;
            for i in 1..4 {
                let s = src[at[i]];
                if s > src[at[best]] || s.is_nan() {
                    best = i;
                }
            }
            for (i, &a) in at.iter().enumerate() {
                dst[a] = if i == best { value } else { 0.0 };
            }
        }
        // A last column no window covers.
        for r in [r0, r1] {
            dst[r + 2 * ow..r + w].fill(0.0);
        }
    }
    // Rows below the last window.
    dst[2 * oh * w..].fill(0.0);
}

/// One plane: `dst` (`h × w`) from `values` (`oh × ow`) and `src`.
fn plane(
    d: &PoolDesc,
    rows: &[Vec<u32>],
    cols: &[Vec<u32>],
    values: &[f32],
    src: &[f32],
    dst: &mut [f32],
) {
    let w = d.w as usize;
    dst.fill(0.0);
    for (oh, rows) in rows.iter().enumerate() {
        for (ow, cols) in cols.iter().enumerate() {
            let mut best: Option<(usize, f32)> = None;
            for &ih in rows {
                let row = ih as usize * w;
                for &iw in cols {
                    let i = row + iw as usize;
                    let v = src[i];
                    let wins = match best {
                        None => true,
                        Some((_, b)) => v > b || v.is_nan(),
                    };
                    if wins {
                        best = Some((i, v));
                    }
                }
            }
            if let Some((i, _)) = best {
                dst[i] = values[oh * d.ow as usize + ow];
            }
        }
    }
}

/// Run one unpooling layer.
///
/// # Safety
/// `values`, `source` and `out` must address tensors of the shapes and
/// item strides the descriptor gives; `out` must not overlap either input.
pub unsafe fn run(u: &UnpoolDesc, values: *const f32, source: *const f32, out: *mut f32) {
    let d = &u.pool;
    let rows: Vec<Vec<u32>> = (0..d.oh as usize)
        .map(|o| taps(o, d.kh, d.sh, d.dh, d.pad[0], d.h))
        .collect();
    let cols: Vec<Vec<u32>> = (0..d.ow as usize)
        .map(|o| taps(o, d.kw, d.sw, d.dw, d.pad[1], d.w))
        .collect();
    let planes = (d.batch * d.channels) as usize;
    let (hw, ohw) = ((d.h * d.w) as usize, (d.oh * d.ow) as usize);
    let tiles_2x2 = [d.kh, d.kw, d.sh, d.sw] == [2; 4]
        && [d.dh, d.dw] == [1, 1]
        && d.pad == [0; 4]
        && 2 * d.oh <= d.h
        && 2 * d.ow <= d.w;
    let (vs, ss, outs) = (Shared::new(values), Shared::new(source), Shared(out));
    let planes_in = |range: std::ops::Range<usize>| {
        for i in range {
            let (n, c) = (i / d.channels as usize, i % d.channels as usize);
            // SAFETY: forwarded from the caller's contract; each plane of
            // `out` is written by one task.
            unsafe {
                let v = (vs.get() as *const f32).add(n * u.values_bstride as usize + c * ohw);
                let s = (ss.get() as *const f32).add(n * d.x_bstride as usize + c * hw);
                let o = outs.get().add(n * d.out_bstride as usize + c * hw);
                let (v, s) = (
                    std::slice::from_raw_parts(v, ohw),
                    std::slice::from_raw_parts(s, hw),
                );
                let o = std::slice::from_raw_parts_mut(o, hw);
                if tiles_2x2 {
                    plane_2x2(d, v, s, o);
                } else {
                    plane(d, &rows, &cols, v, s, o);
                }
            }
        }
    };
    over_planes(planes, hw + ohw * (d.kh * d.kw) as usize, planes_in);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2×2/2 unpool of one `h × w` plane.
    fn plane_2x2_desc(h: u32, w: u32) -> UnpoolDesc {
        UnpoolDesc {
            pool: PoolDesc {
                batch: 1,
                channels: 1,
                h,
                w,
                oh: h / 2,
                ow: w / 2,
                kh: 2,
                kw: 2,
                sh: 2,
                sw: 2,
                dh: 1,
                dw: 1,
                x_bstride: (h * w) as u64,
                out_bstride: (h * w) as u64,
                ..PoolDesc::default()
            },
            values_bstride: ((h / 2) * (w / 2)) as u64,
        }
    }

    /// A 2×2/2 unpool of a plane with a tie, an all-zero window and an
    /// odd last row.
    #[test]
    fn places_values_at_the_first_maximum() {
        #[rustfmt::skip]
        let source = [
            1.0, 3.0, 0.0, 0.0, 9.0,
            3.0, 2.0, 0.0, 0.0, 9.0,
            f32::NAN, 5.0, 7.0, 6.0, 9.0,
        ];
        let u = plane_2x2_desc(3, 5);
        let mut out = [f32::NAN; 15];
        unsafe { run(&u, [10.0, 20.0].as_ptr(), source.as_ptr(), out.as_mut_ptr()) };
        // Window 0 ties 3.0 at (0,1) and (1,0): the first in scan order;
        // window 1 is all zeros: its first tap.
        let mut want = [0.0; 15];
        want[1] = 10.0;
        want[2] = 20.0;
        assert_eq!(out, want);
    }

    /// The 2×2/2 path gives what the generic loop gives, odd edges and
    /// ties (values from a small set) included.
    #[test]
    fn tiled_2x2_matches_the_generic_loop() {
        for (h, w) in [(4, 6), (5, 7), (45, 60), (3, 2)] {
            let d = plane_2x2_desc(h, w).pool;
            let n = (h * w) as usize;
            let src: Vec<f32> = (0..n).map(|i| ((i * 7919) % 5) as f32).collect();
            let values: Vec<f32> = (0..(d.oh * d.ow) as usize)
                .map(|i| i as f32 + 1.0)
                .collect();
            let rows: Vec<Vec<u32>> = (0..d.oh as usize).map(|o| taps(o, 2, 2, 1, 0, h)).collect();
            let cols: Vec<Vec<u32>> = (0..d.ow as usize).map(|o| taps(o, 2, 2, 1, 0, w)).collect();
            let mut want = vec![f32::NAN; n];
            plane(&d, &rows, &cols, &values, &src, &mut want);
            let mut got = vec![f32::NAN; n];
            plane_2x2(&d, &values, &src, &mut got);
            assert_eq!(got, want, "{h}x{w}");
        }
    }

    /// A NaN wins its window (PyTorch's `val > max || isnan(val)`), in
    /// both paths: the generic one through a 3×3/3 window.
    #[test]
    fn nan_wins() {
        let u = plane_2x2_desc(2, 2);
        let mut out = [9.0; 4];
        let source = [1.0, f32::NAN, 2.0, 0.5];
        unsafe { run(&u, [7.0].as_ptr(), source.as_ptr(), out.as_mut_ptr()) };
        assert_eq!(out, [0.0, 7.0, 0.0, 0.0]);
        let mut u = plane_2x2_desc(3, 3);
        (u.pool.kh, u.pool.kw, u.pool.sh, u.pool.sw) = (3, 3, 3, 3);
        (u.pool.oh, u.pool.ow, u.values_bstride) = (1, 1, 1);
        let source = [1.0, f32::NAN, 2.0, 0.5, f32::NAN, 8.0, 0.0, 0.0, 0.0];
        let mut out = [9.0; 9];
        unsafe { run(&u, [7.0].as_ptr(), source.as_ptr(), out.as_mut_ptr()) };
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
