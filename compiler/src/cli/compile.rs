//! `netc compile`: lower and optimise a model; print the graph IR or what
//! each pass did, and/or write an object file with a C header.

use super::{load_weights, Failure, OptArgs, WeightArgs};
use crate::passes::PASSES;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.net).
    file: PathBuf,
    /// Value bound to the symbolic batch dimension `N`.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// What to print.
    #[arg(long, value_enum, required_unless_present = "output")]
    emit: Option<Emit>,
    /// Write a relocatable object file here, with a C header (`.h`) and
    /// the packed weights (`.weights`) next to it.
    #[arg(long, short, value_name = "FILE.o")]
    output: Option<PathBuf>,
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
    let pipeline = a.opt.pipeline(a.batch, 0);
    let checked = pipeline.check_file(&a.file)?;
    let sources = &checked.program.sources;
    let before = checked.graph.clone();
    // Folding passes compute with weight values; structure does not depend
    // on them, so random weights serve when none are given.
    let weights = load_weights(&before, &a.weights)?;
    let planned = pipeline.optimize(before.clone(), weights)?;
    let (graph, report) = (&planned.graph, &planned.report);
    match a.emit {
        None => {}
        Some(Emit::Ir) => print!("{}", graph.to_text_with_sources(sources)),
        Some(Emit::Dot) => print!("{}", graph.to_dot()),
        Some(Emit::Passes) => {
            println!(
                "== before ({} ops, {} MACs)",
                before.op_count(),
                before.macs()
            );
            print!("{}", before.to_text_with_sources(sources));
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
            print!("{}", graph.to_text_with_sources(sources));
        }
    }
    if let Some(out) = &a.output {
        let (lowered, stem) = pipeline.object(planned, out)?;
        eprintln!(
            "wrote {} ({stem}_run/{stem}_forward), {} and {} ({} of packed weights, arena {})",
            out.display(),
            out.with_extension("h").display(),
            out.with_extension("weights").display(),
            crate::units::human_bytes(lowered.weight_bytes() as u64),
            crate::units::human_bytes(4 * lowered.arena_floats as u64),
        );
    }
    Ok(())
}
