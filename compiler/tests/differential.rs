//! Differential tests against the reference interpreter on the unoptimised
//! graph: the optimised graph run by the reference kernels inside its
//! planned arena, and the JIT's native code with 1 and 2 threads, must all
//! match it (max |Δ| ≤ 1e-4 · max |output|) on every model at batch 1 and
//! 3 and on randomly generated graphs.

mod common;

use netc::interp;
use netc::ir::op::Op;
use netc::ir::Graph;
use netc::passes::{self, Options, PASSES};
use netc::pipeline::Planned;
use netc::weights::Weights;
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::Tensor;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;

fn inputs(graph: &Graph, seed: u64) -> Vec<Tensor> {
    graph
        .inputs
        .iter()
        .map(|&n| {
            let node = &graph.g[n];
            random_tensor(
                seed,
                &node.name,
                node.shape.dims().to_vec(),
                Init::Uniform { lo: -1.0, hi: 1.0 },
            )
        })
        .collect()
}

/// `maxunpool` puts a value where its pool window's maximum was, so a
/// window whose two largest values differ by less than float32 rounding
/// can be decided differently by two correct implementations, moving that
/// value (the reference interpreter sums in f64, the kernels in f32, and
/// the kernels differ by CPU). Graphs with unpooling may therefore differ
/// beyond the bound at up to this share of their output values; a wrong
/// unpool moves every value, and a NaN fails anyway.
const FLIP_SHARE: f64 = 0.01;

fn has_unpool(graph: &Graph) -> bool {
    graph
        .g
        .node_weights()
        .any(|n| matches!(n.op(), Some(Op::MaxUnpool { .. })))
}

fn compare(what: &str, got: &[Tensor], expected: &[Tensor], flips: bool) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!(
            "{what}: {} outputs, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let diff = g.max_abs_diff(e).unwrap_or(f32::INFINITY);
        let scale = e.max_abs();
        let beyond = g
            .data()
            .iter()
            .zip(e.data())
            .filter(|(a, b)| (*a - *b).abs() > 1e-4 * scale)
            .count();
        let flipped = flips && (beyond as f64) <= FLIP_SHARE * e.data().len() as f64;
        if diff.is_nan() || (diff > 1e-4 * scale && !flipped) {
            return Err(format!(
                "{what}: output {i} differs by {diff} (max |output| {scale})"
            ));
        }
    }
    Ok(())
}

/// Optimise a copy of `graph` and compare the planned interpreter and the
/// JIT (threads 1 and 2) with the reference; returns the optimised graph.
fn equivalent(graph: &Graph, options: &Options) -> Result<Graph, String> {
    let weights = Weights::random(graph, 7);
    let x = inputs(graph, 3);
    let expected = interp::run(graph, &weights, &x).map_err(|e| e.to_string())?;
    let planned = common::pipeline(options.clone(), 1)
        .optimize(graph.clone(), weights)
        .map_err(|e| e.to_string())?;
    let conflicts = planned.plan.conflicts();
    if !conflicts.is_empty() {
        return Err(format!("overlapping live buffers {conflicts:?}"));
    }
    let flips = has_unpool(graph);
    let got = planned.interpret(&x).map_err(|e| e.to_string())?;
    compare("planned", &got, &expected, flips)?;
    for threads in [1, 2] {
        let pipeline = common::pipeline(options.clone(), threads);
        let mut model = pipeline.jit(planned.clone()).map_err(|e| e.to_string())?;
        let what = format!("jit {threads} thread(s)");
        let first = model.run(&x).map_err(|e| e.to_string())?;
        compare(&what, &first, &expected, flips)?;
        // Running twice reuses the arena: results must not depend on
        // leftovers (against the first run, whose code decides every
        // unpooling window the same way).
        let what = format!("jit {threads} thread(s), second run");
        compare(
            &what,
            &model.run(&x).map_err(|e| e.to_string())?,
            &first,
            false,
        )?;
    }
    Ok(planned.graph)
}

fn check_equivalent(label: &str, graph: &Graph, options: &Options) -> Graph {
    equivalent(graph, options).unwrap_or_else(|e| panic!("{label}: {e}"))
}

const MODELS: &[&str] = &[
    "deep_convnet",
    "alexnet",
    "vgg16",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "claims/stacked_3x3_vs_5x5",
    "claims/inception_reductions",
    "claims/squeeze_excite",
];

#[test]
fn every_model_matches_unoptimised_at_batch_1_and_3() {
    for model in MODELS {
        for batch in [1, 3] {
            let g = common::model_graph(model, batch);
            check_equivalent(&format!("{model} batch {batch}"), &g, &Options::default());
        }
    }
}

