//! The closed set of operations, with their shape rules, parameter tensors
//! and multiply-accumulate counts side by side.

use super::shape::Shape;
use serde::Serialize;
use std::fmt;
use thiserror::Error;

/// A shape rule an op's inputs violate.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ShapeError {
    #[error("{op} expects a {expected} input, found shape {found}")]
    Rank {
        op: &'static str,
        expected: &'static str,
        found: Shape,
    },
    #[error("{op} expects {expected} input channels, found {found}")]
    Channels {
        op: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{op} would produce an output {axis} of {size} (input {axis} {input}); it must be at least 1")]
    Empty {
        op: &'static str,
        axis: &'static str,
        size: i64,
        input: usize,
    },
    #[error("{op} inputs disagree: {first} vs {other}")]
    Mismatch {
        op: &'static str,
        first: Shape,
        other: Shape,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Activation {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    /// PyTorch's `Hardsigmoid`: `relu6(x + 3) / 6`.
    HardSigmoid,
    /// PyTorch's `Hardswish`: `x · relu6(x + 3) / 6`.
    HardSwish,
    /// `min(max(x, lo), hi)`; ReLU6 is `Clip(0, 6)`.
    Clip(f32, f32),
    /// PyTorch's `SiLU` (swish): `x · sigmoid(x)`.
    Silu,
}

impl Activation {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::HardSigmoid => hard_sigmoid(x),
            Activation::HardSwish => x * hard_sigmoid(x),
            Activation::Clip(lo, hi) => x.max(lo).min(hi),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu(_) => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::HardSigmoid => "hardsigmoid",
            Activation::HardSwish => "hardswish",
            Activation::Clip(..) => "clip",
            Activation::Silu => "silu",
        }
    }
}

/// `relu6(x + 3) / 6`, as PyTorch computes it.
fn hard_sigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// Spatial window geometry shared by convolution and pooling.
/// Pads are `[top, left, bottom, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
}

impl Window {
    /// Output extent along `axis` (0 = height, 1 = width).
    fn out_extent(&self, axis: usize, input: usize, ceil: bool) -> i64 {
        let padded = (input + self.pad[axis] + self.pad[axis + 2]) as i64;
        let span = (self.dilation[axis] * (self.kernel[axis] - 1) + 1) as i64;
        let stride = self.stride[axis] as i64;
        let room = padded - span;
        if room < 0 {
            return 0;
        }
        let mut out = if ceil {
            (room + stride - 1) / stride + 1
        } else {
            room / stride + 1
        };
        // PyTorch's rule: in ceil mode the last window must start inside the
        // input or its leading pad, never wholly in the trailing pad.
        if ceil && (out - 1) * stride >= input as i64 + self.pad[axis] as i64 {
            out -= 1;
        }
        out
    }

    fn output_hw(
        &self,
        op: &'static str,
        h: usize,
        w: usize,
        ceil: bool,
    ) -> Result<[usize; 2], ShapeError> {
        let oh = self.out_extent(0, h, ceil);
        let ow = self.out_extent(1, w, ceil);
        if oh < 1 {
            return Err(ShapeError::Empty {
                op,
                axis: "height",
                size: oh,
                input: h,
            });
        }
        if ow < 1 {
            return Err(ShapeError::Empty {
                op,
                axis: "width",
                size: ow,
                input: w,
            });
        }
        Ok([oh as usize, ow as usize])
    }
}

/// One step applied to a conv/dense result before it is stored, in order.
/// Epilogues are how fusion is expressed: the optimiser appends steps and
/// removes the nodes they replace.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Step {
    /// Add the node's next extra input (ports 1, 2, … in step order).
    Add,
    Act(Activation),
    /// Max-pool over 2×2 windows at stride 2: last, never with `Add`, on a
    /// conv whose output height and width are even. The node's shape is
    /// the pooled one.
    MaxPool2,
}

/// How a convolution is computed: chosen for the compile target by
/// [`crate::select`], the one place that decides, and only read by codegen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub enum ConvAlgo {
    /// Not chosen yet (the reference interpreter ignores this; codegen
    /// refuses it).
    #[default]
    Unselected,
    /// im2col and a packed GEMM. Inside it the runtime still picks, per
    /// call and by the running CPU, a direct stencil or phase-plane read
    /// of the input where the shape allows: those change no packed data.
    Gemm,
    /// A stride-1, unpadded, ungrouped 1×1 convolution: a plain matrix
    /// multiply over channels, no im2col.
    Pointwise,
    /// Winograd's minimal filtering, F(m×m, r×r).
    Winograd(WinogradTile),
    /// Output channels as vectors against shifted input rows (AVX-512
    /// targets: long reductions, few columns).
    Mvec,
}

