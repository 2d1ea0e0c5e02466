//! `netc compile`: lower a model and print its graph IR.

use super::{load_graph, Failure};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.net).
    file: PathBuf,
    /// Value bound to the symbolic batch dimension `N`.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// What to print.
    #[arg(long, value_enum)]
    emit: Emit,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    /// The graph IR as text, one node per line in execution order.
    Ir,
    /// The graph IR as Graphviz DOT (`| dot -Tsvg > graph.svg`).
    Dot,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let graph = load_graph(&a.file, a.batch)?;
    match a.emit {
        Emit::Ir => print!("{}", graph.to_text()),
        Emit::Dot => print!("{}", graph.to_dot()),
    }
    Ok(())
}