/// The segmentation models, whose input size is open, at small sizes the
/// reference interpreter runs quickly: every conv is dilated or strided as
/// at 520×520, and both outputs are resized back to the input's size.
#[test]
fn segmentation_models_match_unoptimised_at_small_sizes() {
    for (model, batch, size) in [
        ("fcn_resnet50", 1, [64, 64]),
        ("fcn_resnet50", 2, [40, 72]),
        ("deeplabv3_resnet50", 1, [48, 56]),
        ("lraspp_mobilenet_v3_large", 1, [64, 80]),
        ("lraspp_mobilenet_v3_large", 2, [56, 40]),
        ("segnet", 1, [48, 64]),
        ("segnet", 2, [36, 44]),
    ] {
        let g = common::sized_model_graph(model, batch, Some(size));
        let classes = if model == "segnet" { 12 } else { 21 };
        for &o in &g.outputs {
            assert_eq!(g.g[o].shape.0, [batch, classes, size[0], size[1]]);
        }
        let label = format!("{model} batch {batch} at {}x{}", size[0], size[1]);
        check_equivalent(&label, &g, &Options::default());
    }
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.g.node_weights()
        .filter(|n| n.op().is_some_and(&f))
        .count()
}

#[test]
fn googlenet_merges_siblings_and_eliminates_concats() {
    let g = common::model_graph("googlenet", 1);
    let w = Weights::random(&g, 1);
    let Planned {
        graph: g, report, ..
    } = common::planned(&g, &w);
    let stat = |name: &str| {
        report
            .passes
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .rewrites
    };
    assert_eq!(stat("merge_pointwise"), 9, "one merge per inception module");
    assert_eq!(count(&g, |op| matches!(op, Op::Slice { .. })), 27);
    assert!(stat("concat_elim") >= 27, "{}", stat("concat_elim"));
    assert_eq!(count(&g, |op| matches!(op, Op::BatchNorm { .. })), 0);
}

#[test]
fn resnet50_folds_every_bn_and_fuses_every_residual() {
    let g = common::model_graph("resnet50", 1);
    let w = Weights::random(&g, 1);
    let Planned {
        graph: g, report, ..
    } = common::planned(&g, &w);
    assert_eq!(count(&g, |op| matches!(op, Op::BatchNorm { .. })), 0);
    assert_eq!(count(&g, |op| matches!(op, Op::Add)), 0);
    assert_eq!(count(&g, |op| matches!(op, Op::Activation(_))), 0);
    let stat = |name: &str| {
        report
            .passes
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .rewrites
    };
    assert_eq!(stat("fold_bn"), 53);
    let (arena, naive) = (report.arena_bytes.unwrap(), report.naive_bytes.unwrap());
    assert!(arena * 4 < naive, "arena {arena} vs naive {naive}");
    eprintln!("resnet50 batch 1: arena {arena} B, naive {naive} B");
}

#[test]
fn minus_o0_and_each_disabled_pass_still_match() {
    let g = common::model_graph("googlenet", 1);
    check_equivalent(
        "googlenet -O0",
        &g,
        &Options {
            disable_all: true,
            disabled: vec![],
        },
    );
    let g = common::model_graph("resnet18", 1);
    for p in PASSES {
        let options = Options {
            disable_all: false,
            disabled: vec![p.name.to_string()],
        };
        check_equivalent(&format!("resnet18 without {}", p.name), &g, &options);
    }
}

#[test]
fn unknown_pass_is_an_error() {
    let mut g = common::model_graph("deep_convnet", 1);
    let mut w = Weights::random(&g, 1);
    let options = Options {
        disable_all: false,
        disabled: vec!["fold_everything".into()],
    };
    let e = passes::optimize(&mut g, &mut w, &options)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown pass `fold_everything`") && e.contains("fold_bn"),
        "{e}"
    );
}

/// Residual adds fused into convs whose output may overwrite the residual
/// (see the memory plan): 1×1 and Winograd reductions, and a 5×5 over 64
/// channels into 128 (K = 1600, packed in two K blocks) and a 3×3 at
/// stride 5 (K = 576, two blocks of the im2col driver), whose partial sums
/// would clobber the residual before the last block adds it if it were
/// placed over it.
#[test]
fn convs_adding_a_dead_residual_match() {
    let cases = [
        "r = x -> [conv(8, 1), relu]\n add(r, x -> conv(8, 1)) -> relu",
        "r = x -> conv(8, 1)\n add(r, x -> conv(8, 3, pad: 1))",
        "r = x -> conv(128, 1)\n add(r, x -> conv(128, 5, pad: 2))",
        "r = x -> conv(128, 1, stride: 5)\n add(r, x -> conv(128, 3, stride: 5, pad: 1))",
    ];
    check_bodies("64, 12, 12", &cases, |_, _| {});
}

