//! `netc train`: train a model's parameters on labelled images, and
//! `netc augment`: look at what an augmentation does.

use super::{check_options, Failure};
use crate::bench::charts;
use crate::check;
use crate::ir::Graph;
use crate::progress;
use crate::train::augment::Augment;
use crate::train::data::{Dataset, Order};
use crate::train::optim::{self, Kind, Schedule};
use crate::train::real::Buf;
use crate::train::{Executor, Loss, TrainGraph};
use crate::units::human_bytes;
use crate::weights::Weights;
use netc_runtime::Tensor;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
netc train models/deep_convnet.net \\\n    \
--train-images /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \\\n    \
--train-labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz \\\n    \
--test-images /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\\n    \
--test-labels /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz \\\n    \
--epochs 15 --batch 100 --optimizer adam --lr 0.001 --schedule cosine \\\n    \
--out fashion.safetensors --log train.jsonl --plot curves.svg\n\n\
The trained file loads into `netc run MODEL --weights FILE`.")]
pub struct Args {
    /// The model (.net); its first output gives the class scores.
    model: PathBuf,
    /// Training images: IDX (raw or .gz), .npy ([N,H,W] or [N,C,H,W]), .npz
    /// (arrays `images` and `labels`) or a folder with one sub-folder of
    /// images per class.
    #[arg(long, value_name = "FILE")]
    train_images: PathBuf,
    /// Training labels: IDX or .npy (not needed for .npz or an image folder).
    #[arg(long, value_name = "FILE")]
    train_labels: Option<PathBuf>,
    /// Test images, evaluated after every epoch.
    #[arg(long, value_name = "FILE")]
    test_images: Option<PathBuf>,
    /// Labels of the test images (IDX or .npy).
    #[arg(long, value_name = "FILE")]
    test_labels: Option<PathBuf>,
    /// Initial weights (safetensors, .npz); default: He-initialised from
    /// --random-weights.
    #[arg(long, value_name = "FILE", conflicts_with = "random_weights")]
    weights: Option<PathBuf>,
    /// Seed of the He initialisation (default 0).
    #[arg(long, value_name = "SEED")]
    random_weights: Option<u64>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Images per step (a last partial batch of an epoch is left out).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Stop after this many steps in total.
    #[arg(long)]
    steps: Option<u64>,
    /// SGD (with --momentum, --nesterov), Adam, or AdamW (decoupled decay),
    /// with PyTorch's update rules.
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerArg,
    /// Base learning rate (the schedule and warm-up scale it).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// L2 penalty (SGD, Adam) or decoupled decay (AdamW, default 0.01).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Learning-rate schedule: `constant`, `cosine` (to 0 over the run) or
    /// `step:EPOCHS:GAMMA` (multiply by GAMMA every EPOCHS epochs).
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Linear warm-up over this many steps.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Clip the gradients' global L2 norm to this.
    #[arg(long)]
    clip: Option<f64>,
    /// Softmax cross-entropy over the labels (mean over the batch), or mean
    /// squared error against one-hot labels.
    #[arg(long, value_enum, default_value = "cross-entropy")]
    loss: LossArg,
    /// Augmentation of training images, e.g.
    /// `shift=2,rotate=10,zoom=0.9:1.1,brightness=0.2` (also contrast=X,
    /// flip, crop=PAD).
    #[arg(long)]
    augment: Option<Augment>,
    /// Seeds the data order, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the files' order instead of shuffling each epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// Threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where to write the trained weights (safetensors, the model's names).
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    /// One JSON line per step and per epoch.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Loss and accuracy curves as SVG.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Write `last.safetensors` here after every epoch (and on the last
    /// step), replacing the previous one only once the new one is whole.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Continue from a checkpoint: weights, optimiser state and position.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["weights", "random_weights"])]
    resume: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LossArg {
    CrossEntropy,
    Mse,
}

fn schedule(s: &str, steps_per_epoch: u64, total: u64) -> Result<Schedule, Failure> {
    let bad = || {
        Failure::new(format!(
            "--schedule `{s}`: use constant, cosine or step:EPOCHS:GAMMA"
        ))
    };
    match s.split(':').collect::<Vec<_>>()[..] {
        ["constant"] => Ok(Schedule::Constant),
        ["cosine"] => Ok(Schedule::Cosine { total }),
        ["step", every, gamma] => {
            let every: u64 = every.parse().map_err(|_| bad())?;
            let gamma: f64 = gamma.parse().map_err(|_| bad())?;
            Ok(Schedule::Step {
                every: every.max(1) * steps_per_epoch,
                gamma,
            })
        }
        _ => Err(bad()),
    }
}

/// Where a run stands, as a checkpoint records it.
struct Position {
    epoch: u64,
    /// Batches of `epoch` already taken.
    batch: usize,
    step: u64,
}

const CHECKPOINT_NAME: &str = "last.safetensors";

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
}