/// The Winograd variants netc has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WinogradTile {
    /// F(2×2, 3×3).
    F2,
    /// F(4×4, 3×3).
    F4,
    /// F(2×2, 5×5).
    F2K5,
}

/// How a dense layer is computed (see [`ConvAlgo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub enum DenseAlgo {
    #[default]
    Unselected,
    /// A packed GEMM over the batch.
    Gemm,
    /// Matrix-vector products streaming the weights once (small batches).
    Gemv,
}

impl ConvAlgo {
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Unselected => "unselected",
            ConvAlgo::Gemm => "gemm",
            ConvAlgo::Pointwise => "pointwise",
            ConvAlgo::Winograd(WinogradTile::F2) => "winograd-f2",
            ConvAlgo::Winograd(WinogradTile::F4) => "winograd-f4",
            ConvAlgo::Winograd(WinogradTile::F2K5) => "winograd-f2k5",
            ConvAlgo::Mvec => "mvec",
        }
    }
}

impl DenseAlgo {
    pub fn name(self) -> &'static str {
        match self {
            DenseAlgo::Unselected => "unselected",
            DenseAlgo::Gemm => "gemm",
            DenseAlgo::Gemv => "gemv",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conv {
    pub in_channels: usize,
    pub out_channels: usize,
    pub window: Window,
    pub groups: usize,
    pub bias: bool,
    pub epilogue: Vec<Step>,
    pub algo: ConvAlgo,
}

impl Conv {
    /// Whether the epilogue ends in [`Step::MaxPool2`].
    pub fn pooled(&self) -> bool {
        self.epilogue.last() == Some(&Step::MaxPool2)
    }

    /// A stride-1, unpadded, ungrouped 1×1 convolution: a matrix multiply.
    pub fn is_pointwise(&self) -> bool {
        self.window.kernel == [1, 1]
            && self.window.stride == [1, 1]
            && self.window.pad == [0; 4]
            && self.groups == 1
    }
}

/// Number of extra (residual) inputs an epilogue reads.
pub fn residual_inputs(epilogue: &[Step]) -> usize {
    epilogue.iter().filter(|s| matches!(s, Step::Add)).count()
}

fn describe_epilogue(epilogue: &[Step]) -> String {
    epilogue
        .iter()
        .map(|s| match s {
            Step::Add => "+add".to_string(),
            Step::Act(a) => format!("+{}", a.name()),
            Step::MaxPool2 => "+maxpool".to_string(),
        })
        .collect()
}

/// PyTorch's `ConvTranspose2d`: each input scatters the kernel over the
/// output at `stride`; `window.pad` is cropped from the output's border
/// and `output_padding` added to its bottom and right.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvTranspose {
    pub in_channels: usize,
    pub out_channels: usize,
    pub window: Window,
    pub output_padding: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

impl ConvTranspose {
    /// Output extent along `axis` for an input extent `input`:
    /// `(input − 1)·stride − pads + dilation·(kernel − 1) + output_padding + 1`.
    pub fn out_extent(&self, axis: usize, input: usize) -> i64 {
        let w = &self.window;
        (input as i64 - 1) * w.stride[axis] as i64 - (w.pad[axis] + w.pad[axis + 2]) as i64
            + (w.dilation[axis] * (w.kernel[axis] - 1)) as i64
            + self.output_padding[axis] as i64
            + 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    pub ceil: bool,
    /// Average pooling only: divide by the full window including padding.
    pub count_include_pad: bool,
}

/// How `resize` samples its input (PyTorch's `F.interpolate` modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ResizeMode {
    /// `mode="nearest"`: source index `⌊o · in / out⌋`.
    Nearest,
    /// `mode="bilinear"`, with or without `align_corners`.
    Bilinear { align_corners: bool },
}

/// How a dense layer's weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WeightLayout {
    /// `out × in`, as PyTorch stores `nn.Linear`.
    OutIn,
    /// `in × out`, as NumPy code (`x @ W`) stores it.
    InOut,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dense {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub layout: WeightLayout,
    pub epilogue: Vec<Step>,
    pub algo: DenseAlgo,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Op {
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    BatchNorm {
        channels: usize,
        eps: f32,
    },
    Activation(Activation),
    Pool(Pool),
    GlobalAvgPool,
    /// PyTorch's `AdaptiveAvgPool2d` to a fixed output size.
    AdaptiveAvgPool {
        output: [usize; 2],
    },
    Dense(Dense),
    Flatten,
    /// Inference-time dropout: multiply by `scale` (1 for inverted dropout).
    Dropout {
        ratio: f32,
        scale: f32,
    },
    /// Softmax over the channel axis.
    Softmax,
    /// Concatenate along the channel axis.
    Concat,
    /// Elementwise sum of all inputs.
    Add,
    /// Every plane resized to `size` (height, width).
    Resize {
        size: [usize; 2],
        mode: ResizeMode,
    },
    /// Elementwise product of two inputs; the second may also be one value
    /// per (item, channel), `[N, C, 1, 1]`, broadcast over the plane
    /// (squeeze-and-excitation's gate).
    Mul,
    /// PyTorch's `MaxUnpool2d`: the first operand's values placed, in a
    /// zeroed tensor the shape of the second, at the positions where the
    /// max pool `window` over the second operand found its maxima (the
    /// first maximum in scan order; a later window overwrites an earlier
    /// one at the same position). The second operand is the pool's *input*:
    /// the winning positions are found again instead of being stored.
    MaxUnpool {
        window: Window,
        ceil: bool,
    },
    /// Multiply by a constant.
    Scale {
        factor: f32,
    },
    /// ShuffleNet's channel shuffle: the channels viewed as `groups` ×
    /// `C / groups`, transposed. Output channel `j·groups + g` is input
    /// channel `g·(C / groups) + j`.
    ChannelShuffle {
        groups: usize,
    },
    /// Channels `start .. start + len` of the input (a view, no copy).
    Slice {
        start: usize,
        len: usize,
    },
    Identity,
}

/// How an op's output relates to its operands' memory: what the memory
/// planner, the planned interpreter, codegen and the profiler ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Aliases its operand: no code runs (`slice`, `flatten`, `identity`).
    View,
    /// One value out per value in: may overwrite its operand when nothing
    /// reads the operand afterwards.
    Elementwise,
    /// Writes a buffer of its own (which concat elimination and residual
    /// overwriting may still place).
    Fresh,
}

/// Receptive field of one output position on the network input, per axis
/// (h, w): its size, and the input distance between adjacent outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReceptiveField {
    pub size: [u64; 2],
    pub jump: [u64; 2],
}

impl ReceptiveField {
    /// After a window of `kernel` taps at `stride` and `dilation`.
    fn grow(self, kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> Self {
        let mut out = self;
        for a in 0..2 {
            out.size[a] = self.size[a] + (kernel[a] as u64 - 1) * dilation[a] as u64 * self.jump[a];
            out.jump[a] = self.jump[a] * stride[a] as u64;
        }
        out
    }
}

/// Whether a parameter tensor is trained or a running statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ParamKind {
    Learnable,
    Buffer,
}

/// A parameter tensor an op needs, by role (`weight`, `bias`, ...).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    pub role: &'static str,
    pub shape: Shape,
    pub kind: ParamKind,
}

