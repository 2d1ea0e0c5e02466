//! netc runtime: tensors, weight files, input data and deterministic
//! random initialisation. Everything here treats files as untrusted.

pub mod data;
pub mod init;
pub mod tensor;
pub mod weights;

pub use tensor::Tensor;
