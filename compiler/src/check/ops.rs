//! The built-in layer ops as the language sees them: their argument lists
//! (checked where the call is written) and how arguments plus an input shape
//! become an [`Op`] (at application, when the input is known).

use super::eval::Value;
use crate::diag::Diagnostic;
use crate::ir::op::*;
use crate::ir::shape::Shape;
use crate::parse::ast::Ident;
use crate::source::Span;
use std::collections::BTreeMap;

/// Every op's parameters in positional order; `true` marks required ones.
const SIGNATURES: &[(&str, &[(&str, bool)])] = &[
    (
        "conv",
        &[
            ("out", true),
            ("kernel", true),
            ("stride", false),
            ("pad", false),
            ("dilation", false),
            ("groups", false),
            ("bias", false),
            ("weight", false),
        ],
    ),
    (
        "batchnorm",
        &[
            ("eps", false),
            ("weight", false),
            ("bias", false),
            ("running_mean", false),
            ("running_var", false),
        ],
    ),
    ("relu", &[]),
    ("leaky_relu", &[("alpha", false)]),
    ("sigmoid", &[]),
    ("tanh", &[]),
    (
        "maxpool",
        &[
            ("kernel", true),
            ("stride", false),
            ("pad", false),
            ("dilation", false),
            ("ceil", false),
        ],
    ),
    (
        "avgpool",
        &[
            ("kernel", true),
            ("stride", false),
            ("pad", false),
            ("ceil", false),
            ("count_include_pad", false),
        ],
    ),
    ("global_avgpool", &[]),
    ("adaptive_avgpool", &[("size", true)]),
    (
        "dense",
        &[
            ("out", true),
            ("bias", false),
            ("layout", false),
            ("weight", false),
        ],
    ),
    ("flatten", &[]),
    ("dropout", &[("ratio", false), ("inference", false)]),
    ("softmax", &[]),
    ("scale", &[("factor", true)]),
    ("identity", &[]),
];

/// Every op name, for suggestions.
pub const OP_NAMES: &[&str] = &[
    "conv",
    "batchnorm",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "maxpool",
    "avgpool",
    "global_avgpool",
    "adaptive_avgpool",
    "dense",
    "flatten",
    "dropout",
    "softmax",
    "scale",
    "identity",
    "add",
    "concat",
];

pub fn is_op(name: &str) -> bool {
    OP_NAMES.contains(&name)
}

/// Ops whose arguments are tensors (`add(a, b)`, `concat(a, b, c)`).
pub fn is_merge(name: &str) -> bool {
    name == "add" || name == "concat"
}

