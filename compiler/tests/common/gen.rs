//! Random valid `.net` models — chains, branches, residual skips, concats,
//! every op, odd sizes — as a proptest strategy, so a failing model shrinks
//! to a small one.
//!
//! A model is drawn as raw choices ([`Spec`]: input size and a list of
//! [`Step`]s) and only then rendered to source. Rendering fits each choice
//! to the shape it meets (a kernel too large shrinks, odd channels drop
//! grouping), so every value proptest shrinks to — fewer steps, smaller
//! numbers, `false` flags — still renders to a valid model.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// One layer (or small group of layers) of a random model, before it is
/// fitted to its input shape.
#[derive(Clone, Debug)]
pub enum Step {
    Scale,
    Dropout,
    Conv {
        kernel: usize,
        stride: usize,
        dilated: bool,
        pads: [usize; 4],
        out: usize,
        grouped: bool,
        no_bias: bool,
        batchnorm: bool,
        activation: Option<usize>,
    },
    Pool {
        max: bool,
        kernel: usize,
        stride: usize,
        pad: usize,
        ceil: bool,
        count_include_pad: bool,
    },
    /// `add(x -> conv 3x3 same [, batchnorm], x) [-> relu]`
    Skip {
        batchnorm: bool,
        relu: bool,
    },
    /// `mul(x, gate)`: a squeeze-and-excitation gate per channel (global
    /// pool, 1×1 down to `reduce` channels, ReLU, 1×1 back, hardsigmoid),
    /// or with `plane` a gate of `x`'s own shape.
    Gate {
        reduce: usize,
        plane: bool,
    },
    /// `resize`: nearest ×2, or bilinear to `(num/den)` of each side,
    /// maybe with `align_corners`.
    Resize {
        nearest: bool,
        num: usize,
        align_corners: bool,
    },
    /// `conv_transpose(out, kernel, stride, pad, output_padding, groups)`.
    ConvTranspose {
        out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        output_padding: bool,
        grouped: bool,
    },
    /// A max pool (windows that do not overlap) and `maxunpool` back to
    /// the pool's input size, of the pooled values or, with `conv`, of a
    /// 1×1 conv + tanh of them (SegNet's decoder).
    Unpool {
        kernel: usize,
        pad: usize,
        ceil: bool,
        conv: bool,
    },
    /// ShuffleNet v2's unit: with `split` (and even channels) half the
    /// channels pass, the other half go through a 3×3 conv, and the two are
    /// concatenated and shuffled in 2 groups; otherwise a shuffle in the
    /// largest divisor of the channels up to `groups`.
    Shuffle {
        split: bool,
        groups: usize,
    },
    /// Inception-like 1x1 siblings (out, batchnorm, relu), maybe a pool.
    Branches {
        convs: Vec<(usize, bool, bool)>,
        pool: bool,
    },
}

/// How the model ends.
#[derive(Clone, Debug)]
pub enum Head {
    Plain,
    GlobalPool {
        classes: usize,
    },
    Dense {
        hidden: usize,
        classes: usize,
        in_out: bool,
        relu: bool,
    },
}

/// A whole random model as raw choices.
#[derive(Clone, Debug)]
pub struct Spec {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub steps: Vec<Step>,
    pub head: Head,
    /// Also return the output of this step (modulo the step count).
    pub extra_output: Option<usize>,
}

const KERNELS: [usize; 8] = [1, 1, 2, 3, 3, 5, 7, 11];
const ACTIVATIONS: [&str; 9] = [
    "relu",
    "relu",
    "leaky_relu(0.1)",
    "sigmoid",
    "tanh",
    "hardsigmoid",
    "hardswish",
    "clip(0, 6)",
    "silu",
];

