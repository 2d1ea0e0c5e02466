//! Concat elimination.
//!
//! A concatenation's output is a buffer in which each input owns a channel
//! range. When an input's producer writes a fresh tensor (not a view), has
//! the concat as its only user and appears once in it, the producer is
//! placed in that range (`Node::write_into`): it writes there directly and
//! the concat copies nothing for it. The memory planner honours placements.
//!
//! Does not place network inputs, views (`slice`, `flatten`) or producers
//! that other nodes also read; those inputs are still copied.

use super::PassError;
use crate::ir::graph::{ConcatSlot, NodeKind};
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::weights::Weights;

/// Ops that write a fresh output buffer (as opposed to views or in-place ops).
pub fn writes_fresh_output(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::Dense(_)
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Concat
            | Op::Add
            | Op::Softmax
            | Op::BatchNorm { .. }
    )
}

pub fn run(graph: &mut Graph, _: &mut Weights) -> Result<usize, PassError> {
    let mut placed = 0;
    let order = graph.topo_order().map_err(|source| PassError::Invalid {
        pass: "concat_elim",
        source,
    })?;
    for n in order {
        if !matches!(graph.op(n), Some(Op::Concat)) {
            continue;
        }
        let operands = graph.operands(n);
        let mut offset = 0;
        for &p in &operands {
            let channels = graph.g[p].shape.0[1];
            let once = operands.iter().filter(|&&q| q == p).count() == 1;
            let fresh = matches!(&graph.g[p].kind, NodeKind::Op(op) if writes_fresh_output(op));
            if once && fresh && graph.single_user(p) == Some(n) && graph.g[p].write_into.is_none() {
                graph.g[p].write_into = Some(ConcatSlot {
                    concat: n,
                    channel_offset: offset,
                });
                placed += 1;
            }
            offset += channels;
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::super::testing::graph;
    use super::*;

    #[test]
    fn places_single_use_producers_only() {
        // `a` also feeds the output list, `x` is an input: neither is placed.
        let (mut g, mut w) = graph("model m(x: [N, 2, 3, 3]) {\n a = x -> conv(2, 1)\n b = x -> conv(3, 1)\n return concat(a, b, x), a\n}");
        let n = run(&mut g, &mut w).unwrap();
        assert_eq!(n, 1);
        g.validate().unwrap();
        let placed: Vec<usize> =
            g.g.node_weights()
                .filter_map(|n| n.write_into.map(|s| s.channel_offset))
                .collect();
        assert_eq!(placed, vec![2]);
    }
}
