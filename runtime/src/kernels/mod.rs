//! Native kernels that generated code calls. The code generator emits the
//! graph's control flow, addresses and simple loops; the heavy loops live
//! here, written with `std::arch` and chosen by CPU feature at run time.

pub mod gemm;
pub mod micro;
pub mod pool;
pub mod simple;
pub mod winograd;
