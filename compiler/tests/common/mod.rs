//! Helpers shared by the integration tests.
#![allow(dead_code)]

use netc::check::{self, CheckOptions};
use netc::codegen::jit::JitModel;
use netc::ir::Graph;
use netc::passes;
use netc::pipeline::{self, Pipeline, Planned};
use netc::weights::Weights;
use std::path::{Path, PathBuf};

/// The project root (tests run from `compiler/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run the `netc` binary from the project root.
pub fn netc(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run netc")
}

/// Check `models/<name>.net` at `batch` and lower it.
pub fn model_graph(name: &str, batch: usize) -> Graph {
    sized_model_graph(name, batch, None)
}

/// Check `models/<name>.net` at `batch` with its open spatial sizes bound
/// to `size`, and lower it.
pub fn sized_model_graph(name: &str, batch: usize, size: Option<[usize; 2]>) -> Graph {
    let path = root().join("models").join(format!("{name}.net"));
    let options = CheckOptions {
        batch,
        size,
        ..CheckOptions::default()
    };
    match check::check_file(&path, options) {
        Ok((_, net)) => Graph::from_network(&net),
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Lower model source text.
pub fn source_graph(src: &str, batch: usize) -> Graph {
    let options = CheckOptions {
        batch,
        ..CheckOptions::default()
    };
    match check::check_source("test.net", src, options) {
        Ok(net) => Graph::from_network(&net),
        Err((sources, d)) => panic!("{}", d.render(&sources)),
    }
}
pub mod gen;

/// The pipeline with `passes` on `threads` threads (native target).
pub fn pipeline(passes: passes::Options, threads: usize) -> Pipeline {
    Pipeline::new(pipeline::Options {
        passes,
        threads,
        ..pipeline::Options::default()
    })
}

/// Optimise (all passes), select kernels and plan copies of `graph` and
/// `weights`.
pub fn planned(graph: &Graph, weights: &Weights) -> Planned {
    pipeline(passes::Options::default(), 0)
        .optimize(graph.clone(), weights.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", graph.name))
}

/// Compile copies of `graph` and `weights` with every pass, JIT on `threads`.
pub fn jit(graph: &Graph, weights: &Weights, threads: usize) -> JitModel {
    let p = pipeline(passes::Options::default(), threads);
    p.jit(planned(graph, weights))
        .unwrap_or_else(|e| panic!("{}: {e}", graph.name))
}
