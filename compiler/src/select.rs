//! Kernel selection: every convolution and dense layer gets its algorithm
//! for the compile [`Target`] — the one place that decides. Runs after the
//! passes (whatever they are) and before memory planning; codegen only
//! reads [`ConvAlgo`] / [`DenseAlgo`].
//!
//! The rules, in order, for a convolution: Winograd where the runtime has
//! a variant for its kernel size and enough tiles fill a micro-kernel
//! panel; `mvec` on AVX-512 targets for long reductions over few columns;
//! a plain matrix multiply for stride-1 unpadded 1×1; im2col GEMM for the
//! rest. A dense layer streams its weights once (GEMV) up to
//! [`desc::GEMV_MAX_BATCH`] rows, else it is a GEMM. The kernels' own
//! `choose` functions hold the shape rules; this module applies them.
//!
//! `NETC_NO_WINOGRAD` and `NETC_NO_MVEC` switch those two off (for
//! comparing kernels); they are read here and nowhere else.

use crate::ir::graph::Graph;
use crate::ir::op::{Activation, Conv, ConvAlgo, DenseAlgo, Op, Step, WinogradTile};
use crate::target::Target;
use netc_runtime::kernels::desc::{self, GemmDesc};
use netc_runtime::kernels::{mvec, winograd};

/// The runtime's code for an epilogue step, with its two parameters.
fn step_code(step: &Step) -> (u32, f32, f32) {
    match step {
        Step::Add => (desc::STEP_ADD, 0.0, 0.0),
        Step::Act(Activation::Relu) => (desc::STEP_RELU, 0.0, 0.0),
        Step::Act(Activation::LeakyRelu(a)) => (desc::STEP_LEAKY, *a, 0.0),
        Step::Act(Activation::Sigmoid) => (desc::STEP_SIGMOID, 0.0, 0.0),
        Step::Act(Activation::Tanh) => (desc::STEP_TANH, 0.0, 0.0),
        Step::Act(Activation::HardSigmoid) => (desc::STEP_HARDSIGMOID, 0.0, 0.0),
        Step::Act(Activation::HardSwish) => (desc::STEP_HARDSWISH, 0.0, 0.0),
        Step::Act(Activation::Clip(lo, hi)) => (desc::STEP_CLIP, *lo, *hi),
        Step::Act(Activation::Silu) => (desc::STEP_SILU, 0.0, 0.0),
        Step::MaxPool2 => (desc::STEP_MAXPOOL2, 0.0, 0.0),
    }
}

/// Write `steps` into a descriptor. The caller has checked the counts
/// against [`desc::MAX_STEPS`] / [`desc::MAX_RESIDUALS`].
pub fn set_steps(d: &mut GemmDesc, steps: &[Step]) {
    for (i, s) in steps.iter().enumerate().take(desc::MAX_STEPS) {
        (d.steps[i], d.alpha[i], d.beta[i]) = step_code(s);
    }
    d.n_steps = steps.len().min(desc::MAX_STEPS) as u32;
    d.n_res = crate::ir::op::residual_inputs(steps) as u32;
}

/// A convolution's descriptor as far as it depends on the op alone
/// (geometry, epilogue, kind from [`ConvAlgo`]); batch strides and bias are
/// the memory plan's and the weights' business (codegen fills them).
/// `input` is the NCHW input shape, `output` the node's (pooled) shape.
pub fn conv_desc(c: &Conv, input: &[usize], output: &[usize]) -> GemmDesc {
    // The convolution's own output: twice the pooled one's sides.
    let scale = if c.pooled() { 2 } else { 1 };
    let mut d = GemmDesc {
        kind: kind_of(c.algo, c.is_pointwise()),
        batch: input[0] as u32,
        groups: c.groups as u32,
        in_c: c.in_channels as u32,
        h: input[2] as u32,
        w: input[3] as u32,
        out_c: c.out_channels as u32,
        oh: (scale * output[2]) as u32,
        ow: (scale * output[3]) as u32,
        kh: c.window.kernel[0] as u32,
        kw: c.window.kernel[1] as u32,
        sh: c.window.stride[0] as u32,
        sw: c.window.stride[1] as u32,
        pt: c.window.pad[0] as u32,
        pl: c.window.pad[1] as u32,
        dh: c.window.dilation[0] as u32,
        dw: c.window.dilation[1] as u32,
        ..GemmDesc::default()
    };
    set_steps(&mut d, &c.epilogue);
    d
}

