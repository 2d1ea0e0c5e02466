//! The reference interpreter: executes the graph node by node with the
//! plain kernels of [`kernels`]. It is the oracle for every optimisation
//! and for the JIT.

pub mod kernels;
pub mod planned;

use crate::ir::graph::{Graph, Node, NodeKind};
use crate::ir::op::Op;
use crate::weights::Weights;
use netc_runtime::Tensor;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the model takes {expected} inputs, {found} given")]
    InputCount { expected: usize, found: usize },
    #[error("input `{name}` must have shape {expected}, found {found}")]
    InputShape {
        name: String,
        expected: String,
        found: String,
    },
    #[error("no weights bound for parameter `{0}`")]
    MissingWeight(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("invalid graph: {0}")]
    Graph(#[from] crate::ir::graph::GraphError),
}

/// Run `graph` on `inputs`, returning its outputs in order.
pub fn run(graph: &Graph, weights: &Weights, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    if inputs.len() != graph.inputs.len() {
        return Err(RunError::InputCount {
            expected: graph.inputs.len(),
            found: inputs.len(),
        });
    }
    let order = graph.topo_order()?;
    // Free each intermediate once its last consumer has run.
    let mut remaining: HashMap<_, usize> =
        order.iter().map(|&n| (n, graph.users(n).len())).collect();
    for &o in &graph.outputs {
        *remaining.entry(o).or_default() += 1;
    }
    let mut values: HashMap<_, Tensor> = HashMap::new();
    for &n in &order {
        let node = &graph.g[n];
        let out = match &node.kind {
            NodeKind::Input { index } => {
                let x = &inputs[*index];
                if x.shape() != node.shape.dims() {
                    return Err(RunError::InputShape {
                        name: node.name.clone(),
                        expected: node.shape.to_string(),
                        found: x.shape_string(),
                    });
                }
                x.clone()
            }
            NodeKind::Op(op) => {
                let operands = graph.operands(n);
                let args: Vec<&Tensor> = operands.iter().map(|o| &values[o]).collect();
                let param = |role: &str| node_param(node, weights, role);
                let out = eval(op, &args, node.shape.dims(), &param)?;
                for o in operands {
                    if let Some(r) = remaining.get_mut(&o) {
                        *r -= 1;
                        if *r == 0 {
                            values.remove(&o);
                        }
                    }
                }
                out
            }
        };
        values.insert(n, out);
    }
    graph
        .outputs
        .iter()
        .map(|o| {
            values
                .get(o)
                .cloned()
                .ok_or_else(|| RunError::Internal(format!("output {} was not computed", o.index())))
        })
        .collect()
}

/// The bound tensor for parameter `role` of `node`.
pub(crate) fn node_param<'w>(
    node: &Node,
    weights: &'w Weights,
    role: &str,
) -> Result<&'w Tensor, RunError> {
    let p = node
        .param(role)
        .ok_or_else(|| RunError::MissingWeight(format!("{}.{role}", node.name)))?;
    weights
        .get(&p.name)
        .ok_or_else(|| RunError::MissingWeight(p.name.clone()))
}

pub(crate) fn eval<'w>(
    op: &Op,
    args: &[&Tensor],
    out_shape: &[usize],
    param: &dyn Fn(&str) -> Result<&'w Tensor, RunError>,
) -> Result<Tensor, RunError> {
    let x = args[0];
    let optional = |present: bool, role: &str| {
        if present {
            param(role).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(match op {
        Op::Conv(c) => {
            let mut conv_shape = out_shape.to_vec();
            if c.pooled() {
                conv_shape[2] *= 2;
                conv_shape[3] *= 2;
            }
            let y = kernels::conv2d(
                x,
                param("weight")?,
                optional(c.bias, "bias")?,
                c,
                &conv_shape,
            );
            kernels::epilogue(y, &c.epilogue, &args[1..])
        }
        Op::ConvTranspose(c) => {
            kernels::conv_transpose2d(x, param("weight")?, optional(c.bias, "bias")?, c, out_shape)
        }
        Op::Dense(d) => {
            let y = kernels::dense(x, param("weight")?, optional(d.bias, "bias")?, d);
            kernels::epilogue(y, &d.epilogue, &args[1..])
        }
        Op::BatchNorm { eps, .. } => kernels::batch_norm(
            x,
            param("weight")?,
            param("bias")?,
            param("running_mean")?,
            param("running_var")?,
            *eps,
        ),
        Op::Activation(a) => kernels::activation(x, *a),
        Op::Pool(p) => kernels::pool2d(x, p, out_shape),
        Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } => kernels::adaptive_avg_pool(x, out_shape),
        Op::Flatten => x
            .clone()
            .reshape(out_shape.to_vec())
            .map_err(|e| RunError::Internal(e.to_string()))?,
        Op::Dropout { scale, .. } => kernels::map(x, |v| v * scale),
        Op::Scale { factor } => kernels::map(x, |v| v * factor),
        Op::Softmax => kernels::softmax(x),
        Op::Concat => kernels::concat(args, out_shape),
        Op::Slice { start, .. } => kernels::slice_channels(x, *start, out_shape),
        Op::Add => kernels::add(args),
        Op::Mul => kernels::mul(args),
        Op::MaxUnpool { window, .. } => kernels::max_unpool2d(x, args[1], window),
        Op::ChannelShuffle { groups } => kernels::channel_shuffle(x, *groups),
        Op::Resize { size, mode } => kernels::resize(x, *size, *mode),
        Op::Identity => x.clone(),
    })
}
