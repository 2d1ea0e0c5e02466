//! Concat elimination.
//!
//! A concatenation's output is a buffer in which each input owns a channel
//! range. When an input's producer writes a fresh tensor (not a view),
//! appears once in the concat and is not a network output, the producer is
//! placed in that range (`Node::write_into`): it writes there directly and
//! the concat copies nothing for it. Its other users, if any, read it
//! there; the memory planner keeps the concat's buffer alive until the
//! last of them (a buffer lives until the last reader of any member), and
//! does not run elementwise ops in place over a slot (the buffer is busy
//! while the concat is read). A producer is placed in one concat only: the
//! first in topological order; every other concat it feeds copies it from
//! there (`Node::placed_in` says which concat may skip the copy).
//!
//! Does not place network inputs, views (`slice`, `flatten`) or outputs;
//! those inputs are still copied.

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
            let output = graph.outputs.contains(&p);
            if once && fresh && !output && graph.g[p].write_into.is_none() {
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
    fn places_neither_outputs_nor_inputs() {
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

    #[test]
    fn places_a_producer_other_nodes_also_read() {
        // `a` feeds the concat and a ReLU: it is placed all the same (the
        // differential tests run such graphs planned and compiled).
        let src = "model m(x: [N, 2, 3, 3]) {\n a = x -> conv(2, 1)\n c = concat(x -> conv(3, 1), a) -> conv(4, 1)\n return c, a -> relu\n}";
        let (reference, w) = graph(src);
        let (mut g, mut w2) = (reference.clone(), w.clone());
        assert_eq!(run(&mut g, &mut w2).unwrap(), 2);
        g.validate().unwrap();
        let mut placed: Vec<(bool, usize)> =
            g.g.node_weights()
                .filter_map(|n| n.write_into.map(|s| (n.name == "a", s.channel_offset)))
                .collect();
        placed.sort_unstable();
        // The 3-channel conv at channel 0, `a` after it at channel 3.
        assert_eq!(placed, [(false, 0), (true, 3)]);
        // Planned, the placed producers' slots are what the concat reads:
        // both outputs match the reference run of the unplaced graph.
        let plan = crate::plan::plan(&g).unwrap();
        assert!(plan.conflicts().is_empty());
        let x = netc_runtime::init::random_tensor(
            1,
            "x",
            vec![2, 2, 3, 3],
            netc_runtime::init::Init::Uniform { lo: -1.0, hi: 1.0 },
        );
        let want = crate::interp::run(&reference, &w, std::slice::from_ref(&x)).unwrap();
        let got = crate::interp::planned::run(&g, &plan, &w2, &[x]).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!(a.max_abs_diff(b).unwrap() <= 1e-5 * b.max_abs().max(1e-6));
        }
    }
}
