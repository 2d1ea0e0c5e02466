//! `netc bench`: where a network spends its time and memory, per layer and
//! per layer type, from the JIT-compiled model.

use super::{load_weights, Failure, OptArgs, WeightArgs};
use crate::check::{self, human_bytes, CheckOptions};
use crate::codegen::{self, jit::JitModel};
use crate::ir::op::{Op, Step};
use crate::ir::Graph;
use crate::passes;
use crate::source::SourceMap;
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::profile;
use netc_runtime::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.net).
    file: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Output format (`json` prints the JSON report to stdout).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// How many of the slowest layers the table lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    opt: OptArgs,
    #[command(flatten)]
    weights: WeightArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Latency {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LayerReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub op: String,
    /// `file:line` of the statement that produced the layer.
    pub source: String,
    /// `file:line` of every statement fused into it.
    pub fused: Vec<String>,
    pub ms: f64,
    pub share: f64,
    pub macs: u64,
    pub gflops: f64,
    pub percent_of_peak: f64,
    pub bytes: u64,
    /// FLOPs per byte moved: the layer's roofline abscissa.
    pub arithmetic_intensity: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct TypeReport {
    pub count: usize,
    pub ms: f64,
    pub share: f64,
    pub macs: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Memory {
    pub weights_bytes: u64,
    pub packed_weights_bytes: u64,
    pub arena_bytes: u64,
    pub naive_activation_bytes: u64,
    pub peak_rss_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Machine {
    pub peak_gflops: f64,
    pub bandwidth_gbs: f64,
    pub threads: usize,
    pub micro_kernel: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    pub latency_ms: Latency,
    pub images_per_second: f64,
    pub gflops: f64,
    pub by_type: BTreeMap<String, TypeReport>,
    pub layers: Vec<LayerReport>,
    pub memory: Memory,
    pub machine: Machine,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// The type a layer's time is attributed to; fused parts are named apart.
fn layer_type(op: &Op) -> String {
    match op {
        Op::Conv(c) if c.window.kernel == [1, 1] => "conv 1x1".into(),
        Op::Conv(c) if c.window.kernel == [3, 3] => "conv 3x3".into(),
        Op::Conv(_) => "conv other".into(),
        Op::Dense(_) => "dense".into(),
        Op::Pool(_) | Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } => "pool".into(),
        Op::BatchNorm { .. } => "bn".into(),
        Op::Activation(_) => "activation".into(),
        Op::Add => "add".into(),
        Op::Concat => "concat".into(),
        Op::Softmax => "softmax".into(),
        Op::Scale { .. } | Op::Dropout { .. } => "scale".into(),
        Op::Slice { .. } | Op::Flatten | Op::Identity => "view".into(),
    }
}

fn location(sources: &SourceMap, span: crate::source::Span) -> String {
    let (line, _) = sources.line_col(span.file, span.start);
    format!("{}:{line}", sources.get(span.file).path.display())
}

/// Bytes a layer reads and writes once: inputs, weights, output.
fn bytes_moved(graph: &Graph, n: petgraph::stable_graph::NodeIndex) -> u64 {
    let node = &graph.g[n];
    let inputs: u64 = graph
        .operands(n)
        .iter()
        .map(|&o| graph.g[o].shape.numel() as u64)
        .sum();
    let params: u64 = node
        .params
        .iter()
        .map(|p| p.spec.shape.numel() as u64)
        .sum();
    4 * (inputs + params + node.shape.numel() as u64)
}

/// Peak FLOP/s and copy bandwidth, measured once per machine and thread
/// count and cached under the user's cache directory.
fn machine(threads: usize) -> Machine {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("netc").join(format!("machine-{threads}t.json")));
    if let Some(m) = cache
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str::<Machine>(&s).ok())
    {
        return m;
    }
    eprintln!("measuring the machine's peak FLOP/s and bandwidth (cached afterwards)…");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
    let peak = match pool {
        Ok(pool) => pool
            .broadcast(|_| profile::fma_gflops_one_thread(0.3))
            .iter()
            .sum(),
        Err(_) => profile::fma_gflops_one_thread(0.3),
    };
    let m = Machine {
        peak_gflops: peak,
        bandwidth_gbs: profile::copy_bandwidth_gbs(0.3),
        threads,
        micro_kernel: netc_runtime::kernels::gemm::kernel_name().to_string(),
    };
    if let Some(p) = cache {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(s) = serde_json::to_string_pretty(&m) {
            let _ = std::fs::write(p, s);
        }
    }
    m
}

pub fn run(a: Args) -> Result<(), Failure> {
    let report = measure(&a)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print!("{}", table(&report, a.top)),
    }
    Ok(())
}

