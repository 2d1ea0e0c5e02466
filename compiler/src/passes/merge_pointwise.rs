//! Sibling 1×1 merge.
//!
//! Pointwise (stride-1, unpadded, ungrouped 1×1) convs that read the same
//! tensor and share an epilogue without residual adds — the first convs of
//! an inception module's branches — become one conv whose output channels
//! are theirs stacked; each original conv is replaced by a `slice` (a
//! view) of the merged output. One wide matrix multiply reads the input
//! once instead of once per branch.
//!
//! Does not merge convs with different epilogues or bias flags.

use super::{param_tensor, set_param, PassError};
use crate::ir::op::{Op, Step};
use crate::ir::shape::Shape;
use crate::ir::Graph;
use crate::weights::Weights;
use petgraph::stable_graph::NodeIndex;
use petgraph::Direction;

const PASS: &str = "merge_pointwise";

/// What merged convs must share: the bias flag and the epilogue.
type Key = (bool, Vec<Step>);

fn key(graph: &Graph, n: NodeIndex) -> Option<Key> {
    match graph.op(n) {
        Some(Op::Conv(c))
            if c.is_pointwise()
                && !c.epilogue.contains(&Step::Add)
                && graph.operands(n).len() == 1 =>
        {
            Some((c.bias, c.epilogue.clone()))
        }
        _ => None,
    }
}

pub fn run(graph: &mut Graph, weights: &mut Weights) -> Result<usize, PassError> {
    let mut merges = 0;
    let sources: Vec<NodeIndex> = graph.g.node_indices().collect();
    for src in sources {
        let mut users: Vec<NodeIndex> = graph
            .g
            .neighbors_directed(src, Direction::Outgoing)
            .collect();
        users.sort();
        users.dedup();
        // Group the pointwise users by (bias, epilogue), keeping order.
        let mut groups: Vec<(Key, Vec<NodeIndex>)> = Vec::new();
        for u in users {
            let Some(k) = key(graph, u) else { continue };
            match groups.iter_mut().find(|(gk, _)| *gk == k) {
                Some((_, members)) => members.push(u),
                None => groups.push((k, vec![u])),
            }
        }
        for ((bias, epilogue), members) in groups {
            if members.len() < 2 {
                continue;
            }
            merge(graph, weights, src, &members, bias, epilogue)?;
            merges += 1;
        }
    }
    Ok(merges)
}

fn merge(
    graph: &mut Graph,
    weights: &mut Weights,
    src: NodeIndex,
    members: &[NodeIndex],
    bias: bool,
    epilogue: Vec<Step>,
) -> Result<(), PassError> {
    let mut w = Vec::new();
    let mut b = Vec::new();
    let mut outs = Vec::new();
    for &m in members {
        let Some(t) = param_tensor(graph, weights, m, "weight", PASS)? else {
            return Ok(());
        };
        w.extend_from_slice(t.data());
        outs.push(t.shape()[0]);
        if bias {
            match param_tensor(graph, weights, m, "bias", PASS)? {
                Some(t) => b.extend_from_slice(t.data()),
                None => return Ok(()),
            }
        }
    }
    let Some(Op::Conv(first)) = graph.op(members[0]).cloned() else {
        return Ok(());
    };
    let total: usize = outs.iter().sum();
    let mut shape = graph.g[members[0]].shape.clone();
    shape.0[1] = total;
    let names: Vec<&str> = members.iter().map(|&m| graph.g[m].name.as_str()).collect();
    let name = format!("merged({})", names.join(", "));
    let op = Op::Conv(crate::ir::op::Conv {
        out_channels: total,
        epilogue,
        bias,
        ..first.clone()
    });
    let merged = graph.add_op(name, op, shape.clone(), &[src]);
    set_param(
        graph,
        weights,
        merged,
        "weight",
        vec![total, first.in_channels, 1, 1],
        w,
        PASS,
    );
    if bias {
        set_param(graph, weights, merged, "bias", vec![total], b, PASS);
    }
    let mut start = 0;
    for (&m, &len) in members.iter().zip(&outs) {
        let mut slice_shape: Shape = shape.clone();
        slice_shape.0[1] = len;
        let node_name = graph.g[m].name.clone();
        let slice = graph.add_op(node_name, Op::Slice { start, len }, slice_shape, &[merged]);
        graph.redirect_users(m, slice);
        if let Some(node) = graph.g.remove_node(m) {
            graph.g[merged].origin.extend(node.origin.iter().cloned());
            graph.g[slice].origin = node.origin;
        }
        start += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::*;

    #[test]
    fn merges_siblings_with_equal_epilogues() {
        let src = "model m(x: [N, 6, 4, 4]) {\n a = x -> conv(3, 1)\n b = x -> conv(5, 1)\n c = x -> conv(2, 3, pad: 1)\n concat(a, b, c)\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 1);
        assert_eq!(count(&g, |op| matches!(op, Op::Slice { .. })), 2);
        assert_eq!(
            count(&g, |op| matches!(op, Op::Conv(c) if c.out_channels == 8)),
            1
        );
    }
}