fn step() -> impl Strategy<Value = Step> {
    let conv = (
        (0..KERNELS.len(), 1..=4usize, prop::bool::weighted(0.2)),
        prop::array::uniform4(0..11usize),
        prop_oneof![4 => 1..=13usize, 1 => 17..=40usize],
        (prop::bool::weighted(0.25), prop::bool::weighted(0.3)),
        (
            any::<bool>(),
            prop::option::weighted(0.7, 0..ACTIVATIONS.len()),
        ),
    )
        .prop_map(
            |((k, stride, dilated), pads, out, (grouped, no_bias), (batchnorm, activation))| {
                Step::Conv {
                    kernel: KERNELS[k],
                    stride,
                    dilated,
                    pads,
                    out,
                    grouped,
                    no_bias,
                    batchnorm,
                    activation,
                }
            },
        );
    let pool = (
        any::<bool>(),
        2..=3usize,
        1..=2usize,
        0..=1usize,
        prop::bool::weighted(0.4),
        any::<bool>(),
    )
        .prop_map(
            |(max, kernel, stride, pad, ceil, count_include_pad)| Step::Pool {
                max,
                kernel,
                stride,
                pad,
                ceil,
                count_include_pad,
            },
        );
    let skip = (any::<bool>(), prop::bool::weighted(0.7))
        .prop_map(|(batchnorm, relu)| Step::Skip { batchnorm, relu });
    let branches = (
        prop::collection::vec(
            (
                1..=6usize,
                prop::bool::weighted(0.4),
                prop::bool::weighted(0.7),
            ),
            2..=3,
        ),
        prop::bool::weighted(0.4),
    )
        .prop_map(|(convs, pool)| Step::Branches { convs, pool });
    let gate = (1..=8usize, prop::bool::weighted(0.3))
        .prop_map(|(reduce, plane)| Step::Gate { reduce, plane });
    let conv_transpose = (
        (1..=8usize, 1..=4usize, 1..=3usize),
        (0..=2usize, any::<bool>(), prop::bool::weighted(0.3)),
    )
        .prop_map(|((out, kernel, stride), (pad, output_padding, grouped))| {
            Step::ConvTranspose {
                out,
                kernel,
                stride,
                pad,
                output_padding,
                grouped,
            }
        });
    let resize = (
        prop::bool::weighted(0.3),
        1..=8usize,
        prop::bool::weighted(0.3),
    )
        .prop_map(|(nearest, num, align_corners)| Step::Resize {
            nearest,
            num,
            align_corners,
        });
    let unpool = (
        2..=3usize,
        0..=1usize,
        prop::bool::weighted(0.4),
        any::<bool>(),
    )
        .prop_map(|(kernel, pad, ceil, conv)| Step::Unpool {
            kernel,
            pad,
            ceil,
            conv,
        });
    let shuffle =
        (any::<bool>(), 1..=4usize).prop_map(|(split, groups)| Step::Shuffle { split, groups });
    // Simplest first: proptest shrinks a union towards its first arm.
    prop_oneof![
        1 => Just(Step::Scale),
        1 => Just(Step::Dropout),
        6 => conv,
        3 => pool,
        3 => skip,
        3 => branches,
        2 => gate,
        2 => resize,
        2 => conv_transpose,
        2 => unpool,
        2 => shuffle,
    ]
}

fn head() -> impl Strategy<Value = Head> {
    prop_oneof![
        Just(Head::Plain),
        (1..=7usize).prop_map(|classes| Head::GlobalPool { classes }),
        (1..=9usize, 1..=6usize, any::<bool>(), any::<bool>()).prop_map(
            |(hidden, classes, in_out, relu)| Head::Dense {
                hidden,
                classes,
                in_out,
                relu
            }
        ),
    ]
}

/// The strategy for random models.
pub fn spec() -> impl Strategy<Value = Spec> {
    (
        (1..=5usize, 3..=24usize, 3..=24usize),
        prop::collection::vec(step(), 1..=6),
        head(),
        prop::option::weighted(0.1, 0..6usize),
    )
        .prop_map(|((c, h, w), steps, head, extra_output)| Spec {
            c,
            h,
            w,
            steps,
            head,
            extra_output,
        })
}

