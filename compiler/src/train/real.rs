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

impl Real for f32 {
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
