//! Graph IR → ONNX (opset 18).
//!
//! Contract: takes an *unoptimised* graph (fused epilogues and in-place
//! concat slots are netc's own and have no single ONNX node) and its bound
//! weights, and produces a model whose ONNX Runtime output equals the
//! reference interpreter's. One ONNX node per IR node (two where ONNX needs a
//! `Flatten` netc does implicitly); tensor values are named after the IR
//! nodes, initialisers after the `.net` parameter names.

use super::proto::*;
use super::OnnxError;
use crate::ir::graph::{Graph, NodeKind};
use crate::ir::op::{Activation, Op, Pool, PoolKind, ResizeMode, WeightLayout, Window};
use crate::weights::Weights;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::NodeIndexable;
use std::collections::HashSet;

pub const OPSET: i64 = 18;
/// The IR version ONNX pairs with opset 18.
pub const IR_VERSION: i64 = 8;

/// How the exported model's batch dimension is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// A symbolic `N`: any batch size runs.
    Symbolic,
    /// Fixed to the graph's batch.
    Fixed,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(s.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

/// A float32 initialiser.
pub fn float_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type::FLOAT),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn int64_tensor(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![data.len() as i64],
        data_type: Some(data_type::INT64),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize], batch: Batch) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            dim_value: (i > 0 || batch == Batch::Fixed).then_some(d as i64),
            dim_param: (i == 0 && batch == Batch::Symbolic).then(|| "N".to_string()),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto { dim }),
            }),
            denotation: None,
        }),
        doc_string: None,
    }
}

fn window_attrs(w: &Window, with_dilation: bool) -> Vec<AttributeProto> {
    let mut v = vec![
        attr_ints("kernel_shape", &w.kernel),
        attr_ints("strides", &w.stride),
        attr_ints("pads", &w.pad),
    ];
    if with_dilation {
        v.push(attr_ints("dilations", &w.dilation));
    }
    v
}

/// The ONNX window and `ceil_mode` that give `out_hw`. ONNX's ceil mode
/// keeps a last window that starts in the trailing padding, PyTorch's (and
/// netc's) drops it; where the two differ, floor mode with the trailing pad
/// extended to just cover the last kept window gives netc's windows. That
/// extension is padding a max pool never picks and an average pool without
/// `count_include_pad` never counts; with it, the divisor would change, so
/// that one case is refused.
fn onnx_pool_window(
    p: &Pool,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
) -> Result<(Window, bool), String> {
    let w = p.window;
    if !p.ceil {
        return Ok((w, false));
    }
    let onnx_ceil = |axis: usize| {
        let span = w.dilation[axis] * (w.kernel[axis] - 1) + 1;
        let room = in_hw[axis] + w.pad[axis] + w.pad[axis + 2];
        room.saturating_sub(span).div_ceil(w.stride[axis]) + 1
    };
    if (0..2).all(|a| onnx_ceil(a) == out_hw[a]) {
        return Ok((w, true));
    }
    let mut floor = w;
    for axis in 0..2 {
        let span = w.dilation[axis] * (w.kernel[axis] - 1) + 1;
        let end = (out_hw[axis] - 1) * w.stride[axis] + span;
        floor.pad[axis + 2] = end
            .saturating_sub(in_hw[axis] + w.pad[axis])
            .max(w.pad[axis + 2]);
    }
    if p.kind == PoolKind::Avg && p.count_include_pad && floor.pad != w.pad {
        return Err(
            "ceil-mode average pooling that counts padding, with a window PyTorch drops, has no ONNX equivalent"
                .into(),
        );
    }
    Ok((floor, false))
}

struct Exporter<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Every value and initialiser name used so far.
    taken: HashSet<String>,
}

