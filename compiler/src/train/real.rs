//! The number type a training step runs in: f32 for training, f64 for the
//! gradient checks (central differences need the extra digits). The one
//! operation that differs between them is the matrix product: f32 runs on
//! netc's GEMM micro-kernels, f64 on plain loops.

use netc_runtime::kernels::matmul::{matmul, MatRef};
use rayon::prelude::*;
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A strided matrix view: element `(r, c)` at `data[r·rs + c·cs]`.
pub type Mat<'a, T> = MatRef<'a, T>;

pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + Sum
    + 'static
{
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;

    /// `C = A·B` (or `+=` when `accumulate`), C row-major with rows `ldc`
    /// apart. Single-threaded.
    fn matmul(a: Mat<Self>, b: Mat<Self>, c: &mut [Self], ldc: usize, accumulate: bool);

    /// A whole-batch convolution `out = conv(x, w) (+ bias)` on the
    /// kernels compiled inference runs (im2col GEMM, direct stencil,
    /// depthwise); `false` when the number type has none (f64 takes the
    /// generic path). Weights are `[out_c, in_c/groups, kh, kw]`.
    fn native_conv(
        _spec: &ConvSpec,
        _x: &[Self],
        _w: &[Self],
        _bias: Option<&[Self]>,
        _out: &mut [Self],
    ) -> bool {
        false
    }

    /// [`Real::matmul`] with C's rows split over the rayon pool.
    fn par_matmul(a: Mat<Self>, b: Mat<Self>, c: &mut [Self], ldc: usize, accumulate: bool) {
        // Whole micro-panels (6 rows) per task, at least 48 rows.
        let rows = 48.max(
            a.rows
                .div_ceil(rayon::current_num_threads() * 2)
                .div_ceil(6)
                * 6,
        );
        if a.rows <= rows {
            return Self::matmul(a, b, c, ldc, accumulate);
        }
        c.par_chunks_mut(rows * ldc)
            .enumerate()
            .for_each(|(i, chunk)| {
                let r0 = i * rows;
                let m = rows.min(a.rows - r0);
                Self::matmul(a.row_block(r0, m), b, chunk, ldc, accumulate);
            });
    }
}

/// A convolution's geometry for [`Real::native_conv`]: `[height, width]`
/// pairs, padding at the top and left (the output size implies the rest).
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub batch: usize,
    pub groups: usize,
    pub in_c: usize,
    pub hw: [usize; 2],
    pub out_c: usize,
    pub out_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
}

impl Real for f32 {
    fn native_conv(
        s: &ConvSpec,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> bool {
        use netc_runtime::kernels::{desc, dispatch, micro};
        let u = |v: usize| v as u32;
        let d = desc::GemmDesc {
            kind: desc::KIND_IM2COL,
            batch: u(s.batch),
            groups: u(s.groups),
            in_c: u(s.in_c),
            h: u(s.hw[0]),
            w: u(s.hw[1]),
            out_c: u(s.out_c),
            oh: u(s.out_hw[0]),
            ow: u(s.out_hw[1]),
            kh: u(s.kernel[0]),
            kw: u(s.kernel[1]),
            sh: u(s.stride[0]),
            sw: u(s.stride[1]),
            pt: u(s.pad[0]),
            pl: u(s.pad[1]),
            dh: u(s.dilation[0]),
            dw: u(s.dilation[1]),
            has_bias: bias.is_some() as u32,
            x_bstride: (s.in_c * s.hw[0] * s.hw[1]) as u64,
            out_bstride: (s.out_c * s.out_hw[0] * s.out_hw[1]) as u64,
            ..desc::GemmDesc::default()
        };
        let (m, k) = (d.m(), d.k());
        if x.len() < s.batch * d.x_bstride as usize
            || out.len() < s.batch * d.out_bstride as usize
            || w.len() < s.groups * m * k
        {
            return false;
        }
        let packed = micro::pack_weights(s.groups, m, k, |g, r, kk| w[(g * m + r) * k + kk]);
        let ptrs = [
            x.as_ptr() as *mut f32,
            out.as_mut_ptr(),
            packed.as_ptr() as *mut f32,
            bias.map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut f32),
        ];
        // SAFETY: the buffers hold what the descriptor implies (checked
        // above: `batch` items of input and output, `groups·m·k` weights
        // packed by the kernel's own packer, `out_c` biases), and `out`
        // does not overlap `x`.
        unsafe { dispatch::run(&d, ptrs.as_ptr()) };
        true
    }

    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn matmul(a: Mat<f32>, b: Mat<f32>, c: &mut [f32], ldc: usize, accumulate: bool) {
        matmul(a, b, c, ldc, accumulate);
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn matmul(a: Mat<f64>, b: Mat<f64>, c: &mut [f64], ldc: usize, accumulate: bool) {
        for i in 0..a.rows {
            let row = &mut c[i * ldc..][..b.cols];
            if !accumulate {
                row.fill(0.0);
            }
            for k in 0..a.cols {
                let aik = a.data[i * a.rs + k * a.cs];
                for (j, cij) in row.iter_mut().enumerate() {
                    *cij += aik * b.data[k * b.rs + j * b.cs];
                }
            }
        }
    }
}

/// A dense NCHW (or `[N, F]`) tensor of a training step.
#[derive(Clone, Debug, PartialEq)]
pub struct Buf<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T: Real> Buf<T> {
    pub fn zeros(shape: &[usize]) -> Self {
        Buf {
            shape: shape.to_vec(),
            data: vec![T::ZERO; shape.iter().product()],
        }
    }

    pub fn from_f32(shape: &[usize], data: &[f32]) -> Self {
        Buf {
            shape: shape.to_vec(),
            data: data.iter().map(|&v| T::from_f64(v as f64)).collect(),
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|v| v.to_f64() as f32).collect()
    }

    /// Elements per item of the batch.
    pub fn item(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Elements per channel plane (1 for `[N, F]`).
    pub fn plane(&self) -> usize {
        self.shape[2..].iter().product()
    }

    /// `self += other`, elementwise.
    pub fn add_assign(&mut self, other: &Buf<T>) {
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a += b;
        }
    }
}