/// DenseNet's pattern: every layer concatenates all earlier features, so
/// one producer feeds several concats. It is placed in the first; the
/// others must copy it (they skipped it, reading stale memory, until
/// torchvision's densenet121 exported to ONNX came out wrong).
#[test]
fn producers_shared_by_several_concats_match() {
    let dense = "x0 = x -> conv(8, 3, pad: 1) -> maxpool(2)
 f1 = x0 -> [batchnorm, relu, conv(4, 3, pad: 1)]
 c1 = concat(x0, f1)
 f2 = c1 -> [batchnorm, relu, conv(4, 3, pad: 1)]
 c2 = concat(x0, f1, f2)
 f3 = c2 -> [batchnorm, relu, conv(4, 3, pad: 1)]
 concat(x0, f1, f2, f3) -> [batchnorm, relu]";
    let shared = "a = x -> conv(6, 1)
 b = x -> conv(5, 1)
 add(concat(a, b) -> conv(7, 1), concat(b, a) -> conv(7, 1))";
    check_bodies("4, 8, 8", &[dense, shared], |_, _| {});
}

/// Each model body over an input `x: [N, <input>]`, at batch 1 and 3,
/// checked equivalent; `then` sees the body and its optimised graph.
fn check_bodies(input: &str, bodies: &[&str], then: impl Fn(&str, &Graph)) {
    for body in bodies {
        let src = format!("model m(x: [N, {input}]) {{\n {body}\n}}");
        for batch in [1, 3] {
            let g = common::source_graph(&src, batch);
            let label = format!("{body} at batch {batch}");
            then(body, &check_equivalent(&label, &g, &Options::default()));
        }
    }
}

/// Residual sums of two 1×1 convs, merged into one over the stacked
/// inputs (`merge_residual`): shortcuts at strides 1–3 on odd planes
/// (stride 3 takes the subsample pool's general copy), a shortcut reading
/// a tensor another conv also reads (placed in the stack by
/// `concat_elim`, read there by that conv), and batch norms folded first.
#[test]
fn merged_residual_pairs_match() {
    let cases = [
        "m = x -> [conv(16, 1), relu, conv(16, 3, pad: 1), relu, conv(64, 1)]\n add(m, x -> conv(64, 1)) -> relu",
        "m = x -> [conv(16, 1), relu, conv(16, 3, stride: 2, pad: 1), relu, conv(64, 1), batchnorm]\n add(m, x -> [conv(64, 1, stride: 2, bias: false), batchnorm]) -> relu",
        "m = x -> [conv(16, 3, stride: 3, pad: 1), relu, conv(40, 1)]\n add(m, x -> conv(40, 1, stride: 3))",
        "p = x -> maxpool(3, stride: 1, pad: 1)\n m = p -> [conv(16, 1), relu, conv(16, 3, pad: 1), conv(64, 1)]\n add(m, p -> conv(64, 1)) -> relu",
    ];
    check_bodies("32, 13, 13", &cases, |body, opt| {
        let merged = count(
            opt,
            |op| matches!(op, Op::Conv(c) if c.in_channels > 32 && c.window.kernel == [1, 1]),
        );
        assert_eq!(merged, 1, "{body}: one merged conv");
    });
}

/// How many random models the differential property runs: 1000 by default,
/// more with `NETC_DIFF_CASES=N` (the long mode).
fn random_cases() -> u32 {
    std::env::var("NETC_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The property: every random model, at batch 1–3 and with at most one pass
/// disabled, runs the same optimised, planned and compiled as in the
/// reference. On failure proptest shrinks the model and reports the
/// smallest failing source.
#[test]
fn random_graphs_match_unoptimised() {
    let strategy = (
        common::gen::spec(),
        1..=3usize,
        prop::option::weighted(0.25, 0..PASSES.len()),
    );
    let mut runner = common::gen::runner(random_cases(), 0x5eed);
    let result = runner.run(&strategy, |(spec, batch, disabled)| {
        let src = spec.render();
        let g = common::source_graph(&src, batch);
        let options = Options {
            disable_all: false,
            disabled: disabled
                .map(|p| PASSES[p].name.to_string())
                .into_iter()
                .collect(),
        };
        equivalent(&g, &options)
            .map(|_| ())
            .map_err(|e| TestCaseError::fail(format!("batch {batch}, {options:?}: {e}\n{src}")))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every drawn model, and every model its shrinking passes through, checks:
/// the generator's fitting of choices to shapes is what makes shrinking safe.
#[test]
fn generated_and_shrunk_models_check() {
    let mut runner = common::gen::runner(100, 11);
    for _ in 0..100 {
        let mut tree = common::gen::spec().new_tree(&mut runner).unwrap();
        for _ in 0..40 {
            common::source_graph(&tree.current().render(), 1);
            if !tree.simplify() {
                break;
            }
        }
    }
}
