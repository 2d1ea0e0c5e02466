//! Code generation: the optimised, memory-planned graph becomes one native
//! function, emitted with Cranelift against the [`Module`] trait so the
//! same code serves the JIT ([`jit`]) and object files ([`object`]).
//!
//! The generated function is
//! `forward(inputs: *const *const f32, outputs: *const *mut f32,
//!  weights: *const f32, arena: *mut f32)`. Every shape, stride, arena
//! offset and weight offset is a constant in the code; there is no
//! per-op dispatch and no allocation at run time.
//!
//! The split between generated code and the runtime: generated code does
//! the graph's control flow and addressing and the loop nests of pooling,
//! elementwise ops, residual adds, batch norm, concat copies and output
//! copies. Convolutions and dense layers call `netc_rt_gemm` with a
//! constant descriptor: its packing and micro-kernels are Rust compiled by
//! LLVM with AVX-512/AVX2 intrinsics chosen at run time, because Cranelift
//! only offers 128-bit vectors and no loop optimisation, and those loops
//! are where 90% of the time goes.

mod emit;
pub mod jit;
pub mod object;

use crate::ir::graph::NodeKind;
use crate::ir::op::{ConvAlgo, DenseAlgo, Op, PoolKind, ResizeMode, Step, WeightLayout, Window};
use crate::ir::Graph;
use crate::plan::{MemoryPlan, TensorLoc};
use crate::select;
use crate::weights::Weights;
use cranelift_module::{FuncId, Module, ModuleError};
use netc_runtime::kernels::conv_transpose::ConvTransposeDesc;
use netc_runtime::kernels::desc::{self, GemmDesc};
use netc_runtime::kernels::pool::{self, PoolDesc};
use netc_runtime::kernels::resize::{self, ResizeDesc};
use netc_runtime::kernels::unpool::UnpoolDesc;
use netc_runtime::kernels::{gemv, micro, mvec, winograd};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("internal error: no kernel was selected for `{0}` (run `select`)")]
    Unselected(String),
    #[error("missing weight `{0}`")]
    MissingWeight(String),
    #[error("unsupported for code generation: {0}")]
    Unsupported(String),
    #[error("cranelift: {0}")]
    Module(#[from] Box<ModuleError>),
    #[error("cranelift: {0}")]
    Isa(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ModuleError> for CodegenError {
    fn from(e: ModuleError) -> Self {
        CodegenError::Module(Box::new(e))
    }
}

/// Floats of sentinel around the weight blob, the JIT's arena and the
/// buffers `JitModel::run` stages inputs and outputs in. A multiple of 16
/// so what follows stays 64-byte aligned.
pub const GUARD_FLOATS: usize = 64;
/// A quiet NaN with a payload no computation produces: a stray write over
/// it is detected, a stray read of it poisons the outputs.
pub const SENTINEL: u32 = 0x7fc0_5eed;

/// `data` between two guard regions.
pub fn guarded(data: &[f32]) -> Vec<f32> {
    let mut v = Vec::with_capacity(data.len() + 2 * GUARD_FLOATS);
    v.resize(GUARD_FLOATS, f32::from_bits(SENTINEL));
    v.extend_from_slice(data);
    v.resize(data.len() + 2 * GUARD_FLOATS, f32::from_bits(SENTINEL));
    v
}

/// The first guard float of a [`guarded`] buffer that changed, if any.
pub fn changed_guard(buf: &[f32]) -> Option<usize> {
    let n = buf.len();
    (0..GUARD_FLOATS.min(n))
        .chain(n.saturating_sub(GUARD_FLOATS)..n)
        .find(|&i| buf[i].to_bits() != SENTINEL)
}

/// Where a node's constants sit in the packed weight blob.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeConsts {
    /// Packed matrix (conv/dense) or per-channel scale (batch norm).
    pub a: usize,
    /// Bias (conv/dense) or per-channel shift (batch norm); `None` if absent.
    pub b: Option<usize>,
    /// The descriptor of the runtime call the node makes, if any.
    pub call: Option<Descriptor>,
}

/// A runtime call's constant descriptor.
#[derive(Clone, Debug)]
pub(crate) enum Descriptor {
    Gemm(GemmDesc),
    Pool(PoolDesc),
    Unpool(UnpoolDesc),
    Resize(ResizeDesc),
    ConvTranspose(ConvTransposeDesc),
}

impl NodeConsts {
    /// The descriptor the runtime call reads, as bytes.
    pub(crate) fn descriptor(&self) -> Option<Vec<u8>> {
        self.call.as_ref().map(|c| match c {
            Descriptor::Gemm(d) => d.to_bytes(),
            Descriptor::Pool(d) => d.to_bytes(),
            Descriptor::Unpool(d) => d.to_bytes(),
            Descriptor::Resize(d) => d.to_bytes(),
            Descriptor::ConvTranspose(d) => d.to_bytes(),
        })
    }
}

/// A model ready to emit: the plan, the packed weights and per-node constants.
pub struct Lowered {
    pub name: String,
    pub graph: Graph,
    pub plan: MemoryPlan,
    /// Packed constants between guard regions; offsets count from the start.
    pub weights: Vec<f32>,
    pub(crate) consts: HashMap<NodeIndex, NodeConsts>,
    pub arena_floats: usize,
    pub input_shapes: Vec<Vec<usize>>,
    pub output_shapes: Vec<Vec<usize>>,
    /// Emit a `netc_rt_mark(i)` call after op `i` (plan order) for `netc bench`.
    pub profile: bool,
}

impl Lowered {
    pub(crate) fn loc(&self, n: NodeIndex) -> TensorLoc {
        self.plan.locs[&n]
    }

    /// Bytes of packed weights.
    pub fn weight_bytes(&self) -> usize {
        4 * self.weights.len()
    }
}

/// Pack weights and build descriptors for every node of `graph`, placed
/// by `plan`.
pub fn lower(graph: Graph, memory: MemoryPlan, weights: &Weights) -> Result<Lowered, CodegenError> {
    let plan = &memory;
    let mut blob = vec![f32::from_bits(SENTINEL); GUARD_FLOATS];
    let mut consts = HashMap::new();
    let tensor = |name: &str| {
        weights
            .get(name)
            .ok_or_else(|| CodegenError::MissingWeight(name.to_string()))
    };
    let param = |n: NodeIndex, role: &str| -> Result<Option<&netc_runtime::Tensor>, CodegenError> {
        match graph.g[n].param(role) {
            Some(p) => tensor(&p.name).map(Some),
            None => Ok(None),
        }
    };
    // Keep every constant 64-byte aligned for vector loads.
    let push = |blob: &mut Vec<f32>, data: &[f32]| -> usize {
        blob.resize(blob.len().div_ceil(16) * 16, 0.0);
        let at = blob.len();
        blob.extend_from_slice(data);
        at
    };
    for &n in &plan.order {
        let node = &graph.g[n];
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        let operands = graph.operands(n);
        match op {
            Op::Conv(c) => {
                let w = param(n, "weight")?
                    .ok_or_else(|| CodegenError::MissingWeight(format!("{}.weight", node.name)))?;
                let mut d = select::conv_desc(c, &graph.g[operands[0]].shape.0, &node.shape.0);
                let (m, k) = (d.m(), d.k());
                fill_strides(&mut d, &c.epilogue, &graph, plan, n, &operands)?;
                let packed = match c.algo {
                    ConvAlgo::Winograd(tile) => winograd::pack_weights(
                        select::runtime_tile(tile),
                        m,
                        c.in_channels,
                        w.data(),
                    ),
                    ConvAlgo::Mvec => mvec::pack_weights(m, k, |row, kk| w.data()[row * k + kk]),
                    // PyTorch's [out, in/g, kh, kw] is already rows of length K.
                    ConvAlgo::Gemm | ConvAlgo::Pointwise => {
                        micro::pack_weights(c.groups, m, k, |g, row, kk| {
                            w.data()[(g * m + row) * k + kk]
                        })
                    }
                    ConvAlgo::Unselected => {
                        return Err(CodegenError::Unselected(node.name.clone()))
                    }
                };
                let a = push(&mut blob, &packed);
                let b = param(n, "bias")?.map(|t| push(&mut blob, t.data()));
                d.has_bias = u32::from(b.is_some());
                consts.insert(
                    n,
                    NodeConsts {
                        a,
                        b,
                        call: Some(Descriptor::Gemm(d)),
                    },
                );
            }
            Op::Dense(dn) => {
                let w = param(n, "weight")?
                    .ok_or_else(|| CodegenError::MissingWeight(format!("{}.weight", node.name)))?;
                let mut d = GemmDesc {
                    kind: desc::KIND_DENSE,
                    batch: node.shape.0[0] as u32,
                    groups: 1,
                    in_c: dn.in_features as u32,
                    h: 1,
                    w: 1,
                    out_c: dn.out_features as u32,
                    oh: 1,
                    ow: 1,
                    kh: 1,
                    kw: 1,
                    sh: 1,
                    sw: 1,
                    dh: 1,
                    dw: 1,
                    ..GemmDesc::default()
                };
                let (m, k) = (dn.out_features, dn.in_features);
                let at = |row: usize, kk: usize| match dn.layout {
                    WeightLayout::OutIn => w.data()[row * k + kk],
                    WeightLayout::InOut => w.data()[kk * m + row],
                };
                let packed = match dn.algo {
                    DenseAlgo::Gemv => {
                        d.kind = desc::KIND_GEMV;
                        gemv::pack_weights(m, k, at)
                    }
                    DenseAlgo::Gemm => micro::pack_weights(1, m, k, |_, row, kk| at(row, kk)),
                    DenseAlgo::Unselected => {
                        return Err(CodegenError::Unselected(node.name.clone()))
                    }
                };
                let a = push(&mut blob, &packed);
                let b = param(n, "bias")?.map(|t| push(&mut blob, t.data()));
                select::set_steps(&mut d, &dn.epilogue);
                fill_strides(&mut d, &dn.epilogue, &graph, plan, n, &operands)?;
                d.has_bias = u32::from(b.is_some());
                consts.insert(
                    n,
                    NodeConsts {
                        a,
                        b,
                        call: Some(Descriptor::Gemm(d)),
                    },
                );
            }
            Op::BatchNorm { eps, .. } => {
                let get = |role: &str| {
                    param(n, role)?
                        .ok_or_else(|| CodegenError::MissingWeight(format!("{}.{role}", node.name)))
                };
                let (g, b, mean, var) = (
                    get("weight")?,
                    get("bias")?,
                    get("running_mean")?,
                    get("running_var")?,
                );
                let scale: Vec<f32> = g
                    .data()
                    .iter()
                    .zip(var.data())
                    .map(|(&g, &v)| (g as f64 / (v as f64 + *eps as f64).sqrt()) as f32)
                    .collect();
                let shift: Vec<f32> = (0..scale.len())
                    .map(|c| (b.data()[c] as f64 - mean.data()[c] as f64 * scale[c] as f64) as f32)
                    .collect();
                let a = push(&mut blob, &scale);
                let b = Some(push(&mut blob, &shift));
                consts.insert(
                    n,
                    NodeConsts {
                        a,
                        b,
                        ..NodeConsts::default()
                    },
                );
            }
            // An adaptive average pool whose cells all have the same size
            // (global pooling, or a size dividing the input) is a plain
            // average pool: the runtime's vectorised kernel, not scalar
            // generated loops (ResNet-50's global pool 0.25 ms).
            Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } => {
                let operands = graph.operands(n);
                let input = &graph.g[operands[0]].shape.0;
                let output = &node.shape.0;
                if !input[2].is_multiple_of(output[2]) || !input[3].is_multiple_of(output[3]) {
                    continue;
                }
                let cell = [input[2] / output[2], input[3] / output[3]];
                let window = Window {
                    kernel: cell,
                    stride: cell,
                    pad: [0; 4],
                    dilation: [1, 1],
                };
                let d = PoolDesc {
                    kind: pool::POOL_AVG,
                    ..pool_desc(
                        &window,
                        input,
                        output,
                        plan.locs[&operands[0]].batch_stride,
                        plan.locs[&n].batch_stride,
                    )
                };
                consts.insert(
                    n,
                    NodeConsts {
                        call: Some(Descriptor::Pool(d)),
                        ..NodeConsts::default()
                    },
                );
            }
            Op::Pool(p) => {
                let operands = graph.operands(n);
                let d = PoolDesc {
                    kind: match p.kind {
                        PoolKind::Max => pool::POOL_MAX,
                        PoolKind::Avg => pool::POOL_AVG,
                    },
                    count_include_pad: p.count_include_pad as u32,
                    ..pool_desc(
                        &p.window,
                        &graph.g[operands[0]].shape.0,
                        &node.shape.0,
                        plan.locs[&operands[0]].batch_stride,
                        plan.locs[&n].batch_stride,
                    )
                };
                consts.insert(
                    n,
                    NodeConsts {
                        call: Some(Descriptor::Pool(d)),
                        ..NodeConsts::default()
                    },
                );
            }
            // The pool's geometry over the source (the second operand);
            // the values are its pooled-size planes.
            Op::MaxUnpool { window, .. } => {
                let operands = graph.operands(n);
                let values = &graph.g[operands[0]].shape.0;
                let pool = pool_desc(
                    window,
                    &node.shape.0,
                    values,
                    plan.locs[&operands[1]].batch_stride,
                    plan.locs[&n].batch_stride,
                );
                let d = UnpoolDesc {
                    pool,
                    values_bstride: plan.locs[&operands[0]].batch_stride as u64,
                };
                consts.insert(
                    n,
                    NodeConsts {
                        call: Some(Descriptor::Unpool(d)),
                        ..NodeConsts::default()
                    },
                );
            }
            // The weights stay in PyTorch's layout: the kernel reads them
            // as they are.
            Op::ConvTranspose(ct) => {
                let w = param(n, "weight")?
                    .ok_or_else(|| CodegenError::MissingWeight(format!("{}.weight", node.name)))?;
                let a = push(&mut blob, w.data());
                let b = param(n, "bias")?.map(|t| push(&mut blob, t.data()));
                let input = &graph.g[operands[0]].shape.0;
                let output = &node.shape.0;
                let win = &ct.window;
                let d = ConvTransposeDesc {
                    batch: output[0] as u32,
                    groups: ct.groups as u32,
                    in_c: ct.in_channels as u32,
                    h: input[2] as u32,
                    w: input[3] as u32,
                    out_c: ct.out_channels as u32,
                    oh: output[2] as u32,
                    ow: output[3] as u32,
                    kh: win.kernel[0] as u32,
                    kw: win.kernel[1] as u32,
                    sh: win.stride[0] as u32,
                    sw: win.stride[1] as u32,
                    pt: win.pad[0] as u32,
                    pl: win.pad[1] as u32,
                    dh: win.dilation[0] as u32,
                    dw: win.dilation[1] as u32,
                    has_bias: u32::from(b.is_some()),
                    x_bstride: plan.locs[&operands[0]].batch_stride as u64,
                    out_bstride: plan.locs[&n].batch_stride as u64,
                };
                consts.insert(
                    n,
                    NodeConsts {
                        a,
                        b,
                        call: Some(Descriptor::ConvTranspose(d)),
                    },
                );
            }
            Op::Resize { mode, .. } => {
                let input = &graph.g[operands[0]].shape.0;
                let output = &node.shape.0;
                let (kind, align_corners) = match mode {
                    ResizeMode::Nearest => (resize::RESIZE_NEAREST, false),
                    ResizeMode::Bilinear { align_corners } => {
                        (resize::RESIZE_BILINEAR, *align_corners)
                    }
                };
                let d = ResizeDesc {
                    mode: kind,
                    align_corners: align_corners as u32,
                    batch: output[0] as u32,
                    channels: output[1] as u32,
                    h: input[2] as u32,
                    w: input[3] as u32,
                    oh: output[2] as u32,
                    ow: output[3] as u32,
                    x_bstride: plan.locs[&operands[0]].batch_stride as u64,
                    out_bstride: plan.locs[&n].batch_stride as u64,
                };
                consts.insert(
                    n,
                    NodeConsts {
                        call: Some(Descriptor::Resize(d)),
                        ..NodeConsts::default()
                    },
                );
            }
            // Emitted inline from the graph alone (emit.rs), or views.
            Op::Activation(_)
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Concat
            | Op::Add
            | Op::Mul
            | Op::Scale { .. }
            | Op::Slice { .. }
            | Op::ChannelShuffle { .. }
            | Op::Identity => {}
        }
    }
    let arena_floats = plan.arena_floats;
    let input_shapes = graph
        .inputs
        .iter()
        .map(|&i| graph.g[i].shape.0.clone())
        .collect();
    let output_shapes = graph
        .outputs
        .iter()
        .map(|&o| graph.g[o].shape.0.clone())
        .collect();
    blob.resize(blob.len() + GUARD_FLOATS, f32::from_bits(SENTINEL));
    Ok(Lowered {
        name: graph.name.clone(),
        graph,
        plan: memory,
        weights: blob,
        consts,
        arena_floats,
        input_shapes,
        output_shapes,
        profile: false,
    })
}