/// Arguments bound to parameter names, each with its source span.
#[derive(Debug, Clone, Default)]
pub struct BoundArgs(BTreeMap<&'static str, (Value, Span)>);

/// Check a call's arguments against the op's signature.
pub(super) fn bind(
    callee: &Ident,
    positional: Vec<(Value, Span)>,
    named: Vec<(&Ident, Value, Span)>,
) -> Result<BoundArgs, Diagnostic> {
    let name = callee.name.as_str();
    let sig = SIGNATURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or(&[]);
    let mut bound = BTreeMap::new();
    let usage = || {
        let parts: Vec<String> = sig
            .iter()
            .map(|(p, req)| {
                if *req {
                    p.to_string()
                } else {
                    format!("{p}: …")
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
    for ((pname, _), (v, sp)) in sig.iter().zip(positional) {
        bound.insert(*pname, (v, sp));
    }
    for (n, v, sp) in named {
        let Some((pname, _)) = sig.iter().find(|(p, _)| *p == n.name) else {
            return Err(
                Diagnostic::new(n.span, format!("`{name}` has no argument `{}`", n.name))
                    .note(usage()),
            );
        };
        if bound.contains_key(pname) {
            return Err(Diagnostic::new(
                n.span,
                format!(
                    "argument `{}` is given both by position and by name",
                    n.name
                ),
            ));
        }
        bound.insert(*pname, (v, sp));
    }
    for (pname, required) in sig {
        if *required && !bound.contains_key(pname) {
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
    fn get(&self, key: &str) -> Option<&(Value, Span)> {
        self.0.get(key)
    }

    fn int(&self, key: &str, default: i64, min: i64) -> R<usize> {
        match self.get(key) {
            None => Ok(default as usize),
            Some((Value::Int(v), sp)) => checked_int(*v, min, *sp, key),
            Some((other, sp)) => Err(type_error(key, "an integer", other, *sp)),
        }
    }

    fn float(&self, key: &str, default: f64) -> R<f32> {
        match self.get(key) {
            None => Ok(default as f32),
            Some((Value::Int(v), _)) => Ok(*v as f32),
            Some((Value::Float(v), _)) => Ok(*v as f32),
            Some((other, sp)) => Err(type_error(key, "a number", other, *sp)),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> R<bool> {
        match self.get(key) {
            None => Ok(default),
            Some((Value::Bool(v), _)) => Ok(*v),
            Some((other, sp)) => Err(type_error(key, "`true` or `false`", other, *sp)),
        }
    }

    /// An integer or `[h, w]`.
    fn pair(&self, key: &str, default: [usize; 2], min: i64) -> R<[usize; 2]> {
        match self.get(key) {
            None => Ok(default),
            Some((Value::Int(v), sp)) => {
                let v = checked_int(*v, min, *sp, key)?;
                Ok([v, v])
            }
            Some((Value::List(items), sp)) if items.len() == 2 => {
                let mut out = [0; 2];
                for (i, (v, isp)) in items.iter().enumerate() {
                    out[i] = match v {
                        Value::Int(v) => checked_int(*v, min, *isp, key)?,
                        other => return Err(type_error(key, "an integer", other, *isp)),
                    };
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
            Some((Value::List(items), _)) if items.len() == 4 => {
                let mut out = [0; 4];
                for (i, (v, isp)) in items.iter().enumerate() {
                    out[i] = match v {
                        Value::Int(v) => checked_int(*v, 0, *isp, "pad")?,
                        other => return Err(type_error("pad", "an integer", other, *isp)),
                    };
                }
                Ok(out)
            }
            Some((Value::List(items), sp)) if items.len() != 2 => Err(Diagnostic::new(
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
            Some((Value::Str(s), sp)) => {
                if s.is_empty() {
                    return Err(Diagnostic::new(*sp, "a parameter name cannot be empty"));
                }
                renames.push((role.to_string(), s.clone()));
                Ok(())
            }
            Some((other, sp)) => Err(type_error(role, "a parameter name string", other, *sp)),
        }
    }

    fn span_of(&self, key: &str, fallback: Span) -> Span {
        self.get(key).map_or(fallback, |(_, s)| *s)
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

fn type_error(key: &str, expected: &str, found: &Value, sp: Span) -> Diagnostic {
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

/// Build the op `name` for an input of shape `input`.
pub(super) fn build(name: &str, args: &BoundArgs, input: &Shape, span: Span) -> R<Built> {
    let mut renames = Vec::new();
    let op = match name {
        "conv" => {
            let [_, in_ch, _, _] = spatial(name, input, span)?;
            let out = args.int("out", 1, 1)?;
            let kernel = args.pair("kernel", [1, 1], 1)?;
            let groups = args.int("groups", 1, 1)?;
            if in_ch % groups != 0 || out % groups != 0 {
                return Err(Diagnostic::new(
                    args.span_of("groups", span),
                    format!(
                        "groups ({groups}) must divide both the input channels ({in_ch}) and the output channels ({out})"
                    ),
                ));
            }
            let bias = match args.get("bias") {
                Some((Value::Str(_), _)) => {
                    args.rename("bias", &mut renames)?;
                    true
                }
                _ => args.boolean("bias", true)?,
            };
            args.rename("weight", &mut renames)?;
            Op::Conv(Conv {
                in_channels: in_ch,
                out_channels: out,
                window: Window {
                    kernel,
                    stride: args.pair("stride", [1, 1], 1)?,
                    pad: args.pad()?,
                    dilation: args.pair("dilation", [1, 1], 1)?,
                },
                groups,
                bias,
                epilogue: Vec::new(),
                algo: ConvAlgo::Auto,
            })
        }
        "batchnorm" => {
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
        "relu" => Op::Activation(Activation::Relu),
        "leaky_relu" => Op::Activation(Activation::LeakyRelu(args.float("alpha", 0.01)?)),
        "sigmoid" => Op::Activation(Activation::Sigmoid),
        "tanh" => Op::Activation(Activation::Tanh),
        "maxpool" | "avgpool" => {
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
                kind: if name == "maxpool" {
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
        "global_avgpool" => {
            spatial(name, input, span)?;
            Op::GlobalAvgPool
        }
        "adaptive_avgpool" => {
            spatial(name, input, span)?;
            Op::AdaptiveAvgPool {
                output: args.pair("size", [1, 1], 1)?,
            }
        }
        "dense" => {
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
                Some((Value::Str(s), sp)) => match s.as_str() {
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
            let bias = match args.get("bias") {
                Some((Value::Str(_), _)) => {
                    args.rename("bias", &mut renames)?;
                    true
                }
                _ => args.boolean("bias", true)?,
            };
            args.rename("weight", &mut renames)?;
            Op::Dense(Dense {
                in_features: input.0[1],
                out_features: args.int("out", 1, 1)?,
                bias,
                layout,
                epilogue: Vec::new(),
            })
        }
        "flatten" => Op::Flatten,
        "dropout" => {
            let ratio = args.float("ratio", 0.5)?;
            if !(0.0..1.0).contains(&ratio) {
                return Err(Diagnostic::new(
                    args.span_of("ratio", span),
                    format!("dropout ratio must be in [0, 1), found {ratio}"),
                ));
            }
            let scale = match args.get("inference") {
                None => 1.0,
                Some((Value::Str(s), sp)) => match s.as_str() {
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
        "softmax" => Op::Softmax,
        "scale" => {
            let factor = args.float("factor", 1.0)?;
            if !factor.is_finite() {
                return Err(Diagnostic::new(
                    args.span_of("factor", span),
                    "`factor` must be finite",
                ));
            }
            Op::Scale { factor }
        }
        _ => Op::Identity,
    };
    Ok(Built { op, renames })
}
