//! Rendering a benchmark [`Report`] as text: the terminal table, Markdown
//! (pointing at the SVG charts of [`super::charts`]) and Chrome-trace JSON.

use super::charts::sorted_types;
use super::{LayerReport, Memory, Report, TraceEvent};
use crate::units::human_bytes;

/// The terminal table: totals, the per-type summary, the slowest layers.
pub fn table(r: &Report, top: usize) -> String {
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
    let mut cumulative = 0.0;
    for (name, t) in sorted_types(r) {
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
    let [w, packed, arena, naive, workspace, rss] = memory_cells(&r.memory);
    out += &format!(
        "\nmemory: weights {w} ({packed} packed), activation arena {arena} (naive {naive}), kernel workspace {workspace}, peak RSS {rss}\n"
    );
    if let Some(c) = &r.compile_ms {
        out += &format!("compile: {}\n", compile_line(c));
    }
    out
}

/// `12.3 ms: parse+check 1.0, weights 2.0, passes 3.0, pack 4.0, codegen 2.3`.
pub fn compile_line(c: &super::CompileTimes) -> String {
    format!(
        "{:.1} ms (parse+check {:.1}, weights {:.1}, passes {:.1}, pack {:.1}, codegen {:.1})",
        c.total, c.parse_check, c.weights, c.passes, c.pack, c.codegen
    )
}

/// The by-type table's rows, slowest first: the type and its cells —
/// count, ms, share, cumulative share, GMACs, weights, activations read,
/// activations written.
pub fn type_rows(r: &Report) -> Vec<(&String, [String; 8])> {
    let mut cumulative = 0.0;
    sorted_types(r)
        .into_iter()
        .map(|(name, t)| {
            cumulative += t.share;
            let cells = [
                t.count.to_string(),
                format!("{:.3}", t.ms),
                format!("{:.1}%", 100.0 * t.share),
                format!("{:.1}%", 100.0 * cumulative),
                format!("{:.3}", t.macs as f64 / 1e9),
                human_bytes(t.weight_bytes),
                human_bytes(t.read_bytes),
                human_bytes(t.written_bytes),
            ];
            (name, cells)
        })
        .collect()
}

/// The memory figures, human-readable, in report order.
pub fn memory_cells(m: &Memory) -> [String; 6] {
    [
        m.weights_bytes,
        m.packed_weights_bytes,
        m.arena_bytes,
        m.naive_activation_bytes,
        m.workspace_bytes,
        m.peak_rss_bytes,
    ]
    .map(human_bytes)
}

/// The charts a Markdown report links to, by file name next to it.
#[derive(Clone, Copy, Default)]
pub struct Pictures<'a> {
    pub by_type: Option<&'a str>,
    pub roofline: Option<&'a str>,
    pub timeline: Option<&'a str>,
}

/// A Markdown report, linking the pictures that were written beside it.
pub fn markdown(r: &Report, pictures: Pictures, top: usize) -> String {
    let l = &r.latency_ms;
    let mut out = format!(
        "# netc bench: {}

",
        r.model
    );
    out += &format!(
        "batch {}, {} threads, {} iterations, micro-kernel `{}`; machine peak {:.0} GFLOP/s (FMA loop, all threads), copy bandwidth {:.1} GB/s.

",
        r.batch, r.threads, r.iters, r.machine.micro_kernel, r.machine.peak_gflops, r.machine.bandwidth_gbs
    );
    out += "| latency (ms) | median | p10 | p90 | min | images/s | GFLOP/s |\n|---|---|---|---|---|---|---|\n";
    out += &format!(
        "| end to end | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |\n\n",
        l.median, l.p10, l.p90, l.min, r.images_per_second, r.gflops
    );
    out += "## Time by layer type\n\n| type | count | ms | share | cumulative | GMACs | weights | activations read | activations written |\n|---|---|---|---|---|---|---|---|---|\n";
    for (name, cells) in type_rows(r) {
        out += &format!("| {name} | {} |\n", cells.join(" | "));
    }
    for (title, file) in [
        ("time by layer type", pictures.by_type),
        ("roofline", pictures.roofline),
        ("one iteration", pictures.timeline),
    ] {
        if let Some(file) = file {
            out += &format!("\n![{title}]({file})\n");
        }
    }
    out += &format!("\n## Slowest {top} layers\n\n| ms | share | GFLOP/s | % peak | FLOP/byte | layer | op | source | fused |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut layers: Vec<_> = r.layers.iter().collect();
    layers.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    for x in layers.into_iter().take(top) {
        out += &format!(
            "| {:.3} | {:.1}% | {:.1} | {:.1}% | {:.1} | `{}` | {} | {} | {} |\n",
            x.ms,
            100.0 * x.share,
            x.gflops,
            x.percent_of_peak,
            x.arithmetic_intensity,
            x.name,
            x.op,
            x.source,
            x.fused.join(", ")
        );
    }
    out += "\n## Memory\n\n| weights | packed weights | activation arena | naive activations | kernel workspace | peak RSS |\n|---|---|---|---|---|---|\n";
    out += &format!("| {} |\n", memory_cells(&r.memory).join(" | "));
    if let Some(c) = &r.compile_ms {
        out += &format!(
            "\nCompile time (`.net` text to runnable code): {}.\n",
            compile_line(c)
        );
    }
    out
}

/// Chrome trace / Perfetto JSON: one complete event per layer per iteration.
pub fn trace(r: &Report, events: &[TraceEvent]) -> String {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "cat": e.kind,
                "ph": "X",
                "ts": e.start_us,
                "dur": e.dur_us,
                "pid": 1,
                "tid": 1,
                "args": {"iteration": e.iteration},
            })
        })
        .collect();
    let doc = serde_json::json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"model": r.model, "batch": r.batch, "threads": r.threads},
    });
    doc.to_string()
}
