//! `netc export`: a model and its weights as an ONNX file.

use super::{load_graph, load_weights, Failure, WeightArgs};
use crate::onnx::{self, Batch};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.net).
    file: PathBuf,
    /// Write the ONNX model (opset 17) here; weights are stored inside it
    /// as initialisers named like the model's parameters.
    #[arg(long, value_name = "OUT.onnx")]
    onnx: PathBuf,
    /// Fix the batch dimension to this size (default: a symbolic `N`).
    #[arg(long)]
    batch: Option<usize>,
    #[command(flatten)]
    weights: WeightArgs,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let graph = load_graph(&a.file, a.batch.unwrap_or(1))?;
    let weights = load_weights(&graph, &a.weights)?;
    let batch = if a.batch.is_some() {
        Batch::Fixed
    } else {
        Batch::Symbolic
    };
    let model = onnx::export(&graph, &weights, batch)?;
    onnx::write(&a.onnx, &model)?;
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    eprintln!(
        "wrote {} ({nodes} nodes, {} of weights, opset {})",
        a.onnx.display(),
        crate::units::human_bytes(weights.bytes()),
        onnx::export::OPSET
    );
    Ok(())
}
