//! The `netc` command line: argument parsing and one function per command.
//! Every error becomes one message on stderr and exit code 1; exit code 2
//! is kept for a benchmark regression (`netc bench --baseline`).

mod bench;
mod check;
mod compile;
mod export;
mod import;
mod mask;
mod run;
mod train;

use crate::check::{self as checker, CheckOptions};
use crate::ir::Graph;
use crate::pipeline::{self, Pipeline};
use crate::target::Target;
use crate::weights::Weights;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "netc",
    version,
    about = "Compile declarative CNN definitions (.net files) and run them on the CPU",
    long_about = "netc reads a model written in the .net language (see grammar/README.md), \
checks it and infers every shape, and runs it.\n\nExamples:\n  \
netc check models/resnet50.net\n  \
netc check models/googlenet.net --params\n  \
netc check models/vgg16.net --batch 8 --format json\n  \
netc export models/resnet18.net --onnx resnet18.onnx --random-weights 1\n  \
netc import resnet18.onnx -o resnet18_imported.net"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest tensor a model may declare, e.g. 16GiB, 512MiB or a byte
    /// count: checked on shapes before anything is allocated.
    #[arg(long, global = true, value_name = "SIZE", default_value = "16GiB", value_parser = parse_size)]
    max_tensor_memory: u64,
    /// Height and width bound to a model's open spatial sizes (inputs
    /// declared `[N, 3, H: 520, W: 520]`), e.g. `--size 256x320`.
    #[arg(long, global = true, value_name = "HxW", value_parser = parse_hw)]
    size: Option<[usize; 2]>,
}

/// `HxW`, both at least 1.
fn parse_hw(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("`{s}` is not a size like 520x520");
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(bad)
    };
    Ok([side(h)?, side(w)?])
}

/// `N`, `NKiB`, `NMiB`, `NGiB` or `NTiB` (also `KB`/`MB`/`GB`/`TB`, binary).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 16GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use KiB, MiB, GiB or TiB)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` does not fit in 64 bits"))
}

/// The check limits for this invocation, set once from the command line.
static LIMITS: std::sync::OnceLock<checker::Limits> = std::sync::OnceLock::new();
/// `--size`, set once from the command line.
static SIZE: std::sync::OnceLock<Option<[usize; 2]>> = std::sync::OnceLock::new();

fn size() -> Option<[usize; 2]> {
    SIZE.get().copied().flatten()
}

