//! Each op's gradient rule, beside its forward facts: what the backward
//! pass reads from the forward pass, what the forward pass must save for
//! it, and which training semantics differ from inference. Autodiff
//! ([`crate::train::autodiff`]) asks these to build the training step and
//! its memory plan; the arithmetic lives in [`crate::train::kernels`].

use super::op::{Activation, Op, PoolKind};

/// What an op's backward pass needs from its forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradRule {
    /// Backward reads the operands' values (a conv's input for its weight
    /// gradient, an activation's input for its derivative).
    pub reads_inputs: bool,
    /// Backward reads the op's own output (softmax, sigmoid-like steps
    /// could; only softmax does here).
    pub reads_output: bool,
    /// What training's forward pass stores for backward beyond values.
    pub saves: Saved,
}

/// State a training forward pass records for its backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    Nothing,
    /// Dropout's keep mask, drawn from the step's seeded stream.
    Mask,
    /// Max pooling's winning input position per output.
    ArgMax,
    /// Batch norm's per-channel batch mean and 1/√(var + eps): training
    /// normalises with the batch's statistics, not the running ones.
    BatchStats,
}

/// An op netc cannot train through yet, named for the error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct NotDifferentiable {
    pub what: String,
}

const PLAIN: GradRule = GradRule {
    reads_inputs: false,
    reads_output: false,
    saves: Saved::Nothing,
};

const READS_INPUTS: GradRule = GradRule {
    reads_inputs: true,
    ..PLAIN
};

impl Op {
    /// The gradient rule of this op, or why it has none. Fused epilogues
    /// are an optimisation of inference graphs: training starts from the
    /// unoptimised graph, where every conv and dense has none.
    pub fn grad_rule(&self) -> Result<GradRule, NotDifferentiable> {
        match self {
            Op::Conv(c) if !c.epilogue.is_empty() => Err(NotDifferentiable {
                what: "a convolution with a fused epilogue (train the unoptimised graph)".into(),
            }),
            Op::Dense(d) if !d.epilogue.is_empty() => Err(NotDifferentiable {
                what: "a dense layer with a fused epilogue (train the unoptimised graph)".into(),
            }),
            Op::Conv(_) | Op::ConvTranspose(_) | Op::Dense(_) | Op::Activation(_) | Op::Mul => {
                Ok(READS_INPUTS)
            }
            Op::BatchNorm { .. } => Ok(GradRule {
                reads_inputs: true,
                reads_output: false,
                saves: Saved::BatchStats,
            }),
            Op::Pool(p) => Ok(match p.kind {
                PoolKind::Max => GradRule {
                    saves: Saved::ArgMax,
                    ..PLAIN
                },
                PoolKind::Avg => PLAIN,
            }),
            // The values' gradient is read at the winning positions; the
            // source gets none (it only says where values go).
            Op::MaxUnpool { .. } => Ok(GradRule {
                saves: Saved::ArgMax,
                ..PLAIN
            }),
            Op::Dropout { .. } => Ok(GradRule {
                saves: Saved::Mask,
                ..PLAIN
            }),
            Op::Softmax => Ok(GradRule {
                reads_output: true,
                ..PLAIN
            }),
            Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::Concat
            | Op::Add
            | Op::Resize { .. }
            | Op::Scale { .. }
            | Op::Slice { .. }
            | Op::ChannelShuffle { .. }
            | Op::Identity => Ok(PLAIN),
        }
    }

    /// Whether operand `port` carries a gradient: every operand but
    /// `maxunpool`'s source, which only says where values go.
    pub fn differentiable_port(&self, port: usize) -> bool {
        !matches!(self, Op::MaxUnpool { .. }) || port == 0
    }
}

/// The factor dropout's training pass applies to kept values: PyTorch's
/// inverted dropout (`scale` 1 at inference) divides by the keep
/// probability; the book's variant (`inference: "scale"`, multiplying by
/// 1 − ratio at inference) keeps them as they are.
pub fn dropout_train_factor(ratio: f32, inference_scale: f32) -> f64 {
    if inference_scale == 1.0 && ratio < 1.0 {
        1.0 / (1.0 - ratio as f64)
    } else {
        1.0
    }
}

impl Activation {
    /// The activation in f64, for the training kernels and the gradient
    /// checks (the same formula as [`Activation::apply`]).
    pub fn apply64(self, x: f64) -> f64 {
        let hard_sigmoid = |x: f64| (x + 3.0).clamp(0.0, 6.0) / 6.0;
        match self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a as f64 * x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::HardSigmoid => hard_sigmoid(x),
            Activation::HardSwish => x * hard_sigmoid(x),
            Activation::Clip(lo, hi) => x.max(lo as f64).min(hi as f64),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    /// d activation / dx at input `x`. At the kinks it takes PyTorch's
    /// side: ReLU's derivative at 0 is 0, leaky ReLU's 1, a clip passes
    /// gradient strictly inside its range, hard-swish's is (2x + 3)/6 on
    /// [−3, 3].
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    1.0
                } else {
                    a as f64
                }
            }
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::HardSigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            Activation::HardSwish => {
                if x < -3.0 {
                    0.0
                } else if x > 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            }
            Activation::Clip(lo, hi) => {
                if x > lo as f64 && x < hi as f64 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 + x * (1.0 - s))
            }
        }
    }
}
