//! Entry points for the `cargo fuzz` targets in `fuzz/` and for the
//! regression tests that replay their committed crashers
//! (`compiler/tests/fuzz_regressions.rs`), so a crasher is replayed through
//! exactly the code the fuzzer ran.
//!
//! Each takes arbitrary bytes and must return — with a result or an error,
//! never a panic, an abort or an unbounded allocation. Errors are dropped:
//! what is fuzzed is that every input gets an answer.

use crate::check::{CheckOptions, Limits};
use crate::pipeline::{self, Pipeline};
use crate::weights::Weights;
use netc_runtime::data::{idx, image};
use std::path::Path;

/// A fuzz entry point: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/*.rs` file.
pub const TARGETS: &[(&str, Target)] = &[
    ("parse_check", parse_check),
    ("weights", weights),
    ("idx", idx),
    ("image", image),
    ("onnx_import", onnx_import),
];

/// Graphs at most this big also go through the optimisation passes with
/// random weights; larger ones stop after checking so one input stays fast.
const OPTIMISE_MAX_MACS: u64 = 1 << 22;
const OPTIMISE_MAX_BYTES: u64 = 1 << 24;

/// `.net` source → parse → check → graph IR → validate → (small graphs)
/// every optimisation pass, kernel selection and the memory plan.
pub fn parse_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The fuzzer's memory limit is far below the default 16 GiB tensor
    // limit; the checker only does arithmetic on shapes, but keeping the
    // limit small also bounds what the passes below allocate.
    let options = CheckOptions {
        batch: 1,
        size: None,
        limits: Limits {
            max_tensor_bytes: 1 << 26,
            max_layers: 5_000,
            ..Limits::default()
        },
    };
    let pipeline = Pipeline::new(pipeline::Options {
        batch: options.batch,
        limits: options.limits,
        ..pipeline::Options::default()
    });
    let Ok(graph) = pipeline.check_source("fuzz.net", text) else {
        return;
    };
    if graph.macs() > OPTIMISE_MAX_MACS || graph.activation_bytes() > OPTIMISE_MAX_BYTES {
        return;
    }
    let w = Weights::random(&graph, 1);
    if w.bytes() > OPTIMISE_MAX_BYTES {
        return;
    }
    let _ = pipeline.optimize(graph, w);
}

/// Weight files: safetensors, `.npz` and `.npy`, recognised by content.
pub fn weights(data: &[u8]) {
    let _ = netc_runtime::weights::load_bytes(Path::new("fuzz.bin"), data);
}

/// MNIST IDX images and labels, plain or gzip-compressed.
pub fn idx(data: &[u8]) {
    let path = Path::new("fuzz.idx");
    let _ = idx::parse_images(path, data);
    let _ = idx::parse_labels(path, data);
}

/// PNG/JPEG decoding and the ImageNet and greyscale preprocessing.
pub fn image(data: &[u8]) {
    let path = Path::new("fuzz.img");
    let _ = image::decode(path, data, &image::Preprocess::imagenet(224));
    let grey = image::Preprocess {
        resize: None,
        crop: None,
        mean: vec![0.5],
        std: vec![0.5],
        channels: 1,
    };
    let _ = image::decode(path, data, &grey);
}

/// ONNX protobuf decoding and import to `.net` text (which the importer
/// checks before returning it).
pub fn onnx_import(data: &[u8]) {
    let Ok(model) = crate::onnx::decode(Path::new("fuzz.onnx"), data) else {
        return;
    };
    let _ = crate::onnx::import::import(&model, "fuzz");
}
