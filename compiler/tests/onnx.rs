//! ONNX interop, checked against the ONNX checker and ONNX Runtime:
//! every model in `models/` (and 150 random graphs) is exported, validated
//! with `onnx.checker` (full check), run in ONNX Runtime and compared with
//! netc's JIT (max |Δ| ≤ 1e-3 · max |output|), then imported back and run by
//! netc again (the round trip must match the original to 1e-5). A model
//! written by another tool with `onnx.helper` (BN not folded, `Gemm` with
//! transB=1, `Reshape` flatten, …) imports and matches ONNX Runtime.
//!
//! The Python side (`benches/requirements.txt`) is installed by `.ci/run`,
//! which sets NETC_REQUIRE_PYTHON=1 so that a missing install fails there;
//! elsewhere these tests say they were skipped.

mod common;

use netc::check::{self, CheckOptions};
use netc::ir::Graph;
use netc::onnx::{self, Batch};
use netc::weights::Weights;
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::weights::{read_npy, write_npy, WeightFile};
use netc_runtime::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `python3` if it has numpy, onnx and onnxruntime.
fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some("python3");
    }
    if std::env::var_os("NETC_REQUIRE_PYTHON").is_some() {
        panic!("python3 with numpy, onnx and onnxruntime is required (pip install -r benches/requirements.txt)");
    }
    eprintln!("skipped: python3 with numpy, onnx and onnxruntime not found (pip install -r benches/requirements.txt)");
    None
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_python(args: &[&Path], script: &str) {
    let script = common::root().join("compiler/tests/onnx").join(script);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The optimised graph compiled and run by the JIT on one input.
fn jit(graph: &Graph, weights: &Weights, x: &Tensor) -> Tensor {
    let mut model = common::jit(graph, weights, 2);
    model.run(std::slice::from_ref(x)).unwrap().remove(0)
}

fn input_for(graph: &Graph, seed: u64) -> Tensor {
    let node = &graph.g[graph.inputs[0]];
    random_tensor(
        seed,
        "input",
        node.shape.dims().to_vec(),
        Init::Uniform { lo: -1.0, hi: 1.0 },
    )
}

fn relative_diff(got: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(got.shape(), expected.shape());
    got.max_abs_diff(expected).unwrap_or(f32::INFINITY) / expected.max_abs().max(f32::MIN_POSITIVE)
}

/// Import `model` and run it on `x` with the imported weights.
fn import_and_run(model: &onnx::proto::ModelProto, label: &str, x: &Tensor) -> Tensor {
    let imported = onnx::import(model, label).unwrap_or_else(|e| panic!("{label}: import: {e}"));
    let options = CheckOptions {
        batch: x.shape()[0],
        ..CheckOptions::default()
    };
    let net = check::check_source("imported.net", &imported.source, options)
        .unwrap_or_else(|(s, d)| panic!("{label}: {}", d.render(&s)));
    let graph = Graph::from_network(&net);
    let file = WeightFile {
        path: PathBuf::from("imported.safetensors"),
        tensors: imported.weights,
    };
    let weights = Weights::bind(&graph, file).unwrap_or_else(|e| panic!("{label}: {e}"));
    jit(&graph, &weights, x)
}

/// A model checked, exported, run by ONNX Runtime and imported back.
struct Case {
    label: String,
    graph: Graph,
    model: onnx::proto::ModelProto,
    netc: Tensor,
    x: Tensor,
    dir: PathBuf,
}

fn prepare(label: &str, graph: Graph, dir: &Path) -> Case {
    let weights = Weights::random(&graph, 11);
    let x = input_for(&graph, 5);
    let netc = jit(&graph, &weights, &x);
    let model =
        onnx::export(&graph, &weights, Batch::Symbolic).unwrap_or_else(|e| panic!("{label}: {e}"));
    onnx::write(&dir.join(format!("{label}.onnx")), &model).unwrap();
    std::fs::write(dir.join(format!("{label}.in.npy")), write_npy(&x)).unwrap();
    Case {
        label: label.to_string(),
        graph,
        model,
        netc,
        x,
        dir: dir.to_path_buf(),
    }
}

/// Whether `got` matches `expected` within `bound` of the largest value —
/// for a graph with `maxunpool`, at all but 1% of the values: a pool window
/// whose two largest values differ by less than float32 rounding can be
/// decided differently by two correct engines, which moves that value
/// (docs/performance.md#segmentation). A NaN never matches.
fn matches(graph: &Graph, got: &Tensor, expected: &Tensor, bound: f32) -> Result<(), String> {
    let d = relative_diff(got, expected);
    if d <= bound {
        return Ok(());
    }
    let unpools = graph
        .g
        .node_weights()
        .any(|n| matches!(n.op(), Some(netc::ir::op::Op::MaxUnpool { .. })));
    let scale = expected.max_abs();
    let beyond = got
        .data()
        .iter()
        .zip(expected.data())
        .filter(|(a, b)| (*a - *b).abs() > bound * scale || a.is_nan() != b.is_nan())
        .count();
    if unpools && !d.is_nan() && beyond * 100 <= expected.data().len() {
        return Ok(());
    }
    Err(format!("differ by {d} (relative) at {beyond} values"))
}

/// ONNX Runtime on every case in one Python process, then the comparisons.
fn check_cases(cases: &[Case]) {
    let paths: Vec<PathBuf> = cases
        .iter()
        .flat_map(|c| {
            ["onnx", "in.npy", "out.npy"].map(|ext| c.dir.join(format!("{}.{ext}", c.label)))
        })
        .collect();
    let args: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    run_python(&args, "ort_run.py");
    for c in cases {
        let ort = read_npy(&c.dir.join(format!("{}.out.npy", c.label))).unwrap();
        if let Err(e) = matches(&c.graph, &c.netc, &ort, 1e-3) {
            panic!("{}: netc and ONNX Runtime {e}", c.label);
        }
        // The round trip: ONNX → .net → netc must reproduce the original.
        let back = import_and_run(&c.model, &c.label, &c.x);
        if let Err(e) = matches(&c.graph, &back, &c.netc, 1e-5) {
            panic!("{}: the imported model and the original {e}", c.label);
        }
        assert!(c.graph.op_count() > 0);
    }
}

#[test]
fn every_model_exports_runs_in_onnxruntime_and_imports_back() {
    if python().is_none() {
        return;
    }
    let dir = scratch("onnx-models");
    let mut names: Vec<String> = Vec::new();
    for sub in ["", "claims/"] {
        for entry in std::fs::read_dir(common::root().join("models").join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "net") && text.contains("\nmodel ") {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                names.push(format!("{sub}{stem}"));
            }
        }
    }
    names.sort();
    assert!(names.len() >= 10, "models found: {names:?}");
    // One at a time keeps VGG-16's half-gigabyte export out of the others' way.
    for name in &names {
        let batch = if name.contains("deep_convnet") { 3 } else { 2 };
        // SegNet at a small size: 360×480 at batch 2 is 213 GMACs.
        let size = (name == "segnet").then_some([64, 96]);
        let case = prepare(
            &name.replace('/', "_"),
            common::sized_model_graph(name, batch, size),
            &dir,
        );
        check_cases(std::slice::from_ref(&case));
        let _ = std::fs::remove_file(dir.join(format!("{}.onnx", case.label)));
    }
}

