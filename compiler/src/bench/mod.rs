//! Benchmarking the JIT-compiled model: end-to-end latency, time per layer
//! and per layer type (from marks the profiling build records after every
//! op), memory, and the machine's measured peak. Reports render as a
//! table, Markdown with an SVG chart, JSON and a Chrome trace
//! ([`render`]); [`compare`] flags regressions against an earlier JSON.

pub mod charts;
pub mod compare;
pub mod history;
pub mod html;
pub mod render;
pub mod train;

use crate::codegen::jit::{JitModel, JitRunError};
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::source::{format_frames, CallPath, Located, SourceMap};
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::profile;
use netc_runtime::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

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
    /// Where the layer was instantiated, outermost call first
    /// (`models/googlenet.net:28 inception3a › :16 branch2.0 › :7 conv`).
    pub source: String,
    /// The same path, frame by frame.
    #[serde(default)]
    pub call_site: Vec<Located>,
    /// Every other statement fused into the layer (relative to `source`,
    /// each once), then the epilogue steps.
    pub fused: Vec<String>,
    pub ms: f64,
    pub share: f64,
    pub macs: u64,
    pub gflops: f64,
    pub percent_of_peak: f64,
    /// Bytes moved once: `read_bytes + weight_bytes + written_bytes`.
    pub bytes: u64,
    /// Activations read (every input once).
    #[serde(default)]
    pub read_bytes: u64,
    /// Parameters read (as compiled: folded and merged).
    #[serde(default)]
    pub weight_bytes: u64,
    /// The output written.
    #[serde(default)]
    pub written_bytes: u64,
    /// FLOPs per byte moved: the layer's roofline abscissa.
    pub arithmetic_intensity: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct TypeReport {
    pub count: usize,
    /// Median over iterations of the type's summed time.
    pub ms: f64,
    pub share: f64,
    pub macs: u64,
    /// Spread of the per-iteration sums: the run-to-run noise.
    pub p10: f64,
    pub p90: f64,
    /// Summed over the type's layers, as in [`LayerReport`].
    #[serde(default)]
    pub weight_bytes: u64,
    #[serde(default)]
    pub read_bytes: u64,
    #[serde(default)]
    pub written_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Memory {
    pub weights_bytes: u64,
    pub packed_weights_bytes: u64,
    pub arena_bytes: u64,
    pub naive_activation_bytes: u64,
    /// Bytes the kernels' scratch buffers hold after the run, all threads
    /// (they are kept between runs; see `netc_runtime::kernels::scratch_bytes`).
    pub workspace_bytes: u64,
    pub peak_rss_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Machine {
    /// The CPU's model name and family/model numbers (`/proc/cpuinfo`).
    #[serde(default)]
    pub cpu: String,
    pub peak_gflops: f64,
    pub bandwidth_gbs: f64,
    pub threads: usize,
    pub micro_kernel: String,
}

/// How long it took from `.net` text to runnable code, by stage (ms).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct CompileTimes {
    /// Reading, parsing and checking the sources, lowering to the IR.
    pub parse_check: f64,
    /// Reading and binding the weights (or generating random ones).
    pub weights: f64,
    /// The passes, kernel selection and memory planning.
    pub passes: f64,
    /// Packing weights and building kernel descriptors.
    pub pack: f64,
    /// Cranelift code generation and linking.
    pub codegen: f64,
    pub total: f64,
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
    /// Set by callers that timed the compilation (`netc bench` does).
    #[serde(default)]
    pub compile_ms: Option<CompileTimes>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// The type a layer's time is attributed to; fused parts are named apart.
pub(crate) fn layer_type(op: &Op) -> String {
    match op {
        Op::Conv(c) if c.window.kernel == [1, 1] => "conv 1x1".into(),
        Op::Conv(c) if c.window.kernel == [3, 3] => "conv 3x3".into(),
        Op::Conv(_) => "conv other".into(),
        Op::ConvTranspose(_) => "conv transpose".into(),
        Op::Dense(_) => "dense".into(),
        Op::Pool(_) | Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } => "pool".into(),
        Op::MaxUnpool { .. } => "unpool".into(),
        Op::ChannelShuffle { .. } => "shuffle".into(),
        Op::BatchNorm { .. } => "bn".into(),
        Op::Activation(_) => "activation".into(),
        Op::Add => "add".into(),
        Op::Mul => "mul".into(),
        Op::Resize { .. } => "resize".into(),
        Op::Concat => "concat".into(),
        Op::Softmax => "softmax".into(),
        Op::Scale { .. } | Op::Dropout { .. } => "scale".into(),
        Op::Slice { .. } | Op::Flatten | Op::Identity => "view".into(),
    }
}

/// What a layer reads and writes once, in bytes.
struct Traffic {
    read: u64,
    weights: u64,
    written: u64,
}

fn traffic(graph: &Graph, n: petgraph::stable_graph::NodeIndex) -> Traffic {
    let node = &graph.g[n];
    let read: u64 = graph
        .operands(n)
        .iter()
        .map(|&o| graph.g[o].shape.numel() as u64)
        .sum();
    let weights: u64 = node
        .params
        .iter()
        .map(|p| p.spec.shape.numel() as u64)
        .sum();
    Traffic {
        read: 4 * read,
        weights: 4 * weights,
        written: 4 * node.shape.numel() as u64,
    }
}

/// The statements fused into a node besides its first, each once, written
/// relative to the first: the frames they share with it are left out.
fn fused_sources(sources: &SourceMap, origin: &[CallPath]) -> Vec<String> {
    let Some(first) = origin.first() else {
        return Vec::new();
    };
    let main = sources.locate(first);
    let mut out: Vec<String> = Vec::new();
    for path in &origin[1..] {
        if path == first {
            continue;
        }
        let frames = sources.locate(path);
        let shared = frames
            .iter()
            .zip(&main)
            .take_while(|(a, b)| a == b)
            .count()
            .min(frames.len().saturating_sub(1));
        let file = shared.checked_sub(1).map(|i| frames[i].file.as_str());
        let text = format_frames(
            &frames[shared..],
            file.or(main.first().map(|f| f.file.as_str())),
        );
        if !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

/// Peak FLOP/s and copy bandwidth, measured once per machine and thread
/// count and cached under the user's cache directory.
/// Runs of the FMA loop the peak is the best of, and each one's length.
const PEAK_RUNS: usize = 6;
const PEAK_RUN_S: f64 = 0.05;

fn machine(threads: usize) -> Machine {
    // The peak is measured on the kernel's vectors, so it is cached per
    // kernel too (`NETC_NO_AVX512` changes it).
    let kernel = netc_runtime::kernels::dispatch::kernel_name();
    // `v3`: earlier caches hold the old bandwidth measure (see
    // `profile::copy_bandwidth_gbs`) or a peak from a single run.
    let file = format!(
        "machine-v3-{threads}t-{}.json",
        kernel.split_whitespace().next().unwrap_or("kernel")
    );
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("netc").join(file));
    if let Some(m) = cache
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str::<Machine>(&s).ok())
    {
        // The peak belongs to the machine; the kernel to this build.
        return Machine {
            cpu: cpu_name(),
            micro_kernel: netc_runtime::kernels::dispatch::kernel_name().to_string(),
            ..m
        };
    }
    eprintln!("measuring the machine's peak FLOP/s and bandwidth (cached afterwards)…");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
    // The best of several short runs: on a shared host one 0.3 s run had
    // been cached at 404 GFLOP/s where the machine reaches 474, and every
    // later report's "% of peak" was a sixth too high.
    let once = || match &pool {
        Ok(pool) => pool
            .broadcast(|_| profile::fma_gflops_one_thread(PEAK_RUN_S))
            .iter()
            .sum(),
        Err(_) => profile::fma_gflops_one_thread(PEAK_RUN_S),
    };
    let peak = (0..PEAK_RUNS).map(|_| once()).fold(0.0, f64::max);
    let m = Machine {
        cpu: cpu_name(),
        peak_gflops: peak,
        bandwidth_gbs: profile::copy_bandwidth_gbs(0.3),
        threads,
        micro_kernel: netc_runtime::kernels::dispatch::kernel_name().to_string(),
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

/// `AMD EPYC (family 25 model 17)`: the model name and, since cloud CPUs
/// often hide the generation behind a bare brand, family and model.
pub fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(name), Some(family), Some(model)) => {
            format!("{name} (family {family} model {model})")
        }
        (Some(name), _, _) => name,
        _ => std::env::consts::ARCH.to_string(),
    }
}

