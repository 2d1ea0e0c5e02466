//! End to end, per model, batch 1, all cores.

use criterion::{criterion_group, criterion_main, Criterion};

fn models(c: &mut Criterion) {
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    for name in ["deep_convnet", "resnet18", "googlenet", "resnet50"] {
        let mut ready = netc_benches::model(name, 1, 0);
        group.bench_function(name, |b| b.iter(|| ready.run()));
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
