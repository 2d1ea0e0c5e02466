//! Every model in `models/`, compiled and run at several batch sizes under
//! `JitModel::run`'s guards: inputs, outputs, weights and arena sit between
//! NaN sentinel regions that must be intact after the run, inputs must be
//! unchanged and every output element written. A stray read of a sentinel
//! would make an output NaN, so the outputs must also be finite.
//! (The differential tests run the same guarded path at batch 1 and 3 and
//! compare values with the reference.)

mod common;

use netc::weights::Weights;
use netc_runtime::init::{random_tensor, Init};

fn models() -> Vec<String> {
    let mut names = Vec::new();
    for dir in ["models", "models/claims"] {
        let entries = std::fs::read_dir(common::root().join(dir)).unwrap();
        for e in entries {
            let path = e.unwrap().path();
            // Block libraries (imported by models) define no model.
            let defines_model = || {
                std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with("model "))
            };
            if path.extension().is_some_and(|x| x == "net") && defines_model() {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                names.push(match dir {
                    "models" => stem,
                    _ => format!("claims/{stem}"),
                });
            }
        }
    }
    names.sort();
    names
}

#[test]
fn every_model_stays_inside_its_buffers_at_several_batches() {
    let names = models();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        for batch in [2, 5] {
            // SegNet at a third of its sides: 360×480 at batch 5 is 532 GMACs.
            let size = (name == "segnet").then_some([120, 160]);
            let graph = common::sized_model_graph(name, batch, size);
            let w = Weights::random(&graph, 3);
            let inputs: Vec<_> = graph
                .inputs
                .iter()
                .map(|&n| {
                    let shape = graph.g[n].shape.dims().to_vec();
                    random_tensor(5, "x", shape, Init::Uniform { lo: -1.0, hi: 1.0 })
                })
                .collect();
            let mut model = common::jit(&graph, &w, 2);
            for run in 0..2 {
                let outputs = model
                    .run(&inputs)
                    .unwrap_or_else(|e| panic!("{name} batch {batch} run {run}: {e}"));
                for (i, out) in outputs.iter().enumerate() {
                    assert!(
                        out.data().iter().all(|v| v.is_finite()),
                        "{name} batch {batch}: output {i} is not finite"
                    );
                }
            }
        }
    }
}
