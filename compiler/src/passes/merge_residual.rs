//! Residual 1×1 merge: `conv_a(x) + conv_b(y)` as one 1×1 conv.
//!
//! A bottleneck block with a projection shortcut ends in two 1×1 convs
//! whose outputs are summed: the block's expansion and the shortcut's
//! downsample. After epilogue fusion one of them (`P`) adds the other's
//! output (`Q`) in its epilogue, so `Q`'s output is written once and read
//! back once, and each is a matrix multiply with a short reduction (64–1024
//! channels). Since `W_p·x + W_q·y = [W_p | W_q]·[x; y]`, the pair is one
//! conv over the two inputs stacked along channels — a concat, which
//! concat elimination turns into the producers writing their slices of one
//! buffer — with the weights side by side, the biases summed and `P`'s
//! remaining epilogue (the ReLU). A strided operand is first subsampled by
//! a 1×1 max pool at its stride (a strided copy, the only data the rewrite
//! adds), so the merged conv is a plain stride-1 matrix multiply.
//!
//! Applies when `P` and `Q` are ungrouped, unpadded 1×1 convs, `P`'s
//! epilogue starts with its only `Add`, whose operand is `Q`, and `Q` has
//! no epilogue and no user but `P`. (Measured: docs/performance.md,
//! "merge_residual".)

use super::{param_tensor, set_param, PassError};
use crate::ir::op::{Conv, Op, Pool, PoolKind, Step, Window};
use crate::ir::shape::Shape;
use crate::ir::Graph;
use crate::weights::Weights;
use petgraph::stable_graph::NodeIndex;

const PASS: &str = "merge_residual";

/// A 1×1 conv the rewrite can take an operand of.
fn one_by_one(graph: &Graph, n: NodeIndex) -> Option<&Conv> {
    match graph.op(n) {
        Some(Op::Conv(c))
            if c.window.kernel == [1, 1]
                && c.window.pad == [0; 4]
                && c.groups == 1
                && graph.operands(n).len() == 1 + crate::ir::op::residual_inputs(&c.epilogue) =>
        {
            Some(c)
        }
        _ => None,
    }
}

/// `(P, Q)` when `n` is a `P` whose fused residual is a mergeable `Q`.
fn pair(graph: &Graph, n: NodeIndex) -> Option<(NodeIndex, NodeIndex)> {
    let p = one_by_one(graph, n)?;
    if p.epilogue.first() != Some(&Step::Add) || crate::ir::op::residual_inputs(&p.epilogue) != 1 {
        return None;
    }
    let q = *graph.operands(n).get(1)?;
    let qc = one_by_one(graph, q)?;
    let ok = qc.epilogue.is_empty() && graph.single_user(q) == Some(n) && q != n;
    ok.then_some((n, q))
}

pub fn run(graph: &mut Graph, weights: &mut Weights) -> Result<usize, PassError> {
    let mut merged = 0;
    let order = graph
        .topo_order()
        .map_err(|source| PassError::Invalid { pass: PASS, source })?;
    for n in order {
        if !graph.g.contains_node(n) {
            continue;
        }
        if let Some((p, q)) = pair(graph, n) {
            if merge(graph, weights, p, q)? {
                merged += 1;
            }
        }
    }
    Ok(merged)
}

/// The input conv `n` reads, as a stride-1 operand: its operand, or that
/// operand subsampled at the conv's stride by a 1×1 max pool.
fn stride_one_input(graph: &mut Graph, n: NodeIndex, conv: &Conv) -> NodeIndex {
    let x = graph.operands(n)[0];
    if conv.window.stride == [1, 1] {
        return x;
    }
    let window = Window {
        kernel: [1, 1],
        stride: conv.window.stride,
        pad: [0; 4],
        dilation: [1, 1],
    };
    let pool = Op::Pool(Pool {
        kind: PoolKind::Max,
        window,
        ceil: false,
        count_include_pad: false,
    });
    let mut shape = graph.g[n].shape.clone();
    shape.0[1] = conv.in_channels;
    let name = format!("{}.subsample", graph.g[n].name);
    let sub = graph.add_op(name, pool, shape, &[x]);
    graph.g[sub].origin = graph.g[n].origin.clone();
    sub
}

