//! Batch-norm folding.
//!
//! `y = (conv(x) + b − mean) · γ/√(var+ε) + β` is a conv with weight
//! `W · s` and bias `(b − mean) · s + β`, `s = γ/√(var+ε)` per output
//! channel. Applies when a batch norm's operand is a conv or dense whose
//! only user it is and whose epilogue is still empty. Folded tensors are
//! computed in f64 and stored under new names.
//!
//! Does not fold a batch norm that follows a non-linear op, or one whose
//! producer feeds other nodes too (that would change them).

use super::{param_tensor, set_param, PassError};
use crate::ir::op::{Op, WeightLayout};
use crate::ir::Graph;
use crate::weights::Weights;

const PASS: &str = "fold_bn";

pub fn run(graph: &mut Graph, weights: &mut Weights) -> Result<usize, PassError> {
    let mut rewrites = 0;
    let nodes: Vec<_> = graph.g.node_indices().collect();
    for bn in nodes {
        let Some(Op::BatchNorm { eps, .. }) = graph.op(bn).cloned() else {
            continue;
        };
        let producer = graph.operands(bn)[0];
        if graph.single_user(producer) != Some(bn) {
            continue;
        }
        let foldable = match graph.op(producer) {
            Some(Op::Conv(c)) => c.epilogue.is_empty(),
            Some(Op::Dense(d)) => d.epilogue.is_empty(),
            _ => false,
        };
        if !foldable {
            continue;
        }
        let get = |role| param_tensor(graph, weights, bn, role, PASS);
        let (Some(gamma), Some(beta), Some(mean), Some(var)) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        ) else {
            continue;
        };
        let scale: Vec<f64> = gamma
            .data()
            .iter()
            .zip(var.data())
            .map(|(&g, &v)| g as f64 / (v as f64 + eps as f64).sqrt())
            .collect();
        let Some(w) = param_tensor(graph, weights, producer, "weight", PASS)? else {
            continue;
        };
        let old_bias = param_tensor(graph, weights, producer, "bias", PASS)?;
        let channels = scale.len();
        let bias: Vec<f32> = (0..channels)
            .map(|c| {
                let b = old_bias.map_or(0.0, |t| t.data()[c] as f64);
                ((b - mean.data()[c] as f64) * scale[c] + beta.data()[c] as f64) as f32
            })
            .collect();
        let in_out =
            matches!(graph.op(producer), Some(Op::Dense(d)) if d.layout == WeightLayout::InOut);
        let shape = w.shape().to_vec();
        let data: Vec<f32> = if in_out {
            // in × out: the output channel is the fastest index.
            w.data()
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as f64 * scale[i % channels]) as f32)
                .collect()
        } else {
            let per = w.numel() / channels;
            w.data()
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as f64 * scale[i / per]) as f32)
                .collect()
        };
        set_param(graph, weights, producer, "weight", shape, data, PASS);
        set_param(graph, weights, producer, "bias", vec![channels], bias, PASS);
        match graph.op_mut(producer) {
            Some(Op::Conv(c)) => c.bias = true,
            Some(Op::Dense(d)) => d.bias = true,
            _ => {}
        }
        graph.bypass(bn);
        rewrites += 1;
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{apply, count};
    use super::*;

    #[test]
    fn folds_into_conv_and_dense() {
        let src = "model m(x: [N, 3, 6, 6]) {\n y = x -> [conv(4, 3, bias: false), batchnorm, relu, flatten, dense(5), batchnorm]\n y\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 2);
        assert_eq!(count(&g, |op| matches!(op, Op::BatchNorm { .. })), 0);
        // The conv gained a bias it did not have.
        assert_eq!(count(&g, |op| matches!(op, Op::Conv(c) if c.bias)), 1);
    }

    #[test]
    fn leaves_bn_after_a_shared_producer() {
        // The conv also feeds the add, so folding would change that use.
        let src = "model m(x: [N, 3, 6, 6]) {\n c = x -> conv(3, 1)\n add(c -> batchnorm, c)\n}";
        let (g, n) = apply(src, run);
        assert_eq!(n, 0);
        assert_eq!(count(&g, |op| matches!(op, Op::BatchNorm { .. })), 1);
    }
}
