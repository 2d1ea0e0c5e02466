//! One layer type at a time, at shapes taken from the models.

use criterion::{criterion_group, criterion_main, Criterion};

/// (name, model source) — each a single layer (plus what fusion absorbs).
const LAYERS: &[(&str, &str)] = &[
    (
        "conv 3x3 64→64 @56 (resnet layer1)",
        "model m(x: [N, 64, 56, 56]) { x -> conv(64, 3, pad: 1, bias: false) }",
    ),
    (
        "conv 3x3 256→256 @14 (resnet layer3)",
        "model m(x: [N, 256, 14, 14]) { x -> conv(256, 3, pad: 1) }",
    ),
    (
        "conv 1x1 256→64 @56 (bottleneck reduce)",
        "model m(x: [N, 256, 56, 56]) { x -> conv(64, 1) }",
    ),
    (
        "conv 1x1 1024→256 @14",
        "model m(x: [N, 1024, 14, 14]) { x -> conv(256, 1) }",
    ),
    (
        "conv 7x7/2 3→64 @224 (stem)",
        "model m(x: [N, 3, 224, 224]) { x -> conv(64, 7, stride: 2, pad: 3) }",
    ),
    (
        "maxpool 3x3/2 @112 (stem)",
        "model m(x: [N, 64, 112, 112]) { x -> maxpool(3, stride: 2, pad: 1) }",
    ),
    (
        "dense 9216→4096 (alexnet fc6)",
        "model m(x: [N, 9216]) { x -> dense(4096) }",
    ),
    (
        "concat 4 branches @28",
        "model m(x: [N, 64, 28, 28]) { concat(x -> relu, x -> tanh, x -> sigmoid, x -> scale(2)) }",
    ),
    (
        "residual add + relu @56",
        "model m(x: [N, 64, 56, 56]) { add(x -> relu, x -> tanh) -> relu }",
    ),
];

fn layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    group.sample_size(20);
    for (name, src) in LAYERS {
        let mut ready = netc_benches::source(src, 0);
        group.bench_function(*name, |b| b.iter(|| ready.run()));
    }
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