fn tensors(ex: &Executor<f32>) -> Vec<(String, Tensor)> {
    let w = ex.weights();
    ex.tg
        .params
        .iter()
        .filter_map(|p| w.get(&p.name).map(|t| (p.name.clone(), t.clone())))
        .collect()
}

fn save_checkpoint(
    path: &Path,
    ex: &Executor<f32>,
    state: &optim::State,
    pos: &Position,
) -> Result<(), Failure> {
    let mut all = tensors(ex);
    for (i, p) in ex.tg.params.iter().enumerate() {
        for (kind, moments) in [("first", &state.first), ("second", &state.second)] {
            if let Some(m) = moments.get(i).filter(|m| !m.is_empty()) {
                if let Ok(t) = Tensor::new(vec![m.len()], m.clone()) {
                    all.push((format!("optimizer.{kind}.{}", p.name), t));
                }
            }
        }
    }
    let meta = HashMap::from([
        ("epoch".to_string(), pos.epoch.to_string()),
        ("batch".to_string(), pos.batch.to_string()),
        ("step".to_string(), pos.step.to_string()),
        ("optimizer_t".to_string(), state.t.to_string()),
    ]);
    let bytes = netc_runtime::weights::write_safetensors(&all, Some(meta))?;
    write_atomically(path, &bytes)
}

/// Weights, optimiser state and position from a checkpoint.
fn load_checkpoint(
    path: &Path,
    graph: &Graph,
    tg: &TrainGraph,
) -> Result<(Weights, optim::State, Position), Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
    let meta = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?
        .1
        .metadata()
        .clone()
        .unwrap_or_default();
    let number = |key: &str| {
        meta.get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                Failure::new(format!(
                    "{}: not a netc checkpoint (no `{key}` in its metadata)",
                    path.display()
                ))
            })
    };
    let pos = Position {
        epoch: number("epoch")?,
        batch: number("batch")? as usize,
        step: number("step")?,
    };
    let mut file = netc_runtime::weights::load_bytes(path, &bytes)?;
    let mut state = optim::State {
        t: number("optimizer_t")?,
        first: vec![Vec::new(); tg.params.len()],
        second: vec![Vec::new(); tg.params.len()],
    };
    for (i, p) in tg.params.iter().enumerate() {
        for (kind, slot) in [("first", &mut state.first), ("second", &mut state.second)] {
            let key = format!("optimizer.{kind}.{}", p.name);
            if let Some(at) = file.tensors.iter().position(|(k, _)| *k == key) {
                slot[i] = file.tensors.swap_remove(at).1.into_data();
            }
        }
    }
    let weights = Weights::bind(graph, file)?;
    Ok((weights, state, pos))
}

