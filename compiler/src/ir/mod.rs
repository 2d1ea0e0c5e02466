//! The graph IR shared by every stage after checking.

pub mod builtin;
pub mod grad;
pub mod graph;
pub mod op;
pub mod shape;

pub use graph::Graph;
