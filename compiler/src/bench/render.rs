//! Rendering a benchmark [`Report`]: terminal table, Markdown with an SVG
//! chart drawn by plotters, and Chrome-trace JSON.

use super::{LayerReport, Memory, Report, TraceEvent, TypeReport};
use crate::units::human_bytes;
use plotters::prelude::*;

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
    let [w, packed, arena, naive, workspace, rss] = memory_cells(&r.memory);
    out += &format!(
        "\nmemory: weights {w} ({packed} packed), activation arena {arena} (naive {naive}), kernel workspace {workspace}, peak RSS {rss}\n"
    );
    out
}

/// The memory figures, human-readable, in report order.
fn memory_cells(m: &Memory) -> [String; 6] {
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

fn sorted_types(r: &Report) -> Vec<(&String, &TypeReport)> {
    let mut types: Vec<(&String, &TypeReport)> = r.by_type.iter().collect();
    types.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    types
}

/// A Markdown report; `chart` is the file name of the SVG next to it.
pub fn markdown(r: &Report, chart: Option<&str>, top: usize) -> String {
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
    out += "## Time by layer type\n\n| type | count | ms | share | cumulative | GMACs |\n|---|---|---|---|---|---|\n";
    let mut cumulative = 0.0;
    for (name, t) in sorted_types(r) {
        cumulative += t.share;
        out += &format!(
            "| {name} | {} | {:.3} | {:.1}% | {:.1}% | {:.3} |\n",
            t.count,
            t.ms,
            100.0 * t.share,
            100.0 * cumulative,
            t.macs as f64 / 1e9
        );
    }
    if let Some(chart) = chart {
        out += &format!("\n![time by layer type]({chart})\n");
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
    out
}

/// A horizontal bar chart of time per layer type, as SVG.
pub fn svg_chart(r: &Report) -> Result<String, String> {
    let types = sorted_types(r);
    let mut svg = String::new();
    {
        let height = 80 + 30 * types.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (720, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let max = types
            .iter()
            .map(|(_, t)| t.ms)
            .fold(0.0, f64::max)
            .max(1e-6)
            * 1.15;
        let n = types.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: ms per layer type (batch {}, {} threads)",
                    r.model, r.batch, r.threads
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(110)
            .build_cartesian_2d(0.0..max, 0..n)
            .map_err(|e| e.to_string())?;
        let labels: Vec<String> = types.iter().map(|(k, _)| k.to_string()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
            .x_desc("ms")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(types.iter().enumerate().map(|(i, (_, t))| {
                Rectangle::new([(0.0, i), (t.ms, i + 1)], BLUE.mix(0.6).filled())
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(types.iter().enumerate().map(|(i, (_, t))| {
                Text::new(
                    format!("{:.1}%", 100.0 * t.share),
                    (t.ms, i),
                    ("sans-serif", 14),
                )
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
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
