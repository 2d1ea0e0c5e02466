//! The dataflow graph: nodes are ops, edges are the tensors between them.
//!
//! Every node produces exactly one tensor (its `shape`); an edge carries a
//! copy of that shape and dtype plus the consumer's input `port`. The graph
//! is built from a checked [`Network`] and [`Graph::validate`]d after every
//! transformation.

use super::op::{Op, ParamSpec};
use super::shape::Shape;
use crate::source::{CallPath, SourceMap};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use serde::Serialize;
use std::fmt::Write as _;

/// One named parameter tensor of a node, looked up by name in the bound
/// weights.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub spec: ParamSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DType {
    F32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// The `index`-th model input.
    Input {
        index: usize,
    },
    Op(Op),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// Shape of the tensor this node produces.
    pub shape: Shape,
    /// Parameter tensors, looked up by name in the bound weights.
    pub params: Vec<Param>,
    /// Source statements this node came from (several once fused).
    pub origin: Vec<CallPath>,
    /// Set by concat elimination: this node writes its output straight into
    /// its channel slice of the given concat's buffer.
    pub write_into: Option<ConcatSlot>,
}

/// A producer's place inside a concatenation's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcatSlot {
    pub concat: NodeIndex,
    pub channel_offset: usize,
}

impl Node {
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            NodeKind::Input { .. } => None,
        }
    }

    /// Whether concat elimination placed this node in `concat`'s buffer
    /// (so that concat need not copy it). A producer feeding several
    /// concats is placed in at most one; the others copy it.
    pub fn placed_in(&self, concat: NodeIndex) -> bool {
        self.write_into.is_some_and(|s| s.concat == concat)
    }

    /// The parameter with the given role (`weight`, `bias`, ...).
    pub fn param(&self, role: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.spec.role == role)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub shape: Shape,
    pub dtype: DType,
    /// Which input of the consumer this tensor is.
    pub port: usize,
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub batch: usize,
    pub g: StableDiGraph<Node, Edge>,
    pub inputs: Vec<NodeIndex>,
    pub outputs: Vec<NodeIndex>,
}

/// A broken graph invariant: a bug in a pass, never a user error.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("graph has a cycle through `{0}`")]
    Cycle(String),
    #[error("node `{node}` input {port} is {problem}")]
    Port {
        node: String,
        port: usize,
        problem: String,
    },
    #[error("node `{node}`: edge from `{from}` says {edge}, the producer makes {actual}")]
    EdgeShape {
        node: String,
        from: String,
        edge: Shape,
        actual: Shape,
    },
    #[error("node `{node}`: shape {stored} recorded, inputs give {inferred}")]
    Shape {
        node: String,
        stored: String,
        inferred: String,
    },
    #[error("output {0} is not a node of the graph")]
    Output(usize),
}

impl Graph {
    /// Add an op node with its operands in port order.
    pub fn add_op(
        &mut self,
        name: String,
        op: Op,
        shape: Shape,
        operands: &[NodeIndex],
    ) -> NodeIndex {
        let n = self.g.add_node(Node {
            name,
            kind: NodeKind::Op(op),
            shape,
            params: Vec::new(),
            origin: Vec::new(),
            write_into: None,
        });
        for (port, &src) in operands.iter().enumerate() {
            self.connect(src, n, port);
        }
        n
    }

    /// Feed `src`'s output to input `port` of `dst`.
    pub fn connect(&mut self, src: NodeIndex, dst: NodeIndex, port: usize) {
        let shape = self.g[src].shape.clone();
        self.g.add_edge(
            src,
            dst,
            Edge {
                shape,
                dtype: DType::F32,
                port,
            },
        );
    }