/// The batch strides of a conv/dense call's tensors, from the memory
/// plan; refuses epilogues longer than the descriptor holds.
/// A pooling window's descriptor between a source of shape `input` and
/// pooled planes of shape `output` (`kind` max, padding not counted).
fn pool_desc(
    w: &Window,
    input: &[usize],
    output: &[usize],
    x_bstride: usize,
    out_bstride: usize,
) -> PoolDesc {
    PoolDesc {
        kind: pool::POOL_MAX,
        count_include_pad: 0,
        batch: output[0] as u32,
        channels: output[1] as u32,
        h: input[2] as u32,
        w: input[3] as u32,
        oh: output[2] as u32,
        ow: output[3] as u32,
        kh: w.kernel[0] as u32,
        kw: w.kernel[1] as u32,
        sh: w.stride[0] as u32,
        sw: w.stride[1] as u32,
        dh: w.dilation[0] as u32,
        dw: w.dilation[1] as u32,
        pad: w.pad.map(|x| x as u32),
        x_bstride: x_bstride as u64,
        out_bstride: out_bstride as u64,
    }
}

fn fill_strides(
    d: &mut GemmDesc,
    steps: &[Step],
    graph: &Graph,
    plan: &MemoryPlan,
    n: NodeIndex,
    operands: &[NodeIndex],
) -> Result<(), CodegenError> {
    if steps.len() > desc::MAX_STEPS || operands.len() - 1 > desc::MAX_RESIDUALS {
        return Err(CodegenError::Unsupported(format!(
            "`{}` fuses {} epilogue steps and {} residuals (at most {} and {})",
            graph.g[n].name,
            steps.len(),
            operands.len() - 1,
            desc::MAX_STEPS,
            desc::MAX_RESIDUALS
        )));
    }
    d.x_bstride = plan.locs[&operands[0]].batch_stride as u64;
    d.out_bstride = plan.locs[&n].batch_stride as u64;
    for (i, r) in operands[1..].iter().enumerate() {
        d.res_bstride[i] = plan.locs[r].batch_stride as u64;
    }
    Ok(())
}

/// Emit the model's `forward` function into `module` under `name`.
pub fn emit<M: Module>(
    module: &mut M,
    lowered: &Lowered,
    name: &str,
    linkage: cranelift_module::Linkage,
) -> Result<FuncId, CodegenError> {
    emit::forward(module, lowered, name, linkage)
}