fn measure(a: &Args) -> Result<Report, Failure> {
    if a.iters == 0 {
        return Err(Failure::new("--iters must be at least 1"));
    }
    let options = CheckOptions {
        batch: a.batch,
        ..CheckOptions::default()
    };
    let (program, net) = check::check_file(&a.file, options).map_err(Failure::new)?;
    let mut graph = Graph::from_network(&net);
    graph.validate()?;
    let mut weights = load_weights(&graph, &a.weights)?;
    let weights_bytes = 4 * (net.learnable_params() + net.buffer_params());
    let macs = graph.macs();
    passes::optimize(&mut graph, &mut weights, &a.opt.options())?;
    if graph.plan.is_none() {
        passes::memory::run(&mut graph, &mut weights)?;
    }
    let mut lowered = codegen::lower(graph, &weights)?;
    lowered.profile = true;
    let inputs: Vec<Tensor> = lowered
        .input_shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            random_tensor(
                1,
                &format!("input{i}"),
                s.clone(),
                Init::Uniform { lo: 0.0, hi: 1.0 },
            )
        })
        .collect();
    let mut model = JitModel::compile(lowered, a.threads)?;
    let threads = model.threads();
    let machine = machine(threads);
    let mut outputs: Vec<Tensor> = model
        .lowered()
        .output_shapes
        .iter()
        .map(|s| Tensor::zeros(s.clone()))
        .collect();
    let bar = super::progress(a.warmup + a.iters, "runs");
    for _ in 0..a.warmup {
        model.run_into(&inputs, &mut outputs)?;
        bar.inc(1);
    }
    profile::take_marks();
    let mut times = Vec::with_capacity(a.iters);
    let mut per_op: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for _ in 0..a.iters {
        let start = Instant::now();
        model.run_into(&inputs, &mut outputs)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        let marks = profile::take_marks();
        for w in marks.windows(2) {
            let ms = (w[1].1 - w[0].1).as_secs_f64() * 1e3;
            per_op.entry(w[1].0).or_default().push(ms);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let total = percentile(&times, 0.5);

    let lowered = model.lowered();
    let graph = &lowered.graph;
    let plan = lowered.plan();
    let mut layers = Vec::new();
    for (i, ms_list) in per_op {
        let Some(&n) = plan.order.get(i as usize) else {
            continue;
        };
        let node = &graph.g[n];
        let Some(op) = node.op() else { continue };
        let ms = median(ms_list);
        let layer_macs = op.macs(&node.shape);
        let flops = 2.0 * layer_macs as f64;
        let gflops = if ms > 0.0 {
            flops / (ms / 1e3) / 1e9
        } else {
            0.0
        };
        let bytes = bytes_moved(graph, n);
        let mut fused: Vec<String> = node
            .origin
            .iter()
            .skip(1)
            .map(|&s| location(&program.sources, s))
            .collect();
        let epilogue = match op {
            Op::Conv(c) => c.epilogue.clone(),
            Op::Dense(d) => d.epilogue.clone(),
            _ => Vec::new(),
        };
        for s in epilogue {
            fused.push(match s {
                Step::Add => "add".into(),
                Step::Act(a) => a.name().into(),
            });
        }
        layers.push(LayerReport {
            name: node.name.clone(),
            kind: layer_type(op),
            op: op.describe(),
            source: node
                .origin
                .first()
                .map_or_else(String::new, |&s| location(&program.sources, s)),
            fused,
            ms,
            share: 0.0,
            macs: layer_macs,
            gflops,
            percent_of_peak: 100.0 * gflops / machine.peak_gflops.max(1e-9),
            bytes,
            arithmetic_intensity: flops / bytes.max(1) as f64,
        });
    }
    let layer_total: f64 = layers.iter().map(|l| l.ms).sum::<f64>().max(1e-12);
    let mut by_type: BTreeMap<String, TypeReport> = BTreeMap::new();
    for l in &mut layers {
        l.share = l.ms / layer_total;
        let t = by_type.entry(l.kind.clone()).or_default();
        t.count += 1;
        t.ms += l.ms;
        t.macs += l.macs;
    }
    for t in by_type.values_mut() {
        t.share = t.ms / layer_total;
    }
    Ok(Report {
        model: net.name.clone(),
        batch: a.batch,
        threads,
        iters: a.iters,
        latency_ms: Latency {
            median: total,
            p10: percentile(&times, 0.1),
            p90: percentile(&times, 0.9),
            min: times[0],
        },
        images_per_second: a.batch as f64 / (total / 1e3),
        gflops: 2.0 * macs as f64 / (total / 1e3) / 1e9,
        by_type,
        layers,
        memory: Memory {
            weights_bytes,
            packed_weights_bytes: lowered.weight_bytes() as u64,
            arena_bytes: 4 * plan.arena_floats as u64,
            naive_activation_bytes: 4 * plan.naive_floats as u64,
            peak_rss_bytes: profile::peak_rss_bytes(),
        },
        machine,
    })
}

fn table(r: &Report, top: usize) -> String {
    let l = &r.latency_ms;
    let mut out = format!(
        "{} — batch {}, {} threads, {} iterations, micro-kernel {}\n",
        r.model, r.batch, r.threads, r.iters, r.machine.micro_kernel
    );
    out += &format!(
        "latency ms: median {:.3}  p10 {:.3}  p90 {:.3}  min {:.3}   {:.1} images/s   {:.1} GFLOP/s ({:.0}% of the measured peak {:.0} GFLOP/s; copy bandwidth {:.1} GB/s)\n\n",
        l.median,
        l.p10,
        l.p90,
        l.min,
        r.images_per_second,
        r.gflops,
        100.0 * r.gflops / r.machine.peak_gflops.max(1e-9),
        r.machine.peak_gflops,
        r.machine.bandwidth_gbs
    );
    out += &format!(
        "{:<12} {:>5} {:>9} {:>7} {:>7} {:>10}\n",
        "type", "count", "ms", "share", "cum.", "GMACs"
    );
    let mut types: Vec<(&String, &TypeReport)> = r.by_type.iter().collect();
    types.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    let mut cumulative = 0.0;
    for (name, t) in types {
        cumulative += t.share;
        out += &format!(
            "{:<12} {:>5} {:>9.3} {:>6.1}% {:>6.1}% {:>10.3}\n",
            name,
            t.count,
            t.ms,
            100.0 * t.share,
            100.0 * cumulative,
            t.macs as f64 / 1e9
        );
    }
    out += &format!("\nslowest {top} layers:\n");
    let mut layers: Vec<&LayerReport> = r.layers.iter().collect();
    layers.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    for layer in layers.into_iter().take(top) {
        let fused = if layer.fused.is_empty() {
            String::new()
        } else {
            format!("  fused: {}", layer.fused.join(", "))
        };
        out += &format!(
            "  {:>8.3} ms {:>5.1}%  {:>7.1} GFLOP/s {:>5.1}% peak  AI {:>6.1}  {:<28} {:<22} {}{}\n",
            layer.ms,
            100.0 * layer.share,
            layer.gflops,
            layer.percent_of_peak,
            layer.arithmetic_intensity,
            layer.name,
            layer.op,
            layer.source,
            fused
        );
    }
    let m = &r.memory;
    out += &format!(
        "\nmemory: weights {} ({} packed), activation arena {} (naive {}), peak RSS {}\n",
        human_bytes(m.weights_bytes),
        human_bytes(m.packed_weights_bytes),
        human_bytes(m.arena_bytes),
        human_bytes(m.naive_activation_bytes),
        human_bytes(m.peak_rss_bytes)
    );
    out
}