impl Op {
    /// Short kind name, as written in `.net` files.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::ConvTranspose(_) => "conv_transpose",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Activation(a) => a.name(),
            Op::Pool(p) if p.kind == PoolKind::Max => "maxpool",
            Op::Pool(_) => "avgpool",
            Op::GlobalAvgPool => "global_avgpool",
            Op::AdaptiveAvgPool { .. } => "adaptive_avgpool",
            Op::Dense(_) => "dense",
            Op::Flatten => "flatten",
            Op::Dropout { .. } => "dropout",
            Op::Softmax => "softmax",
            Op::Concat => "concat",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::MaxUnpool { .. } => "maxunpool",
            Op::ChannelShuffle { .. } => "channel_shuffle",
            Op::Resize { .. } => "resize",
            Op::Scale { .. } => "scale",
            Op::Slice { .. } => "slice",
            Op::Identity => "identity",
        }
    }

    /// A one-line description with the attributes that matter.
    pub fn describe(&self) -> String {
        match self {
            Op::Conv(c) => {
                let w = &c.window;
                let mut s = format!("conv {}x{}", w.kernel[0], w.kernel[1]);
                if w.stride != [1, 1] {
                    s += &format!(" /{}", w.stride[0]);
                }
                if c.groups != 1 {
                    s += &format!(" g{}", c.groups);
                }
                if w.dilation != [1, 1] {
                    s += &format!(" d{}", w.dilation[0]);
                }
                s += &describe_epilogue(&c.epilogue);
                if c.algo != ConvAlgo::Unselected {
                    s += &format!(" [{}]", c.algo.name());
                }
                s
            }
            Op::ConvTranspose(c) => {
                let w = &c.window;
                let mut s = format!(
                    "conv_transpose {}x{} *{}",
                    w.kernel[0], w.kernel[1], w.stride[0]
                );
                if c.groups != 1 {
                    s += &format!(" g{}", c.groups);
                }
                s
            }
            Op::Pool(p) => format!(
                "{} {}x{} /{}{}",
                self.name(),
                p.window.kernel[0],
                p.window.kernel[1],
                p.window.stride[0],
                if p.ceil { " ceil" } else { "" }
            ),
            Op::Dense(d) => {
                let mut s = format!(
                    "dense {}→{}{}",
                    d.in_features,
                    d.out_features,
                    describe_epilogue(&d.epilogue)
                );
                if d.algo != DenseAlgo::Unselected {
                    s += &format!(" [{}]", d.algo.name());
                }
                s
            }
            Op::MaxUnpool { window, .. } => format!(
                "maxunpool {}x{} /{}",
                window.kernel[0], window.kernel[1], window.stride[0]
            ),
            Op::Slice { start, len } => format!("slice {start}..{}", start + len),
            Op::ChannelShuffle { groups } => format!("channel_shuffle {groups}"),
            Op::Resize { size, mode } => format!(
                "resize {}x{} {}",
                size[0],
                size[1],
                match mode {
                    ResizeMode::Nearest => "nearest",
                    ResizeMode::Bilinear {
                        align_corners: false,
                    } => "bilinear",
                    ResizeMode::Bilinear {
                        align_corners: true,
                    } => "bilinear align_corners",
                }
            ),
            Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Concat
            | Op::Add
            | Op::Mul
            | Op::Scale { .. }
            | Op::Identity => self.name().to_string(),
        }
    }

    /// The fused steps applied as the result is stored (conv and dense;
    /// empty for every other op).
    pub fn epilogue(&self) -> &[Step] {
        match self {
            Op::Conv(c) => &c.epilogue,
            Op::Dense(d) => &d.epilogue,
            Op::ConvTranspose(_)
            | Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Concat
            | Op::Add
            | Op::Mul
            | Op::MaxUnpool { .. }
            | Op::ChannelShuffle { .. }
            | Op::Resize { .. }
            | Op::Scale { .. }
            | Op::Slice { .. }
            | Op::Identity => &[],
        }
    }

    /// How the output relates to the operands' memory.
    pub fn memory(&self) -> Memory {
        match self {
            Op::Slice { .. } | Op::Flatten | Op::Identity => Memory::View,
            Op::Activation(_) | Op::Scale { .. } | Op::Dropout { .. } | Op::BatchNorm { .. } => {
                Memory::Elementwise
            }
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Dense(_)
            | Op::Softmax
            | Op::Concat
            | Op::Add
            | Op::Mul
            | Op::MaxUnpool { .. }
            | Op::ChannelShuffle { .. }
            | Op::Resize { .. } => Memory::Fresh,
        }
    }

    /// Whether this op runs code (views do not).
    pub fn computes(&self) -> bool {
        self.memory() != Memory::View
    }

    /// The receptive field of the output given the operands' (`None` once
    /// spatial structure is gone); `input` is the first operand's shape.
    pub fn receptive_field(
        &self,
        operands: &[Option<ReceptiveField>],
        input: &Shape,
    ) -> Option<ReceptiveField> {
        let first = (*operands.first()?)?;
        match self {
            Op::Conv(c) => Some(first.grow(c.window.kernel, c.window.stride, c.window.dilation)),
            // An output reads ⌈k·d / s⌉ inputs per axis, its neighbours
            // are 1/s of an input apart (kept whole, as for `resize`).
            Op::ConvTranspose(c) => {
                let w = &c.window;
                let mut rf = first;
                for a in 0..2 {
                    let taps = (w.dilation[a] * (w.kernel[a] - 1) + 1).div_ceil(w.stride[a]) as u64;
                    rf.size[a] = first.size[a] + taps.saturating_sub(1) * first.jump[a];
                    rf.jump[a] = (first.jump[a] / w.stride[a] as u64).max(1);
                }
                Some(rf)
            }
            Op::Pool(p) => Some(first.grow(p.window.kernel, p.window.stride, p.window.dilation)),
            // One window over the whole plane.
            Op::GlobalAvgPool => {
                let k = [*input.0.get(2)?, *input.0.get(3)?];
                Some(first.grow(k, k, [1, 1]))
            }
            // The largest cell.
            Op::AdaptiveAvgPool { output } => {
                let (h, w) = (*input.0.get(2)?, *input.0.get(3)?);
                let k = [h.div_ceil(output[0]), w.div_ceil(output[1])];
                Some(first.grow(k, k, [1, 1]))
            }
            // Each output reads one input (nearest) or two neighbours
            // (bilinear) per axis; the jump scales by in/out, kept whole
            // (an upsampled map's outputs are closer than an input apart).
            Op::Resize { size, mode } => {
                let mut rf = first;
                for (a, &out) in size.iter().enumerate() {
                    let input = *input.0.get(2 + a)? as u64;
                    if matches!(mode, ResizeMode::Bilinear { .. }) {
                        rf.size[a] += first.jump[a];
                    }
                    rf.jump[a] = (first.jump[a] * input / out as u64).max(1);
                }
                Some(rf)
            }
            Op::Flatten | Op::Dense(_) => None,
            // Outputs sit at the source's positions (the second operand, the
            // pool's input); each holds a value whose field is the first
            // operand's.
            Op::MaxUnpool { .. } => {
                let source = (*operands.get(1)?)?;
                Some(ReceptiveField {
                    size: [
                        first.size[0].max(source.size[0]),
                        first.size[1].max(source.size[1]),
                    ],
                    jump: source.jump,
                })
            }
            // A gate (`[N, C, 1, 1]`, after a global pool) sees the whole
            // plane; the product's outputs are still the first operand's
            // positions, so its jump is kept (a pooled gate's jump is the
            // plane's size, meaningless here).
            Op::Mul => operands[1..].iter().try_fold(first, |acc, rf| {
                let rf = (*rf)?;
                Some(ReceptiveField {
                    size: [acc.size[0].max(rf.size[0]), acc.size[1].max(rf.size[1])],
                    jump: acc.jump,
                })
            }),
            Op::Concat | Op::Add => operands[1..].iter().try_fold(first, |acc, rf| {
                let rf = (*rf)?;
                Some(ReceptiveField {
                    size: [acc.size[0].max(rf.size[0]), acc.size[1].max(rf.size[1])],
                    jump: [acc.jump[0].max(rf.jump[0]), acc.jump[1].max(rf.jump[1])],
                })
            }),
            Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Scale { .. }
            | Op::Slice { .. }
            | Op::ChannelShuffle { .. }
            | Op::Identity => Some(first),
        }
    }

    /// The parameter tensors this op reads, in definition order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let learn = |role, shape: Vec<usize>| ParamSpec {
            role,
            shape: Shape(shape),
            kind: ParamKind::Learnable,
        };
        match self {
            Op::Conv(c) => {
                let k = c.window.kernel;
                let mut v = vec![learn(
                    "weight",
                    vec![c.out_channels, c.in_channels / c.groups, k[0], k[1]],
                )];
                if c.bias {
                    v.push(learn("bias", vec![c.out_channels]));
                }
                v
            }
            Op::ConvTranspose(c) => {
                let k = c.window.kernel;
                let mut v = vec![learn(
                    "weight",
                    vec![c.in_channels, c.out_channels / c.groups, k[0], k[1]],
                )];
                if c.bias {
                    v.push(learn("bias", vec![c.out_channels]));
                }
                v
            }
            Op::BatchNorm { channels, .. } => {
                let c = *channels;
                let buffer = |role| ParamSpec {
                    role,
                    shape: Shape(vec![c]),
                    kind: ParamKind::Buffer,
                };
                vec![
                    learn("weight", vec![c]),
                    learn("bias", vec![c]),
                    buffer("running_mean"),
                    buffer("running_var"),
                ]
            }
            Op::Dense(d) => {
                let shape = match d.layout {
                    WeightLayout::OutIn => vec![d.out_features, d.in_features],
                    WeightLayout::InOut => vec![d.in_features, d.out_features],
                };
                let mut v = vec![learn("weight", shape)];
                if d.bias {
                    v.push(learn("bias", vec![d.out_features]));
                }
                v
            }
            Op::Activation(_)
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Concat
            | Op::Add
            | Op::Mul
            | Op::MaxUnpool { .. }
            | Op::ChannelShuffle { .. }
            | Op::Resize { .. }
            | Op::Scale { .. }
            | Op::Slice { .. }
            | Op::Identity => Vec::new(),
        }
    }

    /// Infer the output shape from the input shapes.
    pub fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let name = self.name();
        let first = inputs
            .first()
            .ok_or_else(|| ShapeError::Invalid(format!("{name} needs an input")))?;
        let nchw = |s: &Shape| -> Result<[usize; 4], ShapeError> {
            match s.0[..] {
                [n, c, h, w] => Ok([n, c, h, w]),
                _ => Err(ShapeError::Rank {
                    op: name,
                    expected: "rank-4 (NCHW)",
                    found: s.clone(),
                }),
            }
        };
        match self {
            Op::Conv(c) => {
                let [n, ch, h, w] = nchw(first)?;
                if ch != c.in_channels {
                    return Err(ShapeError::Channels {
                        op: name,
                        expected: c.in_channels,
                        found: ch,
                    });
                }
                let [oh, ow] = c.window.output_hw(name, h, w, false)?;
                let out = Shape(vec![n, c.out_channels, oh, ow]);
                check_residuals(name, &c.epilogue, inputs, &out)?;
                if !c.pooled() {
                    return Ok(out);
                }
                let misplaced = c.epilogue[..c.epilogue.len() - 1].contains(&Step::MaxPool2);
                if misplaced
                    || residual_inputs(&c.epilogue) > 0
                    || !oh.is_multiple_of(2)
                    || !ow.is_multiple_of(2)
                {
                    return Err(ShapeError::Invalid(format!(
                        "{name} pools a {oh}×{ow} output: the fused 2×2 max pool needs even sides, comes last and excludes residual adds"
                    )));
                }
                Ok(Shape(vec![n, c.out_channels, oh / 2, ow / 2]))
            }
            Op::ConvTranspose(c) => {
                let [n, ch, h, w] = nchw(first)?;
                if ch != c.in_channels {
                    return Err(ShapeError::Channels {
                        op: name,
                        expected: c.in_channels,
                        found: ch,
                    });
                }
                let (oh, ow) = (c.out_extent(0, h), c.out_extent(1, w));
                for (axis, size, input) in [("height", oh, h), ("width", ow, w)] {
                    if size < 1 {
                        return Err(ShapeError::Empty {
                            op: name,
                            axis,
                            size,
                            input,
                        });
                    }
                }
                Ok(Shape(vec![n, c.out_channels, oh as usize, ow as usize]))
            }
            Op::Pool(p) => {
                let [n, ch, h, w] = nchw(first)?;
                let [oh, ow] = p.window.output_hw(name, h, w, p.ceil)?;
                Ok(Shape(vec![n, ch, oh, ow]))
            }
            Op::GlobalAvgPool => {
                let [n, ch, _, _] = nchw(first)?;
                Ok(Shape(vec![n, ch, 1, 1]))
            }
            Op::Resize { size, .. } => {
                let [n, ch, _, _] = nchw(first)?;
                if size.contains(&0) {
                    return Err(ShapeError::Invalid(format!(
                        "resize to {}x{}: sizes must be at least 1",
                        size[0], size[1]
                    )));
                }
                Ok(Shape(vec![n, ch, size[0], size[1]]))
            }
            Op::AdaptiveAvgPool { output } => {
                let [n, ch, _, _] = nchw(first)?;
                Ok(Shape(vec![n, ch, output[0], output[1]]))
            }
            Op::BatchNorm { channels, .. } => {
                if first.rank() < 2 || first.0[1] != *channels {
                    return Err(ShapeError::Channels {
                        op: name,
                        expected: *channels,
                        found: first.0.get(1).copied().unwrap_or(0),
                    });
                }
                Ok((*first).clone())
            }
            Op::Dense(d) => {
                if first.rank() != 2 {
                    return Err(ShapeError::Rank {
                        op: name,
                        expected: "rank-2 (flattened)",
                        found: (*first).clone(),
                    });
                }
                if first.0[1] != d.in_features {
                    return Err(ShapeError::Channels {
                        op: name,
                        expected: d.in_features,
                        found: first.0[1],
                    });
                }
                let out = Shape(vec![first.0[0], d.out_features]);
                check_residuals(name, &d.epilogue, inputs, &out)?;
                Ok(out)
            }
            Op::Slice { start, len } => {
                let end = start
                    .checked_add(*len)
                    .filter(|&e| *len > 0 && first.rank() >= 2 && e <= first.0[1]);
                if end.is_none() {
                    return Err(ShapeError::Invalid(format!(
                        "slice {start}..{} out of range for shape {first}",
                        start.saturating_add(*len)
                    )));
                }
                let mut out = (*first).clone();
                out.0[1] = *len;
                Ok(out)
            }
            Op::Flatten => {
                let rest = first.0[1..]
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d));
                let rest =
                    rest.ok_or_else(|| ShapeError::Invalid("flatten: size overflows".into()))?;
                Ok(Shape(vec![first.0[0], rest]))
            }
            Op::Softmax => {
                if first.rank() < 2 {
                    return Err(ShapeError::Rank {
                        op: name,
                        expected: "rank-2 or higher",
                        found: (*first).clone(),
                    });
                }
                Ok((*first).clone())
            }
            Op::Concat => {
                let r = first.rank();
                if r < 2 {
                    return Err(ShapeError::Rank {
                        op: name,
                        expected: "rank-2 or higher",
                        found: (*first).clone(),
                    });
                }
                let mut out = (*first).clone();
                for s in &inputs[1..] {
                    let same_rest =
                        s.rank() == r && s.0[0] == first.0[0] && s.0[2..] == first.0[2..];
                    if !same_rest {
                        return Err(ShapeError::Mismatch {
                            op: name,
                            first: (*first).clone(),
                            other: (*s).clone(),
                        });
                    }
                    out.0[1] += s.0[1];
                }
                Ok(out)
            }
            Op::Add => {
                for s in &inputs[1..] {
                    if *s != *first {
                        return Err(ShapeError::Mismatch {
                            op: name,
                            first: (*first).clone(),
                            other: (*s).clone(),
                        });
                    }
                }
                Ok((*first).clone())
            }
            Op::Mul => {
                let [_, second] = inputs else {
                    return Err(ShapeError::Invalid(format!(
                        "mul takes two tensors, found {}",
                        inputs.len()
                    )));
                };
                let gate = first.rank() == 4 && second.0 == [first.0[0], first.0[1], 1, 1];
                if **second != **first && !gate {
                    return Err(ShapeError::Mismatch {
                        op: name,
                        first: (*first).clone(),
                        other: (*second).clone(),
                    });
                }
                Ok((*first).clone())
            }
            Op::MaxUnpool { window, ceil } => {
                let [_, source] = inputs else {
                    return Err(ShapeError::Invalid(format!(
                        "maxunpool takes two tensors, found {}",
                        inputs.len()
                    )));
                };
                let [n, ch, h, w] = nchw(source)?;
                let [oh, ow] = window.output_hw(name, h, w, *ceil)?;
                let pooled = Shape(vec![n, ch, oh, ow]);
                if **first != pooled {
                    return Err(ShapeError::Invalid(format!(
                        "maxunpool: the values are {first} but the pool they undo gave {pooled}"
                    )));
                }
                Ok((*source).clone())
            }
            Op::ChannelShuffle { groups } => {
                let [_, ch, _, _] = nchw(first)?;
                if *groups == 0 || !ch.is_multiple_of(*groups) {
                    return Err(ShapeError::Invalid(format!(
                        "channel_shuffle: {groups} groups do not divide {ch} channels"
                    )));
                }
                Ok((*first).clone())
            }
            Op::Activation(_) | Op::Dropout { .. } | Op::Scale { .. } | Op::Identity => {
                Ok((*first).clone())
            }
        }
    }

    /// Multiply-accumulates for one run producing `output`.
    pub fn macs(&self, output: &Shape) -> u64 {
        let out = output.numel() as u64;
        match self {
            Op::Conv(c) => {
                let k = c.window.kernel;
                // A pooled conv computes four outputs per stored one.
                let computed = if c.pooled() { 4 * out } else { out };
                computed * (c.in_channels / c.groups * k[0] * k[1]) as u64
            }
            Op::Dense(d) => out * d.in_features as u64,
            // Every output reads about k²/s² inputs of each channel of its
            // group: counted as PyTorch's profilers do, per input element.
            Op::ConvTranspose(c) => {
                let k = c.window.kernel;
                let inputs = out / (c.out_channels as u64).max(1) * c.in_channels as u64;
                let per_input = (c.out_channels / c.groups * k[0] * k[1]) as u64;
                let stride = (c.window.stride[0] * c.window.stride[1]) as u64;
                inputs * per_input / stride.max(1)
            }
            Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Concat
            | Op::Add
            | Op::Mul
            | Op::MaxUnpool { .. }
            | Op::ChannelShuffle { .. }
            | Op::Resize { .. }
            | Op::Scale { .. }
            | Op::Slice { .. }
            | Op::Identity => 0,
        }
    }
}

