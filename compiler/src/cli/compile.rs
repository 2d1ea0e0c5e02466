//! `netc compile`: lower and optimise a model, and print the graph IR or
//! what each pass did.

use super::{load_graph, load_weights, Failure, OptArgs, WeightArgs};
use crate::passes::{self, PASSES};
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
    #[command(flatten)]
    opt: OptArgs,
    #[command(flatten)]
    weights: WeightArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    /// The optimised graph IR as text, one node per line in execution order.
    Ir,
    /// The optimised graph IR as Graphviz DOT (`| dot -Tsvg > graph.svg`).
    Dot,
    /// The graph before and after optimisation and per-pass statistics
    /// (rewrites, nodes removed, MACs saved, activation bytes saved, the
    /// planned arena against the naive sum).
    Passes,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let mut graph = load_graph(&a.file, a.batch)?;
    let before = graph.clone();
    // Folding passes compute with weight values; structure does not depend
    // on them, so random weights serve when none are given.
    let mut weights = load_weights(&graph, &a.weights)?;
    let report = passes::optimize(&mut graph, &mut weights, &a.opt.options())?;
    match a.emit {
        Emit::Ir => print!("{}", graph.to_text()),
        Emit::Dot => print!("{}", graph.to_dot()),
        Emit::Passes => {
            println!(
                "== before ({} ops, {} MACs)",
                before.op_count(),
                before.macs()
            );
            print!("{}", before.to_text());
            println!("\n== passes");
            for p in PASSES {
                println!("  {:<15} {}", p.name, p.summary);
            }
            println!();
            print!("{}", report.to_text());
            println!(
                "\n== after ({} ops, {} MACs)",
                graph.op_count(),
                graph.macs()
            );
            print!("{}", graph.to_text());
        }
    }
    Ok(())
}
