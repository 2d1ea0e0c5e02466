//! The optimiser: an ordered list of passes over the graph IR.
//!
//! Each pass is a module with a `run(&mut Graph, &mut Weights) ->
//! Result<usize, PassError>` returning how many rewrites it made. The
//! driver runs them in [`PASSES`] order, validates the graph after every
//! one, and records per-pass statistics for `netc compile --emit passes`.
//! Passes never change the weights a graph was bound with: folded tensors
//! get new names, so the unoptimised graph still runs with the same map.

pub mod cleanup;
pub mod compose_linear;
pub mod concat_elim;
pub mod fold_bn;
pub mod fold_scale;
pub mod fuse_epilogue;
pub mod fuse_pool;
pub mod merge_pointwise;
pub mod merge_residual;

use crate::ir::graph::GraphError;
use crate::ir::Graph;
use crate::weights::Weights;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass `{pass}` left an invalid graph: {source}")]
    Invalid {
        pass: &'static str,
        #[source]
        source: GraphError,
    },
    #[error("pass `{pass}` did not reach a fixpoint in {rounds} rounds")]
    NoFixpoint { pass: &'static str, rounds: usize },
    #[error("pass `{pass}`: weight `{key}` is missing")]
    MissingWeight { pass: &'static str, key: String },
    #[error("unknown pass `{0}`; the passes are: {1}")]
    UnknownPass(String, String),
}

pub type PassFn = fn(&mut Graph, &mut Weights) -> Result<usize, PassError>;

/// A pass: its name (for `--disable-pass`), what it does, and its entry point.
pub struct Pass {
    pub name: &'static str,
    pub summary: &'static str,
    pub run: PassFn,
}

/// Every pass, in the order the driver runs them.
pub const PASSES: &[Pass] = &[
    Pass {
        name: "cleanup",
        summary: "dropout to its inference form; identity and dead nodes removed",
        run: cleanup::run,
    },
    Pass {
        name: "fold_bn",
        summary: "batch norm folded into the preceding conv or dense",
        run: fold_bn::run,
    },
    Pass {
        name: "fold_scale",
        summary: "constant scales folded into a neighbouring linear op",
        run: fold_scale::run,
    },
    Pass {
        name: "compose_linear",
        summary: "consecutive linear ops with nothing between them composed",
        run: compose_linear::run,
    },
    Pass {
        name: "fuse_epilogue",
        summary: "activation and residual add fused into the producing conv/dense",
        run: fuse_epilogue::run,
    },
    Pass {
        name: "merge_residual",
        summary: "a residual sum of two 1x1 convs becomes one 1x1 conv over their inputs stacked",
        run: merge_residual::run,
    },
    Pass {
        name: "fuse_pool",
        summary: "a 2x2 max pool after a 3x3 or 5x5 conv pooled in the conv's epilogue",
        run: fuse_pool::run,
    },
    Pass {
        name: "merge_pointwise",
        summary: "sibling 1x1 convs reading one tensor merged into one wider matmul",
        run: merge_pointwise::run,
    },
    Pass {
        name: "concat_elim",
        summary: "producers write straight into their slice of a concat",
        run: concat_elim::run,
    },
];

/// Which passes to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `-O0`: run no passes.
    pub disable_all: bool,
    pub disabled: Vec<String>,
}

impl Options {
    pub fn check(&self) -> Result<(), PassError> {
        for d in &self.disabled {
            if !PASSES.iter().any(|p| p.name == d) {
                let names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
                return Err(PassError::UnknownPass(d.clone(), names.join(", ")));
            }
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Clone, Debug, Serialize)]
pub struct PassStats {
    pub name: &'static str,
    pub rewrites: usize,
    pub nodes_removed: i64,
    pub macs_saved: i64,
    pub activation_bytes_saved: i64,
    pub micros: u128,
}

/// The statistics of a whole optimisation run; the arena sizes are filled
/// in by the pipeline once the graph is planned.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    pub passes: Vec<PassStats>,
    pub arena_bytes: Option<u64>,
    pub naive_bytes: Option<u64>,
}

/// Run the enabled passes in order, validating after each.
pub fn optimize(
    graph: &mut Graph,
    weights: &mut Weights,
    options: &Options,
) -> Result<Report, PassError> {
    options.check()?;
    let mut report = Report::default();
    if options.disable_all {
        return Ok(report);
    }
    for pass in PASSES {
        if options.disabled.iter().any(|d| d == pass.name) {
            continue;
        }
        let (nodes, macs, bytes) = (
            graph.op_count() as i64,
            graph.macs() as i64,
            graph.activation_bytes() as i64,
        );
        let start = Instant::now();
        let rewrites = (pass.run)(graph, weights)?;
        let micros = start.elapsed().as_micros();
        graph.validate().map_err(|source| PassError::Invalid {
            pass: pass.name,
            source,
        })?;
        report.passes.push(PassStats {
            name: pass.name,
            rewrites,
            nodes_removed: nodes - graph.op_count() as i64,
            macs_saved: macs - graph.macs() as i64,
            activation_bytes_saved: bytes - graph.activation_bytes() as i64,
            micros,
        });
    }
    Ok(report)
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "pass             rewrites  nodes removed   MACs saved  act. bytes saved      time\n",
        );
        for p in &self.passes {
            out += &format!(
                "{:<15}  {:>8}  {:>13}  {:>11}  {:>16}  {:>6} µs\n",
                p.name,
                p.rewrites,
                p.nodes_removed,
                p.macs_saved,
                p.activation_bytes_saved,
                p.micros
            );
        }
        if let (Some(a), Some(n)) = (self.arena_bytes, self.naive_bytes) {
            out += &format!(
                "\nactivation arena: {} planned vs {} naive (every intermediate in its own buffer): {:.1}x smaller\n",
                crate::units::human_bytes(a),
                crate::units::human_bytes(n),
                n as f64 / a.max(1) as f64
            );
        }
        out
    }
}

