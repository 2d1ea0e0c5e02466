//! `netc bench`: where a network spends its time and memory, per layer and
//! per layer type, from the JIT-compiled model.

use super::{load_weights, Failure, OptArgs, WeightArgs};
use crate::bench::{self, compare, render, ModelInfo, Report, Settings};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
netc bench models/resnet50.net\n  \
netc bench models/vgg16.net --batch 8 --format md --out bench-out/\n  \
netc bench models/resnet18.net --format json > base.json; netc bench models/resnet18.net --baseline base.json")]
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
    /// Report format; `json` and `trace` go to stdout unless --out is given.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write every format into this directory (report.json, report.md,
    /// by_type.svg, trace.json, report.txt).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compare with an earlier `--format json` report; exit code 2 when the
    /// total or a layer type got slower by more than both runs' noise.
    #[arg(long, value_name = "FILE.json")]
    baseline: Option<PathBuf>,
    /// How many of the slowest layers to list.
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
    Md,
    Json,
    Trace,
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.iters == 0 {
        return Err(Failure::new("--iters must be at least 1"));
    }
    let baseline: Option<Report> = match &a.baseline {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not a netc bench JSON report: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let mut pipeline = a.opt.pipeline(a.batch, a.threads);
    pipeline.options.profile = true;
    let checked = pipeline.check_file(&a.file)?;
    let (program, net) = (&checked.program, &checked.network);
    let weights = load_weights(&checked.graph, &a.weights)?;
    let info = ModelInfo {
        name: net.name.clone(),
        sources: &program.sources,
        macs: checked.graph.macs(),
        weights_bytes: 4 * (net.learnable_params() + net.buffer_params()),
    };
    // The folded weights live on packed in the compiled model; the rest go.
    let mut model = pipeline.jit(pipeline.optimize(checked.graph, weights)?)?;
    let settings = Settings {
        batch: a.batch,
        iters: a.iters,
        warmup: a.warmup,
    };
    let (report, trace) = bench::measure(&info, &mut model, settings)?;

    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let write = |name: &str, text: String| -> Result<(), Failure> {
            let p = dir.join(name);
            std::fs::write(&p, text)
                .map_err(|e| Failure::new(format!("cannot write {}: {e}", p.display())))
        };
        write("report.json", serde_json::to_string_pretty(&report)?)?;
        write("report.txt", render::table(&report, a.top))?;
        write("by_type.svg", render::svg_chart(&report)?)?;
        write(
            "report.md",
            render::markdown(&report, Some("by_type.svg"), a.top),
        )?;
        write("trace.json", render::trace(&report, &trace))?;
        eprintln!(
            "wrote report.json, report.md, by_type.svg, trace.json, report.txt to {}",
            dir.display()
        );
    }
    match (a.format, &a.out) {
        (Format::Table, _) => print!("{}", render::table(&report, a.top)),
        (Format::Md, None) => print!("{}", render::markdown(&report, None, a.top)),
        (Format::Json, None) => println!("{}", serde_json::to_string_pretty(&report)?),
        (Format::Trace, None) => println!("{}", render::trace(&report, &trace)),
        _ => {}
    }
    if let Some(base) = baseline {
        let checks = compare::compare(&base, &report);
        eprint!("{}", compare::describe(&checks));
        if checks.iter().any(|c| c.regression) {
            return Err(Failure {
                message: "benchmark regression against the baseline".into(),
                code: 2,
            });
        }
    }
    Ok(())
}