/// One layer execution, for the Chrome trace.
#[derive(Clone, Debug)]
pub struct TraceEvent {
    pub name: String,
    pub kind: String,
    pub iteration: usize,
    pub start_us: f64,
    pub dur_us: f64,
}

/// How to run a benchmark.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub batch: usize,
    pub iters: usize,
    pub warmup: usize,
}

/// What the caller knows about the model before compilation.
pub struct ModelInfo<'a> {
    pub name: String,
    pub sources: &'a SourceMap,
    /// MACs of the unoptimised graph (the work the model defines).
    pub macs: u64,
    /// Bytes of the weights as stored (f32).
    pub weights_bytes: u64,
}

/// Run `model` (compiled with profiling marks) and build the report.
pub fn measure(
    info: &ModelInfo,
    model: &mut JitModel,
    settings: Settings,
) -> Result<(Report, Vec<TraceEvent>), JitRunError> {
    let inputs: Vec<Tensor> = model
        .lowered()
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
    let threads = model.threads();
    let machine = machine(threads);
    let mut outputs: Vec<Tensor> = model
        .lowered()
        .output_shapes
        .iter()
        .map(|s| Tensor::zeros(s.clone()))
        .collect();
    let bar = crate::progress::bar(settings.warmup + settings.iters, "runs");
    for _ in 0..settings.warmup {
        model.run_into(&inputs, &mut outputs)?;
        bar.inc(1);
    }
    profile::take_marks();
    let iters = settings.iters.max(1);
    let mut times = Vec::with_capacity(iters);
    let mut per_op: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    let mut raw_marks = Vec::with_capacity(iters);
    let epoch = Instant::now();
    for _ in 0..iters {
        let start = Instant::now();
        model.run_into(&inputs, &mut outputs)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        let marks = profile::take_marks();
        for w in marks.windows(2) {
            per_op
                .entry(w[1].0)
                .or_default()
                .push((w[1].1 - w[0].1).as_secs_f64() * 1e3);
        }
        raw_marks.push(marks);
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let total = percentile(&times, 0.5);

    let lowered = model.lowered();
    let graph = &lowered.graph;
    let plan = &lowered.plan;
    let kind_of = |i: u32| -> Option<(String, String)> {
        let &n = plan.order.get(i as usize)?;
        let node = &graph.g[n];
        Some((node.name.clone(), layer_type(node.op()?)))
    };
    let mut layers = Vec::new();
    for (&i, ms_list) in &per_op {
        let Some(&n) = plan.order.get(i as usize) else {
            continue;
        };
        let node = &graph.g[n];
        let Some(op) = node.op() else { continue };
        let ms = median(ms_list.clone());
        let layer_macs = op.macs(&node.shape);
        let flops = 2.0 * layer_macs as f64;
        let gflops = if ms > 0.0 {
            flops / (ms / 1e3) / 1e9
        } else {
            0.0
        };
        let moved = traffic(graph, n);
        let bytes = moved.read + moved.weights + moved.written;
        // Epilogue steps show in `op` (`conv 3x3+relu`); `fused` names the
        // statements they came from.
        let fused = fused_sources(info.sources, &node.origin);
        layers.push(LayerReport {
            name: node.name.clone(),
            kind: layer_type(op),
            op: op.describe(),
            source: node
                .origin
                .first()
                .map_or_else(String::new, |p| info.sources.call_path(p)),
            call_site: node
                .origin
                .first()
                .map_or_else(Vec::new, |p| info.sources.locate(p)),
            fused,
            ms,
            share: 0.0,
            macs: layer_macs,
            gflops,
            percent_of_peak: 100.0 * gflops / machine.peak_gflops.max(1e-9),
            bytes,
            read_bytes: moved.read,
            weight_bytes: moved.weights,
            written_bytes: moved.written,
            arithmetic_intensity: flops / bytes.max(1) as f64,
        });
    }
    // Per type: the per-iteration sums, so the spread is real noise.
    let mut type_runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut trace = Vec::new();
    for (iteration, marks) in raw_marks.iter().enumerate() {
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for w in marks.windows(2) {
            let Some((name, kind)) = kind_of(w[1].0) else {
                continue;
            };
            let dur = (w[1].1 - w[0].1).as_secs_f64();
            *sums.entry(kind.clone()).or_default() += dur * 1e3;
            trace.push(TraceEvent {
                name,
                kind,
                iteration,
                start_us: (w[0].1 - epoch).as_secs_f64() * 1e6,
                dur_us: dur * 1e6,
            });
        }
        for (k, v) in sums {
            type_runs.entry(k).or_default().push(v);
        }
    }
    let layer_total: f64 = layers.iter().map(|l| l.ms).sum::<f64>().max(1e-12);
    for l in &mut layers {
        l.share = l.ms / layer_total;
    }
    let mut by_type: BTreeMap<String, TypeReport> = BTreeMap::new();
    for (kind, mut runs) in type_runs {
        runs.sort_by(f64::total_cmp);
        let of_kind = || layers.iter().filter(|l| l.kind == kind);
        let sum = |f: fn(&LayerReport) -> u64| of_kind().map(f).sum::<u64>();
        by_type.insert(
            kind.clone(),
            TypeReport {
                count: of_kind().count(),
                ms: percentile(&runs, 0.5),
                share: 0.0,
                macs: sum(|l| l.macs),
                p10: percentile(&runs, 0.1),
                p90: percentile(&runs, 0.9),
                weight_bytes: sum(|l| l.weight_bytes),
                read_bytes: sum(|l| l.read_bytes),
                written_bytes: sum(|l| l.written_bytes),
            },
        );
    }
    let type_total: f64 = by_type.values().map(|t| t.ms).sum::<f64>().max(1e-12);
    for t in by_type.values_mut() {
        t.share = t.ms / type_total;
    }
    let workspace_bytes = netc_runtime::kernels::scratch_bytes();
    let report = Report {
        model: info.name.clone(),
        batch: settings.batch,
        threads,
        iters,
        latency_ms: Latency {
            median: total,
            p10: percentile(&times, 0.1),
            p90: percentile(&times, 0.9),
            min: times[0],
        },
        images_per_second: settings.batch as f64 / (total / 1e3),
        gflops: 2.0 * info.macs as f64 / (total / 1e3) / 1e9,
        by_type,
        layers,
        memory: Memory {
            weights_bytes: info.weights_bytes,
            packed_weights_bytes: lowered.weight_bytes() as u64,
            arena_bytes: 4 * plan.arena_floats as u64,
            naive_activation_bytes: 4 * plan.naive_floats as u64,
            workspace_bytes,
            peak_rss_bytes: profile::peak_rss_bytes(),
        },
        machine,
        compile_ms: None,
    };
    Ok((report, trace))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Parts of a report the report tests do not look at.
    use super::{Machine, Memory};

    pub(crate) fn memory() -> Memory {
        Memory {
            weights_bytes: 1,
            packed_weights_bytes: 1,
            arena_bytes: 1,
            naive_activation_bytes: 1,
            workspace_bytes: 1,
            peak_rss_bytes: 1,
        }
    }

    /// A machine of 200 GFLOP/s and 20 GB/s (ridge at 10 FLOP/byte).
    pub(crate) fn machine() -> Machine {
        Machine {
            cpu: "test cpu".into(),
            peak_gflops: 200.0,
            bandwidth_gbs: 20.0,
            threads: 2,
            micro_kernel: "k".into(),
        }
    }
}
