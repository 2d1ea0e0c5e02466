//! `netc bench`: end-to-end latency of the JIT-compiled model.

use super::{load_graph, load_weights, Failure, OptArgs, WeightArgs};
use crate::codegen::{self, jit::JitModel};
use crate::passes;
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::Tensor;
use serde::Serialize;
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
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
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

#[derive(Serialize)]
struct Latency {
    median: f64,
    p10: f64,
    p90: f64,
    min: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    batch: usize,
    threads: usize,
    iters: usize,
    latency_ms: Latency,
    images_per_second: f64,
    gflops: f64,
    micro_kernel: &'static str,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.iters == 0 {
        return Err(Failure::new("--iters must be at least 1"));
    }
    let mut graph = load_graph(&a.file, a.batch)?;
    let mut weights = load_weights(&graph, &a.weights)?;
    let macs = graph.macs();
    passes::optimize(&mut graph, &mut weights, &a.opt.options())?;
    if graph.plan.is_none() {
        passes::memory::run(&mut graph, &mut weights)?;
    }
    let name = graph.name.clone();
    let lowered = codegen::lower(graph, &weights)?;
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
    let mut outputs: Vec<Tensor> = model
        .lowered()
        .output_shapes
        .iter()
        .map(|s| Tensor::zeros(s.clone()))
        .collect();
    for _ in 0..a.warmup {
        model.run_into(&inputs, &mut outputs)?;
    }
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let start = Instant::now();
        model.run_into(&inputs, &mut outputs)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = percentile(&times, 0.5);
    let report = Report {
        model: name,
        batch: a.batch,
        threads: model.threads(),
        iters: a.iters,
        latency_ms: Latency {
            median,
            p10: percentile(&times, 0.1),
            p90: percentile(&times, 0.9),
            min: times[0],
        },
        images_per_second: a.batch as f64 / (median / 1e3),
        gflops: 2.0 * macs as f64 / (median / 1e3) / 1e9,
        micro_kernel: netc_runtime::kernels::gemm::kernel_name(),
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            let l = &report.latency_ms;
            println!(
                "{} batch {} threads {} ({} iterations, kernel {})",
                report.model, report.batch, report.threads, report.iters, report.micro_kernel
            );
            println!(
                "latency ms: median {:.3}  p10 {:.3}  p90 {:.3}  min {:.3}",
                l.median, l.p10, l.p90, l.min
            );
            println!(
                "throughput: {:.1} images/s, {:.1} GFLOP/s",
                report.images_per_second, report.gflops
            );
        }
    }
    Ok(())
}
