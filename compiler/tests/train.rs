//! Training's gradients: every op's backward rule against central finite
//! differences of the loss, in f64, on hand-written models that use each
//! op and on randomly generated graphs; the f32 step against the f64 one.

mod common;

use common::{gen, source_graph};
use netc::ir::op::ParamKind;
use netc::train::real::{Buf, Real};
use netc::train::{Executor, Loss, TrainGraph};
use netc::weights::Weights;
use netc_runtime::init::SplitMix64;

fn input<T: Real>(shape: &[usize], seed: u64) -> Buf<T> {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
    Buf::from_f32(shape, &data)
}

fn executor<T: Real>(src: &str, batch: usize, loss: Loss) -> Executor<T> {
    let graph = source_graph(src, batch);
    let weights = Weights::random(&graph, 7);
    let tg = match TrainGraph::build(graph, loss) {
        Ok(tg) => tg,
        Err(e) => panic!("{e}\n{src}"),
    };
    match Executor::new(tg, &weights, 3) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

/// Compare every learnable parameter's analytic gradient with central
/// differences at up to `per_param` entries; returns the worst relative
/// error.
fn check_gradients(src: &str, batch: usize, loss: Loss, per_param: usize) -> f64 {
    let mut ex = executor::<f64>(src, batch, loss);
    let shape = ex.tg.graph.g[ex.tg.graph.inputs[0]].shape.dims().to_vec();
    let x = input::<f64>(&shape, 11);
    let classes = ex.tg.classes;
    let labels: Vec<usize> = (0..batch).map(|i| (i * 7 + 3) % classes).collect();
    let pass = ex
        .forward_backward(&x, &labels, 0)
        .expect("forward_backward");
    let mut worst = 0.0f64;
    let mut rng = SplitMix64::new(5);
    for i in 0..ex.tg.params.len() {
        if ex.tg.params[i].kind != ParamKind::Learnable {
            continue;
        }
        let grad = pass.grads[i]
            .as_ref()
            .expect("learnable parameter without gradient");
        let len = ex.params[i].data.len();
        for _ in 0..per_param.min(len) {
            let j = (rng.next_u64() % len as u64) as usize;
            let original = ex.params[i].data[j];
            let eps = 1e-6 * original.abs().max(1.0);
            let mut at = |v: f64| {
                ex.params[i].data[j] = v;
                ex.forward_backward(&x, &labels, 0).expect("loss").loss
            };
            let numeric = (at(original + eps) - at(original - eps)) / (2.0 * eps);
            ex.params[i].data[j] = original;
            let analytic = grad[j];
            let err = (numeric - analytic).abs() / (numeric.abs().max(analytic.abs()).max(1e-3));
            assert!(
                err < 1e-4,
                "{}[{j}]: analytic {analytic:.9e}, numeric {numeric:.9e}\n{src}",
                ex.tg.params[i].name
            );
            worst = worst.max(err);
        }
    }
    worst
}

/// One model per op (and per variant whose backward differs), each with
/// a learnable layer upstream so the op's input gradient is exercised.
const OPS: &[(&str, &str)] = &[
    (
        "conv",
        "conv(4, 3, pad: 1) -> relu -> conv(6, 3, stride: 2, pad: [0, 1, 1, 0])",
    ),
    (
        "conv groups dilation",
        "conv(4, 3, pad: 1) -> conv(4, 3, pad: 2, dilation: 2, groups: 2)",
    ),
    (
        "conv no bias",
        "conv(4, 1, bias: false) -> conv(5, 5, pad: 2, bias: false)",
    ),
    (
        "conv_transpose",
        "conv(4, 3, pad: 1) -> conv_transpose(3, 3, stride: 2, pad: 1, output_padding: 1)",
    ),
    (
        "conv_transpose groups",
        "conv(4, 1) -> conv_transpose(4, 2, stride: 2, groups: 2, bias: false)",
    ),
    ("batchnorm", "conv(4, 3, pad: 1) -> batchnorm -> relu"),
    ("leaky_relu", "conv(4, 3, pad: 1) -> leaky_relu(0.1)"),
    (
        "sigmoid tanh",
        "conv(4, 3, pad: 1) -> sigmoid -> conv(4, 1) -> tanh",
    ),
    (
        "hard",
        "conv(4, 3, pad: 1) -> scale(4.0) -> hardswish -> conv(4, 1) -> scale(4.0) -> hardsigmoid",
    ),
    (
        "clip silu",
        "conv(4, 3, pad: 1) -> scale(3.0) -> clip(min: -1.0, max: 1.0) -> conv(4, 1) -> silu",
    ),
    (
        "maxpool",
        "conv(4, 3, pad: 1) -> maxpool(3, stride: 2, pad: 1, ceil: true)",
    ),
    (
        "avgpool pad",
        "conv(4, 3, pad: 1) -> avgpool(3, stride: 2, pad: 1)",
    ),
    (
        "avgpool exclude pad",
        "conv(4, 3, pad: 1) -> avgpool(3, stride: 2, pad: 1, ceil: true, count_include_pad: false)",
    ),
    (
        "adaptive_avgpool",
        "conv(4, 3, pad: 1) -> adaptive_avgpool([3, 2])",
    ),
    (
        "dropout book",
        "conv(4, 3, pad: 1) -> dropout(0.5, inference: \"scale\")",
    ),
    ("dropout inverted", "conv(4, 3, pad: 1) -> dropout(0.3)"),
    ("softmax", "conv(4, 3, pad: 1) -> softmax -> conv(4, 1)"),
    (
        "scale identity",
        "conv(4, 3, pad: 1) -> scale(0.5) -> identity",
    ),
    (
        "resize bilinear",
        "conv(4, 3, pad: 1) -> resize(size: [11, 5], mode: \"bilinear\")",
    ),
    (
        "resize align_corners",
        "conv(4, 3, pad: 1) -> resize(scale: 2, mode: \"bilinear\", align_corners: true)",
    ),
    (
        "slice channel_shuffle",
        "conv(6, 3, pad: 1) -> slice(1, 5) -> channel_shuffle(2) -> conv(4, 3, pad: 1)",
    ),
    (
        "resize nearest",
        "conv(4, 3, pad: 1) -> resize(size: [5, 13], mode: \"nearest\")",
    ),
];

/// A model applying `body` (layers separated by `->`) between an input
/// and a classifier head.
fn wrap(body: &str) -> String {
    let layers = body.replace(" -> ", ", ");
    format!(
        "model m(x: [N, 3, 7, 6]) {{\n    y = x -> [{layers}]\n    return y -> [global_avgpool, flatten, dense(5)]\n}}\n"
    )
}

#[test]
fn every_op_gradient_matches_central_differences() {
    for (name, body) in OPS {
        let worst = check_gradients(&wrap(body), 2, Loss::CrossEntropy, 6);
        eprintln!("{name}: worst relative error {worst:.2e}");
    }
}

#[test]
fn merges_and_dense_layouts_match_central_differences() {
    let src = "model m(x: [N, 3, 6, 6]) {
    a = x -> conv(4, 3, pad: 1) -> relu
    b = x -> conv(4, 1)
    s = add(a, b)
    c = concat(s, a, x)
    g = c -> [global_avgpool, conv(11, 1), sigmoid]
    m = mul(c, g)
    e = mul(m, c)
    return e -> [flatten, dense(7, layout: \"in_out\"), relu, dense(4), softmax]
}
";
    check_gradients(src, 3, Loss::CrossEntropy, 8);
    check_gradients(src, 2, Loss::Mse, 8);
}

/// `maxunpool`: the values' gradient is the output's at the pool's
/// winners; the source (the pool's input) gets none through it, only
/// through the pool. A 7×6 input with ceil mode leaves a partial window.
#[test]
fn maxunpool_gradient_matches_central_differences() {
    let src = "model m(x: [N, 3, 7, 6]) {
    e = x -> [conv(4, 3, pad: 1), tanh]
    p = e -> maxpool(2, ceil: true)
    d = maxunpool(p -> [conv(4, 1), sigmoid], p)
    return d -> [conv(3, 3, pad: 1), global_avgpool, flatten, dense(5)]
}
";
    check_gradients(src, 2, Loss::CrossEntropy, 8);
}

/// Generated models with a classifier head: the random-graph half of the
/// differential tests, for gradients.
#[test]
fn random_graphs_match_central_differences() {
    let mut checked = 0;
    for seed in 0..60u64 {
        let src = gen::source(seed);
        let graph = source_graph(&src, 2);
        if graph.g[graph.outputs[0]].shape.dims().len() != 2 {
            continue;
        }
        check_gradients(&src, 2, Loss::CrossEntropy, 3);
        checked += 1;
        if checked == 12 {
            break;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} generated models had a classifier head"
    );
}

/// The f32 step (GEMM micro-kernels) against the f64 one on a model with
/// every heavy op.
#[test]
fn f32_step_matches_f64() {
    let src = wrap("conv(8, 3, pad: 1) -> batchnorm -> relu -> maxpool(2) -> conv(16, 3, pad: 1, groups: 2) -> relu -> conv_transpose(6, 2, stride: 2)");
    let mut a = executor::<f32>(&src, 4, Loss::CrossEntropy);
    let mut b = executor::<f64>(&src, 4, Loss::CrossEntropy);
    let labels = [0, 1, 2, 3];
    let pa = a
        .forward_backward(&input(&[4, 3, 7, 6], 1), &labels, 0)
        .expect("f32");
    let pb = b
        .forward_backward(&input(&[4, 3, 7, 6], 1), &labels, 0)
        .expect("f64");
    assert!((pa.loss - pb.loss).abs() < 1e-5 * pb.loss.abs().max(1.0));
    for (i, (ga, gb)) in pa.grads.iter().zip(&pb.grads).enumerate() {
        let (Some(ga), Some(gb)) = (ga, gb) else {
            continue;
        };
        let scale = gb.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (x, y) in ga.iter().zip(gb) {
            assert!(
                (*x as f64 - y).abs() <= 1e-4 * scale,
                "{}: {x} vs {y}",
                a.tg.params[i].name
            );
        }
    }
}
