//! Inference clean-up.
//!
//! - `dropout` becomes its inference form: nothing (inverted dropout) or a
//!   `scale` by `1 − ratio`;
//! - `identity` nodes, `flatten` of an already flat tensor and adaptive
//!   average pools to the size they are given (AlexNet's 6×6 pool after
//!   its 6×6 features) are removed;
//! - nodes whose result reaches no output are removed.
//!
//! Does not fold scales into weights (that is `fold_scale`).

use super::PassError;
use crate::ir::graph::NodeKind;
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::weights::Weights;
use petgraph::Direction;

pub fn run(graph: &mut Graph, _: &mut Weights) -> Result<usize, PassError> {
    let mut rewrites = 0;
    let nodes: Vec<_> = graph.g.node_indices().collect();
    for n in nodes {
        let replace = match graph.op(n) {
            Some(Op::Dropout { scale, .. }) if *scale == 1.0 => None,
            Some(Op::Dropout { scale, .. }) => Some(Op::Scale { factor: *scale }),
            Some(Op::Identity) => None,
            Some(Op::Flatten | Op::AdaptiveAvgPool { .. })
                if graph.g[n].shape == graph.g[graph.operands(n)[0]].shape =>
            {
                None
            }
            _ => continue,
        };
        match replace {
            Some(op) => graph.g[n].kind = NodeKind::Op(op),
            None => graph.bypass(n),
        }
        rewrites += 1;
    }
    // Dead code: everything not reachable backwards from an output.
    let mut live = std::collections::HashSet::new();
    let mut stack = graph.outputs.clone();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(graph.g.neighbors_directed(n, Direction::Incoming));
        }
    }
    let dead: Vec<_> = graph
        .g
        .node_indices()
        .filter(|n| !live.contains(n) && graph.op(*n).is_some())
        .collect();
    rewrites += dead.len();
    for n in dead {
        graph.g.remove_node(n);
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_source, CheckOptions};

    #[test]
    fn dropout_identity_and_dead_code() {
        let src = "model m(x: [N, 4]) {\n dead = x -> dense(3)\n x -> dropout(0.5) -> identity -> dropout(0.25, inference: \"scale\") -> dense(2) as fc\n}";
        let net = check_source("t.net", src, CheckOptions::default())
            .map_err(|e| e.1.message)
            .unwrap();
        let mut g = Graph::from_network(&net);
        let n = run(&mut g, &mut Weights::default()).unwrap();
        g.validate().unwrap();
        assert_eq!(n, 4);
        let ops: Vec<String> =
            g.g.node_weights()
                .filter_map(|n| n.op().map(|o| o.name().to_string()))
                .collect();
        assert_eq!(ops, ["scale", "dense"]);
    }

    #[test]
    fn adaptive_pool_to_its_input_size_is_removed() {
        let src = "model m(x: [N, 3, 6, 6]) {\n x -> adaptive_avgpool(6) -> adaptive_avgpool(2) -> flatten\n}";
        let net = check_source("t.net", src, CheckOptions::default())
            .map_err(|e| e.1.message)
            .unwrap();
        let mut g = Graph::from_network(&net);
        assert_eq!(run(&mut g, &mut Weights::default()).unwrap(), 1);
        g.validate().unwrap();
        let ops: Vec<String> =
            g.g.node_weights()
                .filter_map(|n| n.op().map(|o| o.name().to_string()))
                .collect();
        assert_eq!(ops, ["adaptive_avgpool", "flatten"]);
    }
}
