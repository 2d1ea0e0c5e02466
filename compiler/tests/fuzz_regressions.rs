//! Replays every committed fuzz input — the seed corpora in `fuzz/seeds/`
//! and the crashers in `fuzz/regressions/` — through the same entry points
//! the `cargo fuzz` targets call (`netc::fuzz`). A crasher that panics again
//! fails this test with its file name.
//!
//! The seeds are written by the ignored test `write_fuzz_seeds`:
//! `cargo test -p netc --test fuzz_regressions -- --ignored write_fuzz_seeds`.

mod common;

use netc::fuzz::TARGETS;
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::weights::{write_npy, write_safetensors};
use netc_runtime::Tensor;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    common::root().join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run `target` on every file of `dir`; a panic names the file.
fn replay(target: &str, run: fn(&[u8]), dir: &Path) -> usize {
    let mut n = 0;
    for path in files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&bytes));
        assert!(result.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    n
}

#[test]
fn committed_crashers_and_seeds_do_not_panic() {
    let mut seeds = 0;
    for &(target, run) in TARGETS {
        replay(target, run, &fuzz_dir().join("regressions").join(target));
        seeds += replay(target, run, &fuzz_dir().join("seeds").join(target));
    }
    // The models and the malformed-model tests are the parser's seeds.
    let parse = TARGETS[0].1;
    seeds += replay("parse_check", parse, &common::root().join("models"));
    seeds += replay("parse_check", parse, &common::root().join("models/claims"));
    seeds += replay(
        "parse_check",
        parse,
        &common::root().join("compiler/tests/malformed"),
    );
    assert!(seeds > 60, "only {seeds} seed files found");
}

fn tensor(name: &str, dims: Vec<usize>) -> Tensor {
    random_tensor(1, name, dims, Init::Uniform { lo: -1.0, hi: 1.0 })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Small, valid inputs of every format the fuzz targets read: the fuzzer
/// mutates from these, so it starts past the magic numbers and headers.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when a format changes"]
fn write_fuzz_seeds() {
    let seeds = fuzz_dir().join("seeds");

    let dir = seeds.join("weights");
    let ts = vec![
        ("conv.weight".to_string(), tensor("a", vec![2, 1, 3, 3])),
        ("conv.bias".to_string(), tensor("b", vec![2])),
    ];
    write(
        &dir,
        "small.safetensors",
        &write_safetensors(&ts, None).unwrap(),
    );
    let npy = write_npy(&ts[0].1);
    write(&dir, "W1.npy", &npy);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (key, method) in [
        ("W1.npy", zip::CompressionMethod::Stored),
        ("b1.npy", zip::CompressionMethod::Deflated),
    ] {
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file(key, options).unwrap();
        zip.write_all(&npy).unwrap();
    }
    write(&dir, "params.npz", &zip.finish().unwrap().into_inner());

    let dir = seeds.join("idx");
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4];
    images.extend((0..32u8).map(|i| i * 8));
    write(&dir, "images.idx3", &images);
    write(&dir, "images.idx3.gz", &gzip(&images));
    write(&dir, "labels.idx1", &[0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]);

    let dir = seeds.join("image");
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([x as u8 * 20, y as u8 * 25, 90]));
    for (name, format) in [
        ("small.png", image::ImageFormat::Png),
        ("small.jpg", image::ImageFormat::Jpeg),
    ] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        write(&dir, name, &bytes.into_inner());
    }
    let grey = image::GrayImage::from_fn(5, 7, |x, y| image::Luma([(x * y) as u8 * 9]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    grey.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    write(&dir, "grey.png", &bytes.into_inner());

    // ONNX: small generated models covering conv, pools, concat, add,
    // batch norm, dense and softmax.
    let dir = seeds.join("onnx_import");
    for seed in [1u64, 4, 9, 17] {
        let src = common::gen::source(seed);
        let graph = common::source_graph(&src, 1);
        let weights = netc::weights::Weights::random(&graph, seed);
        let model = netc::onnx::export(&graph, &weights, netc::onnx::Batch::Symbolic).unwrap();
        let path = dir.join(format!("gen{seed}.onnx"));
        std::fs::create_dir_all(&dir).unwrap();
        netc::onnx::write(&path, &model).unwrap();
    }
    // MaxPool's Indices, Shape and MaxUnpool (SegNet's decoder), and a
    // resize and a gate, which the generated seeds above may miss.
    let src = "model m(x: [N, 3, 9, 8]) {
    p = x -> [conv(4, 3, pad: 1), relu] -> maxpool(2, ceil: true)
    d = maxunpool(p -> conv(4, 1), p)
    g = d -> [global_avgpool, conv(4, 1), hardsigmoid]
    return mul(d, g) -> resize(size: [5, 4])
}
";
    let graph = common::source_graph(src, 1);
    let weights = netc::weights::Weights::random(&graph, 3);
    let model = netc::onnx::export(&graph, &weights, netc::onnx::Batch::Symbolic).unwrap();
    netc::onnx::write(&dir.join("unpool.onnx"), &model).unwrap();
}
