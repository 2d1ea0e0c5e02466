//! Spatial resizing of NCHW planes: nearest neighbour and bilinear, with
//! PyTorch's coordinate conventions (`F.interpolate`).
//!
//! Contract of [`run`]: for every item `n < batch`, channel `c` and output
//! position `(y, x)`, `out[n·out_bstride + (c·oh + y)·ow + x]` is the
//! input plane `c` of item `n` sampled at the source position of `(y, x)`:
//! - nearest: row `min(⌊y·s⌋, h − 1)` with `s = h/oh` in f32 arithmetic
//!   (PyTorch's: `y` itself when `oh = h`, `y/2` when `oh = 2h`), column
//!   likewise;
//! - bilinear, `align_corners` false: `s = max((y + ½)·h/oh − ½, 0)`, the
//!   rows `⌊s⌋` and `min(⌊s⌋ + 1, h − 1)` weighted `1 − (s − ⌊s⌋)` and
//!   `s − ⌊s⌋`; columns likewise;
//! - bilinear, `align_corners` true: `s = y·(h − 1)/(oh − 1)` (0 when
//!   `oh` is 1).
//!
//! The per-row and per-column taps are computed once per call; planes are
//! split across the thread pool. Every output element is written once and
//! nothing else is written.

use super::Shared;
use crate::threads::parallel_for;

pub const RESIZE_NEAREST: u32 = 0;
pub const RESIZE_BILINEAR: u32 = 1;

/// Everything a resize call needs besides its two pointers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResizeDesc {
    pub mode: u32,
    pub align_corners: u32,
    pub batch: u32,
    pub channels: u32,
    pub h: u32,
    pub w: u32,
    pub oh: u32,
    pub ow: u32,
    pub x_bstride: u64,
    pub out_bstride: u64,
}

impl ResizeDesc {
    /// The descriptor as raw bytes, for embedding in generated code.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::pod_bytes(self)
    }
}

/// One output coordinate's source: two input indices and the second's
/// weight (the first's is `1 − weight`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    pub lo: usize,
    pub hi: usize,
    pub weight: f32,
}

/// The taps of every output coordinate along one axis of `input` values
/// resized to `output`.
pub fn taps(mode: u32, align_corners: bool, input: usize, output: usize) -> Vec<Tap> {
    let last = input.saturating_sub(1);
    (0..output)
        .map(|o| {
            if mode == RESIZE_NEAREST {
                let i = nearest(o, input, output).min(last);
                return Tap {
                    lo: i,
                    hi: i,
                    weight: 0.0,
                };
            }
            let s = if align_corners {
                if output > 1 {
                    o as f64 * last as f64 / (output - 1) as f64
                } else {
                    0.0
                }
            } else {
                ((o as f64 + 0.5) * input as f64 / output as f64 - 0.5).max(0.0)
            };
            let lo = (s.floor() as usize).min(last);
            Tap {
                lo,
                hi: (lo + 1).min(last),
                weight: (s - lo as f64) as f32,
            }
        })
        .collect()
}

/// PyTorch's nearest source index (`nearest_idx` in its upsampling code):
/// exact for equal and doubled sizes, else `⌊o · (in/out)⌋` computed in
/// f32, which is not always the exact quotient (7 → 10: output 9 reads
/// input 6), and matching it is the point.
pub fn nearest(o: usize, input: usize, output: usize) -> usize {
    if output == input {
        o
    } else if output == 2 * input {
        o / 2
    } else {
        let scale = input as f32 / output as f32;
        (o as f32 * scale).floor() as usize
    }
}

/// Resize every plane of `x` into `out` as `d` describes.
///
/// # Safety
/// `x` and `out` must hold `batch` items at their batch strides, each of
/// `channels` planes of `h × w` and `oh × ow` floats; they must not overlap.
pub unsafe fn run(d: &ResizeDesc, x: *const f32, out: *mut f32) {
    let u = |v: u32| v as usize;
    let (h, w, oh, ow) = (u(d.h), u(d.w), u(d.oh), u(d.ow));
    let align = d.align_corners != 0;
    let rows = taps(d.mode, align, h, oh);
    let cols = taps(d.mode, align, w, ow);
    let planes = u(d.batch) * u(d.channels);
    let (xs, os) = (Shared::new(x), Shared::new(out));
    // SAFETY (for the tasks): each task reads its own input plane and
    // writes its own output plane; planes do not overlap.
    parallel_for(planes, |p| {
        let (n, c) = (p / u(d.channels), p % u(d.channels));
        let src = xs.get().add(n * d.x_bstride as usize + c * h * w) as *const f32;
        let dst = os.get().add(n * d.out_bstride as usize + c * oh * ow);
        let src = std::slice::from_raw_parts(src, h * w);
        let dst = std::slice::from_raw_parts_mut(dst, oh * ow);
        for (y, r) in rows.iter().enumerate() {
            let (top, bottom) = (&src[r.lo * w..][..w], &src[r.hi * w..][..w]);
            let line = &mut dst[y * ow..][..ow];
            if d.mode == RESIZE_NEAREST {
                for (o, t) in line.iter_mut().zip(&cols) {
                    *o = top[t.lo];
                }
                continue;
            }
            let wy = r.weight;
            for (o, t) in line.iter_mut().zip(&cols) {
                let a = top[t.lo] + t.weight * (top[t.hi] - top[t.lo]);
                let b = bottom[t.lo] + t.weight * (bottom[t.hi] - bottom[t.lo]);
                *o = a + wy * (b - a);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(
        mode: u32,
        align: bool,
        x: &[f32],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
    ) -> Vec<f32> {
        let d = ResizeDesc {
            mode,
            align_corners: align as u32,
            batch: 1,
            channels: 1,
            h: h as u32,
            w: w as u32,
            oh: oh as u32,
            ow: ow as u32,
            x_bstride: (h * w) as u64,
            out_bstride: (oh * ow) as u64,
        };
        let mut out = vec![f32::NAN; oh * ow];
        unsafe { run(&d, x.as_ptr(), out.as_mut_ptr()) };
        out
    }

    /// PyTorch's `F.interpolate` on `[[1, 2], [3, 4]]` to 4×4 (values from
    /// its documentation's conventions, worked by hand).
    #[test]
    fn matches_pytorch_conventions() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let nearest = resize(RESIZE_NEAREST, false, &x, (2, 2), (4, 4));
        assert_eq!(&nearest[..4], &[1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&nearest[8..12], &[3.0, 3.0, 4.0, 4.0]);
        // align_corners=False: source columns -0.25→0, 0.25, 0.75, 1.25→1.
        let half = resize(RESIZE_BILINEAR, false, &x, (2, 2), (4, 4));
        assert_eq!(&half[..4], &[1.0, 1.25, 1.75, 2.0]);
        assert_eq!(&half[12..], &[3.0, 3.25, 3.75, 4.0]);
        // align_corners=True: columns 0, 1/3, 2/3, 1.
        let corners = resize(RESIZE_BILINEAR, true, &x, (2, 2), (4, 4));
        let third = 1.0 + 1.0 / 3.0;
        assert!((corners[1] - third).abs() < 1e-6, "{corners:?}");
        assert_eq!(corners[15], 4.0);
        // Downsampling 4 → 2 without align_corners averages pairs.
        let wide = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(
            resize(RESIZE_BILINEAR, false, &wide, (1, 4), (1, 2)),
            [0.5, 2.5]
        );
    }
}