/// The inputs after the first must match the residual adds of the epilogue.
fn check_residuals(
    op: &'static str,
    epilogue: &[Step],
    inputs: &[&Shape],
    out: &Shape,
) -> Result<(), ShapeError> {
    let expected = residual_inputs(epilogue);
    if inputs.len() != 1 + expected {
        return Err(ShapeError::Invalid(format!(
            "{op} with {expected} fused residual add(s) needs {} inputs, found {}",
            1 + expected,
            inputs.len()
        )));
    }
    for s in &inputs[1..] {
        if *s != out {
            return Err(ShapeError::Mismatch {
                op,
                first: out.clone(),
                other: (*s).clone(),
            });
        }
    }
    Ok(())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(k: usize, s: usize, p: usize) -> Window {
        Window {
            kernel: [k, k],
            stride: [s, s],
            pad: [p; 4],
            dilation: [1, 1],
        }
    }

    /// `maxunpool` returns to the pool's input size (45 from 22, which
    /// twice the pooled size would miss) and refuses values of another
    /// shape.
    #[test]
    fn maxunpool_restores_the_pools_input_shape() {
        let op = Op::MaxUnpool {
            window: window(2, 2, 0),
            ceil: false,
        };
        let source = Shape(vec![1, 8, 45, 60]);
        let pooled = Shape(vec![1, 8, 22, 30]);
        assert_eq!(op.infer(&[&pooled, &source]).unwrap(), source);
        assert!(op.infer(&[&source, &source]).is_err());
        assert!(op.infer(&[&pooled]).is_err());
    }

    #[test]
    fn ceil_mode_drops_window_starting_in_trailing_pad() {
        // GoogLeNet: 112 -> maxpool 3/2 ceil -> 56; 14 -> 2/2 ceil -> 7.
        let p = |k, s, input| {
            Op::Pool(Pool {
                kind: PoolKind::Max,
                window: window(k, s, 0),
                ceil: true,
                count_include_pad: true,
            })
            .infer(&[&Shape(vec![1, 1, input, input])])
            .unwrap()
            .0[2]
        };
        assert_eq!(p(3, 2, 112), 56);
        assert_eq!(p(2, 2, 14), 7);
        assert_eq!(p(3, 2, 28), 14);
        // 5 wide, k=2 s=2: floor gives 2, ceil gives 3.
        assert_eq!(p(2, 2, 5), 3);
    }

    #[test]
    fn conv_shape_and_errors() {
        let conv = Op::Conv(Conv {
            in_channels: 3,
            out_channels: 64,
            window: window(7, 2, 3),
            groups: 1,
            bias: false,
            epilogue: Vec::new(),
            algo: ConvAlgo::Unselected,
        });
        let s = conv.infer(&[&Shape(vec![2, 3, 224, 224])]).unwrap();
        assert_eq!(s.0, vec![2, 64, 112, 112]);
        assert_eq!(conv.macs(&Shape(vec![1, 64, 112, 112])), 118_013_952);
        assert!(matches!(
            conv.infer(&[&Shape(vec![1, 4, 224, 224])]),
            Err(ShapeError::Channels {
                expected: 3,
                found: 4,
                ..
            })
        ));
        let Op::Conv(mut unpadded) = conv else {
            unreachable!()
        };
        unpadded.window.pad = [0; 4];
        assert!(matches!(
            Op::Conv(unpadded).infer(&[&Shape(vec![1, 3, 6, 6])]),
            Err(ShapeError::Empty { size: 0, .. })
        ));
    }
}
