//! Input data: MNIST IDX files and PNG/JPEG images.

pub mod idx;
pub mod image;
