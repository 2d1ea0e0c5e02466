//! netc: a compiler for declarative convolutional network definitions.
//!
//! The pipeline, one module per stage, data flowing one way:
//! [`parse`] (`.net` text → AST) → [`check`] (AST → a [`check::Network`]
//! with every shape and name, lowered to the [`ir`] graph) → [`passes`]
//! (the optimiser) → [`plan`] (where every tensor lives) → [`codegen`]
//! (Cranelift, JIT or object file). [`pipeline`] runs the whole chain;
//! [`interp`] is the reference interpreter every stage is tested against;
//! [`weights`] binds parameters by name. [`onnx`], [`bench`] and [`cli`]
//! sit at the edges. `docs/architecture.md` draws it.

// A match over `Op` (or any enum) names every variant: a new op is then a
// compile error wherever it must be handled (docs/adding-an-op.md).
#![deny(clippy::wildcard_enum_match_arm)]

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
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod select;
pub mod source;
pub mod target;
pub mod train;
pub mod units;
pub mod weights;
