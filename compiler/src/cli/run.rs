//! `netc run`: execute a model on real inputs.

use super::mask::{self, MaskArgs, Photo};
use super::{load_graph, load_weights, Failure, OptArgs, WeightArgs};
use crate::codegen::jit::JitModel;
use crate::interp;
use crate::ir::Graph;
use crate::pipeline::Planned;
use crate::weights::Weights;
use netc_runtime::data::idx;
use netc_runtime::data::image::{self, Preprocess};
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::weights::{read_npy, write_npy};
use netc_runtime::Tensor;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
netc run models/deep_convnet.net --weights ../shared/data/deep_convnet/deep_convnet_params.npz \\\n      \
--mnist-images ../shared/data/mnist/t10k-images-idx3-ubyte.gz \\\n      \
--mnist-labels ../shared/data/mnist/t10k-labels-idx1-ubyte.gz\n  \
netc run models/resnet18.net --random-weights 1 --input x.npy --output y.npy\n  \
netc run models/fcn_resnet50.net --weights fcn.safetensors --image street.jpg \\\n      \
--mask mask.png --overlay overlay.png")]
pub struct Args {
    /// The model file (.net).
    file: PathBuf,
    #[command(flatten)]
    weights: WeightArgs,
    /// Execution engine.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    backend: Backend,
    /// Worker threads for the JIT backend (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    opt: OptArgs,
    /// Batch size the model is compiled for (default: the input's batch,
    /// 100 for MNIST runs).
    #[arg(long)]
    batch: Option<usize>,
    /// Input tensor (.npy, shape [N, C, H, W]). Without any input, a
    /// deterministic random tensor is used.
    #[arg(long, value_name = "FILE.npy")]
    input: Option<PathBuf>,
    /// PNG or JPEG images (repeat for a batch), preprocessed as below.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    image: Vec<PathBuf>,
    /// Resize images so the shorter side has this many pixels (default:
    /// 256/224 of the model's input height, then a centre crop; with
    /// --mask or --overlay, just enough to cover the input; 0 disables).
    #[arg(long, value_name = "PIXELS")]
    resize: Option<u32>,
    /// Per-channel mean subtracted after scaling pixels to [0, 1]
    /// (default: ImageNet's 0.485,0.456,0.406 for RGB, 0 for greyscale).
    #[arg(long, value_delimiter = ',', value_name = "M,M,M")]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation divided by after the mean
    /// (default: ImageNet's 0.229,0.224,0.225 for RGB, 1 for greyscale).
    #[arg(long, value_delimiter = ',', value_name = "S,S,S")]
    std: Option<Vec<f32>>,
    /// MNIST images (IDX, raw or .gz), fed in batches.
    #[arg(long, value_name = "FILE")]
    mnist_images: Option<PathBuf>,
    /// MNIST labels (IDX, raw or .gz): prints `accuracy: …`.
    #[arg(long, value_name = "FILE", requires = "mnist_images")]
    mnist_labels: Option<PathBuf>,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Write the output to this .npy file, or every output by name to an
    /// .npz archive (`out.npy`, `aux.npy`, … inside; models with several
    /// outputs need .npz).
    #[arg(long, short, value_name = "FILE.npy|FILE.npz")]
    output: Option<PathBuf>,
    /// How many top classes to print per batch item (0 to disable).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    #[command(flatten)]
    segment: MaskArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Backend {
    /// Native code generated with Cranelift from the optimised graph.
    Jit,
    /// The reference interpreter on the unoptimised graph: plain loops,
    /// the correctness oracle.
    Reference,
    /// The optimised graph (see -O, --disable-pass) run by the reference
    /// kernels inside its planned activation arena.
    Planned,
}

pub fn run(a: Args) -> Result<(), Failure> {
    if let Some(images) = &a.mnist_images {
        return run_mnist(&a, images);
    }
    let mut preprocess = None;
    let input = match &a.input {
        Some(p) => Some(read_npy(p)?),
        None if !a.image.is_empty() => {
            let (t, p) = load_images(&a)?;
            preprocess = Some(p);
            Some(t)
        }
        None => None,
    };
    let batch = match (&input, a.batch) {
        (_, Some(b)) => b,
        (Some(t), None) => t.shape().first().copied().unwrap_or(1),
        (None, None) => 1,
    };
    let mut engine = prepare(&a, batch)?;
    let inputs = match input {
        Some(t) => vec![t],
        None => {
            eprintln!("note: no --input given; using a random input (seed 1)");
            let graph = load_graph(&a.file, batch)?;
            graph
                .inputs
                .iter()
                .map(|&n| {
                    let node = &graph.g[n];
                    random_tensor(
                        1,
                        &node.name,
                        node.shape.dims().to_vec(),
                        Init::Uniform { lo: 0.0, hi: 1.0 },
                    )
                })
                .collect()
        }
    };
    let outputs = engine.run(&inputs)?;
    for (i, out) in outputs.iter().enumerate() {
        println!("output {i}: shape {}", out.shape_string());
        if a.top_k > 0 && out.shape().len() == 2 {
            print_top_k(out, a.top_k);
        }
    }
    if a.segment.wanted() {
        let photo = preprocess.as_ref().map(|p| Photo {
            input: &inputs[0],
            mean: &p.mean,
            std: &p.std,
        });
        mask::render(&a.segment, &outputs, photo)?;
    }
    if let Some(path) = &a.output {
        let names = load_graph(&a.file, batch)?.output_names();
        write_outputs(path, &names, &outputs)?;
    }
    Ok(())
}

/// Decode `--image` files into one `[N, C, H, W]` batch sized for the
/// model, and the preprocessing that made it.
fn load_images(a: &Args) -> Result<(Tensor, Preprocess), Failure> {
    // The crop comes from the model's input shape, so check at batch 1 first.
    let probe = load_graph(&a.file, 1)?;
    let dims = probe.g[probe.inputs[0]].shape.dims().to_vec();
    let [_, c, h, w] = dims[..] else {
        return Err(Failure::new(
            "--image needs a model whose input is [N, C, H, W]",
        ));
    };
    let rgb = c == 3;
    let mut p = if rgb {
        Preprocess::imagenet(h as u32)
    } else {
        Preprocess {
            resize: Some(h as u32),
            crop: None,
            mean: vec![0.0],
            std: vec![1.0],
            channels: c,
        }
    };
    p.crop = Some([h as u32, w as u32]);
    if let Some(r) = a.resize {
        p.resize = (r > 0).then_some(r);
    }
    if let Some(m) = &a.mean {
        p.mean = m.clone();
    }
    if let Some(s) = &a.std {
        p.std = s.clone();
    }
    let mut data = Vec::new();
    for path in &a.image {
        let mut p = p.clone();
        if a.segment.wanted() && a.resize.is_none() {
            // Segmentation labels every pixel of the photo: scale it just
            // enough to cover the input, so the crop loses least.
            let (iw, ih) = ::image::image_dimensions(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let scale = (h as f64 / ih as f64).max(w as f64 / iw as f64);
            p.resize = Some((ih.min(iw) as f64 * scale).ceil() as u32);
        }
        data.extend_from_slice(image::load(path, &p)?.data());
    }
    Ok((Tensor::new(vec![a.image.len(), c, h, w], data)?, p))
}

/// A model prepared for one backend.
enum Engine {
    Reference(Graph, Weights),
    Planned(Box<Planned>),
    Jit(Box<JitModel>),
}

impl Engine {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Failure> {
        match self {
            Engine::Reference(g, w) => Ok(interp::run(g, w, inputs)?),
            Engine::Planned(p) => Ok(p.interpret(inputs)?),
            Engine::Jit(m) => Ok(m.run(inputs)?),
        }
    }
}

/// Check, lower, optimise (unless reference) and compile (JIT) the model.
/// Write `outputs` as `--output` asks: one `.npy`, or an `.npz` by name.
fn write_outputs(path: &Path, names: &[String], outputs: &[Tensor]) -> Result<(), Failure> {
    let npz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let bytes = if npz {
        let entries: Vec<(&str, &Tensor)> = names.iter().map(String::as_str).zip(outputs).collect();
        netc_runtime::weights::write_npz(&entries)
            .map_err(|e| format!("cannot build {}: {e}", path.display()))?
    } else if let [only] = outputs {
        write_npy(only)
    } else {
        return Err(Failure::new(format!(
            "the model has {} outputs ({}); write them all with --output FILE.npz",
            outputs.len(),
            names.join(", ")
        )));
    };
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn prepare(a: &Args, batch: usize) -> Result<Engine, Failure> {
    let pipeline = a.opt.pipeline(batch, a.threads);
    let graph = pipeline.check_file(&a.file)?.graph;
    let weights = load_weights(&graph, &a.weights)?;
    if matches!(a.backend, Backend::Reference) {
        return Ok(Engine::Reference(graph, weights));
    }
    let planned = pipeline.optimize(graph, weights)?;
    match a.backend {
        Backend::Planned => Ok(Engine::Planned(Box::new(planned))),
        Backend::Jit | Backend::Reference => Ok(Engine::Jit(Box::new(pipeline.jit(planned)?))),
    }
}

fn print_top_k(out: &Tensor, k: usize) {
    let classes = out.shape()[1];
    for (n, row) in out.data().chunks(classes).enumerate() {
        let mut idx: Vec<usize> = (0..classes).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = idx
            .iter()
            .take(k)
            .map(|&c| format!("{c} ({:.4})", row[c]))
            .collect();
        println!("  [{n}] top-{}: {}", k.min(classes), top.join(", "));
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn run_mnist(a: &Args, images_path: &Path) -> Result<(), Failure> {
    let images = idx::read_images(images_path)?;
    let labels = match &a.mnist_labels {
        Some(p) => Some(idx::read_labels(p)?),
        None => None,
    };
    let mut total = images.shape()[0];
    if let Some(l) = &labels {
        if l.len() != total {
            return Err(Failure::new(format!(
                "{} images but {} labels",
                total,
                l.len()
            )));
        }
    }
    if let Some(limit) = a.limit {
        total = total.min(limit);
    }
    let batch = a.batch.unwrap_or(100).clamp(1, total.max(1));
    let mut engine = prepare(a, batch)?;
    let input_shape = vec![
        batch,
        images.shape()[1],
        images.shape()[2],
        images.shape()[3],
    ];
    let model_input = load_graph(&a.file, batch)?;
    let model_input = model_input.g[model_input.inputs[0]].shape.dims().to_vec();
    let image_size: usize = images.shape()[1..].iter().product();
    if model_input != input_shape {
        return Err(Failure::new(format!(
            "the model's input is {} per image, the MNIST file holds {}",
            input_shape[1..]
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x"),
            images.shape()[1..]
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x"),
        )));
    }
    let progress = crate::progress::bar(total, "images");
    let start = std::time::Instant::now();
    let mut correct = 0usize;
    let mut outputs: Vec<f32> = Vec::new();
    let mut classes = 0;
    for first in (0..total).step_by(batch) {
        let count = batch.min(total - first);
        // The graph is compiled for a fixed batch: pad the last one with zeros.
        let mut data = images.data()[first * image_size..(first + count) * image_size].to_vec();
        data.resize(batch * image_size, 0.0);
        let x = Tensor::new(input_shape.clone(), data)?;
        let out = engine.run(&[x])?.remove(0);
        classes = out.shape().get(1).copied().unwrap_or(1);
        for (i, row) in out.data().chunks(classes).take(count).enumerate() {
            if let Some(l) = &labels {
                correct += usize::from(argmax(row) == l[first + i] as usize);
            }
            if a.output.is_some() {
                outputs.extend_from_slice(row);
            }
        }
        progress.inc(count as u64);
    }
    progress.finish_and_clear();
    eprintln!(
        "ran {total} images in {:.2} s (batch {batch})",
        start.elapsed().as_secs_f64()
    );
    if labels.is_some() {
        println!(
            "accuracy: {:.4} ({correct}/{total})",
            correct as f64 / total.max(1) as f64
        );
    }
    if let Some(path) = &a.output {
        let t = Tensor::new(vec![total, classes], outputs)?;
        std::fs::write(path, write_npy(&t))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