    /// Make every user of `from` (and the output list) read `to` instead.
    pub fn redirect_users(&mut self, from: NodeIndex, to: NodeIndex) {
        let edges: Vec<_> = self
            .g
            .edges_directed(from, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), e.weight().port))
            .collect();
        for (id, target, port) in edges {
            self.g.remove_edge(id);
            self.connect(to, target, port);
        }
        for o in &mut self.outputs {
            if *o == from {
                *o = to;
            }
        }
    }

    /// Remove a single-input node, wiring its users to its operand. The
    /// node's source spans move to the operand so reports still name them.
    pub fn bypass(&mut self, n: NodeIndex) {
        let Some(&src) = self.operands(n).first() else {
            return;
        };
        self.redirect_users(n, src);
        if let Some(node) = self.g.remove_node(n) {
            self.g[src].origin.extend(node.origin);
        }
    }

    /// The only consumer of `n`, if it has exactly one and is not an output.
    pub fn single_user(&self, n: NodeIndex) -> Option<NodeIndex> {
        match self.users(n)[..] {
            [u] if !self.outputs.contains(&n) => Some(u),
            _ => None,
        }
    }

    pub fn op(&self, n: NodeIndex) -> Option<&Op> {
        self.g.node_weight(n).and_then(Node::op)
    }

    pub fn op_mut(&mut self, n: NodeIndex) -> Option<&mut Op> {
        match self.g.node_weight_mut(n).map(|w| &mut w.kind) {
            Some(NodeKind::Op(op)) => Some(op),
            _ => None,
        }
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        self.g
            .node_weights()
            .filter_map(|n| n.op().map(|op| op.macs(&n.shape)))
            .sum()
    }

    /// Bytes of every op output that needs memory of its own: views
    /// (`slice`, `flatten`) and producers placed inside a concat need none.
    pub fn activation_bytes(&self) -> u64 {
        self.g
            .node_weights()
            .filter(|n| n.write_into.is_none())
            .filter(|n| n.op().is_some_and(Op::computes))
            .map(|n| 4 * n.shape.numel() as u64)
            .sum()
    }

    pub fn op_count(&self) -> usize {
        self.g.node_weights().filter(|n| n.op().is_some()).count()
    }

    /// Input producers of `n`, in port order.
    pub fn operands(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut e: Vec<(usize, NodeIndex)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.weight().port, e.source()))
            .collect();
        e.sort_unstable();
        e.into_iter().map(|(_, s)| s).collect()
    }

    /// Consumers of `n`'s output (one entry per edge).
    pub fn users(&self, n: NodeIndex) -> Vec<NodeIndex> {
        self.g
            .edges_directed(n, Direction::Outgoing)
            .map(|e| e.target())
            .collect()
    }

    /// Nodes in an order where every producer precedes its consumers.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, GraphError> {
        petgraph::algo::toposort(&self.g, None)
            .map_err(|c| GraphError::Cycle(self.g[c.node_id()].name.clone()))
    }

    /// Check every invariant: acyclic, ports 0..k bound exactly once,
    /// edge shapes equal producer shapes, node shapes equal inference.
    pub fn validate(&self) -> Result<(), GraphError> {
        self.topo_order()?;
        for n in self.g.node_indices() {
            let node = &self.g[n];
            let mut ports: Vec<usize> = self
                .g
                .edges_directed(n, Direction::Incoming)
                .map(|e| e.weight().port)
                .collect();
            ports.sort_unstable();
            for (i, &p) in ports.iter().enumerate() {
                if p != i {
                    return Err(GraphError::Port {
                        node: node.name.clone(),
                        port: i,
                        problem: if p > i {
                            "unbound".into()
                        } else {
                            "bound twice".into()
                        },
                    });
                }
            }
            for e in self.g.edges_directed(n, Direction::Incoming) {
                let src = &self.g[e.source()];
                if e.weight().shape != src.shape {
                    return Err(GraphError::EdgeShape {
                        node: node.name.clone(),
                        from: src.name.clone(),
                        edge: e.weight().shape.clone(),
                        actual: src.shape.clone(),
                    });
                }
            }
            match &node.kind {
                NodeKind::Input { .. } => {
                    if !ports.is_empty() {
                        return Err(GraphError::Port {
                            node: node.name.clone(),
                            port: 0,
                            problem: "bound on an input node".into(),
                        });
                    }
                }
                NodeKind::Op(op) => {
                    let operands = self.operands(n);
                    let shapes: Vec<&Shape> = operands.iter().map(|&s| &self.g[s].shape).collect();
                    let inferred = op.infer(&shapes);
                    if inferred.as_ref() != Ok(&node.shape) {
                        return Err(GraphError::Shape {
                            node: node.name.clone(),
                            stored: node.shape.to_string(),
                            inferred: match inferred {
                                Ok(s) => s.to_string(),
                                Err(e) => e.to_string(),
                            },
                        });
                    }
                }
            }
        }
        for (i, &o) in self.outputs.iter().enumerate() {
            if !self.g.contains_node(o) {
                return Err(GraphError::Output(i));
            }
        }
        for n in self.g.node_indices() {
            if let Some(slot) = self.g[n].write_into {
                let ok = self.users(n).contains(&slot.concat)
                    && !self.outputs.contains(&n)
                    && matches!(self.op(slot.concat), Some(Op::Concat));
                if !ok {
                    return Err(GraphError::Port {
                        node: self.g[n].name.clone(),
                        port: 0,
                        problem:
                            "placed into a concat that does not read it (or is a graph output)"
                                .into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The names outputs go by (`netc run --output y.npz`, the Python
    /// package's dict): their layers' names, made unique with `_1`, `_2`.
    pub fn output_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for &o in &self.outputs {
            let base = self.g[o].name.clone();
            let mut name = base.clone();
            let mut k = 1;
            while names.contains(&name) {
                name = format!("{base}_{k}");
                k += 1;
            }
            names.push(name);
        }
        names
    }

    /// A readable listing: one line per node in topological order.
    pub fn to_text(&self) -> String {
        self.listing(None)
    }

    /// [`Graph::to_text`] with each node's call site (and those of the
    /// statements fused into it) after its name.
    pub fn to_text_with_sources(&self, sources: &SourceMap) -> String {
        self.listing(Some(sources))
    }

    fn listing(&self, sources: Option<&SourceMap>) -> String {
        let order = self
            .topo_order()
            .unwrap_or_else(|_| self.g.node_indices().collect());
        let id = |n: NodeIndex| format!("%{}", n.index());
        let mut out = format!("graph {} (batch {}) {{\n", self.name, self.batch);
        for n in order {
            let node = &self.g[n];
            let args: Vec<String> = self.operands(n).into_iter().map(id).collect();
            let op = match &node.kind {
                NodeKind::Input { index } => format!("input {index}"),
                NodeKind::Op(op) => format!("{}({})", op.describe(), args.join(", ")),
            };
            let _ = write!(out, "  {} = {op} : {}", id(n), node.shape);
            if !node.params.is_empty() {
                let ps: Vec<&str> = node.params.iter().map(|p| p.name.as_str()).collect();
                let _ = write!(out, "  [{}]", ps.join(", "));
            }
            let _ = write!(out, "  # {}", node.name);
            if let (Some(sources), Some(first)) = (sources, node.origin.first()) {
                let _ = write!(out, " @ {}", sources.call_path(first));
                let others = node.origin[1..].iter().filter(|p| *p != first).count();
                if others > 0 {
                    let _ = write!(out, " (+{others} fused)");
                }
            }
            out.push('\n');
        }
        let outs: Vec<String> = self.outputs.iter().map(|&o| id(o)).collect();
        let _ = writeln!(out, "  return {}\n}}", outs.join(", "));
        out
    }

    /// Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
            self.name
        );
        for n in self.g.node_indices() {
            let node = &self.g[n];
            let label = match &node.kind {
                NodeKind::Input { .. } => format!("input {}", node.name),
                NodeKind::Op(op) => format!("{}\\n{}", node.name, op.describe()),
            };
            let style = if self.outputs.contains(&n) {
                ", peripheries=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  n{} [label=\"{}\"{style}];",
                n.index(),
                label.replace('"', "'")
            );
        }
        for e in (&self.g).edge_references() {
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                e.source().index(),
                e.target().index(),
                e.weight().shape
            );
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_source, CheckOptions};

    fn graph(src: &str) -> Graph {
        let net = check_source("t.net", src, CheckOptions::default())
            .map_err(|e| e.1.message)
            .unwrap();
        Graph::from_network(&net)
    }

    #[test]
    fn lowers_branches_and_validates() {
        let g = graph(
            "model m(x: [N, 3, 8, 8]) { a = x -> conv(4, 3, pad: 1)\n b = x -> conv(4, 1)\n concat(a, b) -> relu }",
        );
        g.validate().unwrap();
        assert_eq!(g.g.node_count(), 5);
        let text = g.to_text();
        assert!(text.contains("concat(%1, %2)"), "{text}");
        // Each op reads what the source says: both convs read the input,
        // the concat reads the 3×3 conv at port 0 and the 1×1 at port 1.
        let by_name = |name: &str| {
            g.g.node_indices()
                .find(|&n| g.g[n].name == name)
                .unwrap_or_else(|| panic!("no node {name}: {text}"))
        };
        let (x, a, b) = (by_name("x"), by_name("a"), by_name("b"));
        assert_eq!(g.operands(a), [x]);
        assert_eq!(g.operands(b), [x]);
        let concat = g.operands(g.outputs[0])[0];
        assert_eq!(g.operands(concat), [a, b]);
        assert_eq!(g.g[concat].shape.0, [1, 8, 8, 8]);
        // DOT: one edge per tensor read, labelled with its shape.
        let dot = g.to_dot();
        assert_eq!(dot.matches("->").count(), 5, "{dot}");
        assert!(dot.contains("label=\"1x4x8x8\""), "{dot}");
    }

    #[test]
    fn validate_catches_a_wrong_shape() {
        let mut g = graph("model m(x: [N, 3, 8, 8]) { x -> conv(4, 3) }");
        let conv = g.outputs[0];
        g.g[conv].shape = Shape(vec![1, 4, 7, 7]);
        assert!(matches!(g.validate(), Err(GraphError::Shape { .. })));
    }
}
