//! Composition of consecutive linear ops.
//!
//! `W₂(W₁x + b₁) + b₂` = `(W₂W₁)x + (W₂b₁ + b₂)`: a dense layer feeding
//! only another dense layer, or a 1×1 stride-1 conv feeding only another,
//! with nothing (no activation, no residual) between them, becomes one op —
//! when that does not add work (`in·out₂ ≤ in·mid + mid·out₂`).
//!
//! Does not compose across anything non-linear, or convs with a spatial
//! extent (their composition is a larger kernel, rarely cheaper).

use super::{param_tensor, set_param, PassError};
use crate::ir::op::{Op, WeightLayout};
use crate::ir::Graph;
use crate::weights::Weights;
use netc_runtime::Tensor;
use petgraph::stable_graph::NodeIndex;

const PASS: &str = "compose_linear";

/// A linear op as a matrix: `out × in`, row-major, plus its bias.
struct Linear {
    inp: usize,
    out: usize,
    m: Vec<f64>,
    bias: Option<Vec<f64>>,
}

/// The matrix of a dense layer or pointwise conv with an empty epilogue.
fn matrix(graph: &Graph, weights: &Weights, n: NodeIndex) -> Result<Option<Linear>, PassError> {
    let (inp, out, in_out) = match graph.op(n) {
        Some(Op::Dense(d)) if d.epilogue.is_empty() => (
            d.in_features,
            d.out_features,
            d.layout == WeightLayout::InOut,
        ),
        Some(Op::Conv(c)) if c.epilogue.is_empty() && c.is_pointwise() => {
            (c.in_channels, c.out_channels, false)
        }
        _ => return Ok(None),
    };
    let Some(w) = param_tensor(graph, weights, n, "weight", PASS)? else {
        return Ok(None);
    };
    let mut m = vec![0.0f64; out * inp];
    for o in 0..out {
        for i in 0..inp {
            m[o * inp + i] = if in_out {
                w.data()[i * out + o]
            } else {
                w.data()[o * inp + i]
            } as f64;
        }
    }
    let bias = param_tensor(graph, weights, n, "bias", PASS)?
        .map(|t: &Tensor| t.data().iter().map(|&v| v as f64).collect());
    Ok(Some(Linear { inp, out, m, bias }))
}

pub fn run(graph: &mut Graph, weights: &mut Weights) -> Result<usize, PassError> {
    let mut rewrites = 0;
    let nodes: Vec<_> = graph.g.node_indices().collect();
    for first in nodes {
        if !graph.g.contains_node(first) {
            continue;
        }
        let Some(second) = graph.single_user(first) else {
            continue;
        };
        let same_kind = matches!(
            (graph.op(first), graph.op(second)),
            (Some(Op::Dense(_)), Some(Op::Dense(_))) | (Some(Op::Conv(_)), Some(Op::Conv(_)))
        );
        if !same_kind || graph.operands(second) != [first] {
            continue;
        }
        let (Some(l1), Some(l2)) = (
            matrix(graph, weights, first)?,
            matrix(graph, weights, second)?,
        ) else {
            continue;
        };
        let (inp, mid, out) = (l1.inp, l1.out, l2.out);
        let (m1, b1, m2, b2) = (l1.m, l1.bias, l2.m, l2.bias);
        if inp * out > inp * mid + mid * out {
            continue;
        }
        let mut w = vec![0.0f32; out * inp];
        let mut b = vec![0.0f32; out];
        for o in 0..out {
            for i in 0..inp {
                w[o * inp + i] = (0..mid)
                    .map(|k| m2[o * mid + k] * m1[k * inp + i])
                    .sum::<f64>() as f32;
            }
            let carried: f64 = b1
                .as_ref()
                .map_or(0.0, |b1| (0..mid).map(|k| m2[o * mid + k] * b1[k]).sum());
            b[o] = (carried + b2.as_ref().map_or(0.0, |b2| b2[o])) as f32;
        }
        // `second` keeps its name and users; it now reads `first`'s input.
        let source = graph.operands(first)[0];
        let shape = match graph.op_mut(second) {
            Some(Op::Dense(d)) => {
                d.in_features = inp;
                d.layout = WeightLayout::OutIn;
                d.bias = true;
                vec![out, inp]
            }
            Some(Op::Conv(c)) => {
                c.in_channels = inp;
                c.bias = true;
                vec![out, inp, 1, 1]
            }
            _ => continue,
        };
        set_param(graph, weights, second, "weight", shape, w, PASS);
        set_param(graph, weights, second, "bias", vec![out], b, PASS);
        let edge = graph.g.find_edge(first, second);
        if let Some(e) = edge {
            graph.g.remove_edge(e);
        }
        graph.connect(source, second, 0);
        if let Some(node) = graph.g.remove_node(first) {
            graph.g[second].origin.splice(0..0, node.origin);
        }
        rewrites += 1;
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::*;

    #[test]
    fn composes_dense_pairs_and_pointwise_pairs() {
        let src = "model m(x: [N, 8, 3, 3]) {\n y = x -> [conv(8, 1), conv(2, 1)]\n y -> [flatten, dense(4, layout: \"in_out\"), dense(3)]\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 2);
        assert_eq!(count(&g, |op| matches!(op, Op::Conv(_))), 1);
        assert_eq!(count(&g, |op| matches!(op, Op::Dense(_))), 1);
    }

    #[test]
    fn skips_when_composition_costs_more() {
        // 8 → 1 → 8: 8·8 = 64 > 8 + 8 multiplies per position.
        let src = "model m(x: [N, 8]) {\n x -> [dense(1), dense(8)] as f\n}";
        let (_, n) = apply(src, run);
        assert_eq!(n, 0);
    }
}
