//! Reverse-mode differentiation as a compiler step: from a model's
//! (unoptimised) graph, the training step — forward with training
//! semantics, a loss, the backward pass in reverse topological order —
//! and its memory plan: which forward values backward reads, and so how
//! many bytes a step must keep between the two passes.

use crate::ir::grad::{GradRule, Saved};
use crate::ir::graph::{Graph, NodeKind};
use crate::ir::op::{Op, ParamKind};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// What the step minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Loss {
    /// Softmax cross-entropy over integer labels, mean over the batch.
    CrossEntropy,
    /// Mean squared error against one-hot labels, mean over every value.
    Mse,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AutodiffError {
    #[error("cannot train through `{node}` ({op}): {what}")]
    NotDifferentiable {
        node: String,
        op: &'static str,
        what: String,
    },
    #[error("training needs a model with one input (an image batch); this one has {0}")]
    Inputs(usize),
    #[error("the loss reads `{node}`, shape {shape}: it needs class scores [N, classes]")]
    LossShape { node: String, shape: String },
    #[error("the model has no output for a loss to read")]
    NoOutput,
    #[error(transparent)]
    Graph(#[from] crate::ir::graph::GraphError),
}

/// One parameter tensor the step reads, in graph order; a name used by
/// several nodes (shared weights) appears once and collects every
/// gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

/// The training step of one graph.
#[derive(Clone, Debug)]
pub struct TrainGraph {
    pub graph: Graph,
    /// Forward order: every node the loss depends on, producers first.
    pub order: Vec<NodeIndex>,
    /// The node whose output the loss reads (a trailing softmax's operand
    /// for cross-entropy, which works on logits).
    pub logits: NodeIndex,
    pub classes: usize,
    pub loss: Loss,
    pub rules: HashMap<NodeIndex, GradRule>,
    /// Nodes whose output gradient backward computes: those downstream of
    /// a learnable parameter (nothing flows back into the input).
    pub wants_grad: HashSet<NodeIndex>,
    /// Forward values some backward rule reads.
    pub kept: HashSet<NodeIndex>,
    pub params: Vec<ParamInfo>,
    /// Parameter index by name.
    pub param_index: HashMap<String, usize>,
}

impl TrainGraph {
    /// Build the training step of `graph` (unoptimised: no fused
    /// epilogues, batch norms unfolded).
    pub fn build(graph: Graph, loss: Loss) -> Result<Self, AutodiffError> {
        if graph.inputs.len() != 1 {
            return Err(AutodiffError::Inputs(graph.inputs.len()));
        }
        let Some(&output) = graph.outputs.first() else {
            return Err(AutodiffError::NoOutput);
        };
        let logits = match (loss, graph.op(output)) {
            (Loss::CrossEntropy, Some(Op::Softmax)) => graph.operands(output)[0],
            _ => output,
        };
        let shape = graph.g[logits].shape.dims().to_vec();
        let classes = match shape[..] {
            [_, c] | [_, c, 1, 1] => c,
            _ => {
                return Err(AutodiffError::LossShape {
                    node: graph.g[logits].name.clone(),
                    shape: graph.g[logits].shape.to_string(),
                })
            }
        };

        // Ancestors of the loss, in topological order.
        let mut needed = HashSet::from([logits]);
        let mut stack = vec![logits];
        while let Some(n) = stack.pop() {
            for o in graph.operands(n) {
                if needed.insert(o) {
                    stack.push(o);
                }
            }
        }
        let order: Vec<NodeIndex> = graph
            .topo_order()?
            .into_iter()
            .filter(|n| needed.contains(n))
            .collect();

        let mut rules = HashMap::new();
        let mut wants_grad = HashSet::new();
        let mut params: Vec<ParamInfo> = Vec::new();
        let mut param_index = HashMap::new();
        for &n in &order {
            let node = &graph.g[n];
            let NodeKind::Op(op) = &node.kind else {
                continue;
            };
            let rule = op
                .grad_rule()
                .map_err(|e| AutodiffError::NotDifferentiable {
                    node: node.name.clone(),
                    op: op.name(),
                    what: e.what,
                })?;
            rules.insert(n, rule);
            let learnable = node
                .params
                .iter()
                .any(|p| p.spec.kind == ParamKind::Learnable);
            let fed = graph
                .operands(n)
                .iter()
                .enumerate()
                .any(|(port, o)| op.differentiable_port(port) && wants_grad.contains(o));
            if learnable || fed {
                wants_grad.insert(n);
            }
            for p in &node.params {
                if !param_index.contains_key(&p.name) {
                    param_index.insert(p.name.clone(), params.len());
                    params.push(ParamInfo {
                        name: p.name.clone(),
                        shape: p.spec.shape.dims().to_vec(),
                        kind: p.spec.kind,
                    });
                }
            }
        }

        // Forward values backward reads.
        let mut kept = HashSet::new();
        for (&n, rule) in &rules {
            if !wants_grad.contains(&n) {
                continue;
            }
            if rule.reads_inputs {
                kept.extend(graph.operands(n));
            }
            if rule.reads_output {
                kept.insert(n);
            }
        }
        Ok(TrainGraph {
            graph,
            order,
            logits,
            classes,
            loss,
            rules,
            wants_grad,
            kept,
            params,
            param_index,
        })
    }

    /// Bytes (as f32) the step keeps from its forward pass for backward:
    /// the values backward reads, plus saved masks, winning positions and
    /// batch statistics.
    pub fn kept_bytes(&self) -> u64 {
        let values: u64 = self
            .kept
            .iter()
            .map(|&n| 4 * self.graph.g[n].shape.numel() as u64)
            .sum();
        let saved: u64 = self
            .order
            .iter()
            .filter(|n| self.wants_grad.contains(n))
            .map(|&n| {
                let node = &self.graph.g[n];
                match self.rules.get(&n).map(|r| r.saves) {
                    Some(Saved::Mask) | Some(Saved::ArgMax) => 4 * node.shape.numel() as u64,
                    Some(Saved::BatchStats) => 8 * node.shape.dims()[1] as u64,
                    Some(Saved::Nothing) | None => 0,
                }
            })
            .sum();
        values + saved
    }

    /// Learnable parameter count.
    pub fn learnable(&self) -> u64 {
        self.params
            .iter()
            .filter(|p| p.kind == ParamKind::Learnable)
            .map(|p| p.shape.iter().product::<usize>() as u64)
            .sum()
    }
}