fn merge(
    graph: &mut Graph,
    weights: &mut Weights,
    p: NodeIndex,
    q: NodeIndex,
) -> Result<bool, PassError> {
    let (Some(Op::Conv(pc)), Some(Op::Conv(qc))) = (graph.op(p).cloned(), graph.op(q).cloned())
    else {
        return Ok(false);
    };
    let (Some(wp), Some(wq)) = (
        param_tensor(graph, weights, p, "weight", PASS)?,
        param_tensor(graph, weights, q, "weight", PASS)?,
    ) else {
        return Ok(false);
    };
    let (out, kp, kq) = (pc.out_channels, pc.in_channels, qc.in_channels);
    let mut w = Vec::with_capacity(out * (kp + kq));
    for (rp, rq) in wp.data().chunks_exact(kp).zip(wq.data().chunks_exact(kq)) {
        w.extend_from_slice(rp);
        w.extend_from_slice(rq);
    }
    let mut b = vec![0.0f32; out];
    for (n, has) in [(p, pc.bias), (q, qc.bias)] {
        if has {
            let Some(t) = param_tensor(graph, weights, n, "bias", PASS)? else {
                return Ok(false);
            };
            b.iter_mut().zip(t.data()).for_each(|(s, v)| *s += v);
        }
    }
    let bias = pc.bias || qc.bias;

    let xp = stride_one_input(graph, p, &pc);
    let xq = stride_one_input(graph, q, &qc);
    let mut cat_shape: Shape = graph.g[p].shape.clone();
    cat_shape.0[1] = kp + kq;
    let cat_name = format!("{}.stacked", graph.g[p].name);
    let cat = graph.add_op(cat_name, Op::Concat, cat_shape, &[xp, xq]);

    let conv = Op::Conv(Conv {
        in_channels: kp + kq,
        window: Window {
            stride: [1, 1],
            ..pc.window
        },
        bias,
        epilogue: pc.epilogue[1..].to_vec(),
        ..pc.clone()
    });
    let name = format!("merged({}, {})", graph.g[q].name, graph.g[p].name);
    let shape = graph.g[p].shape.clone();
    let m = graph.add_op(name, conv, shape, &[cat]);
    set_param(
        graph,
        weights,
        m,
        "weight",
        vec![out, kp + kq, 1, 1],
        w,
        PASS,
    );
    if bias {
        set_param(graph, weights, m, "bias", vec![out], b, PASS);
    }
    graph.redirect_users(p, m);
    for n in [q, p] {
        if let Some(node) = graph.g.remove_node(n) {
            graph.g[m].origin.extend(node.origin);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::super::{fold_bn, fuse_epilogue};
    use super::*;
    use crate::ir::op::Activation;

    /// Epilogue fusion, then this pass, checked against the interpreter.
    fn fused_then_merged(graph: &mut Graph, weights: &mut Weights) -> Result<usize, PassError> {
        fold_bn::run(graph, weights)?;
        fuse_epilogue::run(graph, weights)?;
        run(graph, weights)
    }

    fn merged_conv(g: &Graph) -> Conv {
        let convs: Vec<Conv> =
            g.g.node_weights()
                .filter(|n| n.name.starts_with("merged("))
                .filter_map(|n| match n.op() {
                    Some(Op::Conv(c)) => Some(c.clone()),
                    _ => None,
                })
                .collect();
        assert_eq!(convs.len(), 1, "one merged conv");
        convs[0].clone()
    }

    #[test]
    fn merges_a_strided_projection_shortcut() {
        // ResNet-50's projection block in miniature, batch norms included
        // so the folded biases are summed.
        let src = "model m(x: [N, 6, 9, 9]) {\n m = x -> [conv(3, 1), relu, conv(3, 3, stride: 2, pad: 1), relu, conv(8, 1), batchnorm]\n add(m, x -> [conv(8, 1, stride: 2), batchnorm]) -> relu\n}";
        let (g, n) = apply(src, fused_then_merged);
        assert_eq!(n, 1);
        let c = merged_conv(&g);
        assert_eq!((c.in_channels, c.out_channels), (3 + 6, 8));
        assert!(c.is_pointwise() && c.bias);
        assert_eq!(c.epilogue, vec![Step::Act(Activation::Relu)]);
        assert_eq!(count(&g, |op| matches!(op, Op::Pool(_))), 1);
        assert_eq!(count(&g, |op| matches!(op, Op::Concat)), 1);
    }

    #[test]
    fn merges_a_stride_one_shortcut_without_a_subsample() {
        let src = "model m(x: [N, 4, 5, 5]) {\n m = x -> [conv(4, 3, pad: 1), conv(8, 1)]\n add(m, x -> conv(8, 1, bias: false))\n}";
        let (g, n) = apply(src, fused_then_merged);
        assert_eq!(n, 1);
        assert!(merged_conv(&g).epilogue.is_empty());
        assert_eq!(count(&g, |op| matches!(op, Op::Pool(_))), 0);
    }

    #[test]
    fn leaves_identity_shortcuts_and_activated_residuals() {
        // An identity shortcut: the residual is the block input.
        let identity = "model m(x: [N, 4, 5, 5]) {\n add(x -> conv(4, 1), x) -> relu\n}";
        assert_eq!(apply(identity, fused_then_merged).1, 0);
        // The residual conv has its own ReLU: its output is not linear in
        // its input, so it cannot join the sum.
        let activated =
            "model m(x: [N, 4, 5, 5]) {\n add(x -> conv(4, 1), x -> [conv(4, 1), relu])\n}";
        assert_eq!(apply(activated, fused_then_merged).1, 0);
        // A 3×3 residual is not a matrix multiply over its input.
        let window =
            "model m(x: [N, 4, 5, 5]) {\n add(x -> conv(4, 1), x -> conv(4, 3, pad: 1))\n}";
        assert_eq!(apply(window, fused_then_merged).1, 0);
    }

    #[test]
    fn leaves_a_residual_conv_that_is_also_an_output() {
        let src = "model m(x: [N, 4, 5, 5]) {\n r = x -> conv(4, 1)\n return add(x -> conv(4, 1), r), r\n}";
        assert_eq!(apply(src, fused_then_merged).1, 0);
    }
}
