//! The op table as the `.net` language sees it: every built-in layer a
//! model can call, its name and its argument list. The checker derives its
//! name lookup, its "did you mean" candidates and its argument binding from
//! here; `check::ops::build` turns bound arguments into an [`super::op::Op`]
//! with one exhaustive match over [`Builtin`], so a new built-in is a
//! compile error there and in [`Builtin::signature`] until it is handled.

/// Declares [`Builtin`] with its `.net` names, and [`Builtin::ALL`] from
/// the same list, so the two cannot disagree.
macro_rules! builtins {
    ($($variant:ident => $name:literal,)*) => {
        /// A built-in layer, as called in a `.net` file.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Builtin {
            $($variant,)*
        }

        impl Builtin {
            /// Every built-in, in the order the language reference lists them.
            pub const ALL: &'static [Builtin] = &[$(Builtin::$variant,)*];

            /// The name a `.net` file calls it by.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Builtin::$variant => $name,)*
                }
            }
        }
    };
}

builtins! {
    Conv => "conv",
    ConvTranspose => "conv_transpose",
    BatchNorm => "batchnorm",
    Relu => "relu",
    LeakyRelu => "leaky_relu",
    Sigmoid => "sigmoid",
    Tanh => "tanh",
    HardSigmoid => "hardsigmoid",
    HardSwish => "hardswish",
    Clip => "clip",
    Silu => "silu",
    MaxPool => "maxpool",
    AvgPool => "avgpool",
    GlobalAvgPool => "global_avgpool",
    AdaptiveAvgPool => "adaptive_avgpool",
    Resize => "resize",
    Dense => "dense",
    Flatten => "flatten",
    Dropout => "dropout",
    Softmax => "softmax",
    Scale => "scale",
    Identity => "identity",
    Add => "add",
    Concat => "concat",
    Mul => "mul",
    MaxUnpool => "maxunpool",
    Slice => "slice",
    ChannelShuffle => "channel_shuffle",
}

/// One parameter of a built-in: its name and whether a call must give it.
/// Positional arguments bind in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub required: bool,
}

/// A required parameter (a macro, not a `const fn`, so signatures stay
/// promotable `&'static` slices).
macro_rules! req {
    ($name:literal) => {
        Param {
            name: $name,
            required: true,
        }
    };
}

/// An optional parameter.
macro_rules! opt {
    ($name:literal) => {
        Param {
            name: $name,
            required: false,
        }
    };
}

impl Builtin {
    /// Its parameters in positional order. Merges (`add`, `concat`) take
    /// tensors, not parameters: see [`Builtin::is_merge`].
    pub const fn signature(self) -> &'static [Param] {
        match self {
            Builtin::Conv => &[
                req!("out"),
                req!("kernel"),
                opt!("stride"),
                opt!("pad"),
                opt!("dilation"),
                opt!("groups"),
                opt!("bias"),
                opt!("weight"),
            ],
            Builtin::ConvTranspose => &[
                req!("out"),
                req!("kernel"),
                opt!("stride"),
                opt!("pad"),
                opt!("output_padding"),
                opt!("dilation"),
                opt!("groups"),
                opt!("bias"),
                opt!("weight"),
            ],
            Builtin::BatchNorm => &[
                opt!("eps"),
                opt!("weight"),
                opt!("bias"),
                opt!("running_mean"),
                opt!("running_var"),
            ],
            Builtin::LeakyRelu => &[opt!("alpha")],
            Builtin::MaxPool => &[
                req!("kernel"),
                opt!("stride"),
                opt!("pad"),
                opt!("dilation"),
                opt!("ceil"),
            ],
            Builtin::AvgPool => &[
                req!("kernel"),
                opt!("stride"),
                opt!("pad"),
                opt!("ceil"),
                opt!("count_include_pad"),
            ],
            Builtin::AdaptiveAvgPool => &[req!("size")],
            Builtin::Resize => &[
                opt!("size"),
                opt!("scale"),
                opt!("mode"),
                opt!("align_corners"),
            ],
            Builtin::Dense => &[req!("out"), opt!("bias"), opt!("layout"), opt!("weight")],
            Builtin::Dropout => &[opt!("ratio"), opt!("inference")],
            Builtin::Scale => &[req!("factor")],
            Builtin::Clip => &[req!("min"), req!("max")],
            Builtin::Slice => &[req!("start"), req!("end")],
            Builtin::ChannelShuffle => &[req!("groups")],
            Builtin::Relu
            | Builtin::Sigmoid
            | Builtin::Tanh
            | Builtin::HardSigmoid
            | Builtin::HardSwish
            | Builtin::Silu
            | Builtin::GlobalAvgPool
            | Builtin::Flatten
            | Builtin::Softmax
            | Builtin::Identity
            | Builtin::Add
            | Builtin::Concat
            | Builtin::Mul
            | Builtin::MaxUnpool => &[],
        }
    }

    /// Whether its arguments are tensors (`add(a, b)`, `concat(a, b, c)`).
    pub const fn is_merge(self) -> bool {
        match self {
            Builtin::Add | Builtin::Concat | Builtin::Mul | Builtin::MaxUnpool => true,
            Builtin::Conv
            | Builtin::ConvTranspose
            | Builtin::BatchNorm
            | Builtin::Relu
            | Builtin::LeakyRelu
            | Builtin::Sigmoid
            | Builtin::Tanh
            | Builtin::HardSigmoid
            | Builtin::HardSwish
            | Builtin::Clip
            | Builtin::Silu
            | Builtin::MaxPool
            | Builtin::AvgPool
            | Builtin::GlobalAvgPool
            | Builtin::AdaptiveAvgPool
            | Builtin::Resize
            | Builtin::Dense
            | Builtin::Flatten
            | Builtin::Dropout
            | Builtin::Softmax
            | Builtin::Scale
            | Builtin::Slice
            | Builtin::ChannelShuffle
            | Builtin::Identity => false,
        }
    }

    /// The built-in called `name`, if any.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.iter().copied().find(|b| b.name() == name)
    }

    /// Every built-in's name, for suggestions.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Builtin::ALL.iter().map(|b| b.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique and each maps back to its built-in.
    #[test]
    fn all_is_complete_and_names_are_unique() {
        let mut names: Vec<&str> = Builtin::names().collect();
        for &b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
            assert!(b.signature().iter().all(|p| !p.name.is_empty()));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Builtin::ALL.len());
    }
}
