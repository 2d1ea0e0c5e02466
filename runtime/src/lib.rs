//! netc runtime: tensors, weight files, input data, deterministic random
//! initialisation, and the native kernels and C ABI that generated code
//! calls. Everything here treats files as untrusted.

pub mod abi;
pub mod alloc;
pub mod cpu;
pub mod data;
pub mod init;
pub mod kernels;
pub mod profile;
pub mod tensor;
pub mod threads;
pub mod weights;

pub use tensor::Tensor;
