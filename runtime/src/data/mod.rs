//! Input data: MNIST IDX files.

pub mod idx;
