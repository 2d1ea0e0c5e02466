//! ONNX → `.net` source and a weight map.
//!
//! Contract: a CNN graph made of the ops in [`SUPPORTED`] becomes a `.net`
//! model with one statement per layer, whose parameters keep their ONNX
//! initialiser names (through `weight: "…"` renames), plus those tensors as
//! f32. Identity, Dropout and flattening Reshapes become aliases, not
//! statements. Anything else — an op, an attribute value or a tensor netc
//! cannot express — is an [`OnnxError`] naming the node; the generated
//! source is checked before it is returned, so a file that imports also
//! compiles.

use super::proto::*;
use super::OnnxError;
use crate::check::{self, CheckOptions};
use crate::ir::builtin::Builtin;
use crate::ir::op::{
    Activation, Conv, ConvAlgo, ConvTranspose, Dense, DenseAlgo, Op, Pool, PoolKind, ResizeMode,
    WeightLayout, Window,
};
use crate::ir::shape::Shape;
use netc_runtime::Tensor;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The ONNX operators the importer understands.
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "MaxPool",
    "MaxUnpool",
    "Shape",
    "Slice",
    "Split",
    "Transpose",
    "Gather",
    "Sub",
    "Div",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Resize",
    "Gemm",
    "MatMul",
    "Flatten",
    "Reshape",
    "Concat",
    "Add",
    "Sum",
    "Mul",
    "Softmax",
    "Dropout",
    "Identity",
    "Constant",
];

/// Window sizes, strides, pads and dimensions above this are refused: real
/// networks stay far below it, and it keeps shape arithmetic in range.
const MAX_EXTENT: i64 = 1 << 24;

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The `.net` source text.
    pub source: String,
    /// Parameters by their (ONNX initialiser) names, in definition order.
    pub weights: Vec<(String, Tensor)>,
}

/// A constant: an initialiser or a `Constant` node's value.
#[derive(Clone, Debug)]
enum Const {
    Float(Tensor),
    Int(Vec<i64>),
    /// Integers that start with a computed tensor's batch size (its
    /// `Shape`, or a slice or concatenation keeping the first entry), taken
    /// at batch 1: only ops that read the spatial sizes (`Resize`'s sizes,
    /// `MaxUnpool`'s output shape) accept them, since the batch is not a
    /// constant.
    Shape(Vec<usize>),
}

/// A tensor of the imported network: its `.net` variable and its shape (at
/// batch 1; the batch is always dimension 0).
#[derive(Clone, Debug)]
struct Value {
    var: String,
    shape: Shape,
}

fn tensor_of(t: &TensorProto, what: &str) -> Result<Const, String> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(format!(
            "{what} keeps its data in an external file; save the model with all tensors inside it"
        ));
    }
    let mut dims = Vec::new();
    for &d in &t.dims {
        if !(0..=MAX_EXTENT).contains(&d) {
            return Err(format!("{what} has dimension {d}"));
        }
        dims.push(d as usize);
    }
    let numel = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= 1 << 32)
        .ok_or_else(|| format!("{what} is too large ({dims:?})"))?;
    let raw = t.raw_data.as_deref();
    let check_len = |len: usize, size: usize| {
        if len != numel {
            Err(format!(
                "{what} has {len} values ({} bytes), its shape {dims:?} needs {numel}",
                len * size
            ))
        } else {
            Ok(())
        }
    };
    let dtype = t.data_type.unwrap_or(0);
    let from_raw = |size: usize| -> Result<Option<&[u8]>, String> {
        match raw {
            Some(r) if !r.is_empty() || numel == 0 => {
                if r.len() % size != 0 {
                    return Err(format!(
                        "{what} has {} bytes of raw data, not a multiple of {size}",
                        r.len()
                    ));
                }
                check_len(r.len() / size, size)?;
                Ok(Some(r))
            }
            _ => Ok(None),
        }
    };
    let floats: Vec<f32> = match dtype {
        data_type::FLOAT => match from_raw(4)? {
            Some(r) => r
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            None => {
                check_len(t.float_data.len(), 4)?;
                t.float_data.clone()
            }
        },
        data_type::DOUBLE => match from_raw(8)? {
            Some(r) => r
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            None => {
                check_len(t.double_data.len(), 8)?;
                t.double_data.iter().map(|&x| x as f32).collect()
            }
        },
        data_type::FLOAT16 | data_type::BFLOAT16 => {
            let bits: Vec<u16> = match from_raw(2)? {
                Some(r) => r
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
                None => {
                    check_len(t.int32_data.len(), 2)?;
                    t.int32_data.iter().map(|&x| x as u16).collect()
                }
            };
            bits.into_iter()
                .map(|b| {
                    if dtype == data_type::FLOAT16 {
                        half::f16::from_bits(b).to_f32()
                    } else {
                        half::bf16::from_bits(b).to_f32()
                    }
                })
                .collect()
        }
        data_type::INT64 | data_type::INT32 => {
            let ints: Vec<i64> = match (
                dtype,
                from_raw(if dtype == data_type::INT64 { 8 } else { 4 })?,
            ) {
                (data_type::INT64, Some(r)) => r
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
                (_, Some(r)) => r
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
                (data_type::INT64, None) => {
                    check_len(t.int64_data.len(), 8)?;
                    t.int64_data.clone()
                }
                (_, None) => {
                    check_len(t.int32_data.len(), 4)?;
                    t.int32_data.iter().map(|&x| x as i64).collect()
                }
            };
            return Ok(Const::Int(ints));
        }
        other => {
            return Err(format!(
                "{what} has data type {other}; netc reads float32/64/16, bfloat16 and int32/64"
            ))
        }
    };
    Tensor::new(dims, floats)
        .map(Const::Float)
        .map_err(|e| format!("{what}: {e}"))
}

/// Node attributes by name.
struct Attrs<'a> {
    node: &'a str,
    op: &'a str,
    map: HashMap<&'a str, &'a AttributeProto>,
    used: HashSet<&'a str>,
}

impl<'a> Attrs<'a> {
    fn new(node: &'a str, op: &'a str, attrs: &'a [AttributeProto]) -> Self {
        let map = attrs
            .iter()
            .map(|a| (a.name.as_deref().unwrap_or(""), a))
            .collect();
        Attrs {
            node,
            op,
            map,
            used: HashSet::new(),
        }
    }

    fn err(&self, message: String) -> OnnxError {
        OnnxError::Import {
            node: self.node.to_string(),
            op: self.op.to_string(),
            message,
        }
    }

