//! The built-in layer ops as the language sees them: their argument lists
//! ([`Builtin::signature`], checked where the call is written) and how
//! arguments plus an input shape become an [`Op`] (at application, when the
//! input is known).

use crate::diag::Diagnostic;
use crate::ir::builtin::Builtin;
use crate::ir::op::*;
use crate::ir::shape::Shape;
use crate::parse::ast::Ident;
use crate::source::Span;
use std::collections::BTreeMap;

/// An argument value as an op sees it: a literal, or (for the error
/// message) what else was passed.
#[derive(Clone, Debug)]
pub enum OpArg {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<(OpArg, Span)>),
    /// A tensor or a layer, described as in "found a tensor".
    Other(&'static str),
}

impl OpArg {
    fn kind(&self) -> &'static str {
        match self {
            OpArg::Int(_) => "an integer",
            OpArg::Float(_) => "a number",
            OpArg::Bool(_) => "a boolean",
            OpArg::Str(_) => "a string",
            OpArg::List(_) => "a list",
            OpArg::Other(kind) => kind,
        }
    }
}

/// Arguments bound to parameter names, each with its source span.
#[derive(Debug, Clone, Default)]
pub struct BoundArgs(BTreeMap<&'static str, (OpArg, Span)>);

/// Check a call's arguments against the op's signature.
pub(super) fn bind(
    callee: &Ident,
    builtin: Builtin,
    positional: Vec<(OpArg, Span)>,
    named: Vec<(&Ident, OpArg, Span)>,
) -> Result<BoundArgs, Diagnostic> {
    let name = builtin.name();
    let sig = builtin.signature();
    let mut bound = BTreeMap::new();
    let usage = || {
        let parts: Vec<String> = sig
            .iter()
            .map(|p| {
                if p.required {
                    p.name.to_string()
                } else {
                    format!("{}: …", p.name)
                }
            })
            .collect();
        format!("usage: {name}({})", parts.join(", "))
    };
    if positional.len() > sig.len() {
        let extra = positional[sig.len()].1;
        return Err(Diagnostic::new(
            extra,
            format!(
                "`{name}` takes at most {} positional argument{}, found {}",
                sig.len(),
                if sig.len() == 1 { "" } else { "s" },
                positional.len()
            ),
        )
        .note(usage()));
    }
    for (p, (v, sp)) in sig.iter().zip(positional) {
        bound.insert(p.name, (v, sp));
    }
    for (n, v, sp) in named {
        let Some(pname) = sig.iter().map(|p| p.name).find(|p| *p == n.name) else {
            return Err(
                Diagnostic::new(n.span, format!("`{name}` has no argument `{}`", n.name))
                    .note(usage()),
            );
        };
        if bound.contains_key(&pname) {
            return Err(Diagnostic::new(
                n.span,
                format!(
                    "argument `{}` is given both by position and by name",
                    n.name
                ),
            ));
        }
        bound.insert(pname, (v, sp));
    }
    for p in sig {
        let pname = p.name;
        if p.required && !bound.contains_key(pname) {
            return Err(
                Diagnostic::new(callee.span, format!("`{name}` needs argument `{pname}`"))
                    .note(usage()),
            );
        }
    }
    Ok(BoundArgs(bound))
}

/// An op built from its arguments, plus parameter renames (`weight: "W1"`).
pub(super) struct Built {
    pub op: Op,
    pub renames: Vec<(String, String)>,
}

type R<T> = Result<T, Diagnostic>;

impl BoundArgs {
    fn get(&self, key: &str) -> Option<&(OpArg, Span)> {
        self.0.get(key)
    }

    fn int(&self, key: &str, default: i64, min: i64) -> R<usize> {
        match self.get(key) {
            None => Ok(default as usize),
            Some((OpArg::Int(v), sp)) => checked_int(*v, min, *sp, key),
            Some((other, sp)) => Err(type_error(key, "an integer", other, *sp)),
        }
    }

    fn float(&self, key: &str, default: f64) -> R<f32> {
        match self.get(key) {
            None => Ok(default as f32),
            Some((OpArg::Int(v), _)) => Ok(*v as f32),
            Some((OpArg::Float(v), _)) => Ok(*v as f32),
            Some((other, sp)) => Err(type_error(key, "a number", other, *sp)),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> R<bool> {
        match self.get(key) {
            None => Ok(default),
            Some((OpArg::Bool(v), _)) => Ok(*v),
            Some((other, sp)) => Err(type_error(key, "`true` or `false`", other, *sp)),
        }
    }

    /// An integer or `[h, w]`.
    fn pair(&self, key: &str, default: [usize; 2], min: i64) -> R<[usize; 2]> {
        match self.get(key) {
            None => Ok(default),
            Some((OpArg::Int(v), sp)) => {
                let v = checked_int(*v, min, *sp, key)?;
                Ok([v, v])
            }
            Some((OpArg::List(items), sp)) if items.len() == 2 => {
                let mut out = [0; 2];
                for (i, (v, isp)) in items.iter().enumerate() {
                    out[i] = list_int(v, min, *isp, key)?;
                }
                let _ = sp;
                Ok(out)
            }
            Some((other, sp)) => Err(type_error(key, "an integer or `[h, w]`", other, *sp)),
        }
    }

    /// Padding: `p`, `[h, w]` or `[top, left, bottom, right]`.
    fn pad(&self) -> R<[usize; 4]> {
        match self.get("pad") {
            Some((OpArg::List(items), _)) if items.len() == 4 => {
                let mut out = [0; 4];
                for (i, (v, isp)) in items.iter().enumerate() {
                    out[i] = list_int(v, 0, *isp, "pad")?;
                }
                Ok(out)
            }
            Some((OpArg::List(items), sp)) if items.len() != 2 => Err(Diagnostic::new(
                *sp,
                format!(
                    "`pad` takes an integer, `[h, w]` or `[top, left, bottom, right]`, found a list of {}",
                    items.len()
                ),
            )),
            _ => {
                let [h, w] = self.pair("pad", [0, 0], 0)?;
                Ok([h, w, h, w])
            }
        }
    }

    /// A parameter renamed with a string (`weight: "W1"`).
    fn rename(&self, role: &str, renames: &mut Vec<(String, String)>) -> R<()> {
        match self.get(role) {
            None => Ok(()),
            Some((OpArg::Str(s), sp)) => {
                if s.is_empty() {
                    return Err(Diagnostic::new(*sp, "a parameter name cannot be empty"));
                }
                renames.push((role.to_string(), s.clone()));
                Ok(())
            }
            Some((other, sp)) => Err(type_error(role, "a parameter name string", other, *sp)),
        }
    }

    /// Whether the layer has a bias (`bias: false`, or a name string that
    /// renames it), recording renames of `bias` and `weight`.
    fn bias_and_weight(&self, renames: &mut Vec<(String, String)>) -> R<bool> {
        let bias = match self.get("bias") {
            Some((OpArg::Str(_), _)) => {
                self.rename("bias", renames)?;
                true
            }
            _ => self.boolean("bias", true)?,
        };
        self.rename("weight", renames)?;
        Ok(bias)
    }

    fn span_of(&self, key: &str, fallback: Span) -> Span {
        self.get(key).map_or(fallback, |(_, s)| *s)
    }
}

/// An integer element of a list argument.
fn list_int(v: &OpArg, min: i64, sp: Span, key: &str) -> R<usize> {
    if let OpArg::Int(v) = v {
        checked_int(*v, min, sp, key)
    } else {
        Err(type_error(key, "an integer", v, sp))
    }
}

fn checked_int(v: i64, min: i64, sp: Span, key: &str) -> R<usize> {
    if v < min || v > u32::MAX as i64 {
        return Err(Diagnostic::new(
            sp,
            format!("`{key}` must be at least {min}, found {v}"),
        ));
    }
    Ok(v as usize)
}

fn type_error(key: &str, expected: &str, found: &OpArg, sp: Span) -> Diagnostic {
    Diagnostic::new(
        sp,
        format!("`{key}` expects {expected}, found {}", found.kind()),
    )
}

fn spatial(op: &str, input: &Shape, span: Span) -> R<[usize; 4]> {
    match input.0[..] {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Diagnostic::new(
            span,
            format!("{op} expects a rank-4 (NCHW) input, found shape {input}"),
        )),
    }
}

/// What `conv` and `conv_transpose` take alike.
struct ConvArgs {
    in_channels: usize,
    out_channels: usize,
    window: Window,
    groups: usize,
    bias: bool,
}

/// The arguments `conv` and `conv_transpose` share, checked against the
/// NCHW `input`: `groups` must divide both channel counts.
fn conv_args(
    args: &BoundArgs,
    name: &str,
    input: &Shape,
    span: Span,
    renames: &mut Vec<(String, String)>,
) -> R<ConvArgs> {
    let [_, in_channels, _, _] = spatial(name, input, span)?;
    let out_channels = args.int("out", 1, 1)?;
    let groups = args.int("groups", 1, 1)?;
    if in_channels % groups != 0 || out_channels % groups != 0 {
        return Err(Diagnostic::new(
            args.span_of("groups", span),
            format!(
                "groups ({groups}) must divide both the input channels ({in_channels}) and the output channels ({out_channels})"
            ),
        ));
    }
    let window = Window {
        kernel: args.pair("kernel", [1, 1], 1)?,
        stride: args.pair("stride", [1, 1], 1)?,
        pad: args.pad()?,
        dilation: args.pair("dilation", [1, 1], 1)?,
    };
    let bias = args.bias_and_weight(renames)?;
    Ok(ConvArgs {
        in_channels,
        out_channels,
        window,
        groups,
        bias,
    })
}

/// Build the op `builtin` for an input of shape `input`. Merges (`add`,
/// `concat`) are built by the elaborator from their tensors.
pub(super) fn build(builtin: Builtin, args: &BoundArgs, input: &Shape, span: Span) -> R<Built> {
    let name = builtin.name();
    let mut renames = Vec::new();
    let op = match builtin {
        Builtin::Conv => {
            let c = conv_args(args, name, input, span, &mut renames)?;
            Op::Conv(Conv {
                in_channels: c.in_channels,
                out_channels: c.out_channels,
                window: c.window,
                groups: c.groups,
                bias: c.bias,
                epilogue: Vec::new(),
                algo: ConvAlgo::Unselected,
            })
        }
        Builtin::ConvTranspose => {
            let c = conv_args(args, name, input, span, &mut renames)?;
            let output_padding = args.pair("output_padding", [0, 0], 0)?;
            for (a, &extra) in output_padding.iter().enumerate() {
                if extra >= c.window.stride[a].max(c.window.dilation[a]) {
                    return Err(Diagnostic::new(
                        args.span_of("output_padding", span),
                        format!(
                            "`output_padding` ({extra}) must be smaller than the stride or the dilation"
                        ),
                    ));
                }
            }
            Op::ConvTranspose(ConvTranspose {
                in_channels: c.in_channels,
                out_channels: c.out_channels,
                window: c.window,
                output_padding,
                groups: c.groups,
                bias: c.bias,
            })
        }
        Builtin::BatchNorm => {
            let channels = match input.0.get(1) {
                Some(&c) if input.rank() >= 2 => c,
                _ => {
                    return Err(Diagnostic::new(
                        span,
                        format!("batchnorm needs a channel axis, found shape {input}"),
                    ))
                }
            };
            let eps = args.float("eps", 1e-5)?;
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(Diagnostic::new(
                    args.span_of("eps", span),
                    "`eps` must be a positive number",
                ));
            }
            for role in ["weight", "bias", "running_mean", "running_var"] {
                args.rename(role, &mut renames)?;
            }
            Op::BatchNorm { channels, eps }
        }
        Builtin::Relu => Op::Activation(Activation::Relu),
        Builtin::LeakyRelu => Op::Activation(Activation::LeakyRelu(args.float("alpha", 0.01)?)),
        Builtin::Sigmoid => Op::Activation(Activation::Sigmoid),
        Builtin::HardSigmoid => Op::Activation(Activation::HardSigmoid),
        Builtin::HardSwish => Op::Activation(Activation::HardSwish),
        Builtin::Silu => Op::Activation(Activation::Silu),
        Builtin::Clip => {
            let (lo, hi) = (args.float("min", 0.0)?, args.float("max", 0.0)?);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Diagnostic::new(
                    args.span_of("max", span),
                    format!("`clip` needs finite bounds with min < max, found {lo} and {hi}"),
                ));
            }
            Op::Activation(Activation::Clip(lo, hi))
        }
        Builtin::Tanh => Op::Activation(Activation::Tanh),
        Builtin::MaxPool | Builtin::AvgPool => {
            spatial(name, input, span)?;
            let kernel = args.pair("kernel", [1, 1], 1)?;
            let pad = args.pad()?;
            let dilation = args.pair("dilation", [1, 1], 1)?;
            for (i, p) in pad.iter().enumerate() {
                let k = kernel[i % 2];
                if 2 * p > k {
                    return Err(Diagnostic::new(
                        args.span_of("pad", span),
                        format!("pool padding ({p}) must be at most half the kernel size ({k})"),
                    ));
                }
            }
            Op::Pool(Pool {
                kind: if builtin == Builtin::MaxPool {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                },
                window: Window {
                    kernel,
                    stride: args.pair("stride", kernel, 1)?,
                    pad,
                    dilation,
                },
                ceil: args.boolean("ceil", false)?,
                count_include_pad: args.boolean("count_include_pad", true)?,
            })
        }
        Builtin::GlobalAvgPool => {
            spatial(name, input, span)?;
            Op::GlobalAvgPool
        }
        Builtin::Resize => {
            let [_, _, h, w] = spatial(name, input, span)?;
            let size = match (args.get("size"), args.get("scale")) {
                (Some(_), None) => args.pair("size", [1, 1], 1)?,
                (None, Some((s, sp))) => {
                    let scale = args.float("scale", 1.0)?;
                    let out = |n: usize| (n as f64 * scale as f64).floor();
                    if !(scale > 0.0 && scale.is_finite()) || out(h) < 1.0 || out(w) < 1.0 {
                        return Err(Diagnostic::new(
                            *sp,
                            format!("`scale` {scale} gives no output from a {h}×{w} input"),
                        ));
                    }
                    let _ = s;
                    [out(h) as usize, out(w) as usize]
                }
                _ => {
                    return Err(Diagnostic::new(
                        span,
                        "`resize` takes exactly one of `size: [h, w]` and `scale`",
                    ))
                }
            };
            let align_corners = args.boolean("align_corners", false)?;
            let mode = match args.get("mode") {
                None => ResizeMode::Bilinear { align_corners },
                Some((OpArg::Str(s), sp)) => match s.as_str() {
                    "bilinear" => ResizeMode::Bilinear { align_corners },
                    "nearest" if !align_corners => ResizeMode::Nearest,
                    "nearest" => {
                        return Err(Diagnostic::new(
                            args.span_of("align_corners", *sp),
                            "`align_corners` applies to bilinear resizing only",
                        ))
                    }
                    other => {
                        return Err(Diagnostic::new(
                            *sp,
                            format!("`mode` is \"bilinear\" or \"nearest\", found \"{other}\""),
                        ))
                    }
                },
                Some((other, sp)) => return Err(type_error("mode", "a string", other, *sp)),
            };
            Op::Resize { size, mode }
        }
        Builtin::AdaptiveAvgPool => {
            spatial(name, input, span)?;
            Op::AdaptiveAvgPool {
                output: args.pair("size", [1, 1], 1)?,
            }
        }
        Builtin::Dense => {
            if input.rank() != 2 {
                return Err(Diagnostic::new(
                    span,
                    format!(
                        "dense expects a rank-2 input (add `flatten` first), found shape {input}"
                    ),
                ));
            }
            let layout = match args.get("layout") {
                None => WeightLayout::OutIn,
                Some((OpArg::Str(s), sp)) => match s.as_str() {
                    "out_in" => WeightLayout::OutIn,
                    "in_out" => WeightLayout::InOut,
                    other => {
                        return Err(Diagnostic::new(
                            *sp,
                            format!("`layout` is \"out_in\" (PyTorch) or \"in_out\" (NumPy), found \"{other}\""),
                        ))
                    }
                },
                Some((other, sp)) => return Err(type_error("layout", "a string", other, *sp)),
            };
            let bias = args.bias_and_weight(&mut renames)?;
            Op::Dense(Dense {
                in_features: input.0[1],
                out_features: args.int("out", 1, 1)?,
                bias,
                layout,
                epilogue: Vec::new(),
                algo: DenseAlgo::Unselected,
            })
        }
        Builtin::Flatten => Op::Flatten,
        Builtin::Dropout => {
            let ratio = args.float("ratio", 0.5)?;
            if !(0.0..1.0).contains(&ratio) {
                return Err(Diagnostic::new(
                    args.span_of("ratio", span),
                    format!("dropout ratio must be in [0, 1), found {ratio}"),
                ));
            }
            let scale = match args.get("inference") {
                None => 1.0,
                Some((OpArg::Str(s), sp)) => match s.as_str() {
                    "identity" => 1.0,
                    "scale" => 1.0 - ratio,
                    other => {
                        return Err(Diagnostic::new(
                            *sp,
                            format!("`inference` is \"identity\" (inverted dropout, PyTorch) or \"scale\" (multiply by 1 - ratio), found \"{other}\""),
                        ))
                    }
                },
                Some((other, sp)) => return Err(type_error("inference", "a string", other, *sp)),
            };
            Op::Dropout { ratio, scale }
        }
        Builtin::Softmax => Op::Softmax,
        Builtin::Scale => {
            let factor = args.float("factor", 1.0)?;
            if !factor.is_finite() {
                return Err(Diagnostic::new(
                    args.span_of("factor", span),
                    "`factor` must be finite",
                ));
            }
            Op::Scale { factor }
        }
        Builtin::Identity => Op::Identity,
        // Channels `start .. end` (ShuffleNet's split): a view, no copy.
        Builtin::Slice => {
            let channels = input.0.get(1).copied().unwrap_or(0);
            let start = args.int("start", 0, 0)?;
            let end = args.int("end", 0, 0)?;
            if input.rank() < 2 || start >= end || end > channels {
                return Err(Diagnostic::new(
                    args.span_of("end", span),
                    format!("`slice({start}, {end})` needs 0 <= start < end <= {channels}, the input's channels"),
                ));
            }
            Op::Slice {
                start,
                len: end - start,
            }
        }
        Builtin::ChannelShuffle => {
            let [_, channels, _, _] = spatial(name, input, span)?;
            let groups = args.int("groups", 1, 1)?;
            if !channels.is_multiple_of(groups) {
                return Err(Diagnostic::new(
                    args.span_of("groups", span),
                    format!("`groups` ({groups}) must divide the input's {channels} channels"),
                ));
            }
            Op::ChannelShuffle { groups }
        }
        Builtin::Add => Op::Add,
        Builtin::Concat => Op::Concat,
        Builtin::Mul => Op::Mul,
        // The window is the pool's whose output is the second tensor;
        // `eval` fills it in when it applies the merge and sees that pool.
        Builtin::MaxUnpool => Op::MaxUnpool {
            window: Window {
                kernel: [1, 1],
                stride: [1, 1],
                pad: [0; 4],
                dilation: [1, 1],
            },
            ceil: false,
        },
    };
    Ok(Built { op, renames })
}
