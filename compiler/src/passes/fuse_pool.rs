//! Pool fusion: a 2×2 stride-2 max pool straight after a convolution
//! becomes the conv's last epilogue step (`Step::MaxPool2`), so the
//! full-size activation is never written to memory and read back: the
//! Winograd kernels pool each output tile in registers (every tile is an
//! even number of outputs wide), other paths pool a scratch copy.
//!
//! Fuses when the conv is the pool's only producer and the pool its only
//! user, the conv is a stride-1 ungrouped 3×3 or 5×5 (a Winograd shape),
//! its epilogue has no residual add (an add differs per element; bias and
//! the monotone activations commute with the maximum) and its output sides
//! are even (each window lies inside one tile). VGG and the MNIST ConvNet
//! end every conv stage this way.

use super::PassError;
use crate::ir::op::{Conv, Op, Pool, PoolKind, Step};
use crate::ir::Graph;
use crate::weights::Weights;
use petgraph::stable_graph::NodeIndex;

fn is_2x2_max(p: &Pool) -> bool {
    p.kind == PoolKind::Max
        && p.window.kernel == [2, 2]
        && p.window.stride == [2, 2]
        && p.window.dilation == [1, 1]
        && p.window.pad == [0; 4]
}

fn poolable(c: &Conv) -> bool {
    matches!(c.window.kernel, [3, 3] | [5, 5])
        && c.window.stride == [1, 1]
        && c.window.dilation == [1, 1]
        && c.groups == 1
        && !c
            .epilogue
            .iter()
            .any(|s| matches!(s, Step::Add | Step::MaxPool2))
}

/// The conv a fusable pool `n` reads.
fn producer(graph: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    let Some(Op::Pool(p)) = graph.op(n) else {
        return None;
    };
    let &conv = graph.operands(n).first()?;
    let Some(Op::Conv(c)) = graph.op(conv) else {
        return None;
    };
    let sides = &graph.g[conv].shape.0;
    let even = sides.len() == 4 && sides[2].is_multiple_of(2) && sides[3].is_multiple_of(2);
    (is_2x2_max(p) && poolable(c) && even && graph.single_user(conv) == Some(n)).then_some(conv)
}

pub fn run(graph: &mut Graph, _: &mut Weights) -> Result<usize, PassError> {
    let mut fused = 0;
    for n in graph.topo_order().unwrap_or_default() {
        let Some(conv) = producer(graph, n) else {
            continue;
        };
        let pooled = graph.g[n].shape.clone();
        if let Some(Op::Conv(c)) = graph.op_mut(conv) {
            c.epilogue.push(Step::MaxPool2);
        }
        graph.g[conv].shape = pooled;
        graph.bypass(n);
        fused += 1;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::*;

    #[test]
    fn fuses_a_2x2_max_pool_into_the_conv_before_it() {
        let src = "model m(x: [N, 3, 8, 12]) {\n x -> conv(4, 3, pad: 1) -> relu -> maxpool(2, stride: 2) -> conv(5, 5, pad: 2) -> maxpool(2, stride: 2)\n}";
        let (g, n) = apply(src, run);
        // The first conv's pool reads the ReLU, not the conv (fuse_epilogue
        // moves the ReLU in first).
        assert_eq!(n, 1);
        assert_eq!(count(&g, |op| matches!(op, Op::Pool(_))), 1);
        let Some(Op::Conv(c)) = g.op(g.outputs[0]) else {
            panic!("the output is not the pooled conv")
        };
        assert_eq!(c.epilogue, vec![Step::MaxPool2]);
        assert_eq!(g.g[g.outputs[0]].shape.0, vec![2, 5, 2, 3]);
    }

    #[test]
    fn leaves_pools_it_cannot_fuse() {
        for src in [
            // Odd sides, a 3×3 window, a strided conv, a conv read twice.
            "model m(x: [N, 3, 7, 7]) {\n x -> conv(4, 3, pad: 1) -> maxpool(2, stride: 2)\n}",
            "model m(x: [N, 3, 8, 8]) {\n x -> conv(4, 3, pad: 1) -> maxpool(3, stride: 2)\n}",
            "model m(x: [N, 3, 8, 8]) {\n x -> conv(4, 3, stride: 2, pad: 1) -> maxpool(2, stride: 2)\n}",
            "model m(x: [N, 3, 8, 8]) {\n c = x -> conv(4, 3, pad: 1)\n return c -> maxpool(2, stride: 2), c\n}",
        ] {
            let (_, n) = apply(src, run);
            assert_eq!(n, 0, "{src}");
        }
    }
}