impl Exporter<'_> {
    /// A fresh name based on `base`.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 2;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: Vec<String>,
        output: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            attribute,
            ..Default::default()
        });
    }

    /// The initialiser for `role` of node `n`, by its parameter name.
    fn param(&mut self, n: NodeIndex, role: &str) -> Result<String, OnnxError> {
        let node = &self.graph.g[n];
        let p = node.param(role).ok_or_else(|| OnnxError::Export {
            node: node.name.clone(),
            message: format!("has no `{role}` parameter"),
        })?;
        let t = self.weights.get(&p.name).ok_or_else(|| OnnxError::Export {
            node: node.name.clone(),
            message: format!("no weights bound for `{}`", p.name),
        })?;
        let tensor = float_tensor(&p.name, t.shape(), t.data());
        let name = p.name.clone();
        if !self.taken.insert(name.clone()) {
            return Err(OnnxError::Export {
                node: node.name.clone(),
                message: format!("parameter name `{name}` is also a tensor name"),
            });
        }
        self.initializers.push(tensor);
        Ok(name)
    }

    /// A scalar float constant (`Mul`'s factor, `Clip`'s bounds).
    fn scalar(&mut self, base: &str, value: f32) -> String {
        let name = self.fresh(base);
        self.initializers.push(float_tensor(&name, &[], &[value]));
        name
    }

    fn export_node(
        &mut self,
        n: NodeIndex,
        inputs: Vec<String>,
        out: &str,
    ) -> Result<(), OnnxError> {
        let node = &self.graph.g[n];
        let name = node.name.clone();
        let Some(op) = node.op() else { return Ok(()) };
        let unsupported = |what: &str| OnnxError::Export {
            node: name.clone(),
            message: what.to_string(),
        };
        let op = op.clone();
        match &op {
            Op::Conv(c) => {
                if !c.epilogue.is_empty() {
                    return Err(unsupported(
                        "has a fused epilogue; export the unoptimised graph",
                    ));
                }
                let mut ins = inputs;
                ins.push(self.param(n, "weight")?);
                if c.bias {
                    ins.push(self.param(n, "bias")?);
                }
                let mut attrs = window_attrs(&c.window, true);
                attrs.push(attr_int("group", c.groups as i64));
                self.node("Conv", &name, ins, out, attrs);
            }
            Op::ConvTranspose(c) => {
                let mut ins = inputs;
                ins.push(self.param(n, "weight")?);
                if c.bias {
                    ins.push(self.param(n, "bias")?);
                }
                let mut attrs = window_attrs(&c.window, true);
                attrs.push(attr_int("group", c.groups as i64));
                attrs.push(attr_ints("output_padding", &c.output_padding));
                self.node("ConvTranspose", &name, ins, out, attrs);
            }
            Op::BatchNorm { eps, .. } => {
                let mut ins = inputs;
                for role in ["weight", "bias", "running_mean", "running_var"] {
                    ins.push(self.param(n, role)?);
                }
                self.node(
                    "BatchNormalization",
                    &name,
                    ins,
                    out,
                    vec![attr_float("epsilon", *eps)],
                );
            }
            Op::Activation(a) => {
                let mut inputs = inputs;
                let (op_type, attrs) = match a {
                    Activation::Relu => ("Relu", vec![]),
                    Activation::LeakyRelu(alpha) => {
                        ("LeakyRelu", vec![attr_float("alpha", *alpha)])
                    }
                    Activation::Sigmoid => ("Sigmoid", vec![]),
                    Activation::Tanh => ("Tanh", vec![]),
                    // PyTorch's definition: alpha 1/6, beta 1/2.
                    Activation::HardSigmoid => (
                        "HardSigmoid",
                        vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)],
                    ),
                    Activation::HardSwish => ("HardSwish", vec![]),
                    // No SiLU op before opset 24: `x · Sigmoid(x)`, the
                    // pattern PyTorch exports (and netc imports as `mul`).
                    Activation::Silu => {
                        let gate = self.fresh(&format!("{name}.sigmoid"));
                        self.node("Sigmoid", &gate, inputs.clone(), &gate, vec![]);
                        inputs.push(gate);
                        ("Mul", vec![])
                    }
                    // Since opset 11 the bounds are inputs, not attributes.
                    Activation::Clip(lo, hi) => {
                        inputs.push(self.scalar(&format!("{name}.min"), *lo));
                        inputs.push(self.scalar(&format!("{name}.max"), *hi));
                        ("Clip", vec![])
                    }
                };
                self.node(op_type, &name, inputs, out, attrs);
            }
            Op::Pool(p) => {
                let input = self.graph.operands(n);
                let in_hw = input
                    .first()
                    .and_then(|&i| self.graph.g[i].shape.dims().get(2..4).map(|d| [d[0], d[1]]))
                    .ok_or_else(|| unsupported("pooling needs an NCHW input"))?;
                let out_hw = [node.shape.dims()[2], node.shape.dims()[3]];
                let (window, ceil) =
                    onnx_pool_window(p, in_hw, out_hw).map_err(|m| unsupported(&m))?;
                let (op_type, mut attrs) = match p.kind {
                    PoolKind::Max => ("MaxPool", window_attrs(&window, true)),
                    PoolKind::Avg => {
                        let mut a = window_attrs(&window, false);
                        a.push(attr_int("count_include_pad", p.count_include_pad as i64));
                        ("AveragePool", a)
                    }
                };
                attrs.push(attr_int("ceil_mode", ceil as i64));
                self.node(op_type, &name, inputs, out, attrs);
            }
            // ONNX unpools by stored indices (flat over the whole tensor,
            // where PyTorch's are per plane): a MaxPool over the source
            // gives them, a Shape of the source the output shape (the batch
            // stays symbolic).
            Op::MaxUnpool { window, ceil } => {
                let operands = self.graph.operands(n);
                let hw = |i: usize| {
                    operands
                        .get(i)
                        .and_then(|&o| self.graph.g[o].shape.dims().get(2..4).map(|d| [d[0], d[1]]))
                        .ok_or_else(|| unsupported("maxunpool needs NCHW operands"))
                };
                let (in_hw, out_hw) = (hw(1)?, hw(0)?);
                let pool = Pool {
                    kind: PoolKind::Max,
                    window: *window,
                    ceil: *ceil,
                    count_include_pad: false,
                };
                let (w, ceil) =
                    onnx_pool_window(&pool, in_hw, out_hw).map_err(|m| unsupported(&m))?;
                let [values, source] = &inputs[..] else {
                    return Err(unsupported("maxunpool takes two operands"));
                };
                let pooled = self.fresh(&format!("{name}.pooled"));
                let indices = self.fresh(&format!("{name}.indices"));
                let shape = self.fresh(&format!("{name}.shape"));
                let mut attrs = window_attrs(&w, true);
                attrs.push(attr_int("ceil_mode", ceil as i64));
                self.nodes.push(NodeProto {
                    input: vec![source.clone()],
                    output: vec![pooled.clone(), indices.clone()],
                    name: Some(pooled),
                    op_type: Some("MaxPool".into()),
                    attribute: attrs,
                    ..Default::default()
                });
                self.node("Shape", &shape, vec![source.clone()], &shape, vec![]);
                // MaxUnpool's window only bounds the output shape from
                // below ((pooled − 1)·stride + kernel − pads, which ONNX
                // Runtime enforces); a ceil-mode window can overshoot the
                // source, so its trailing pad grows to compensate.
                let mut unpool = w;
                for a in 0..2 {
                    let least = ((out_hw[a] - 1) * w.stride[a] + w.kernel[a])
                        .saturating_sub(w.pad[a] + w.pad[a + 2]);
                    unpool.pad[a + 2] += least.saturating_sub(in_hw[a]);
                }
                let attrs = window_attrs(&unpool, false);
                self.node(
                    "MaxUnpool",
                    &name,
                    vec![values.clone(), indices, shape],
                    out,
                    attrs,
                );
            }
            // PyTorch's own pattern (torchvision's `channel_shuffle`): view
            // as [N, groups, C / groups, H, W], swap the two channel axes,
            // view back. `0` keeps the batch symbolic.
            Op::ChannelShuffle { groups } => {
                let [_, c, h, w] = node.shape.dims()[..] else {
                    return Err(unsupported("channel_shuffle needs an NCHW tensor"));
                };
                let (c, h, w, g) = (c as i64, h as i64, w as i64, *groups as i64);
                let grouped = self.fresh(&format!("{name}.grouped"));
                let swapped = self.fresh(&format!("{name}.swapped"));
                let five = self.fresh(&format!("{name}.shape5"));
                let four = self.fresh(&format!("{name}.shape4"));
                self.initializers
                    .push(int64_tensor(&five, &[0, g, c / g, h, w]));
                self.initializers.push(int64_tensor(&four, &[0, c, h, w]));
                let mut ins = inputs;
                ins.push(five);
                self.node("Reshape", &grouped, ins, &grouped, vec![]);
                self.node(
                    "Transpose",
                    &swapped,
                    vec![grouped],
                    &swapped,
                    vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
                );
                self.node("Reshape", &name, vec![swapped, four], out, vec![]);
            }
            Op::GlobalAvgPool => self.node("GlobalAveragePool", &name, inputs, out, vec![]),
            Op::AdaptiveAvgPool { output } => {
                let input = self.graph.operands(n);
                let dims = input
                    .first()
                    .map(|&i| self.graph.g[i].shape.dims().to_vec())
                    .unwrap_or_default();
                let [_, _, h, w] = dims[..] else {
                    return Err(unsupported("adaptive_avgpool needs an NCHW input"));
                };
                if h % output[0] != 0 || w % output[1] != 0 {
                    return Err(unsupported(&format!(
                        "adaptive_avgpool from {h}x{w} to {}x{} has uneven windows, which no ONNX pooling op expresses",
                        output[0], output[1]
                    )));
                }
                let k = [h / output[0], w / output[1]];
                let attrs = vec![attr_ints("kernel_shape", &k), attr_ints("strides", &k)];
                self.node("AveragePool", &name, inputs, out, attrs);
            }
            Op::Dense(d) => {
                if !d.epilogue.is_empty() {
                    return Err(unsupported(
                        "has a fused epilogue; export the unoptimised graph",
                    ));
                }
                let mut ins = inputs;
                ins.push(self.param(n, "weight")?);
                if d.bias {
                    ins.push(self.param(n, "bias")?);
                }
                let trans_b = (d.layout == WeightLayout::OutIn) as i64;
                self.node("Gemm", &name, ins, out, vec![attr_int("transB", trans_b)]);
            }
            Op::Flatten => self.node("Flatten", &name, inputs, out, vec![attr_int("axis", 1)]),
            Op::Dropout { scale, .. } | Op::Scale { factor: scale } if *scale != 1.0 => {
                let mut ins = inputs;
                ins.push(self.scalar(&format!("{name}.factor"), *scale));
                self.node("Mul", &name, ins, out, vec![]);
            }
            Op::Dropout { .. } | Op::Scale { .. } | Op::Identity => {
                self.node("Identity", &name, inputs, out, vec![])
            }
            Op::Softmax => self.node("Softmax", &name, inputs, out, vec![attr_int("axis", 1)]),
            Op::Concat => self.node("Concat", &name, inputs, out, vec![attr_int("axis", 1)]),
            Op::Add if inputs.len() == 2 => self.node("Add", &name, inputs, out, vec![]),
            Op::Add => self.node("Sum", &name, inputs, out, vec![]),
            // ONNX broadcasts `[N, C, 1, 1]` over the plane as netc does.
            Op::Mul => self.node("Mul", &name, inputs, out, vec![]),
            // Sizes of the two spatial axes only (opset 18's `axes`), so a
            // symbolic batch stays symbolic.
            Op::Resize { size, mode } => {
                let sizes = self.fresh(&format!("{name}.sizes"));
                self.initializers
                    .push(int64_tensor(&sizes, &[size[0] as i64, size[1] as i64]));
                let mut ins = inputs;
                ins.extend([String::new(), String::new(), sizes]);
                let (onnx_mode, transform) = match mode {
                    ResizeMode::Nearest => ("nearest", "asymmetric"),
                    // `half_pixel`, not ONNX's `pytorch_half_pixel`: that
                    // one reads position 0 for an output of one, where
                    // PyTorch (and `half_pixel`) read the centre.
                    ResizeMode::Bilinear {
                        align_corners: false,
                    } => ("linear", "half_pixel"),
                    ResizeMode::Bilinear {
                        align_corners: true,
                    } => ("linear", "align_corners"),
                };
                let attrs = vec![
                    attr_ints("axes", &[2, 3]),
                    attr_string("mode", onnx_mode),
                    attr_string("coordinate_transformation_mode", transform),
                    attr_string("nearest_mode", "floor"),
                ];
                self.node("Resize", &name, ins, out, attrs);
            }
            Op::Slice { start, len } => {
                let mut ins = inputs;
                for (what, v) in [("starts", *start), ("ends", start + len), ("axes", 1)] {
                    let c = self.fresh(&format!("{name}.{what}"));
                    self.initializers.push(int64_tensor(&c, &[v as i64]));
                    ins.push(c);
                }
                self.node("Slice", &name, ins, out, vec![]);
            }
        }
        Ok(())
    }
}

