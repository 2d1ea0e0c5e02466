//! Constant-scale folding (`scale`, and dropout's inference scale after
//! `cleanup`).
//!
//! `s · (W x + b)` = `(sW) x + sb`, so a scale right after a conv or dense
//! (its only user, empty epilogue) folds into that op's weight and bias.
//! Otherwise, `W (s · x)` = `(sW) x`, so a scale whose only user is a dense
//! layer or a conv folds into that op's weight alone (a conv's zero padding
//! is unchanged by scaling, so this is exact for padded convs too).
//!
//! Does not move a scale across a non-linear op.

use super::{param_tensor, set_param, PassError};
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::weights::Weights;
use petgraph::stable_graph::NodeIndex;

const PASS: &str = "fold_scale";

fn scale_param(
    graph: &mut Graph,
    weights: &mut Weights,
    n: NodeIndex,
    role: &'static str,
    f: f32,
) -> Result<(), PassError> {
    if let Some(t) = param_tensor(graph, weights, n, role, PASS)? {
        let (shape, data) = (t.shape().to_vec(), t.data().iter().map(|v| v * f).collect());
        set_param(graph, weights, n, role, shape, data, PASS);
    }
    Ok(())
}

fn is_linear(op: Option<&Op>) -> bool {
    match op {
        Some(Op::Conv(c)) => c.epilogue.is_empty(),
        Some(Op::Dense(d)) => d.epilogue.is_empty(),
        _ => false,
    }
}

pub fn run(graph: &mut Graph, weights: &mut Weights) -> Result<usize, PassError> {
    let mut rewrites = 0;
    let nodes: Vec<_> = graph.g.node_indices().collect();
    for s in nodes {
        let Some(Op::Scale { factor }) = graph.op(s).cloned() else {
            continue;
        };
        let producer = graph.operands(s)[0];
        if graph.single_user(producer) == Some(s) && is_linear(graph.op(producer)) {
            scale_param(graph, weights, producer, "weight", factor)?;
            scale_param(graph, weights, producer, "bias", factor)?;
            graph.bypass(s);
            rewrites += 1;
            continue;
        }
        let Some(user) = graph.single_user(s) else {
            continue;
        };
        let reads_at_port_0 = graph.operands(user) == [s];
        let foldable =
            reads_at_port_0 && matches!(graph.op(user), Some(Op::Dense(_)) | Some(Op::Conv(_)));
        if foldable {
            scale_param(graph, weights, user, "weight", factor)?;
            graph.bypass(s);
            rewrites += 1;
        }
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::*;

    #[test]
    fn folds_backwards_and_forwards() {
        // The first scale follows a relu: it folds into the next dense; the
        // second follows a dense: it folds into that dense.
        let src =
            "model m(x: [N, 6]) {\n x -> [dense(5), relu, scale(0.5), dense(3), scale(-2)] as f\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 2);
        assert_eq!(count(&g, |op| matches!(op, Op::Scale { .. })), 0);
    }

    #[test]
    fn keeps_a_scale_before_a_non_linear_op() {
        let src = "model m(x: [N, 6]) {\n x -> [dense(5), relu, scale(0.5), sigmoid] as f\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 0);
        assert_eq!(count(&g, |op| matches!(op, Op::Scale { .. })), 1);
    }
}