    fn get(&mut self, name: &'a str) -> Option<&'a AttributeProto> {
        self.used.insert(name);
        self.map.get(name).copied()
    }

    fn int(&mut self, name: &'a str, default: i64) -> i64 {
        self.get(name).and_then(|a| a.i).unwrap_or(default)
    }

    fn float(&mut self, name: &'a str, default: f32) -> f32 {
        self.get(name).and_then(|a| a.f).unwrap_or(default)
    }

    fn string(&mut self, name: &'a str) -> Option<String> {
        self.get(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// A list of `len` extents in `lo..=MAX_EXTENT`, or `default` if absent.
    fn extents(
        &mut self,
        name: &'a str,
        len: usize,
        lo: i64,
        default: Vec<usize>,
    ) -> Result<Vec<usize>, OnnxError> {
        let Some(a) = self.get(name) else {
            return Ok(default);
        };
        if a.ints.len() != len {
            return Err(self.err(format!(
                "`{name}` has {} values, expected {len}",
                a.ints.len()
            )));
        }
        a.ints
            .iter()
            .map(|&v| {
                if (lo..=MAX_EXTENT).contains(&v) {
                    Ok(v as usize)
                } else {
                    Err(self.err(format!("`{name}` value {v} is out of range")))
                }
            })
            .collect()
    }

    /// The window and group count of a `Conv` or `ConvTranspose` whose
    /// weight is `kh × kw`: explicit pads only, `kernel_shape` (if given)
    /// agreeing with the weight.
    fn conv_window(&mut self, [kh, kw]: [usize; 2]) -> Result<(Window, usize), OnnxError> {
        if let Some(p) = self.string("auto_pad").filter(|p| p != "NOTSET") {
            return Err(self.err(format!(
                "auto_pad `{p}` is not supported; export with explicit pads"
            )));
        }
        let kernel = self.extents("kernel_shape", 2, 1, vec![kh, kw])?;
        if kernel != [kh, kw] {
            return Err(self.err(format!(
                "kernel_shape {kernel:?} disagrees with the weight's {kh}x{kw}"
            )));
        }
        let stride = self.extents("strides", 2, 1, vec![1, 1])?;
        let dilation = self.extents("dilations", 2, 1, vec![1, 1])?;
        let pad = self.extents("pads", 4, 0, vec![0; 4])?;
        let groups = self.int("group", 1);
        if !(1..=MAX_EXTENT).contains(&groups) {
            return Err(self.err(format!("group {groups} is out of range")));
        }
        let window = Window {
            kernel: [kh, kw],
            stride: [stride[0], stride[1]],
            pad: [pad[0], pad[1], pad[2], pad[3]],
            dilation: [dilation[0], dilation[1]],
        };
        Ok((window, groups as usize))
    }

    /// Attributes present on the node but never read: netc cannot honour
    /// what it does not know, so they are errors, not silently dropped.
    fn finish(&self, ignorable: &[&str]) -> Result<(), OnnxError> {
        let mut names: Vec<&&str> = self.map.keys().collect();
        names.sort();
        for name in names {
            if !self.used.contains(*name) && !ignorable.contains(name) {
                return Err(self.err(format!("attribute `{name}` is not supported")));
            }
        }
        Ok(())
    }
}

/// Keywords and builtin functions of the `.net` language; op names come
/// from the op table ([`Builtin`]).
const KEYWORDS: &[&str] = &[
    "block", "model", "import", "return", "if", "then", "else", "as", "true", "false", "repeat",
    "channels", "height", "width", "min", "max", "N",
];

/// A name a generated variable must not take.
fn reserved(name: &str) -> bool {
    KEYWORDS.contains(&name) || Builtin::from_name(name).is_some()
}

/// A `.net` identifier made from an ONNX name.
fn identifier(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && (s.is_empty() || s.ends_with('_'))) {
            s.push(c);
        }
    }
    while s.ends_with('_') {
        s.pop();
    }
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 't');
    }
    if reserved(&s) {
        s.push_str("_1");
    }
    s
}

/// A parameter key the `.net` string syntax can hold.
fn key_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn float_text(x: f32) -> String {
    let s = format!("{x:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn pair_text(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("[{}, {}]", v[0], v[1])
    }
}

fn pad_text(p: [usize; 4]) -> String {
    if p[0] == p[2] && p[1] == p[3] {
        pair_text([p[0], p[1]])
    } else {
        format!("[{}, {}, {}, {}]", p[0], p[1], p[2], p[3])
    }
}

/// The `.net` layer expression for `op`, with parameter keys by role.
fn layer_text(op: &Op, keys: &[(&str, String)]) -> String {
    let mut args: Vec<String> = Vec::new();
    let window = |args: &mut Vec<String>, w: &Window, stride_default: [usize; 2]| {
        if w.stride != stride_default {
            args.push(format!("stride: {}", pair_text(w.stride)));
        }
        if w.pad != [0; 4] {
            args.push(format!("pad: {}", pad_text(w.pad)));
        }
        if w.dilation != [1, 1] {
            args.push(format!("dilation: {}", pair_text(w.dilation)));
        }
    };
    let name = op.name();
    match op {
        Op::Conv(c) => {
            args.push(c.out_channels.to_string());
            args.push(pair_text(c.window.kernel));
            window(&mut args, &c.window, [1, 1]);
            if c.groups != 1 {
                args.push(format!("groups: {}", c.groups));
            }
            if !c.bias {
                args.push("bias: false".into());
            }
        }
        Op::ConvTranspose(c) => {
            args.push(c.out_channels.to_string());
            args.push(pair_text(c.window.kernel));
            window(&mut args, &c.window, [1, 1]);
            if c.output_padding != [0, 0] {
                args.push(format!("output_padding: {}", pair_text(c.output_padding)));
            }
            if c.groups != 1 {
                args.push(format!("groups: {}", c.groups));
            }
            if !c.bias {
                args.push("bias: false".into());
            }
        }
        Op::BatchNorm { eps, .. } if *eps != 1e-5 => {
            args.push(format!("eps: {}", float_text(*eps)));
        }
        Op::Activation(Activation::Clip(lo, hi)) => {
            args.push(float_text(*lo));
            args.push(float_text(*hi));
        }
        Op::Activation(Activation::LeakyRelu(a)) if *a != 0.01 => {
            args.push(format!("alpha: {}", float_text(*a)));
        }
        Op::Pool(p) => {
            args.push(pair_text(p.window.kernel));
            window(&mut args, &p.window, p.window.kernel);
            if p.ceil {
                args.push("ceil: true".into());
            }
            if p.kind == PoolKind::Avg && !p.count_include_pad {
                args.push("count_include_pad: false".into());
            }
        }
        Op::Dense(d) => {
            args.push(d.out_features.to_string());
            if !d.bias {
                args.push("bias: false".into());
            }
            if d.layout == WeightLayout::InOut {
                args.push("layout: \"in_out\"".into());
            }
        }
        Op::Scale { factor } => args.push(float_text(*factor)),
        Op::AdaptiveAvgPool { output } => args.push(pair_text(*output)),
        Op::Resize { size, mode } => {
            args.push(format!("size: {}", pair_text(*size)));
            match mode {
                ResizeMode::Nearest => args.push("mode: \"nearest\"".into()),
                ResizeMode::Bilinear { align_corners } => {
                    if *align_corners {
                        args.push("align_corners: true".into());
                    }
                }
            }
        }
        Op::Dropout { ratio, scale } => {
            args.push(format!("ratio: {}", float_text(*ratio)));
            if *scale != 1.0 {
                args.push("inference: \"scale\"".into());
            }
        }
        Op::Slice { start, len } => {
            args.push(start.to_string());
            args.push((start + len).to_string());
        }
        Op::ChannelShuffle { groups } => args.push(groups.to_string()),
        // Defaults, and ops without arguments (the generated file is
        // checked before it is written). `maxunpool` is a merge its import
        // arm writes itself.
        Op::MaxUnpool { .. }
        | Op::BatchNorm { .. }
        | Op::Activation(_)
        | Op::GlobalAvgPool
        | Op::Flatten
        | Op::Softmax
        | Op::Concat
        | Op::Add
        | Op::Mul
        | Op::Identity => {}
    }
    for (role, key) in keys {
        args.push(format!("{role}: \"{key}\""));
    }
    if args.is_empty() {
        name.to_string()
    } else {
        format!("{name}({})", args.join(", "))
    }
}

struct Importer {
    opset: i64,
    values: HashMap<String, Value>,
    consts: HashMap<String, Const>,
    vars: HashSet<String>,
    body: String,
    weights: Vec<(String, Tensor)>,
    keys: HashSet<String>,
    /// A MaxPool's `Indices` output by name: the pool's `Y` (the tensor
    /// `maxunpool` names), its input shape and the pool.
    indices: HashMap<String, (String, Shape, Pool)>,
    /// A channel shuffle on its way (PyTorch's Reshape to 5-D, Transpose
    /// of the two channel axes, Reshape back): the tensor, its groups and
    /// whether the transpose has been seen.
    shuffles: HashMap<String, (Value, usize, bool)>,
}

impl Importer {
    fn fresh_var(&mut self, base: &str) -> String {
        let base = identifier(base);
        let mut name = base.clone();
        let mut k = 2;
        while self.vars.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.vars.insert(name.clone());
        name
    }

    fn value(&self, name: &str, node: &str, op: &str) -> Result<Value, OnnxError> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| OnnxError::Import {
                node: node.into(),
                op: op.into(),
                message: if self.consts.contains_key(name) {
                    format!("input `{name}` is a constant where netc expects a computed tensor")
                } else {
                    format!("input `{name}` is not produced by any earlier node or graph input")
                },
            })
    }

    /// Store a parameter tensor under its (string-safe) initialiser name.
    /// Parameters belong to one layer in netc: an initialiser two layers
    /// read (PyTorch's dynamo exporter shares DenseNet's batch-norm
    /// weights that way) is stored again as `name_2`, `name_3`, ….
    fn param(&mut self, name: &str, tensor: Tensor) -> Result<String, String> {
        let base = key_name(name);
        let mut key = base.clone();
        let mut k = 2;
        while !self.keys.insert(key.clone()) {
            key = format!("{base}_{k}");
            k += 1;
        }
        self.weights.push((key.clone(), tensor));
        Ok(key)
    }
}

