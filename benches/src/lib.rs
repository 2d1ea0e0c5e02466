//! Shared setup for the criterion benchmarks: compile a model (a file in
//! `models/` or inline source) with the JIT and random weights.

use netc::codegen::jit::JitModel;
use netc::ir::Graph;
use netc::pipeline::{Options, Pipeline};
use netc::weights::Weights;
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::Tensor;
use std::path::Path;

/// A compiled model with an input and preallocated outputs.
pub struct Ready {
    pub model: JitModel,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

impl Ready {
    pub fn run(&mut self) {
        if let Err(e) = self.model.run_into(&self.inputs, &mut self.outputs) {
            panic!("benchmark run failed: {e}");
        }
    }
}

fn compile(pipeline: &Pipeline, graph: Graph) -> Ready {
    let weights = Weights::random(&graph, 1);
    let planned = pipeline
        .optimize(graph, weights)
        .unwrap_or_else(|e| panic!("{e}"));
    let model = pipeline.jit(planned).unwrap_or_else(|e| panic!("{e}"));
    let lowered = model.lowered();
    let inputs = lowered
        .input_shapes
        .iter()
        .map(|s| random_tensor(2, "x", s.clone(), Init::Uniform { lo: 0.0, hi: 1.0 }))
        .collect();
    let outputs = lowered
        .output_shapes
        .iter()
        .map(|s| Tensor::zeros(s.clone()))
        .collect();
    Ready {
        model,
        inputs,
        outputs,
    }
}

/// `models/<name>.net` at `batch`.
pub fn model(name: &str, batch: usize, threads: usize) -> Ready {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{name}.net"));
    let pipeline = Pipeline::new(Options {
        batch,
        threads,
        ..Options::default()
    });
    let checked = pipeline.check_file(&path).unwrap_or_else(|e| panic!("{e}"));
    compile(&pipeline, checked.graph)
}

/// A model from source text.
pub fn source(src: &str, threads: usize) -> Ready {
    let pipeline = Pipeline::new(Options {
        threads,
        ..Options::default()
    });
    let graph = pipeline
        .check_source("bench.net", src)
        .unwrap_or_else(|e| panic!("{e}"));
    compile(&pipeline, graph)
}
