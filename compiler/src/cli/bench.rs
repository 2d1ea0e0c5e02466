//! `netc bench`: where a network spends its time and memory, per layer and
//! per layer type, from the JIT-compiled model.

use super::{load_weights, Failure, OptArgs, WeightArgs};
use crate::bench::history::{self, Run};
use crate::bench::render::Pictures;
use crate::bench::{
    self, charts, compare, html, render, CompileTimes, ModelInfo, Report, Settings,
};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
netc bench models/resnet50.net\n  \
netc bench models/vgg16.net --batch 8 --format md --out bench-out/\n  \
netc bench models/resnet18.net --out report/      # then open report/report.html\n  \
netc bench models/resnet18.net --format json > base.json; netc bench models/resnet18.net --baseline base.json\n  \
netc bench models/resnet18.net --history bench-history/   # appends the run, draws the trend\n\n\
--out writes report.html (the whole report on one self-contained page), report.md, report.json,\n\
report.txt, by_type.svg, roofline.svg, timeline.svg and trace.json (chrome://tracing, Perfetto);\n\
with --baseline also compare.md, compare.svg and summary.md (one screen, for a CI job summary;\n\
appended to $GITHUB_STEP_SUMMARY when that is set).")]
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
    /// Write every format into this directory: report.html, report.md,
    /// report.json, report.txt, the SVG charts and trace.json.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compare with an earlier `--format json` report (or report.json);
    /// exit code 2 when the total or a layer type got slower by more than
    /// both runs' noise. With --out, also writes compare.md, compare.svg
    /// and summary.md.
    #[arg(long, value_name = "FILE.json")]
    baseline: Option<PathBuf>,
    /// Append this run to DIR/<model>.jsonl (with the machine and the git
    /// commit) and draw DIR/<model>-trend.svg from the comparable runs.
    #[arg(long, value_name = "DIR")]
    history: Option<PathBuf>,
    /// How many of the slowest layers to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Time a training step instead (forward, backward and Adam's update,
    /// per layer type) and compare its memory with inference's.
    #[arg(long, conflicts_with_all = ["baseline", "history"])]
    train: bool,
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
    if a.train {
        return train(&a);
    }
    let mut pipeline = a.opt.pipeline(a.batch, a.threads);
    pipeline.options.profile = true;
    let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
    let mut times = CompileTimes::default();
    let t = std::time::Instant::now();
    let checked = pipeline.check_file(&a.file)?;
    times.parse_check = ms(t);
    let (program, net) = (&checked.program, &checked.network);
    let t = std::time::Instant::now();
    let weights = load_weights(&checked.graph, &a.weights)?;
    times.weights = ms(t);
    let info = ModelInfo {
        name: net.name.clone(),
        sources: &program.sources,
        macs: checked.graph.macs(),
        weights_bytes: 4 * (net.learnable_params() + net.buffer_params()),
    };
    // The folded weights live on packed in the compiled model; the rest go.
    let t = std::time::Instant::now();
    let planned = pipeline.optimize(checked.graph, weights)?;
    times.passes = ms(t);
    let t = std::time::Instant::now();
    let lowered = pipeline.lower(planned)?;
    times.pack = ms(t);
    let t = std::time::Instant::now();
    let mut model = pipeline.jit_lowered(lowered)?;
    times.codegen = ms(t);
    times.total = times.parse_check + times.weights + times.passes + times.pack + times.codegen;
    let settings = Settings {
        batch: a.batch,
        iters: a.iters,
        warmup: a.warmup,
    };
    let (mut report, trace) = bench::measure(&info, &mut model, settings)?;
    report.compile_ms = Some(times);

    let checks = baseline.map(|base| compare::compare(&base, &report));
    if let Some(dir) = &a.out {
        write_reports(dir, &report, &trace, checks.as_deref(), a.top)?;
    }
    if let Some(dir) = &a.history {
        let runs = history::append(dir, &Run::new(report.clone()))?;
        let trend = dir.join(format!("{}-trend.svg", report.model));
        std::fs::write(&trend, charts::trend(&report.model, &runs)?)
            .map_err(|e| format!("cannot write {}: {e}", trend.display()))?;
        eprintln!(
            "history: {} comparable run(s) in {}; trend in {}",
            runs.len(),
            history::file(dir, &report.model).display(),
            trend.display()
        );
    }
    match (a.format, &a.out) {
        (Format::Table, _) => print!("{}", render::table(&report, a.top)),
        (Format::Md, None) => print!("{}", render::markdown(&report, Pictures::default(), a.top)),
        (Format::Json, None) => println!("{}", serde_json::to_string_pretty(&report)?),
        (Format::Trace, None) => println!("{}", render::trace(&report, &trace)),
        _ => {}
    }
    if let Some(checks) = checks {
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

/// `netc bench --train`.
fn train(a: &Args) -> Result<(), Failure> {
    crate::train::prepare(a.threads);
    let pipeline = a.opt.pipeline(a.batch, a.threads);
    let checked = pipeline.check_file(&a.file)?;
    let weights = match (&a.weights.weights, a.weights.random_weights) {
        (Some(_), _) => load_weights(&checked.graph, &a.weights)?,
        (None, seed) => crate::weights::Weights::for_training(&checked.graph, seed.unwrap_or(0)),
    };
    let tg =
        crate::train::TrainGraph::build(checked.graph.clone(), crate::train::Loss::CrossEntropy)?;
    let mut ex = crate::train::Executor::<f32>::new(tg, &weights, 0)?;
    let planned = pipeline.optimize(checked.graph, weights)?;
    let arena = planned.report.arena_bytes.unwrap_or(0);
    let report = bench::train::measure(&mut ex, a.batch, a.iters, a.warmup, arena)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table | Format::Md | Format::Trace => print!("{}", bench::train::table(&report)),
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let p = dir.join("train.json");
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Every report file into `dir`.
fn write_reports(
    dir: &std::path::Path,
    report: &Report,
    trace: &[bench::TraceEvent],
    checks: Option<&[compare::Check]>,
    top: usize,
) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: String| -> Result<(), Failure> {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", p.display())))?;
        written.push(name.to_string());
        Ok(())
    };
    write("report.json", serde_json::to_string_pretty(report)?)?;
    write("report.txt", render::table(report, top))?;
    write("by_type.svg", charts::by_type(report)?)?;
    write("roofline.svg", charts::roofline(report)?)?;
    let timeline = !trace.is_empty();
    if timeline {
        write("timeline.svg", charts::timeline(report, trace)?)?;
    }
    let pictures = Pictures {
        by_type: Some("by_type.svg"),
        roofline: Some("roofline.svg"),
        timeline: timeline.then_some("timeline.svg"),
    };
    write("report.md", render::markdown(report, pictures, top))?;
    write("trace.json", render::trace(report, trace))?;
    let extras = html::Extras {
        events: trace,
        top,
        checks,
    };
    write("report.html", html::page(report, &extras)?)?;
    if let Some(checks) = checks {
        write("compare.svg", charts::compare(&report.model, checks)?)?;
        write(
            "compare.md",
            compare::markdown(&report.model, checks, Some("compare.svg")),
        )?;
        let summary = compare::summary(report, checks);
        // GitHub Actions shows this file on the job's page.
        if let Some(p) = std::env::var_os("GITHUB_STEP_SUMMARY") {
            use std::io::Write;
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .and_then(|mut f| writeln!(f, "{summary}"));
            if let Err(e) = appended {
                eprintln!("warning: cannot append to $GITHUB_STEP_SUMMARY: {e}");
            }
        }
        write("summary.md", summary)?;
    }
    eprintln!("wrote {} to {}", written.join(", "), dir.display());
    Ok(())
}