/// Shape rule errors become node errors.
fn infer(op: &Op, inputs: &[&Shape], node: &str, op_type: &str) -> Result<Shape, OnnxError> {
    op.infer(inputs).map_err(|e| OnnxError::Import {
        node: node.into(),
        op: op_type.into(),
        message: e.to_string(),
    })
}

/// The statement name for a node: its weight's name without the role, else
/// the last meaningful segment of the node name (PyTorch writes
/// `/layer1/layer1.0/relu/Relu`), else the op.
fn statement_base(node: &NodeProto, op_type: &str, weight: Option<&str>) -> String {
    if let Some(w) = weight {
        let stem = w
            .strip_suffix(".weight")
            .or_else(|| w.strip_suffix("_weight"))
            .unwrap_or(w);
        if !stem.is_empty() {
            return stem.to_string();
        }
    }
    let name = node.name.as_deref().unwrap_or("");
    let mut parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
    if parts.last().is_some_and(|l| l.starts_with(op_type)) {
        parts.pop();
    }
    match parts[..] {
        [] => op_type.to_lowercase(),
        // `/stem/relu` reads better as `stem_relu` than as `relu_1`.
        [.., scope, last] if reserved(last) => format!("{scope}_{last}"),
        [.., last] => last.to_string(),
    }
}

/// Import a decoded ONNX model as a `.net` model called `name`.
pub fn import(model: &ModelProto, name: &str) -> Result<Imported, OnnxError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Invalid("the model has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| {
            o.domain.as_deref().unwrap_or("").is_empty() || o.domain.as_deref() == Some("ai.onnx")
        })
        .and_then(|o| o.version)
        .ok_or_else(|| {
            OnnxError::Invalid("the model imports no version of the default ONNX opset".into())
        })?;
    if opset < 7 {
        return Err(OnnxError::Invalid(format!(
            "opset {opset} is older than netc reads (7 and later)"
        )));
    }
    let mut im = Importer {
        opset,
        values: HashMap::new(),
        consts: HashMap::new(),
        vars: HashSet::new(),
        body: String::new(),
        weights: Vec::new(),
        keys: HashSet::new(),
        indices: HashMap::new(),
        shuffles: HashMap::new(),
    };
    for t in &graph.initializer {
        let tname = t.name.clone().unwrap_or_default();
        let c = tensor_of(t, &format!("initialiser `{tname}`")).map_err(OnnxError::Invalid)?;
        im.consts.insert(tname, c);
    }
    // Graph inputs that are not initialisers are the model's inputs.
    let mut signature = Vec::new();
    for input in &graph.input {
        let iname = input.name.clone().unwrap_or_default();
        if im.consts.contains_key(&iname) {
            continue;
        }
        let dims = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.clone())
            .ok_or_else(|| OnnxError::Invalid(format!("input `{iname}` has no tensor shape")))?;
        if dims.len() != 4 && dims.len() != 2 {
            return Err(OnnxError::Invalid(format!(
                "input `{iname}` has rank {}; netc models take NCHW (rank 4) or NC (rank 2) inputs",
                dims.len()
            )));
        }
        let mut shape = vec![1];
        let mut text = vec!["N".to_string()];
        for d in &dims[1..] {
            match d.dim_value {
                Some(v) if (1..=MAX_EXTENT).contains(&v) => {
                    shape.push(v as usize);
                    text.push(v.to_string());
                }
                _ => {
                    return Err(OnnxError::Invalid(format!(
                        "input `{iname}` needs fixed sizes after the batch dimension, found {}",
                        d.dim_param
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", d.dim_value))
                    )))
                }
            }
        }
        let var = im.fresh_var(&iname);
        signature.push(format!("{var}: [{}]", text.join(", ")));
        im.values.insert(
            iname,
            Value {
                var,
                shape: Shape(shape),
            },
        );
    }
    if signature.is_empty() {
        return Err(OnnxError::Invalid("the graph has no inputs".into()));
    }
    for node in &graph.node {
        import_node(&mut im, node)?;
    }
    let mut outputs = Vec::new();
    for o in &graph.output {
        let oname = o.name.clone().unwrap_or_default();
        let v = im.values.get(&oname).ok_or_else(|| {
            OnnxError::Invalid(format!(
                "graph output `{oname}` is not computed by any node"
            ))
        })?;
        outputs.push(v.var.clone());
    }
    if outputs.is_empty() {
        return Err(OnnxError::Invalid("the graph has no outputs".into()));
    }
    let producer = model.producer_name.clone().unwrap_or_default();
    let mut source = format!(
        "// Imported by `netc import` from an ONNX model{} (opset {opset}).\n\
// Parameters keep their ONNX initialiser names.\n\nmodel {}({}) {{\n",
        if producer.is_empty() {
            String::new()
        } else {
            format!(" written by {producer}")
        },
        identifier(name),
        signature.join(", "),
    );
    source += &im.body;
    let _ = writeln!(source, "    return {}\n}}", outputs.join(", "));
    // The generated text must compile: a failure here is netc's bug or an
    // ONNX graph netc's checker rejects (e.g. resource limits).
    if let Err((sources, d)) = check::check_source("imported.net", &source, CheckOptions::default())
    {
        return Err(OnnxError::Invalid(format!(
            "the generated .net model does not check:\n{}",
            d.render(&sources)
        )));
    }
    Ok(Imported {
        source,
        weights: im.weights,
    })
}