#[test]
fn random_graphs_export_and_import() {
    if python().is_none() {
        return;
    }
    let dir = scratch("onnx-random");
    let cases: Vec<Case> = (0..150u64)
        .map(|seed| {
            let src = common::gen::source(9000 + seed);
            prepare(
                &format!("random{seed}"),
                common::source_graph(&src, 2),
                &dir,
            )
        })
        .collect();
    check_cases(&cases);
}

#[test]
fn a_model_written_by_another_tool_imports_and_matches_onnxruntime() {
    if python().is_none() {
        return;
    }
    let dir = scratch("onnx-foreign");
    run_python(&[&dir], "foreign.py");
    let model = onnx::read(&dir.join("foreign.onnx")).unwrap();
    let x = read_npy(&dir.join("input.npy")).unwrap();
    let expected = read_npy(&dir.join("expected.npy")).unwrap();
    let got = import_and_run(&model, "foreign", &x);
    let d = relative_diff(&got, &expected);
    assert!(d <= 1e-3, "imported model differs from ONNX Runtime by {d}");
    let imported = onnx::import(&model, "foreign").unwrap();
    // Names are kept: the weights under their initialiser names, the layers
    // named after PyTorch's module paths.
    assert!(
        imported.source.contains("weight: \"stem.bn.weight\""),
        "{}",
        imported.source
    );
    assert!(
        imported.source.contains("stem_relu = stem_bn -> relu"),
        "{}",
        imported.source
    );
    assert!(
        imported.source.contains("count_include_pad: false"),
        "{}",
        imported.source
    );
}
