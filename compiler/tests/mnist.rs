//! The book's result: DeepConvNet with its published float64 weights
//! classifies 9797 of the 10,000 MNIST test images correctly (an independent
//! float64 NumPy implementation agrees). netc computes in f32, so ±2 is
//! allowed; the exact count is stated in the README.

mod common;

use netc::interp;
use netc::weights::Weights;
use netc_runtime::data::idx;
use netc_runtime::weights;
use netc_runtime::Tensor;

fn count_correct(mut run: impl FnMut(Tensor) -> Tensor, batch: usize) -> usize {
    let data = common::root().join("../shared/data");
    let images = idx::read_images(&data.join("mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = idx::read_labels(&data.join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let per_image = 28 * 28;
    let mut correct = 0;
    for first in (0..10_000).step_by(batch) {
        let x = Tensor::new(
            vec![batch, 1, 28, 28],
            images.data()[first * per_image..(first + batch) * per_image].to_vec(),
        )
        .unwrap();
        let out = run(x);
        for (i, row) in out.data().chunks(10).enumerate() {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            correct += usize::from(best == labels[first + i] as usize);
        }
    }
    correct
}

fn book_weights(graph: &netc::ir::Graph) -> Weights {
    let path = common::root().join("../shared/data/deep_convnet/deep_convnet_params.npz");
    Weights::bind(graph, weights::load(&path).unwrap()).unwrap()
}

#[test]
fn deep_convnet_reproduces_the_books_accuracy_on_reference_and_jit() {
    let batch = 500;
    let graph = common::model_graph("deep_convnet", batch);
    let w = book_weights(&graph);
    let reference = count_correct(|x| interp::run(&graph, &w, &[x]).unwrap().remove(0), batch);
    eprintln!("deep_convnet, reference: {reference}/10000");
    assert!((9795..=9799).contains(&reference), "{reference}/10000");

    let mut jit = common::jit(&graph, &w, 0);
    let native = count_correct(|x| jit.run(&[x]).unwrap().remove(0), batch);
    eprintln!("deep_convnet, jit: {native}/10000");
    assert_eq!(native, reference, "JIT and reference disagree");
}
