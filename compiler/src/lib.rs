//! netc: a compiler for declarative convolutional network definitions.
//!
//! The pipeline, one module per stage: [`parse`] (`.net` text → AST),
//! [`check`] (AST → a [`check::Network`] with every shape and name), [`ir`]
//! (the petgraph dataflow graph), [`interp`] (the reference interpreter),
//! [`weights`] (parameters bound by name).

pub mod bench;
pub mod check;
pub mod cli;
pub mod codegen;
pub mod diag;
#[doc(hidden)]
pub mod fuzz;
pub mod interp;
pub mod ir;
pub mod onnx;
pub mod parse;
pub mod passes;
pub mod source;
pub mod weights;
