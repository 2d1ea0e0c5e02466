//! Epilogue fusion: conv/dense + bias + activation + residual add.
//!
//! - An activation whose operand is a conv or dense (its only user) becomes
//!   a `Step::Act` of that op.
//! - An `add` with an operand produced by a conv or dense (its only user)
//!   becomes a `Step::Add` of that op, which gains the add's other operands
//!   as extra inputs; a following ReLU then fuses by the first rule.
//!
//! The rules run to a fixpoint, bounded: not converging is an error.
//! Does not fuse into ops with other users (their output must stay
//! unmodified) or pooling.

use super::PassError;
use crate::ir::op::{Op, Step};
use crate::ir::Graph;
use crate::weights::Weights;
use petgraph::stable_graph::NodeIndex;

const MAX_ROUNDS: usize = 16;

fn epilogue_mut(graph: &mut Graph, n: NodeIndex) -> Option<&mut Vec<Step>> {
    match graph.op_mut(n) {
        Some(Op::Conv(c)) => Some(&mut c.epilogue),
        Some(Op::Dense(d)) => Some(&mut d.epilogue),
        _ => None,
    }
}

fn fusable_producer(graph: &Graph, consumer: NodeIndex, producer: NodeIndex) -> bool {
    graph.single_user(producer) == Some(consumer)
        && matches!(graph.op(producer), Some(Op::Conv(_)) | Some(Op::Dense(_)))
}

fn round(graph: &mut Graph) -> usize {
    let mut rewrites = 0;
    let order = graph.topo_order().unwrap_or_default();
    for n in order {
        if !graph.g.contains_node(n) {
            continue;
        }
        match graph.op(n).cloned() {
            Some(Op::Activation(a)) => {
                let p = graph.operands(n)[0];
                if fusable_producer(graph, n, p) {
                    if let Some(e) = epilogue_mut(graph, p) {
                        e.push(Step::Act(a));
                    }
                    graph.bypass(n);
                    rewrites += 1;
                }
            }
            Some(Op::Add) => {
                let operands = graph.operands(n);
                // Fuse into the operand computed last, so the others (the
                // residuals) are ready when its epilogue runs.
                let Some(&p) = operands
                    .iter()
                    .rev()
                    .find(|&&p| fusable_producer(graph, n, p))
                else {
                    continue;
                };
                let first_port = graph.operands(p).len();
                let others: Vec<NodeIndex> = operands.into_iter().filter(|&o| o != p).collect();
                for (port, &o) in (first_port..).zip(&others) {
                    graph.connect(o, p, port);
                    if let Some(e) = epilogue_mut(graph, p) {
                        e.push(Step::Add);
                    }
                }
                let edges: Vec<_> = graph
                    .g
                    .edges_connecting(p, n)
                    .map(|e| petgraph::visit::EdgeRef::id(&e))
                    .collect();
                for e in edges {
                    graph.g.remove_edge(e);
                }
                graph.redirect_users(n, p);
                if let Some(node) = graph.g.remove_node(n) {
                    graph.g[p].origin.extend(node.origin);
                }
                rewrites += 1;
            }
            _ => {}
        }
    }
    rewrites
}

pub fn run(graph: &mut Graph, _: &mut Weights) -> Result<usize, PassError> {
    let mut total = 0;
    for _ in 0..MAX_ROUNDS {
        let n = round(graph);
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
    Err(PassError::NoFixpoint {
        pass: "fuse_epilogue",
        rounds: MAX_ROUNDS,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::*;

    #[test]
    fn fuses_residual_add_and_following_relu() {
        let src = "model m(x: [N, 4, 5, 5]) {\n y = x -> [conv(4, 3, pad: 1), relu, conv(4, 3, pad: 1)]\n add(y, x) -> relu\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 3);
        assert_eq!(count(&g, |op| matches!(op, Op::Add | Op::Activation(_))), 0);
        let last = g.outputs[0];
        let Some(Op::Conv(c)) = g.op(last) else {
            panic!()
        };
        assert_eq!(
            c.epilogue,
            vec![Step::Add, Step::Act(crate::ir::op::Activation::Relu)]
        );
        assert_eq!(g.operands(last).len(), 2);
    }

    #[test]
    fn does_not_fuse_into_a_conv_with_other_users() {
        let src = "model m(x: [N, 4, 5, 5]) {\n c = x -> conv(4, 1)\n return c -> relu, c\n}";
        let (_, n) = apply(src, run);
        assert_eq!(n, 0);
    }
}
