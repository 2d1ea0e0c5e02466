//! Training: the backward pass derived from the graph IR
//! ([`autodiff`]), run by [`exec`] on the kernels of [`kernels`] (GEMM
//! micro-kernels under im2col/col2im), updated by [`optim`], fed by
//! [`data`] with [`augment`]ed batches.

pub mod augment;
pub mod autodiff;
pub mod data;
pub mod exec;
pub mod kernels;
pub mod optim;
pub mod real;

pub use autodiff::{Loss, TrainGraph};
pub use exec::Executor;