fn import_node(im: &mut Importer, node: &NodeProto) -> Result<(), OnnxError> {
    let op_type = node.op_type.clone().unwrap_or_default();
    let node_name = node
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| node.output.first().cloned())
        .unwrap_or_default();
    let mut attrs = Attrs::new(&node_name, &op_type, &node.attribute);
    let fail = |message: String| OnnxError::Import {
        node: node_name.clone(),
        op: op_type.clone(),
        message,
    };
    let domain = node.domain.as_deref().unwrap_or("");
    if !domain.is_empty() && domain != "ai.onnx" {
        return Err(fail(format!("operator domain `{domain}` is not supported")));
    }
    let Some(out) = node.output.first().filter(|o| !o.is_empty()).cloned() else {
        return Err(fail("the node has no output".into()));
    };
    let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).cloned();
    let need = |i: usize| input(i).ok_or_else(|| fail(format!("input {i} is missing")));
    let float_const = |im: &Importer, i: usize, what: &str| -> Result<Tensor, OnnxError> {
        let name = need(i)?;
        match im.consts.get(&name) {
            Some(Const::Float(t)) => Ok(t.clone()),
            Some(Const::Int(..) | Const::Shape(..)) => {
                Err(fail(format!("{what} `{name}` is an integer tensor")))
            }
            None => Err(fail(format!(
                "{what} `{name}` must be an initialiser: netc compiles weights in"
            ))),
        }
    };
    // A layer statement: `var = input -> layer`.
    let emit = |im: &mut Importer,
                op: Op,
                x: &Value,
                keys: Vec<(&str, String)>,
                weight: Option<&str>|
     -> Result<(), OnnxError> {
        let shape = infer(&op, &[&x.shape], &node_name, &op_type)?;
        let var = im.fresh_var(&statement_base(node, &op_type, weight));
        let _ = writeln!(
            im.body,
            "    {var} = {} -> {}",
            x.var,
            layer_text(&op, &keys)
        );
        im.values.insert(out.clone(), Value { var, shape });
        Ok(())
    };
    match op_type.as_str() {
        "Constant" => {
            let value = attrs
                .get("value")
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| fail("only tensor-valued `value` constants are supported".into()))?;
            let c = tensor_of(value, &format!("constant `{out}`")).map_err(&fail)?;
            attrs.finish(&[])?;
            im.consts.insert(out, c);
        }
        // Integer arithmetic on sizes (PyTorch's `x.chunk(2, dim=1)`:
        // Gather(Shape(x), 1) + 1, / 2, * k), folded while the values are
        // constants; anything that reads the batch size stays refused.
        "Gather" if im.consts.contains_key(&need(0)?) => {
            let axis = attrs.int("axis", 0);
            attrs.finish(&[])?;
            let index = match im.consts.get(&need(1)?) {
                Some(Const::Int(v)) if v.len() == 1 => v[0],
                _ => return Err(fail("the index must be one integer constant".into())),
            };
            let (values, batch): (Vec<i64>, bool) = match im.consts.get(&need(0)?) {
                Some(Const::Int(v)) => (v.clone(), false),
                Some(Const::Shape(d)) => (d.iter().map(|&d| d as i64).collect(), true),
                Some(Const::Float(_)) | None => {
                    return Err(fail("netc gathers from integer constants only".into()))
                }
            };
            let n = values.len() as i64;
            let i = if index < 0 { index + n } else { index };
            if axis != 0 || !(0..n).contains(&i) {
                return Err(fail(format!(
                    "gather of index {index} along axis {axis} of {n} values"
                )));
            }
            if batch && i == 0 {
                return Err(fail(
                    "the batch size is not a constant: netc compiles for a fixed batch".into(),
                ));
            }
            im.consts.insert(out, Const::Int(vec![values[i as usize]]));
        }
        "Add" | "Sub" | "Mul" | "Div"
            if node.input.len() == 2
                && node
                    .input
                    .iter()
                    .all(|i| matches!(im.consts.get(i), Some(Const::Int(_)))) =>
        {
            attrs.finish(&[])?;
            let int = |i: usize| match im.consts.get(&node.input[i]) {
                Some(Const::Int(v)) => v.clone(),
                _ => Vec::new(),
            };
            let (a, b) = (int(0), int(1));
            let n = a.len().max(b.len());
            if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
                return Err(fail(format!("cannot broadcast {a:?} with {b:?}")));
            }
            let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                let (x, y) = (at(&a, i), at(&b, i));
                values.push(
                    match op_type.as_str() {
                        "Add" => x.checked_add(y),
                        "Sub" => x.checked_sub(y),
                        "Mul" => x.checked_mul(y),
                        _ => x.checked_div(y),
                    }
                    .ok_or_else(|| {
                        fail(format!("{x} {op_type} {y} overflows or divides by zero"))
                    })?,
                );
            }
            im.consts.insert(out, Const::Int(values));
        }
        // PyTorch's exporter renames shared or re-used weights through an
        // `Identity` of the initializer: the output is the same constant.
        "Identity" if im.consts.contains_key(&need(0)?) => {
            attrs.finish(&[])?;
            if let Some(c) = im.consts.get(&need(0)?).cloned() {
                im.consts.insert(out, c);
            }
        }
        "Identity" | "Dropout" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            // Dropout's ratio/training_mode inputs and seed only matter in training.
            attrs.finish(&["seed", "ratio", "is_test"])?;
            im.values.insert(out, x);
        }
        "Conv" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let w = float_const(im, 1, "weight")?;
            let [out_ch, per_group, kh, kw] = w.shape()[..] else {
                return Err(fail(format!(
                    "weight has shape {}; netc convolutions are 2-D",
                    w.shape_string()
                )));
            };
            let (window, groups) = attrs.conv_window([kh, kw])?;
            attrs.finish(&[])?;
            let bias = match input(2) {
                Some(_) => Some(float_const(im, 2, "bias")?),
                None => None,
            };
            let op = Op::Conv(Conv {
                in_channels: per_group * groups,
                out_channels: out_ch,
                window,
                groups,
                bias: bias.is_some(),
                epilogue: Vec::new(),
                algo: ConvAlgo::Unselected,
            });
            let wname = need(1)?;
            let mut keys = vec![("weight", im.param(&wname, w).map_err(&fail)?)];
            if let (Some(b), Some(bname)) = (bias, input(2)) {
                keys.push(("bias", im.param(&bname, b).map_err(&fail)?));
            }
            emit(im, op, &x, keys, Some(&wname))?;
        }
        "ConvTranspose" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let w = float_const(im, 1, "weight")?;
            let [in_ch, per_group, kh, kw] = w.shape()[..] else {
                return Err(fail(format!(
                    "weight has shape {}; netc convolutions are 2-D",
                    w.shape_string()
                )));
            };
            if attrs.get("output_shape").is_some() {
                return Err(fail(
                    "`output_shape` is not supported; export with pads and output_padding".into(),
                ));
            }
            let (window, groups) = attrs.conv_window([kh, kw])?;
            let output_padding = attrs.extents("output_padding", 2, 0, vec![0, 0])?;
            attrs.finish(&[])?;
            let bias = match input(2) {
                Some(_) => Some(float_const(im, 2, "bias")?),
                None => None,
            };
            let op = Op::ConvTranspose(ConvTranspose {
                in_channels: in_ch,
                out_channels: per_group * groups,
                window,
                output_padding: [output_padding[0], output_padding[1]],
                groups,
                bias: bias.is_some(),
            });
            let wname = need(1)?;
            let mut keys = vec![("weight", im.param(&wname, w).map_err(&fail)?)];
            if let (Some(b), Some(bname)) = (bias, input(2)) {
                keys.push(("bias", im.param(&bname, b).map_err(&fail)?));
            }
            emit(im, op, &x, keys, Some(&wname))?;
        }
        "BatchNormalization" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let eps = attrs.float("epsilon", 1e-5);
            if attrs.int("training_mode", 0) != 0 {
                return Err(fail("training_mode=1 is not inference".into()));
            }
            if im.opset < 9 && attrs.int("spatial", 1) != 1 {
                return Err(fail("spatial=0 batch norm is not supported".into()));
            }
            attrs.finish(&["momentum", "spatial", "is_test", "consumed_inputs"])?;
            if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(fail(
                    "training outputs (running statistics) are not supported".into(),
                ));
            }
            let channels = x.shape.dims().get(1).copied().unwrap_or(0);
            let mut keys = Vec::new();
            for (i, role) in ["weight", "bias", "running_mean", "running_var"]
                .into_iter()
                .enumerate()
            {
                let t = float_const(im, i + 1, role)?;
                if t.shape() != [channels] {
                    return Err(fail(format!(
                        "{role} has shape {}, expected {channels}",
                        t.shape_string()
                    )));
                }
                keys.push((role, im.param(&need(i + 1)?, t).map_err(&fail)?));
            }
            let weight = need(1)?;
            emit(im, Op::BatchNorm { channels, eps }, &x, keys, Some(&weight))?;
        }
        "Relu" | "Sigmoid" | "Tanh" | "LeakyRelu" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let act = match op_type.as_str() {
                "Relu" => Activation::Relu,
                "Sigmoid" => Activation::Sigmoid,
                "Tanh" => Activation::Tanh,
                _ => Activation::LeakyRelu(attrs.float("alpha", 0.01)),
            };
            attrs.finish(&[])?;
            emit(im, Op::Activation(act), &x, vec![], None)?;
        }
        "HardSigmoid" | "HardSwish" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let act = if op_type == "HardSwish" {
                Activation::HardSwish
            } else {
                // ONNX's defaults are (0.2, 0.5); PyTorch exports (1/6, 1/2),
                // the only form netc has.
                let (alpha, beta) = (attrs.float("alpha", 0.2), attrs.float("beta", 0.5));
                if (alpha - 1.0 / 6.0).abs() > 1e-6 || beta != 0.5 {
                    return Err(fail(format!("alpha {alpha} and beta {beta} are not supported; netc's hardsigmoid is PyTorch's (alpha 1/6, beta 1/2)")));
                }
                Activation::HardSigmoid
            };
            attrs.finish(&[])?;
            emit(im, Op::Activation(act), &x, vec![], None)?;
        }
        "Clip" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            // Bounds are attributes before opset 11, constant inputs since.
            let bound = |im: &Importer, i: usize, what: &str, attr: f32| {
                if input(i).is_none() {
                    return Ok(attr);
                }
                let t = float_const(im, i, what)?;
                match t.data() {
                    [v] => Ok(*v),
                    _ => Err(fail(format!(
                        "{what} has shape {}; only scalars are supported",
                        t.shape_string()
                    ))),
                }
            };
            let (lo_attr, hi_attr) = (attrs.float("min", f32::NAN), attrs.float("max", f32::NAN));
            attrs.finish(&[])?;
            let (lo, hi) = (bound(im, 1, "min", lo_attr)?, bound(im, 2, "max", hi_attr)?);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(fail(format!(
                    "bounds {lo} and {hi}: netc's clip needs both, finite, min < max"
                )));
            }
            emit(
                im,
                Op::Activation(Activation::Clip(lo, hi)),
                &x,
                vec![],
                None,
            )?;
        }
        "Resize" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let [_, _, h, w] = x.shape.dims()[..] else {
                return Err(fail(format!("input of shape {} is not NCHW", x.shape)));
            };
            let mode = attrs.string("mode").unwrap_or_else(|| "nearest".into());
            let transform = attrs
                .string("coordinate_transformation_mode")
                .unwrap_or_else(|| "half_pixel".into());
            let nearest = attrs
                .string("nearest_mode")
                .unwrap_or_else(|| "round_prefer_floor".into());
            let axes = attrs.get("axes").map(|a| a.ints.clone());
            for (key, default) in [("antialias", 0), ("exclude_outside", 0)] {
                if attrs.int(key, default) != default {
                    return Err(fail(format!("`{key}` is not supported")));
                }
            }
            attrs.finish(&[
                "cubic_coeff_a",
                "extrapolation_value",
                "keep_aspect_ratio_policy",
            ])?;
            // Sizes (input 3) or scales (input 2), over all four axes or
            // the two spatial ones (`axes`, opset 18).
            let spatial = |v: &[f64]| -> Result<[f64; 2], OnnxError> {
                match (v, axes.as_deref()) {
                    ([n, c, sh, sw], None) if *n == 1.0 && *c == 1.0 => Ok([*sh, *sw]),
                    ([sh, sw], Some([2, 3])) => Ok([*sh, *sw]),
                    _ => Err(fail(format!(
                        "resizing {v:?} over axes {axes:?}: only the two spatial axes can be resized"
                    ))),
                }
            };
            let size = if let Some(name) = input(3) {
                let v: Vec<f64> = match im.consts.get(&name) {
                    Some(Const::Int(v)) => v.iter().map(|&s| s as f64).collect(),
                    // The batch and channels of a computed shape are the
                    // input's own: only the spatial sizes are read.
                    Some(Const::Shape(d)) if d.len() == 4 => d.iter().map(|&s| s as f64).collect(),
                    _ => return Err(fail("`sizes` must be a constant".into())),
                };
                let [sh, sw] = match (v.as_slice(), axes.as_deref()) {
                    ([_, _, sh, sw], None) => [*sh, *sw],
                    _ => spatial(&v)?,
                };
                [sh, sw]
            } else {
                let scales = float_const(im, 2, "scales")?;
                let v: Vec<f64> = scales.data().iter().map(|&s| s as f64).collect();
                let [sh, sw] = spatial(&v)?;
                [(h as f64 * sh).floor(), (w as f64 * sw).floor()]
            };
            if !size.iter().all(|&s| (1.0..=MAX_EXTENT as f64).contains(&s)) {
                return Err(fail(format!("output size {size:?} is out of range")));
            }
            let size = [size[0] as usize, size[1] as usize];
            let resize_mode = match (mode.as_str(), transform.as_str(), nearest.as_str()) {
                ("nearest", "asymmetric", "floor") => ResizeMode::Nearest,
                ("linear", "half_pixel", _) => ResizeMode::Bilinear {
                    align_corners: false,
                },
                // Reads position 0 for an output of one, where PyTorch's
                // resize reads the centre; the same otherwise.
                ("linear", "pytorch_half_pixel", _) if size.iter().all(|&s| s > 1) => {
                    ResizeMode::Bilinear {
                        align_corners: false,
                    }
                }
                ("linear", "align_corners", _) => ResizeMode::Bilinear {
                    align_corners: true,
                },
                _ => {
                    return Err(fail(format!(
                        "mode `{mode}` with coordinate_transformation_mode `{transform}` (nearest_mode `{nearest}`) is not supported; netc resizes as PyTorch does: nearest (asymmetric, floor) or bilinear (half_pixel, pytorch_half_pixel to sizes above 1, or align_corners)"
                    )))
                }
            };
            emit(
                im,
                Op::Resize {
                    size,
                    mode: resize_mode,
                },
                &x,
                vec![],
                None,
            )?;
        }
        "MaxPool" | "AveragePool" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            if let Some(p) = attrs.string("auto_pad").filter(|p| p != "NOTSET") {
                return Err(fail(format!(
                    "auto_pad `{p}` is not supported; export with explicit pads"
                )));
            }
            let indices = node.output.get(1).filter(|o| !o.is_empty()).cloned();
            if op_type == "AveragePool" && indices.is_some() || node.output.len() > 2 {
                return Err(fail("only MaxPool has an Indices output".into()));
            }
            let kernel = attrs.extents("kernel_shape", 2, 1, Vec::new())?;
            if kernel.is_empty() {
                return Err(fail("kernel_shape is missing or not 2-D".into()));
            }
            let stride = attrs.extents("strides", 2, 1, vec![1, 1])?;
            let dilation = attrs.extents("dilations", 2, 1, vec![1, 1])?;
            let pad = attrs.extents("pads", 4, 0, vec![0; 4])?;
            let ceil = attrs.int("ceil_mode", 0) != 0;
            let max = op_type == "MaxPool";
            let count_include_pad = !max && attrs.int("count_include_pad", 0) != 0;
            if max && attrs.int("storage_order", 0) != 0 {
                return Err(fail("storage_order=1 is not supported".into()));
            }
            attrs.finish(&[])?;
            if !max && dilation != [1, 1] {
                return Err(fail("dilated average pooling is not supported".into()));
            }
            let mut pool = Pool {
                kind: if max { PoolKind::Max } else { PoolKind::Avg },
                window: Window {
                    kernel: [kernel[0], kernel[1]],
                    stride: [stride[0], stride[1]],
                    pad: [pad[0], pad[1], pad[2], pad[3]],
                    dilation: [dilation[0], dilation[1]],
                },
                ceil,
                count_include_pad,
            };
            // A ceil-mode pool written as floor mode with its trailing pad
            // extended (netc's own export does this where ONNX's ceil mode
            // differs from PyTorch's): padding a max pool never picks and an
            // uncounted average never counts, so ceil mode with the leading
            // pads gives the same windows when it gives the same size.
            let too_wide = (0..2).any(|a| 2 * pool.window.pad[a + 2] > pool.window.kernel[a]);
            if too_wide && !ceil && !count_include_pad {
                let mut ceiled = pool;
                ceiled.ceil = true;
                for a in 0..2 {
                    ceiled.window.pad[a + 2] = ceiled.window.pad[a];
                }
                let same = Op::Pool(ceiled).infer(&[&x.shape]).ok()
                    == Op::Pool(pool).infer(&[&x.shape]).ok();
                if same {
                    pool = ceiled;
                }
            }
            emit(im, Op::Pool(pool), &x, vec![], None)?;
            if let Some(i) = indices {
                im.indices.insert(i, (out.clone(), x.shape.clone(), pool));
            }
        }
        // Indices only as a MaxPool's, whose input the unpool reads again
        // (netc's `maxunpool` names the pool's output).
        "MaxUnpool" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let (pooled, source, pool) = im
                .indices
                .get(&need(1)?)
                .cloned()
                .ok_or_else(|| fail("the indices must be a MaxPool's Indices output".into()))?;
            let pooled = im.value(&pooled, &node_name, &op_type)?;
            let kernel = attrs.extents("kernel_shape", 2, 1, Vec::new())?;
            let stride = attrs.extents("strides", 2, 1, vec![1, 1])?;
            let pad = attrs.extents("pads", 4, 0, vec![0; 4])?;
            attrs.finish(&[])?;
            let spatial = match input(2) {
                Some(name) => match im.consts.get(&name) {
                    Some(Const::Shape(d)) => d.get(2..4).map(|d| [d[0], d[1]]),
                    Some(Const::Int(d)) => d.get(2..4).map(|d| [d[0] as usize, d[1] as usize]),
                    Some(Const::Float(_)) | None => None,
                }
                .ok_or_else(|| fail("output_shape must be a constant NCHW shape".into()))?,
                // ONNX's default: (in − 1)·stride + kernel − pads.
                None => {
                    let size = |a: usize| {
                        ((x.shape.dims().get(2 + a).copied().unwrap_or(1) - 1) * stride[a]
                            + kernel.get(a).copied().unwrap_or(1))
                        .saturating_sub(pad[a] + pad[a + 2])
                    };
                    [size(0), size(1)]
                }
            };
            let source_hw = source.dims().get(2..4).map(|d| [d[0], d[1]]);
            if source_hw != Some(spatial) {
                return Err(fail(format!(
                    "unpools to {}x{}, not the size of the pool's input {source}; netc unpools to the pool's input",
                    spatial[0], spatial[1]
                )));
            }
            let op = Op::MaxUnpool {
                window: pool.window,
                ceil: pool.ceil,
            };
            let shape = infer(&op, &[&x.shape, &source], &node_name, &op_type)?;
            let var = im.fresh_var(&statement_base(node, &op_type, None));
            let _ = writeln!(im.body, "    {var} = maxunpool({}, {})", x.var, pooled.var);
            im.values.insert(out, Value { var, shape });
        }
        // A computed tensor's shape (at batch 1), for ops that read sizes.
        "Shape" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            if attrs.get("start").is_some() || attrs.get("end").is_some() {
                return Err(fail("Shape with start or end is not supported".into()));
            }
            attrs.finish(&[])?;
            im.consts.insert(out, Const::Shape(x.shape.dims().to_vec()));
        }
        "GlobalAveragePool" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            attrs.finish(&[])?;
            emit(im, Op::GlobalAvgPool, &x, vec![], None)?;
        }
        // `x.mean([2, 3])` (MNASNet, squeeze-excite written by hand): the
        // spatial mean is global average pooling; without keepdims it is
        // flattened too. Other axes are refused by name.
        "ReduceMean" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let keep = attrs.int("keepdims", 1) != 0;
            let listed = attrs.get("axes").map(|a| a.ints.clone());
            attrs.finish(&["noop_with_empty_axes"])?;
            let axes = match (listed, input(1)) {
                (Some(a), _) => a,
                (None, Some(name)) => match im.consts.get(&name) {
                    Some(Const::Int(v)) => v.clone(),
                    _ => return Err(fail("the axes must be a constant".into())),
                },
                (None, None) => Vec::new(),
            };
            let rank = x.shape.rank() as i64;
            let mut axes: Vec<i64> = axes
                .iter()
                .map(|&a| if a < 0 { a + rank } else { a })
                .collect();
            axes.sort_unstable();
            if rank != 4 || axes != [2, 3] {
                return Err(fail(format!(
                    "a mean over axes {axes:?} of a rank-{rank} tensor; netc supports the spatial \
                     mean (axes 2 and 3 of NCHW), i.e. global average pooling"
                )));
            }
            if keep {
                emit(im, Op::GlobalAvgPool, &x, vec![], None)?;
            } else {
                let d = x.shape.dims();
                let var = im.fresh_var(&statement_base(node, &op_type, None));
                let _ = writeln!(
                    im.body,
                    "    {var} = {} -> [global_avgpool, flatten]",
                    x.var
                );
                let shape = Shape(vec![d[0], d[1]]);
                im.values.insert(out, Value { var, shape });
            }
        }
        "Flatten" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let axis = attrs.int("axis", 1);
            attrs.finish(&[])?;
            if axis != 1 {
                return Err(fail(format!(
                    "axis {axis} is not supported; netc flattens from axis 1"
                )));
            }
            if x.shape.rank() == 2 {
                im.values.insert(out, x);
            } else {
                emit(im, Op::Flatten, &x, vec![], None)?;
            }
        }
        // The second reshape of a channel shuffle: back to the input's shape.
        "Reshape" if im.shuffles.contains_key(&need(0)?) => {
            attrs.finish(&["allowzero"])?;
            let Some((x, groups, true)) = im.shuffles.get(&need(0)?).cloned() else {
                return Err(fail(
                    "a channel-grouped tensor is reshaped before its Transpose".into(),
                ));
            };
            let target = match im.consts.get(&need(1)?) {
                Some(Const::Int(v)) => v.clone(),
                _ => return Err(fail("the target shape must be a constant".into())),
            };
            let dims: Vec<i64> = x.shape.dims().iter().map(|&d| d as i64).collect();
            let back = target.len() == 4
                && (-1..=1).contains(&target[0])
                && (1..4).all(|i| target[i] == dims[i] || (target[i] == -1 && i == 1));
            if !back {
                return Err(fail(format!(
                    "a channel shuffle must reshape back to {}, found {target:?}",
                    x.shape
                )));
            }
            emit(im, Op::ChannelShuffle { groups }, &x, vec![], None)?;
        }
        "Transpose" => {
            let source = need(0)?;
            let perm = attrs
                .get("perm")
                .map(|a| a.ints.clone())
                .unwrap_or_default();
            attrs.finish(&[])?;
            match im.shuffles.get(&source).cloned() {
                Some((x, groups, false)) if perm == [0, 2, 1, 3, 4] => {
                    im.shuffles.insert(out, (x, groups, true));
                }
                _ => {
                    return Err(fail(format!(
                        "only a channel shuffle's transpose (perm [0, 2, 1, 3, 4] after a reshape to [N, groups, C/groups, H, W]) is supported, found perm {perm:?}"
                    )))
                }
            }
        }
        "Reshape" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            attrs.finish(&["allowzero"])?;
            let target = match im.consts.get(&need(1)?) {
                Some(Const::Int(v)) => v.clone(),
                _ => return Err(fail("the target shape must be a constant".into())),
            };
            // The first reshape of a channel shuffle: [N, groups, C/groups, H, W].
            if let ([n, g, per, h, w], [_, c, xh, xw]) = (&target[..], x.shape.dims()) {
                let grouped = (-1..=1).contains(n)
                    && *g > 0
                    && *per > 0
                    && (*g * *per) as usize == *c
                    && (*h as usize, *w as usize) == (*xh, *xw);
                if grouped {
                    im.shuffles.insert(out, (x, *g as usize, false));
                    return Ok(());
                }
            }
            let features = x.shape.dims()[1..].iter().product::<usize>() as i64;
            // Only reshapes that flatten (keep the batch, merge the rest).
            let flattens = target.len() == 2
                && (-1..=1).contains(&target[0])
                && (target[1] == -1 || target[1] == features)
                && !(target[0] == -1 && target[1] == -1);
            if !flattens {
                return Err(fail(format!(
                    "reshape of {} to {target:?} is not a flatten; only [N, -1]-style reshapes are supported",
                    x.shape
                )));
            }
            if x.shape.rank() == 2 {
                im.values.insert(out, x);
            } else {
                emit(im, Op::Flatten, &x, vec![], None)?;
            }
        }
        "Gemm" | "MatMul" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let gemm = op_type == "Gemm";
            if gemm {
                if attrs.float("alpha", 1.0) != 1.0 || attrs.float("beta", 1.0) != 1.0 {
                    return Err(fail("alpha and beta other than 1 are not supported".into()));
                }
                if attrs.int("transA", 0) != 0 {
                    return Err(fail("transA=1 is not supported".into()));
                }
            }
            let trans_b = gemm && attrs.int("transB", 0) != 0;
            attrs.finish(&[])?;
            if x.shape.rank() != 2 {
                return Err(fail(format!(
                    "input has shape {}; netc's dense layers take [N, features]",
                    x.shape
                )));
            }
            let w = float_const(im, 1, "weight")?;
            let [a, b] = w.shape()[..] else {
                return Err(fail(format!(
                    "weight has shape {}, expected a matrix",
                    w.shape_string()
                )));
            };
            let (in_features, out_features, layout) = if trans_b {
                (b, a, WeightLayout::OutIn)
            } else {
                (a, b, WeightLayout::InOut)
            };
            let bias = match input(2).filter(|_| gemm) {
                Some(_) => {
                    let t = float_const(im, 2, "bias")?;
                    if t.numel() != out_features
                        || t.shape().iter().filter(|&&d| d != 1).count() > 1
                    {
                        return Err(fail(format!(
                            "bias of shape {} does not broadcast as one value per output ({out_features})",
                            t.shape_string()
                        )));
                    }
                    Some(
                        t.reshape(vec![out_features])
                            .map_err(|e| fail(e.to_string()))?,
                    )
                }
                None => None,
            };
            let op = Op::Dense(Dense {
                in_features,
                out_features,
                bias: bias.is_some(),
                layout,
                epilogue: Vec::new(),
                algo: DenseAlgo::Unselected,
            });
            let wname = need(1)?;
            let mut keys = vec![("weight", im.param(&wname, w).map_err(&fail)?)];
            if let (Some(t), Some(bname)) = (bias, input(2)) {
                keys.push(("bias", im.param(&bname, t).map_err(&fail)?));
            }
            emit(im, op, &x, keys, Some(&wname))?;
        }
        "Mul"
            if [0, 1]
                .iter()
                .all(|&i| input(i).is_some_and(|n| im.values.contains_key(&n))) =>
        {
            attrs.finish(&[])?;
            // Two computed tensors: netc's `mul` broadcasts its second
            // operand, so a per-channel gate goes second.
            let (mut x, mut y) = (
                im.value(&need(0)?, &node_name, &op_type)?,
                im.value(&need(1)?, &node_name, &op_type)?,
            );
            if x.shape.numel() < y.shape.numel() {
                std::mem::swap(&mut x, &mut y);
            }
            let shape = infer(&Op::Mul, &[&x.shape, &y.shape], &node_name, &op_type)?;
            let var = im.fresh_var(&statement_base(node, &op_type, None));
            let _ = writeln!(im.body, "    {var} = mul({}, {})", x.var, y.var);
            im.values.insert(out, Value { var, shape });
        }
        "Mul" => {
            attrs.finish(&[])?;
            let (a, b) = (need(0)?, need(1)?);
            let (x, c) = match (
                im.values.get(&a),
                im.consts.get(&b),
                im.values.get(&b),
                im.consts.get(&a),
            ) {
                (Some(x), Some(Const::Float(c)), _, _) | (_, _, Some(x), Some(Const::Float(c))) => {
                    (x.clone(), c.clone())
                }
                _ => {
                    return Err(fail(
                        "only multiplication by a scalar constant is supported".into(),
                    ))
                }
            };
            if c.numel() != 1 {
                return Err(fail(format!(
                    "multiplier has shape {}; only scalars are supported",
                    c.shape_string()
                )));
            }
            emit(
                im,
                Op::Scale {
                    factor: c.data()[0],
                },
                &x,
                vec![],
                None,
            )?;
        }
        "Softmax" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let default = if im.opset >= 13 { -1 } else { 1 };
            let axis = attrs.int("axis", default);
            attrs.finish(&[])?;
            let rank = x.shape.rank() as i64;
            let axis = if axis < 0 { axis + rank } else { axis };
            if axis != 1 || (im.opset < 13 && rank != 2) {
                return Err(fail(format!("softmax over axis {axis} of a rank-{rank} tensor is not supported; netc's is over channels")));
            }
            emit(im, Op::Softmax, &x, vec![], None)?;
        }
        // Shape arithmetic on constants, as PyTorch's exporter writes
        // `F.interpolate(x, size=...)`: Concat(Slice(Shape(x), 0, 2), [h, w]).
        "Concat" if node.input.iter().all(|i| im.consts.contains_key(i)) => {
            if attrs.int("axis", 0) != 0 {
                return Err(fail("constants are concatenated along axis 0 only".into()));
            }
            attrs.finish(&[])?;
            let mut values: Vec<i64> = Vec::new();
            let mut batch = false;
            for (i, name) in node.input.iter().enumerate() {
                match im.consts.get(name) {
                    Some(Const::Int(v)) => values.extend(v),
                    Some(Const::Shape(d)) if i == 0 => {
                        batch = true;
                        values.extend(d.iter().map(|&d| d as i64));
                    }
                    Some(Const::Shape(_)) => {
                        return Err(fail(
                            "a batch-dependent size must come first in a concatenation".into(),
                        ))
                    }
                    Some(Const::Float(_)) | None => {
                        return Err(fail("only integer constants are concatenated".into()))
                    }
                }
            }
            let c = if batch {
                let dims = values
                    .iter()
                    .map(|&v| usize::try_from(v).ok())
                    .collect::<Option<Vec<_>>>();
                Const::Shape(dims.ok_or_else(|| fail("negative size in a shape".into()))?)
            } else {
                Const::Int(values)
            };
            im.consts.insert(out, c);
        }
        // Channels of a computed tensor (ShuffleNet's split).
        "Slice" if im.values.contains_key(&need(0)?) => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            attrs.finish(&[])?;
            let int = |i: usize| -> Option<Vec<i64>> {
                match im.consts.get(&input(i)?) {
                    Some(Const::Int(v)) => Some(v.clone()),
                    _ => None,
                }
            };
            let (starts, ends) = (int(1), int(2));
            let axes = int(3).unwrap_or_else(|| vec![0]);
            let steps = int(4).unwrap_or_else(|| vec![1]);
            let channels = x.shape.dims().get(1).copied().unwrap_or(0) as i64;
            let (Some([start]), Some([end]), [1], [1]) =
                (starts.as_deref(), ends.as_deref(), &axes[..], &steps[..])
            else {
                return Err(fail(
                    "only a slice of the channel axis with constant bounds and step 1 is supported"
                        .into(),
                ));
            };
            let clamp = |i: i64| (if i < 0 { i + channels } else { i }).clamp(0, channels) as usize;
            let (start, end) = (clamp(*start), clamp(*end));
            if start >= end {
                return Err(fail(format!("empty channel slice {start}..{end}")));
            }
            emit(
                im,
                Op::Slice {
                    start,
                    len: end - start,
                },
                &x,
                vec![],
                None,
            )?;
        }
        // A split of the channel axis: one `slice` per output.
        "Split" => {
            let x = im.value(&need(0)?, &node_name, &op_type)?;
            let axis = attrs.int("axis", 0);
            let listed = attrs.get("split").map(|a| a.ints.clone());
            attrs.finish(&["num_outputs"])?;
            let channels = x.shape.dims().get(1).copied().unwrap_or(0);
            if axis != 1 && axis != -3 {
                return Err(fail(format!(
                    "split along axis {axis}; netc splits channels only"
                )));
            }
            let parts = node.output.len();
            let sizes: Vec<usize> = match (listed, input(1)) {
                (Some(v), _) => v.iter().map(|&s| s.max(0) as usize).collect(),
                (None, Some(name)) => match im.consts.get(&name) {
                    Some(Const::Int(v)) => v.iter().map(|&s| s.max(0) as usize).collect(),
                    _ => return Err(fail("the split sizes must be a constant".into())),
                },
                (None, None) => vec![channels.div_ceil(parts.max(1)); parts],
            };
            if sizes.len() != parts || sizes.iter().sum::<usize>() != channels {
                return Err(fail(format!(
                    "split sizes {sizes:?} do not cover {channels} channels in {parts} outputs"
                )));
            }
            let mut start = 0;
            for (name, len) in node.output.iter().zip(sizes) {
                let op = Op::Slice { start, len };
                start += len;
                if name.is_empty() {
                    continue;
                }
                let shape = infer(&op, &[&x.shape], &node_name, &op_type)?;
                let var = im.fresh_var(name);
                let _ = writeln!(im.body, "    {var} = {} -> {}", x.var, layer_text(&op, &[]));
                im.values.insert(name.clone(), Value { var, shape });
            }
        }
        "Slice" => {
            let source = im.consts.get(&need(0)?).cloned().ok_or_else(|| {
                fail("netc imports Slice of constant shapes only, not of computed tensors".into())
            })?;
            attrs.finish(&[])?;
            let ints = |i: usize| -> Result<Option<Vec<i64>>, OnnxError> {
                match input(i) {
                    None => Ok(None),
                    Some(name) => match im.consts.get(&name) {
                        Some(Const::Int(v)) => Ok(Some(v.clone())),
                        _ => Err(fail(format!("input {i} must be an integer constant"))),
                    },
                }
            };
            let (starts, ends) = (ints(1)?, ints(2)?);
            let (axes, steps) = (ints(3)?, ints(4)?);
            let (values, batch): (Vec<i64>, bool) = match source {
                Const::Int(v) => (v, false),
                Const::Shape(d) => (d.iter().map(|&d| d as i64).collect(), true),
                Const::Float(_) => {
                    return Err(fail("netc slices integer constants only".into()));
                }
            };
            let one_axis = axes.as_deref().is_none_or(|a| a == [0] || a == [-1]);
            let unit_step = steps.as_deref().is_none_or(|s| s == [1]);
            let (Some([start]), Some([end]), true, true) =
                (starts.as_deref(), ends.as_deref(), one_axis, unit_step)
            else {
                return Err(fail(
                    "only a 1-D slice with step 1 of a constant is supported".into(),
                ));
            };
            let n = values.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + n } else { i }).clamp(0, n) as usize;
            let (lo, hi) = (clamp(*start), clamp(*end).max(clamp(*start)));
            let part = values[lo..hi].to_vec();
            let c = if batch && lo == 0 && hi > 0 {
                Const::Shape(part.iter().map(|&v| v as usize).collect())
            } else {
                Const::Int(part)
            };
            im.consts.insert(out, c);
        }
        "Add" | "Sum" | "Concat" => {
            let concat = op_type == "Concat";
            if concat {
                let axis = attrs.int("axis", 1);
                let rank = im.value(&need(0)?, &node_name, &op_type)?.shape.rank() as i64;
                if axis != 1 && axis + rank != 1 {
                    return Err(fail(format!("concatenation along axis {axis} is not supported; netc concatenates channels")));
                }
            }
            attrs.finish(&[])?;
            let mut xs = Vec::new();
            for i in 0..node.input.len() {
                xs.push(im.value(&need(i)?, &node_name, &op_type)?);
            }
            if xs.len() < 2 {
                if let Some(x) = xs.pop() {
                    im.values.insert(out, x);
                    return Ok(());
                }
                return Err(fail("no inputs".into()));
            }
            let op = if concat { Op::Concat } else { Op::Add };
            let shapes: Vec<&Shape> = xs.iter().map(|v| &v.shape).collect();
            let shape = infer(&op, &shapes, &node_name, &op_type)?;
            let var = im.fresh_var(&statement_base(node, &op_type, None));
            let args: Vec<&str> = xs.iter().map(|v| v.var.as_str()).collect();
            let _ = writeln!(im.body, "    {var} = {}({})", op.name(), args.join(", "));
            im.values.insert(out, Value { var, shape });
        }
        _ => {
            return Err(fail(format!(
                "unsupported op; netc imports {}",
                SUPPORTED.join(", ")
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Graph;
    use crate::onnx::{decode, export, Batch};
    use crate::weights::Weights;
    use netc_runtime::init::SplitMix64;
    use prost::Message;
    use std::path::Path;

    const SMALL: &str = "model small(x: [N, 4, 12, 10]) {
        a = x -> conv(6, [3, 2], pad: [1, 0, 2, 1], dilation: [1, 2]) -> leaky_relu(alpha: 0.2) as act
        b = x -> conv(6, 3, stride: 2, pad: 1, groups: 2, bias: false) as grouped
          -> batchnorm(eps: 0.001) as bn -> sigmoid
        c = x -> avgpool(2, ceil: true, count_include_pad: false) -> conv(6, 1) as pw -> tanh
        d = x -> maxpool([2, 3], stride: [2, 1], pad: [0, 1]) -> conv(6, [1, 3], stride: [1, 2], pad: [0, 1]) as wide
        s = add(b, c, d) -> scale(0.5)
        y = concat(s, d) -> global_avgpool -> flatten -> dense(7, layout: \"in_out\") as fc -> softmax
        return y
    }";

    fn exported(src: &str) -> ModelProto {
        let net = check::check_source("t.net", src, CheckOptions::default())
            .unwrap_or_else(|(s, d)| panic!("{}", d.render(&s)));
        let graph = Graph::from_network(&net);
        let weights = Weights::random(&graph, 1);
        export(&graph, &weights, Batch::Symbolic).unwrap()
    }

    fn import_err(model: &ModelProto) -> String {
        match import(model, "t") {
            Ok(i) => panic!("imported:\n{}", i.source),
            Err(e) => e.to_string(),
        }
    }

    fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
        m.graph.as_mut().unwrap()
    }

    #[test]
    fn every_exported_op_imports_with_its_attributes() {
        let imported = import(&exported(SMALL), "small").unwrap();
        for expected in [
            "conv(6, [3, 2], pad: [1, 0, 2, 1], dilation: [1, 2], weight: \"a.weight\"",
            "leaky_relu(alpha: 0.2)",
            "conv(6, 3, stride: 2, pad: 1, groups: 2, bias: false",
            "batchnorm(eps: 0.001, weight: \"bn.weight\"",
            "avgpool(2, ceil: true, count_include_pad: false)",
            "maxpool([2, 3], stride: [2, 1], pad: [0, 1])",
            "add(",
            "scale(0.5)",
            "concat(",
            "dense(7, layout: \"in_out\", weight: \"fc.weight\"",
            "-> softmax",
        ] {
            assert!(
                imported.source.contains(expected),
                "missing `{expected}` in\n{}",
                imported.source
            );
        }
        assert_eq!(imported.weights.len(), 13);
    }

    #[test]
    fn an_unsupported_op_names_the_node_and_the_op() {
        let mut m = exported(SMALL);
        let node = graph_mut(&mut m)
            .node
            .iter_mut()
            .find(|n| n.op_type.as_deref() == Some("Sigmoid"))
            .unwrap();
        node.op_type = Some("Einsum".into());
        let name = node.name.clone().unwrap();
        let e = import_err(&m);
        assert!(
            e.starts_with(&format!(
                "ONNX node `{name}` (Einsum): unsupported op; netc imports Conv, "
            )),
            "{e}"
        );
    }

    #[test]
    fn unknown_attributes_and_values_are_errors() {
        let mut m = exported(SMALL);
        let conv = graph_mut(&mut m)
            .node
            .iter_mut()
            .find(|n| n.op_type.as_deref() == Some("Conv"))
            .unwrap();
        conv.attribute.push(AttributeProto {
            name: Some("quantize".into()),
            i: Some(1),
            ..Default::default()
        });
        assert!(import_err(&m).ends_with("attribute `quantize` is not supported"));

        let mut m = exported(SMALL);
        let conv = graph_mut(&mut m)
            .node
            .iter_mut()
            .find(|n| n.op_type.as_deref() == Some("Conv"))
            .unwrap();
        let pads = conv
            .attribute
            .iter_mut()
            .find(|a| a.name.as_deref() == Some("pads"))
            .unwrap();
        pads.ints[0] = -3;
        assert!(import_err(&m).ends_with("`pads` value -3 is out of range"));

        let mut m = exported(SMALL);
        let gemm = graph_mut(&mut m)
            .node
            .iter_mut()
            .find(|n| n.op_type.as_deref() == Some("Gemm"))
            .unwrap();
        gemm.attribute.push(AttributeProto {
            name: Some("alpha".into()),
            f: Some(2.0),
            ..Default::default()
        });
        assert!(import_err(&m).ends_with("alpha and beta other than 1 are not supported"));
    }

    #[test]
    fn bad_tensors_are_errors() {
        let mut m = exported(SMALL);
        let t = &mut graph_mut(&mut m).initializer[0];
        let name = t.name.clone().unwrap();
        t.raw_data.as_mut().unwrap().truncate(8);
        let e = import_err(&m);
        assert!(
            e.starts_with(&format!(
                "initialiser `{name}` has 2 values (8 bytes), its shape"
            )),
            "{e}"
        );

        let mut m = exported(SMALL);
        let t = &mut graph_mut(&mut m).initializer[0];
        t.data_location = Some(1);
        assert!(import_err(&m).contains("keeps its data in an external file"));

        let mut m = exported(SMALL);
        graph_mut(&mut m).initializer[0].dims[0] = 1 << 40;
        assert!(import_err(&m).contains("has dimension 1099511627776"));

        let mut m = exported(SMALL);
        graph_mut(&mut m).initializer[0].data_type = Some(8);
        assert!(import_err(&m).contains("has data type 8"));
    }

    #[test]
    fn dangling_inputs_and_missing_graphs_are_errors() {
        let mut m = exported(SMALL);
        graph_mut(&mut m).node.remove(0);
        assert!(import_err(&m).contains("is not produced by any earlier node or graph input"));
        let mut m = exported(SMALL);
        m.graph = None;
        assert_eq!(import_err(&m), "the model has no graph");
        let e = decode(Path::new("x.onnx"), b"\x0a\xff\xff\xff\xff\x0f").unwrap_err();
        assert!(
            e.to_string().starts_with("x.onnx: not an ONNX model: "),
            "{e}"
        );
    }

    /// Flipped, truncated and spliced bytes of a valid model: decoding and
    /// importing answer with an error or a model, never a panic.
    #[test]
    fn mutated_files_never_panic() {
        let bytes = exported(SMALL).encode_to_vec();
        let mut rng = SplitMix64::new(3);
        for _ in 0..3000 {
            let mut b = bytes.clone();
            match rng.next_u64() % 3 {
                0 => {
                    for _ in 0..1 + rng.next_u64() % 8 {
                        let i = (rng.next_u64() as usize) % b.len();
                        b[i] = rng.next_u64() as u8;
                    }
                }
                1 => b.truncate((rng.next_u64() as usize) % b.len()),
                _ => {
                    let i = (rng.next_u64() as usize) % b.len();
                    let j = (rng.next_u64() as usize) % b.len();
                    b.splice(i..i, bytes[j..(j + 16).min(bytes.len())].iter().copied());
                }
            }
            if let Ok(m) = decode(Path::new("m.onnx"), &b) {
                let _ = import(&m, "m");
            }
        }
    }
}