/// Check options for `batch` under the command line's limits and size.
pub fn check_options(batch: usize) -> CheckOptions {
    CheckOptions {
        batch,
        size: size(),
        limits: LIMITS.get().copied().unwrap_or_default(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check a model: parse it, infer every shape, and print a per-layer table.
    Check(check::Args),
    /// Run a model on an input tensor or an MNIST file.
    Run(Box<run::Args>),
    /// Lower a model to the graph IR and print it.
    Compile(compile::Args),
    /// Time the JIT-compiled model end to end, per layer and per layer type.
    Bench(Box<bench::Args>),
    /// Write a model and its weights as an ONNX file.
    Export(export::Args),
    /// Turn an ONNX CNN into a .net file and a safetensors weight file.
    Import(import::Args),
    /// Train a model's parameters on labelled images (backward pass derived
    /// from the graph, Adam/SGD, augmentation, checkpoints).
    Train(Box<train::Args>),
    /// Draw a grid of augmented samples, to see what `--augment` does.
    Augment(train::AugmentArgs),
}

/// A failed command: the message to print and the exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

pub fn main() -> ExitCode {
    // Usage errors exit 1 like every other error: exit 2 means a benchmark
    // regression (`netc bench --baseline`).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let _ = SIZE.set(cli.size);
    let _ = LIMITS.set(checker::Limits {
        max_tensor_bytes: cli.max_tensor_memory,
        ..checker::Limits::default()
    });
    let result = match cli.command {
        Command::Check(a) => check::run(a),
        Command::Run(a) => run::run(*a),
        Command::Compile(a) => compile::run(a),
        Command::Bench(a) => bench::run(*a),
        Command::Export(a) => export::run(a),
        Command::Import(a) => import::run(a),
        Command::Train(a) => train::run(*a),
        Command::Augment(a) => train::augment(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let msg = f.message.trim_end();
            if msg.starts_with("error") || msg.contains(": error") || msg.contains("\nerror") {
                eprintln!("{msg}");
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::from(f.code)
        }
    }
}

/// Check a model file for `batch` and lower it to a validated graph.
pub fn load_graph(file: &Path, batch: usize) -> Result<Graph, Failure> {
    let pipeline = Pipeline::new(pipeline::Options {
        batch,
        size: size(),
        limits: LIMITS.get().copied().unwrap_or_default(),
        ..pipeline::Options::default()
    });
    Ok(pipeline.check_file(file)?.graph)
}

/// Where a model's weights come from.
#[derive(clap::Args)]
pub struct WeightArgs {
    /// Weight file: safetensors, .npz or .npy (f64/f32/f16/bf16), keys as
    /// printed by `netc check --params`.
    #[arg(long, value_name = "FILE", conflicts_with = "random_weights")]
    pub(crate) weights: Option<PathBuf>,
    /// Deterministic He-style random weights from this seed (the default,
    /// with seed 0, when no --weights is given).
    #[arg(long, value_name = "SEED")]
    pub(crate) random_weights: Option<u64>,
    /// Refuse weights holding NaN or infinite values (by default they are
    /// reported as a warning and the run goes on).
    #[arg(long)]
    strict: bool,
}

pub fn load_weights(graph: &Graph, a: &WeightArgs) -> Result<Weights, Failure> {
    match (&a.weights, a.random_weights) {
        (Some(path), _) => {
            let file = netc_runtime::weights::load(path)?;
            let weights = Weights::bind(graph, file)?;
            let bad = weights.non_finite();
            if let Some(first) = bad.first() {
                let others = match bad.len() {
                    1 => String::new(),
                    n => format!(" (and {} more tensors)", n - 1),
                };
                let what = format!("{}: {first}{others}", path.display());
                if a.strict {
                    return Err(Failure::new(format!("{what}; refused because of --strict")));
                }
                eprintln!(
                    "warning: {what}; outputs will likely be NaN (--strict refuses such files)"
                );
            }
            Ok(weights)
        }
        (None, seed) => {
            if seed.is_none() {
                eprintln!("note: no --weights given; using random weights (seed 0)");
            }
            Ok(Weights::random(graph, seed.unwrap_or(0)))
        }
    }
}

/// Optimisation flags shared by `run`, `compile` and `bench`.
#[derive(clap::Args, Clone)]
pub struct OptArgs {
    /// Optimisation level: 0 runs no passes, 1 (the default) runs all.
    #[arg(short = 'O', value_name = "LEVEL", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    level: u8,
    /// Skip one pass (repeatable); `netc compile --emit passes` lists them.
    #[arg(long = "disable-pass", value_name = "NAME")]
    disabled: Vec<String>,
    /// Instruction set to compile for: `native` (this CPU), `x86-64-v3`
    /// (AVX2 and FMA) or `x86-64-v4` (AVX-512). Kernel choices and packed
    /// weights follow it, so an object file for a named target is the same
    /// on every machine that compiles it.
    #[arg(long, value_name = "TARGET", default_value = "native")]
    target: Target,
}

impl OptArgs {
    /// The pipeline these flags ask for, at `batch` with `threads`.
    pub fn pipeline(&self, batch: usize, threads: usize) -> Pipeline {
        Pipeline::new(pipeline::Options {
            batch,
            size: size(),
            limits: LIMITS.get().copied().unwrap_or_default(),
            passes: crate::passes::Options {
                disable_all: self.level == 0,
                disabled: self.disabled.clone(),
            },
            target: self.target.clone(),
            threads,
            profile: false,
        })
    }
}
