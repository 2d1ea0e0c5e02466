//! The graph IR shared by every stage after checking.

pub mod op;
pub mod shape;