/// Export `graph` with its `weights` as an ONNX model.
pub fn export(graph: &Graph, weights: &Weights, batch: Batch) -> Result<ModelProto, OnnxError> {
    let mut ex = Exporter {
        graph,
        weights,
        nodes: Vec::new(),
        initializers: Vec::new(),
        taken: HashSet::new(),
    };
    // Parameter names are claimed first so value names step around them.
    for node in graph.g.node_weights() {
        for p in &node.params {
            ex.taken.insert(p.name.clone());
        }
    }
    // Source order reads best; it is topological for graphs straight from
    // the checker, so petgraph's order is only the fallback.
    let mut order: Vec<NodeIndex> = graph.g.node_indices().collect();
    order.sort();
    let in_source_order = order
        .iter()
        .all(|&n| graph.operands(n).iter().all(|&o| o < n));
    if !in_source_order {
        order = graph.topo_order().map_err(|e| OnnxError::Export {
            node: graph.name.clone(),
            message: e.to_string(),
        })?;
    }
    let mut value = vec![String::new(); graph.g.node_bound()];
    let mut inputs = Vec::new();
    for &n in &order {
        let node = &graph.g[n];
        let name = ex.fresh(&node.name);
        value[n.index()] = name.clone();
        match node.kind {
            NodeKind::Input { .. } => inputs.push(value_info(&name, node.shape.dims(), batch)),
            NodeKind::Op(_) => {
                let ins: Vec<String> = graph
                    .operands(n)
                    .iter()
                    .map(|o| value[o.index()].clone())
                    .collect();
                // Initialisers of this node were claimed above; release them
                // for `param`, which claims each once.
                for p in &node.params {
                    ex.taken.remove(&p.name);
                }
                ex.export_node(n, ins, &name)?;
            }
        }
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|&o| value_info(&value[o.index()], graph.g[o].shape.dims(), batch))
        .collect();
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("netc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(GraphProto {
            node: ex.nodes,
            name: Some(graph.name.clone()),
            initializer: ex.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}
