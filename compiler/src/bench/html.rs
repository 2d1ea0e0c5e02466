//! `report.html`: the whole report on one self-contained page — inline
//! CSS and SVG, no scripts, nothing fetched — so it can be attached to a CI
//! run or mailed and still open anywhere.

use super::charts;
use super::compare::Check;
use super::render::{memory_cells, type_rows};
use super::{Report, TraceEvent};
use crate::source::format_frames;
use crate::units::human_bytes;
use std::fmt::Write;

/// What goes on the page besides the report itself.
pub struct Extras<'a> {
    /// The layer executions the timeline is drawn from.
    pub events: &'a [TraceEvent],
    /// How many of the slowest layers to list.
    pub top: usize,
    /// The comparison with a baseline, if one was given.
    pub checks: Option<&'a [Check]>,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #222;
       max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 2px; }
h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; }
.card span { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fde8e8; }
code { font-size: 12px; }
.site { color: #555; font-size: 12px; }
svg { max-width: 100%; height: auto; display: block; margin: 8px 0; }
footer { color: #888; font-size: 12px; margin: 40px 0 12px; }
";

/// Drop the XML declaration plotters may put before `<svg`, so the
/// picture can sit inline.
fn inline(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

fn card(out: &mut String, value: &str, what: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><b>{}</b><span>{}</span></div>",
        esc(value),
        esc(what)
    );
}

/// The page. Errors come from drawing the charts.
pub fn page(r: &Report, x: &Extras) -> Result<String, String> {
    let l = &r.latency_ms;
    let m = &r.machine;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>netc bench: {model}</title><style>{STYLE}</style></head><body>\n\
         <h1>netc bench: {model}</h1>\n<p class=\"sub\">batch {}, {} threads, {} timed iterations \
         on {} · micro-kernel <code>{}</code></p>\n",
        r.batch,
        r.threads,
        r.iters,
        esc(&m.cpu),
        esc(&m.micro_kernel),
        model = esc(&r.model),
    );
    out += "<div class=\"cards\">";
    card(&mut out, &format!("{:.3} ms", l.median), "median latency");
    card(
        &mut out,
        &format!("{:.3}–{:.3}", l.p10, l.p90),
        "p10–p90 ms",
    );
    card(&mut out, &format!("{:.1}", r.images_per_second), "images/s");
    card(
        &mut out,
        &format!("{:.1}", r.gflops),
        &format!(
            "effective GFLOP/s ({:.0}% of the FMA peak)",
            100.0 * r.gflops / m.peak_gflops.max(1e-9)
        ),
    );
    card(
        &mut out,
        &human_bytes(r.memory.peak_rss_bytes),
        "peak resident memory",
    );
    if let Some(c) = &r.compile_ms {
        card(&mut out, &format!("{:.0} ms", c.total), "to compile");
    }
    out += "</div>\n";

    if let Some(checks) = x.checks {
        out += "<h2>Against the baseline</h2>\n";
        out += inline(&charts::compare(&r.model, checks)?);
        out += "<table><tr><th></th><th class=\"n\">baseline ms</th><th class=\"n\">ms</th>\
                <th class=\"n\">change</th><th class=\"n\">noise band</th><th></th></tr>\n";
        for c in checks {
            let _ = writeln!(
                out,
                "<tr{}><td>{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td>\
                 <td class=\"n\">{:+.1}%</td><td class=\"n\">±{:.1}%</td><td>{}</td></tr>",
                if c.regression { " class=\"bad\"" } else { "" },
                esc(&c.what),
                c.baseline_ms,
                c.ms,
                100.0 * c.change,
                100.0 * c.tolerance,
                if c.regression { "regression" } else { "" }
            );
        }
        out += "</table>\n";
    }

    out += "<h2>Time by layer type</h2>\n";
    out += inline(&charts::by_type(r)?);
    out += "<table><tr><th>type</th><th class=\"n\">layers</th><th class=\"n\">ms</th>\
            <th class=\"n\">share</th><th class=\"n\">cumulative</th><th class=\"n\">GMACs</th>\
            <th class=\"n\">weights</th><th class=\"n\">activations read</th>\
            <th class=\"n\">activations written</th></tr>\n";
    for (name, cells) in type_rows(r) {
        let _ = write!(out, "<tr><td>{}</td>", esc(name));
        for cell in cells {
            let _ = write!(out, "<td class=\"n\">{}</td>", esc(&cell));
        }
        out += "</tr>\n";
    }
    out += "</table>\n";

    out += "<h2>Roofline</h2>\n<p>Each dot is a layer, each diamond a layer type, at its \
            arithmetic intensity (FLOPs per byte it must move at least once) and the FLOP rate \
            it reached. Left of the ridge the copy bandwidth bounds what a layer can reach, \
            right of it the FMA peak; the distance below the roof is what is left to gain. Two \
            caveats: bandwidth is the machine's copy bandwidth to memory, so layers whose data \
            stay in cache can sit above the slanted roof; and Winograd convolutions are credited \
            with direct convolution's FLOPs, so they can sit above the peak.</p>\n";
    out += inline(&charts::roofline(r)?);

    if !x.events.is_empty() {
        out += "<h2>One iteration</h2>\n<p>The iteration with the median end-to-end time, \
                one box per layer, one lane per layer type.</p>\n";
        out += inline(&charts::timeline(r, x.events)?);
    }

    let _ = writeln!(out, "<h2>Slowest {} layers</h2>", x.top);
    out +=
        "<table><tr><th class=\"n\">ms</th><th class=\"n\">share</th><th class=\"n\">GFLOP/s</th>\
            <th class=\"n\">% peak</th><th class=\"n\">FLOP/byte</th><th>layer</th><th>op</th>\
            <th>instantiated at</th></tr>\n";
    let mut layers: Vec<_> = r.layers.iter().collect();
    layers.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    for y in layers.into_iter().take(x.top) {
        let site = if y.call_site.is_empty() {
            y.source.clone()
        } else {
            format_frames(&y.call_site, None)
        };
        let fused = if y.fused.is_empty() {
            String::new()
        } else {
            format!("<br>fused: {}", esc(&y.fused.join(", ")))
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"n\">{:.3}</td><td class=\"n\">{:.1}%</td><td class=\"n\">{:.1}</td>\
             <td class=\"n\">{:.1}%</td><td class=\"n\">{:.1}</td><td><code>{}</code></td>\
             <td>{}</td><td class=\"site\">{}{fused}</td></tr>",
            y.ms,
            100.0 * y.share,
            y.gflops,
            y.percent_of_peak,
            y.arithmetic_intensity,
            esc(&y.name),
            esc(&y.op),
            esc(&site),
        );
    }
    out += "</table>\n";

    out += "<h2>Memory</h2>\n<table><tr><th>weights</th><th>packed weights</th>\
            <th>activation arena</th><th>naive activations</th><th>kernel workspace</th>\
            <th>peak RSS</th></tr>\n<tr>";
    for cell in memory_cells(&r.memory) {
        let _ = write!(out, "<td>{}</td>", esc(&cell));
    }
    out += "</tr></table>\n";

    if let Some(c) = &r.compile_ms {
        let _ = writeln!(
            out,
            "<h2>Compile time</h2>\n<p>From <code>.net</code> text to runnable code: {}.</p>",
            esc(&super::render::compile_line(c))
        );
    }
    let _ = write!(
        out,
        "<h2>Machine</h2>\n<table>\
         <tr><td>CPU</td><td>{}</td></tr>\
         <tr><td>FMA peak (all threads, measured)</td><td>{:.0} GFLOP/s</td></tr>\
         <tr><td>copy bandwidth (measured)</td><td>{:.1} GB/s</td></tr>\
         <tr><td>threads</td><td>{}</td></tr>\
         <tr><td>micro-kernel</td><td><code>{}</code></td></tr></table>\n",
        esc(&m.cpu),
        m.peak_gflops,
        m.bandwidth_gbs,
        m.threads,
        esc(&m.micro_kernel)
    );
    let _ = write!(
        out,
        "<footer>netc {} · <code>netc bench</code> · report.json, trace.json (chrome://tracing, \
         Perfetto) and the SVGs are beside this file.</footer>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}