/// The runtime descriptor kind for an algorithm.
fn kind_of(algo: ConvAlgo, pointwise: bool) -> u32 {
    match algo {
        ConvAlgo::Winograd(t) => runtime_tile(t).kind(),
        ConvAlgo::Mvec => desc::KIND_MVEC,
        ConvAlgo::Pointwise => desc::KIND_POINTWISE,
        ConvAlgo::Gemm => desc::KIND_IM2COL,
        ConvAlgo::Unselected if pointwise => desc::KIND_POINTWISE,
        ConvAlgo::Unselected => desc::KIND_IM2COL,
    }
}

pub fn runtime_tile(t: WinogradTile) -> winograd::Tile {
    match t {
        WinogradTile::F2 => winograd::Tile::F2,
        WinogradTile::F4 => winograd::Tile::F4,
        WinogradTile::F2K5 => winograd::Tile::F2K5,
    }
}

fn ir_tile(t: winograd::Tile) -> WinogradTile {
    match t {
        winograd::Tile::F2 => WinogradTile::F2,
        winograd::Tile::F4 => WinogradTile::F4,
        winograd::Tile::F2K5 => WinogradTile::F2K5,
    }
}

/// The algorithm for convolution `c` reading `input` into `output` on
/// `target`.
pub fn conv_algo(c: &Conv, input: &[usize], output: &[usize], target: &Target) -> ConvAlgo {
    let plain = Conv {
        algo: ConvAlgo::Unselected,
        ..c.clone()
    };
    let d = conv_desc(&plain, input, output);
    if std::env::var_os("NETC_NO_WINOGRAD").is_none() {
        if let Some(tile) = winograd::choose(&d) {
            return ConvAlgo::Winograd(ir_tile(tile));
        }
    }
    if std::env::var_os("NETC_NO_MVEC").is_none() && mvec::choose(&d, target.features) {
        return ConvAlgo::Mvec;
    }
    if c.is_pointwise() {
        ConvAlgo::Pointwise
    } else {
        ConvAlgo::Gemm
    }
}

/// The algorithm for a dense layer over `batch` rows.
pub fn dense_algo(batch: usize) -> DenseAlgo {
    if batch <= desc::GEMV_MAX_BATCH {
        DenseAlgo::Gemv
    } else {
        DenseAlgo::Gemm
    }
}

/// Choose every conv's and dense layer's algorithm; returns how many
/// nodes were given one.
pub fn run(graph: &mut Graph, target: &Target) -> usize {
    let nodes: Vec<_> = graph.g.node_indices().collect();
    let mut chosen = 0;
    for n in nodes {
        let input = match graph.operands(n).first() {
            Some(&i) => graph.g[i].shape.0.clone(),
            None => continue,
        };
        let output = graph.g[n].shape.0.clone();
        let Some(op) = graph.op_mut(n) else {
            continue;
        };
        match op {
            Op::Conv(c) => {
                c.algo = conv_algo(c, &input, &output, target);
                chosen += 1;
            }
            Op::Dense(d) => {
                d.algo = dense_algo(output[0]);
                chosen += 1;
            }
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
            | Op::Identity => {}
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::graph;
    use netc_runtime::cpu::Features;

    fn algos(g: &Graph) -> Vec<&'static str> {
        let mut v: Vec<_> =
            g.g.node_weights()
                .filter_map(|n| {
                    if let Some(Op::Conv(c)) = n.op() {
                        Some(c.algo.name())
                    } else if let Some(Op::Dense(d)) = n.op() {
                        Some(d.algo.name())
                    } else {
                        None
                    }
                })
                .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn each_shape_gets_the_kernel_its_rules_give() {
        let (mut g, _) = graph("model m(x: [N, 16, 16, 16]) {\n x -> [conv(16, 1), conv(16, 1, stride: 2), conv(32, 3, pad: 1), flatten, dense(10)] as s\n}");
        let v3 = Target::level("x86-64-v3").unwrap();
        assert_eq!(run(&mut g, &v3), 4);
        // The 3×3 at 8×8, batch 2: 2·2·2 = 8 F(4×4) tiles, too few; 32 F(2×2).
        assert_eq!(algos(&g), ["gemm", "gemv", "pointwise", "winograd-f2"]);
    }

    #[test]
    fn mvec_only_for_avx512_targets() {
        // A long reduction (K = 256) over few columns.
        let src = "model m(x: [N, 256, 14, 14]) {\n x -> conv(64, 1)\n}";
        let (mut g, _) = graph(src);
        run(&mut g, &Target::level("x86-64-v4").unwrap());
        assert_eq!(algos(&g), ["mvec"]);
        let (mut g, _) = graph(src);
        run(&mut g, &Target::level("x86-64-v3").unwrap());
        assert_eq!(algos(&g), ["pointwise"]);
        assert_eq!(
            Target::level("x86-64-v4").unwrap().features,
            Features::X86_64_V4
        );
    }
}