/// Scores for every item of `data` with inference semantics, in batches
/// of the step's size (the last one padded); returns the accuracy.
fn evaluate(ex: &mut Executor<f32>, data: &Dataset, batch: usize) -> Result<f64, Failure> {
    let item: usize = data.item.iter().product();
    let classes = ex.tg.classes;
    let mut shape = vec![batch];
    shape.extend_from_slice(&data.item);
    let mut correct = 0;
    for start in (0..data.len()).step_by(batch) {
        let n = batch.min(data.len() - start);
        let mut x = vec![0.0f32; batch * item];
        x[..n * item].copy_from_slice(&data.images[start * item..][..n * item]);
        let scores = ex.predict(&Buf::from_f32(&shape, &x))?;
        for i in 0..n {
            let row = &scores.data[i * classes..][..classes];
            let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            correct += (best == data.labels[start + i]) as usize;
        }
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

fn log_line(log: &mut Option<std::fs::File>, value: serde_json::Value) -> Result<(), Failure> {
    if let Some(f) = log {
        writeln!(f, "{value}").map_err(|e| Failure::new(format!("cannot write the log: {e}")))?;
    }
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.batch == 0 {
        return Err(Failure::new("--batch must be at least 1"));
    }
    crate::train::prepare(a.threads);
    let (_, network) = check::check_file(&a.model, check_options(a.batch))
        .map_err(|e| Failure::new(e.to_string()))?;
    let graph = Graph::from_network(&network);
    graph.validate()?;
    let loss = match a.loss {
        LossArg::CrossEntropy => Loss::CrossEntropy,
        LossArg::Mse => Loss::Mse,
    };
    let tg = TrainGraph::build(graph.clone(), loss)?;

    let train = Arc::new(Dataset::load(&a.train_images, a.train_labels.as_deref())?);
    let input = graph.g[graph.inputs[0]].shape.dims().to_vec();
    train.fits(&input)?;
    let test = match &a.test_images {
        Some(images) => {
            let d = Dataset::load(images, a.test_labels.as_deref())?;
            d.fits(&input)?;
            Some(d)
        }
        None => None,
    };
    let order = Order {
        batch: a.batch,
        seed: a.seed,
        shuffle: !a.no_shuffle,
        augment: a.augment.clone(),
    };
    let per_epoch = order.batches(train.len()) as u64;
    if per_epoch == 0 {
        return Err(Failure::new(format!(
            "{} training images make no batch of {}",
            train.len(),
            a.batch
        )));
    }
    let total = a.steps.unwrap_or(u64::MAX).min(per_epoch * a.epochs);
    let kind = match a.optimizer {
        OptimizerArg::Sgd => Kind::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        },
        OptimizerArg::Adam => Kind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        OptimizerArg::Adamw => Kind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    };
    if a.nesterov && !matches!(kind, Kind::Sgd { momentum, .. } if momentum > 0.0) {
        return Err(Failure::new(
            "--nesterov needs --optimizer sgd with --momentum > 0",
        ));
    }
    let cfg = optim::Config {
        kind,
        lr: a.lr,
        weight_decay: a.weight_decay.unwrap_or(match kind {
            Kind::AdamW { .. } => 0.01,
            Kind::Sgd { .. } | Kind::Adam { .. } => 0.0,
        }),
        // The schedule spans the epochs asked for; `--steps` only cuts the
        // run short (so a run stopped early and resumed is the same run).
        schedule: schedule(&a.schedule, per_epoch, per_epoch * a.epochs)?,
        warmup: a.warmup,
        clip: a.clip,
    };

    let (weights, mut state, mut pos) = match &a.resume {
        Some(path) => load_checkpoint(path, &graph, &tg)?,
        None => {
            let w = match &a.weights {
                Some(path) => Weights::bind(&graph, netc_runtime::weights::load(path)?)?,
                None => Weights::for_training(&graph, a.random_weights.unwrap_or(0)),
            };
            let start = Position {
                epoch: 0,
                batch: 0,
                step: 0,
            };
            (w, optim::State::default(), start)
        }
    };
    let kept = tg.kept_bytes();
    let learnable = tg.learnable();
    let mut ex = Executor::<f32>::new(tg, &weights, a.seed)?;
    eprintln!(
        "training {} ({learnable} learnable parameters) on {} images, batch {}, {} steps per epoch; \
         backward keeps {} of activations",
        a.model.display(),
        train.len(),
        a.batch,
        per_epoch,
        human_bytes(kept),
    );

    let mut log = match &a.log {
        Some(p) => Some(
            std::fs::File::create(p)
                .map_err(|e| Failure::new(format!("cannot create {}: {e}", p.display())))?,
        ),
        None => None,
    };
    if let Some(dir) = &a.checkpoint {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut step_points = Vec::new();
    let mut epoch_points = Vec::new();
    let mut shape = vec![a.batch];
    shape.extend_from_slice(&train.item);
    let started = Instant::now();
    let mut peak = 0u64;
    while pos.epoch < a.epochs && pos.step < total {
        let bar = progress::bar(per_epoch as usize, "steps");
        bar.set_position(pos.batch as u64);
        let epoch_start = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut steps) = (0.0, 0usize, 0usize, 0usize);
        for batch in order.stream(train.clone(), pos.epoch, pos.batch) {
            if pos.step >= total {
                break;
            }
            let x = Buf::from_f32(&shape, &batch.images);
            let pass = ex.forward_backward(&x, &batch.labels, pos.step)?;
            let (lr, norm) = state.step(&cfg, &mut ex.params, &pass.grads);
            peak = peak.max(pass.peak_bytes);
            pos.step += 1;
            pos.batch = batch.index + 1;
            loss_sum += pass.loss;
            correct += pass.correct;
            seen += batch.labels.len();
            steps += 1;
            let rate = seen as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            let epoch_f = pos.epoch as f64 + pos.batch as f64 / per_epoch as f64;
            step_points.push((epoch_f, pass.loss));
            bar.set_position(pos.batch as u64);
            bar.set_message(format!(
                "epoch {} loss {:.4} acc {:.2}% {rate:.0} img/s",
                pos.epoch + 1,
                loss_sum / steps as f64,
                100.0 * correct as f64 / seen as f64
            ));
            log_line(
                &mut log,
                serde_json::json!({
                    "step": pos.step, "epoch": epoch_f, "loss": pass.loss,
                    "accuracy": pass.correct as f64 / batch.labels.len() as f64,
                    "lr": lr, "grad_norm": norm, "images_per_s": rate,
                }),
            )?;
        }
        bar.finish_and_clear();
        let finished = pos.batch as u64 >= per_epoch;
        let seconds = epoch_start.elapsed().as_secs_f64();
        let test_acc = match &test {
            Some(t) if finished || pos.step >= total => Some(evaluate(&mut ex, t, a.batch)?),
            _ => None,
        };
        let train_acc = correct as f64 / seen.max(1) as f64;
        let mean_loss = loss_sum / steps.max(1) as f64;
        let epoch_f = pos.epoch as f64 + pos.batch as f64 / per_epoch as f64;
        epoch_points.push((epoch_f, mean_loss, train_acc, test_acc));
        eprintln!(
            "epoch {:>3}: loss {mean_loss:.4}, train {:.2}%{}, {seconds:.1} s ({:.0} img/s)",
            pos.epoch + 1,
            100.0 * train_acc,
            test_acc
                .map(|t| format!(", test {:.2}%", 100.0 * t))
                .unwrap_or_default(),
            seen as f64 / seconds.max(1e-9)
        );
        log_line(
            &mut log,
            serde_json::json!({
                "epoch": pos.epoch + 1, "loss": mean_loss, "train_accuracy": train_acc,
                "test_accuracy": test_acc, "seconds": seconds, "steps": pos.step,
            }),
        )?;
        if finished {
            pos.epoch += 1;
            pos.batch = 0;
        }
        if let Some(dir) = &a.checkpoint {
            save_checkpoint(&dir.join(CHECKPOINT_NAME), &ex, &state, &pos)?;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "{} steps in {wall:.1} s on {} threads; peak step memory {}",
        pos.step,
        rayon::current_num_threads(),
        human_bytes(peak)
    );
    if let Some(out) = &a.out {
        let bytes = netc_runtime::weights::write_safetensors(&tensors(&ex), None)?;
        write_atomically(out, &bytes)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(path) = &a.plot {
        let name = a
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let svg = charts::learning_curves(&name, &step_points, &epoch_points)?;
        std::fs::write(path, svg)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct AugmentArgs {
    /// Images: IDX, .npy or a folder of class sub-folders.
    data: PathBuf,
    /// Labels for IDX/.npy images (optional: the picture does not use them).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// The augmentation, as for `netc train --augment`.
    #[arg(long)]
    augment: Augment,
    /// Where to draw the grid (PNG): one row per image, the original first.
    #[arg(long, value_name = "FILE")]
    grid: PathBuf,
    /// Rows (images) and augmented columns.
    #[arg(long, default_value_t = 6)]
    rows: usize,
    #[arg(long, default_value_t = 8)]
    columns: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn augment(a: AugmentArgs) -> Result<(), Failure> {
    let data = match &a.labels {
        Some(l) => Dataset::load(&a.data, Some(l))?,
        None if a.data.is_dir() => Dataset::load(&a.data, None)?,
        None => unlabelled(&a.data)?,
    };
    let [c, h, w] = data.item;
    let (rows, cols) = (a.rows.min(data.len()), a.columns + 1);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut canvas = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([255, 255, 255]));
    for r in 0..rows {
        for col in 0..cols {
            let mut img = data.image(r).to_vec();
            if col > 0 {
                let seed = a.seed ^ ((r as u64) << 32) ^ col as u64;
                a.augment.apply(
                    &mut img,
                    data.item,
                    &mut netc_runtime::init::SplitMix64::new(seed),
                );
            }
            for y in 0..h {
                for x in 0..w {
                    let px = |ch: usize| {
                        (img[(ch.min(c - 1) * h + y) * w + x].clamp(0.0, 1.0) * 255.0) as u8
                    };
                    canvas.put_pixel(
                        (gap + col * (w + gap) + x) as u32,
                        (gap + r * (h + gap) + y) as u32,
                        image::Rgb([px(0), px(1), px(2)]),
                    );
                }
            }
        }
    }
    // Small images (MNIST's 28 px) are scaled up so the grid is legible.
    let scale = (720 / gw.max(1)).clamp(1, 8) as u32;
    let canvas = image::imageops::resize(
        &canvas,
        gw as u32 * scale,
        gh as u32 * scale,
        image::imageops::FilterType::Nearest,
    );
    canvas
        .save(&a.grid)
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", a.grid.display())))?;
    eprintln!(
        "wrote {} ({rows} images, the original and {} augmentations each: {})",
        a.grid.display(),
        a.columns,
        a.augment
    );
    Ok(())
}

/// Images without labels (the picture does not need them).
fn unlabelled(path: &Path) -> Result<Dataset, Failure> {
    let t = if path.extension().is_some_and(|e| e == "npy") {
        netc_runtime::weights::read_npy(path)?
    } else {
        netc_runtime::data::idx::read_images(path)?
    };
    let s = t.shape().to_vec();
    let item = crate::train::data::image_item(path, &s)?;
    Ok(Dataset {
        labels: vec![0; s[0]],
        images: t.into_data(),
        item,
    })
}