/// A name for a tensor derived by a pass, unique in `weights`.
pub(crate) fn derived_name(weights: &Weights, base: &str, pass: &str) -> String {
    let mut name = format!("{base}@{pass}");
    let mut i = 2;
    while weights.get(&name).is_some() {
        name = format!("{base}@{pass}{i}");
        i += 1;
    }
    name
}

/// The bound tensor for parameter `role` of node `n`.
pub(crate) fn param_tensor<'w>(
    graph: &Graph,
    weights: &'w Weights,
    n: petgraph::stable_graph::NodeIndex,
    role: &str,
    pass: &'static str,
) -> Result<Option<&'w netc_runtime::Tensor>, PassError> {
    let Some(p) = graph.g[n].param(role) else {
        return Ok(None);
    };
    weights
        .get(&p.name)
        .map(Some)
        .ok_or_else(|| PassError::MissingWeight {
            pass,
            key: p.name.clone(),
        })
}

/// Store `data` as a new tensor and point parameter `role` of `n` at it
/// (adding the parameter if the node did not have it).
pub(crate) fn set_param(
    graph: &mut Graph,
    weights: &mut Weights,
    n: petgraph::stable_graph::NodeIndex,
    role: &'static str,
    shape: Vec<usize>,
    data: Vec<f32>,
    pass: &'static str,
) {
    use crate::ir::graph::Param;
    use crate::ir::op::{ParamKind, ParamSpec};
    let base = format!("{}.{role}", graph.g[n].name);
    let name = derived_name(weights, &base, pass);
    match netc_runtime::Tensor::new(shape.clone(), data) {
        Ok(t) => weights.insert(name.clone(), t),
        Err(e) => unreachable!("derived tensor built from its own shape: {e}"),
    }
    let node = &mut graph.g[n];
    match node.params.iter_mut().find(|p| p.spec.role == role) {
        Some(p) => {
            p.name = name;
            p.spec.shape = crate::ir::shape::Shape(shape);
        }
        None => node.params.push(Param {
            name,
            spec: ParamSpec {
                role,
                shape: crate::ir::shape::Shape(shape),
                kind: ParamKind::Learnable,
            },
        }),
    }
}

/// Helpers for the passes' own tests.
#[cfg(test)]
pub mod testing {
    use crate::check::{check_source, CheckOptions};
    use crate::interp;
    use crate::ir::op::Op;
    use crate::ir::Graph;
    use crate::weights::Weights;
    use netc_runtime::init::{random_tensor, Init};

    /// A graph from source, with random weights.
    pub fn graph(src: &str) -> (Graph, Weights) {
        let options = CheckOptions {
            batch: 2,
            ..CheckOptions::default()
        };
        let net = match check_source("t.net", src, options) {
            Ok(n) => n,
            Err((sources, d)) => panic!("{}", d.render(&sources)),
        };
        let g = Graph::from_network(&net);
        let w = Weights::random(&g, 3);
        (g, w)
    }

    /// Run `pass` on a copy; assert the result validates and computes the
    /// same outputs. Returns the rewritten graph and the rewrite count.
    pub fn apply(src: &str, pass: super::PassFn) -> (Graph, usize) {
        let (g, w) = graph(src);
        let x: Vec<_> = g
            .inputs
            .iter()
            .map(|&n| {
                random_tensor(
                    9,
                    "x",
                    g.g[n].shape.dims().to_vec(),
                    Init::Uniform { lo: -1.0, hi: 1.0 },
                )
            })
            .collect();
        let before = interp::run(&g, &w, &x).unwrap();
        let (mut g2, mut w2) = (g.clone(), w.clone());
        let n = pass(&mut g2, &mut w2).unwrap();
        g2.validate().unwrap();
        let after = interp::run(&g2, &w2, &x).unwrap();
        for (a, b) in after.iter().zip(&before) {
            let diff = a.max_abs_diff(b).unwrap();
            assert!(
                diff <= 1e-4 * b.max_abs().max(1e-6),
                "outputs differ by {diff}"
            );
        }
        (g2, n)
    }

    pub fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
        g.g.node_weights()
            .filter(|n| n.op().is_some_and(&f))
            .count()
    }
}