/// A deterministic runner: the same seed draws the same models.
pub fn runner(cases: u32, seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// The model source drawn for `seed` (no shrinking): for tests that want a
/// stream of random models rather than a property.
pub fn source(seed: u64) -> String {
    let mut runner = runner(1, seed);
    match spec().new_tree(&mut runner) {
        Ok(tree) => tree.current().render(),
        Err(e) => panic!("generator rejected every model: {e}"),
    }
}

/// A tensor in the model being rendered: its name and C, H, W.
#[derive(Clone)]
struct T {
    name: String,
    c: usize,
    h: usize,
    w: usize,
}

/// Output size of a window of `span` over `n` padded by `before + after`,
/// or `None` if it does not fit.
fn window_out(n: usize, before: usize, after: usize, span: usize, stride: usize) -> Option<usize> {
    let room = (n + before + after).checked_sub(span)?;
    Some(room / stride + 1)
}

struct Render {
    lines: Vec<String>,
}

impl Render {
    fn bind(&mut self, expr: String, c: usize, h: usize, w: usize) -> T {
        let name = format!("t{}", self.lines.len());
        self.lines.push(format!("    {name} = {expr}"));
        T { name, c, h, w }
    }

    fn step(&mut self, x: &T, step: &Step) -> T {
        match step {
            Step::Scale => self.bind(format!("{} -> scale(0.5)", x.name), x.c, x.h, x.w),
            Step::Dropout => self.bind(
                format!("{} -> dropout(0.3, inference: \"scale\")", x.name),
                x.c,
                x.h,
                x.w,
            ),
            Step::Conv {
                kernel,
                stride,
                dilated,
                pads,
                out,
                grouped,
                no_bias,
                batchnorm,
                activation,
            } => {
                // Fit the window: drop the dilation, then shrink the kernel
                // until it fits the padded input (1x1 always does).
                let mut k = *kernel;
                let mut dil = if *dilated && k > 1 { 2 } else { 1 };
                let (pads, oh, ow) = loop {
                    let p = pads.map(|p| p % k);
                    let span = dil * (k - 1) + 1;
                    let oh = window_out(x.h, p[0], p[2], span, *stride);
                    let ow = window_out(x.w, p[1], p[3], span, *stride);
                    match (oh, ow) {
                        (Some(oh), Some(ow)) => break (p, oh, ow),
                        _ if dil > 1 => dil = 1,
                        _ => k -= 1,
                    }
                };
                let (groups, out) = if *grouped && x.c.is_multiple_of(2) {
                    (2, 2 * (1 + out % 6))
                } else {
                    (1, *out)
                };
                let pad = if pads.iter().all(|&p| p == pads[0]) {
                    pads[0].to_string()
                } else {
                    format!("[{}, {}, {}, {}]", pads[0], pads[1], pads[2], pads[3])
                };
                let bias = if *no_bias { ", bias: false" } else { "" };
                let mut layers = vec![format!(
                    "conv({out}, {k}, stride: {stride}, pad: {pad}, dilation: {dil}, groups: {groups}{bias})"
                )];
                if *batchnorm {
                    layers.push("batchnorm(eps: 0.001)".into());
                }
                if let Some(a) = activation {
                    layers.push(ACTIVATIONS[*a].into());
                }
                let e = format!("{} -> [{}]", x.name, layers.join(", "));
                self.bind(e, out, oh, ow)
            }
            Step::Pool {
                max,
                kernel,
                stride,
                pad,
                ceil,
                count_include_pad,
            } => {
                let (k, stride) = (*kernel, *stride);
                let pad = (*pad).min(k / 2);
                let size = |n: usize| -> Option<usize> {
                    let room = (n + 2 * pad).checked_sub(k)?;
                    let mut o = if *ceil {
                        room.div_ceil(stride) + 1
                    } else {
                        room / stride + 1
                    };
                    // The last window must start inside the input or its
                    // leading padding (PyTorch's rule).
                    if *ceil && (o - 1) * stride >= n + pad {
                        o -= 1;
                    }
                    Some(o)
                };
                let (Some(oh), Some(ow)) = (size(x.h), size(x.w)) else {
                    return self.bind(format!("{} -> tanh", x.name), x.c, x.h, x.w);
                };
                let e = if *max {
                    format!(
                        "{} -> maxpool({k}, stride: {stride}, pad: {pad}, ceil: {ceil})",
                        x.name
                    )
                } else {
                    format!(
                        "{} -> avgpool({k}, stride: {stride}, pad: {pad}, ceil: {ceil}, count_include_pad: {count_include_pad})",
                        x.name
                    )
                };
                self.bind(e, x.c, oh, ow)
            }
            Step::Gate { reduce, plane } => {
                let e = if *plane {
                    format!("mul({0}, {0} -> [conv({1}, 1), hardswish])", x.name, x.c)
                } else {
                    format!(
                        "mul({0}, {0} -> [global_avgpool, conv({1}, 1), relu, conv({2}, 1), hardsigmoid])",
                        x.name,
                        (*reduce).min(x.c),
                        x.c
                    )
                };
                self.bind(e, x.c, x.h, x.w)
            }
            Step::ConvTranspose {
                out,
                kernel,
                stride,
                pad,
                output_padding,
                grouped,
            } => {
                let k = *kernel;
                // Sides stay at most 32 (or what they were): stride 1 when
                // the stride would grow them past that.
                let side = x.h.max(x.w);
                let s = if (side - 1) * stride + k > 32.max(side) {
                    1
                } else {
                    *stride
                };
                let p = (*pad).min((k - 1) / 2);
                let op = usize::from(*output_padding && s > 1);
                let size = |n: usize| (n - 1) * s + k + op - 2 * p;
                let (groups, out) = if *grouped && x.c.is_multiple_of(2) {
                    (2, 2 * (1 + out % 4))
                } else {
                    (1, *out)
                };
                let e = format!(
                    "{} -> conv_transpose({out}, {k}, stride: {s}, pad: {p}, output_padding: {op}, groups: {groups})",
                    x.name
                );
                self.bind(e, out, size(x.h), size(x.w))
            }
            Step::Resize {
                nearest,
                num,
                align_corners,
            } => {
                // Nearest only doubles (PyTorch's and ONNX Runtime's f32
                // index arithmetic agree exactly there); bilinear goes to
                // num/4 of each side, from a quarter to twice.
                // Sides stay at most 32 (or what they were), so chains of
                // upsampling keep the reference interpreter quick.
                let side = x.h.max(x.w);
                if *nearest && 2 * side <= 32 {
                    let e = format!("{} -> resize(scale: 2, mode: \"nearest\")", x.name);
                    return self.bind(e, x.c, 2 * x.h, 2 * x.w);
                }
                let num = if side * num / 4 > 32.max(side) {
                    4
                } else {
                    *num
                };
                let (oh, ow) = ((x.h * num / 4).max(1), (x.w * num / 4).max(1));
                let e = format!(
                    "{} -> resize(size: [{oh}, {ow}], align_corners: {align_corners})",
                    x.name
                );
                self.bind(e, x.c, oh, ow)
            }
            Step::Unpool {
                kernel,
                pad,
                ceil,
                conv,
            } => {
                let k = *kernel;
                let pad = (*pad).min(k / 2);
                let size = |n: usize| -> Option<usize> {
                    let room = (n + 2 * pad).checked_sub(k)?;
                    let mut o = if *ceil {
                        room.div_ceil(k) + 1
                    } else {
                        room / k + 1
                    };
                    if *ceil && (o - 1) * k >= n + pad {
                        o -= 1;
                    }
                    Some(o)
                };
                let (Some(oh), Some(ow)) = (size(x.h), size(x.w)) else {
                    return self.bind(format!("{} -> tanh", x.name), x.c, x.h, x.w);
                };
                let p = self.bind(
                    format!(
                        "{} -> maxpool({k}, stride: {k}, pad: {pad}, ceil: {ceil})",
                        x.name
                    ),
                    x.c,
                    oh,
                    ow,
                );
                let values = if *conv {
                    format!("{} -> [conv({}, 1), tanh]", p.name, x.c)
                } else {
                    p.name.clone()
                };
                self.bind(format!("maxunpool({values}, {})", p.name), x.c, x.h, x.w)
            }
            Step::Shuffle { split, groups } => {
                let c = x.c;
                if *split && c.is_multiple_of(2) {
                    let half = c / 2;
                    let e = format!(
                        "concat({0} -> slice(0, {half}), {0} -> slice({half}, {c}) -> [conv({half}, 3, pad: 1), relu]) -> channel_shuffle(2)",
                        x.name
                    );
                    return self.bind(e, c, x.h, x.w);
                }
                let g = (1..=(*groups).min(c))
                    .rev()
                    .find(|g| c.is_multiple_of(*g))
                    .unwrap_or(1);
                self.bind(format!("{} -> channel_shuffle({g})", x.name), c, x.h, x.w)
            }
            Step::Skip { batchnorm, relu } => {
                let bn = if *batchnorm { ", batchnorm" } else { "" };
                let relu = if *relu { " -> relu" } else { "" };
                let e = format!(
                    "add({} -> [conv({}, 3, pad: 1, bias: false){bn}], {}){relu}",
                    x.name, x.c, x.name
                );
                self.bind(e, x.c, x.h, x.w)
            }
            Step::Branches { convs, pool } => {
                let mut parts = Vec::new();
                let mut c = 0;
                for &(out, bn, relu) in convs {
                    let bn = if bn { ", batchnorm" } else { "" };
                    let tail = if relu { ", relu" } else { "" };
                    parts.push(format!("{} -> [conv({out}, 1){bn}{tail}]", x.name));
                    c += out;
                }
                if *pool {
                    parts.push(format!("{} -> maxpool(3, stride: 1, pad: 1)", x.name));
                    c += x.c;
                }
                self.bind(format!("concat({})", parts.join(", ")), c, x.h, x.w)
            }
        }
    }
}

impl Spec {
    /// The model's `.net` source.
    pub fn render(&self) -> String {
        let mut r = Render { lines: Vec::new() };
        let mut x = T {
            name: "x".into(),
            c: self.c,
            h: self.h,
            w: self.w,
        };
        let mut extra = None;
        for (i, step) in self.steps.iter().enumerate() {
            x = r.step(&x, step);
            if self.extra_output.map(|e| e % self.steps.len()) == Some(i) {
                extra = Some(x.name.clone());
            }
        }
        let result = match &self.head {
            Head::Plain => x.name.clone(),
            Head::GlobalPool { classes } => {
                format!("{} -> [global_avgpool, flatten, dense({classes})]", x.name)
            }
            Head::Dense {
                hidden,
                classes,
                in_out,
                relu,
            } => {
                let layout = if *in_out { "in_out" } else { "out_in" };
                let mid = if *relu {
                    ", relu"
                } else {
                    ", dropout(0.5, inference: \"scale\")"
                };
                format!(
                    "{} -> [flatten, dense({hidden}, layout: \"{layout}\"){mid}, dense({classes}), softmax]",
                    x.name
                )
            }
        };
        let ret = match extra {
            Some(e) if e != x.name => format!("    return {result}, {e}"),
            _ => format!("    return {result}"),
        };
        format!(
            "model random(x: [N, {}, {}, {}]) {{\n{}\n{ret}\n}}\n",
            self.c,
            self.h,
            self.w,
            r.lines.join("\n")
        )
    }
}
