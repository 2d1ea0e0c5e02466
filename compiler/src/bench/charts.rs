//! The report's pictures, as SVG drawn by plotters: time per layer type,
//! the roofline, one iteration's timeline, a comparison against a baseline
//! and the trend over a history of runs.
//!
//! Contract shared by every chart (and checked by the pixel tests below,
//! which render the SVG with resvg): every text lies inside the image,
//! category labels sit on their bar's centre line, and lengths and
//! positions follow the values on the chart's own axes. Colours are fixed
//! per role so a picture can be read, and tested, by colour.

use super::compare::Check;
use super::history::Run;
use super::{LayerReport, Report, TraceEvent, TypeReport};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub type ChartResult = Result<String, String>;

const FONT: &str = "sans-serif";
/// Bars of the by-type chart.
pub const BAR: RGBColor = RGBColor(66, 120, 180);
/// The roofline's roofs.
pub const ROOF: RGBColor = RGBColor(200, 40, 40);
/// Faster / slower than the baseline, and the noise band.
pub const FASTER: RGBColor = RGBColor(46, 139, 87);
pub const SLOWER: RGBColor = RGBColor(200, 40, 40);
pub const NOISE: RGBColor = RGBColor(225, 225, 225);
/// One colour per layer type, in the order the type first appears in a
/// report's type table (see [`type_colour`]).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
];

/// Pixels per character of 13-px sans-serif text, generously: enough to
/// keep labels inside the image without measuring glyphs.
const CHAR_PX: f64 = 7.6;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn text_px(s: &str) -> i32 {
    (s.chars().count() as f64 * CHAR_PX).ceil() as i32
}

fn style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(h, v))
}

/// A type's colour: its index among the report's types sorted by name, so
/// the same type has the same colour in every chart of one report.
pub fn type_colour(types: &[&str], kind: &str) -> RGBColor {
    let i = types.iter().position(|t| *t == kind).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn type_names(r: &Report) -> Vec<&str> {
    r.by_type.keys().map(String::as_str).collect()
}

/// Types by time, slowest first.
pub fn sorted_types(r: &Report) -> Vec<(&String, &TypeReport)> {
    let mut types: Vec<(&String, &TypeReport)> = r.by_type.iter().collect();
    types.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    types
}

/// A row's two texts on its centre line `y`: the label ending left of
/// `x0` (the axis), the value starting right of `x1` (the bar's end).
fn row_texts(
    root: &DrawingArea<SVGBackend, Shift>,
    y: i32,
    (x0, label): (i32, &str),
    (x1, value): (i32, &str),
    value_size: u32,
) -> Result<(), String> {
    root.draw(&Text::new(
        label.to_string(),
        (x0 - 8, y),
        style(13, HPos::Right, VPos::Center),
    ))
    .map_err(err)?;
    root.draw(&Text::new(
        value.to_string(),
        (x1 + 6, y),
        style(value_size, HPos::Left, VPos::Center),
    ))
    .map_err(err)
}

/// Horizontal bars, one per row, longest first from the top; the label of
/// row `i` left of the axis on the bar's centre line, the value right of
/// the bar's end. `rows` are (label, value, value text, colour).
fn bars(title: &str, unit: &str, rows: &[(String, f64, String, RGBColor)]) -> ChartResult {
    let n = rows.len().max(1);
    let label_px = rows.iter().map(|r| text_px(&r.0)).max().unwrap_or(40) + 14;
    let value_px = rows.iter().map(|r| text_px(&r.2)).max().unwrap_or(40) + 12;
    let (width, height) = (760u32, 90 + 30 * n as u32);
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 17))
            .margin(12)
            .margin_right(12 + value_px as u32)
            .x_label_area_size(34)
            .y_label_area_size(label_px as u32)
            .build_cartesian_2d(0.0..max * 1.02, 0.0..n as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(6)
            .x_desc(unit)
            .label_style((FONT, 13))
            .draw()
            .map_err(err)?;
        // Row i (0 = slowest) occupies [n-1-i, n-i] on the y axis.
        for (i, (label, value, text, colour)) in rows.iter().enumerate() {
            let top = (n - i) as f64 - 0.15;
            let bottom = (n - 1 - i) as f64 + 0.15;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, bottom), (*value, top)],
                    colour.filled(),
                )))
                .map_err(err)?;
            let centre = (n - 1 - i) as f64 + 0.5;
            let (x0, y) = chart.backend_coord(&(0.0, centre));
            let (x1, _) = chart.backend_coord(&(*value, centre));
            row_texts(&root, y, (x0, label), (x1, text), 13)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Time per layer type, slowest first, each bar labelled with its time and
/// share of the summed layer time.
pub fn by_type(r: &Report) -> ChartResult {
    let rows: Vec<_> = sorted_types(r)
        .into_iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.ms,
                format!("{:.3} ms · {:.1}%", t.ms, 100.0 * t.share),
                BAR,
            )
        })
        .collect();
    bars(
        &format!(
            "{}: ms per layer type (batch {}, {} threads)",
            r.model, r.batch, r.threads
        ),
        "ms (median per iteration)",
        &rows,
    )
}

/// A roofline point: FLOP per byte moved and achieved GFLOP/s.
#[derive(Clone, Debug)]
pub struct Point {
    pub label: String,
    pub kind: String,
    pub intensity: f64,
    pub gflops: f64,
    pub ms: f64,
}

/// Layers that do arithmetic, as roofline points (the others have no
/// place on a log axis of FLOP/s).
pub fn layer_points(r: &Report) -> Vec<Point> {
    r.layers
        .iter()
        .filter(|l| l.macs > 0 && l.bytes > 0 && l.gflops > 0.0)
        .map(|l: &LayerReport| Point {
            label: l.name.clone(),
            kind: l.kind.clone(),
            intensity: l.arithmetic_intensity,
            gflops: l.gflops,
            ms: l.ms,
        })
        .collect()
}

/// Each type's layers taken together: summed FLOPs over summed bytes and
/// summed time.
pub fn type_points(r: &Report) -> Vec<Point> {
    let mut out = Vec::new();
    for (kind, t) in &r.by_type {
        let of_kind = r.layers.iter().filter(|l| &l.kind == kind);
        let bytes: u64 = of_kind.clone().map(|l| l.bytes).sum();
        let ms: f64 = of_kind.map(|l| l.ms).sum();
        let flops = 2.0 * t.macs as f64;
        if flops <= 0.0 || bytes == 0 || ms <= 0.0 {
            continue;
        }
        out.push(Point {
            label: kind.clone(),
            kind: kind.clone(),
            intensity: flops / bytes as f64,
            gflops: flops / (ms / 1e3) / 1e9,
            ms,
        });
    }
    out
}

/// A layer name short enough to label a point: merged layers keep their
/// first part.
fn short_label(name: &str) -> String {
    const MAX: usize = 32;
    if name.chars().count() <= MAX {
        return name.to_string();
    }
    let cut: String = name.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

/// `1000`, `10`, `0.1`: tick labels of a log axis without trailing zeros.
fn compact(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// How many of the slowest layers the roofline names.
const ROOFLINE_LABELS: usize = 6;

/// Achieved GFLOP/s against FLOP per byte, log-log, under the machine's
/// two roofs: copy bandwidth (a line of slope 1) and FMA peak. Layers are
/// dots coloured by type, types are outlined diamonds, and the slowest
/// layers carry their names.
pub fn roofline(r: &Report) -> ChartResult {
    let layers = layer_points(r);
    let types = type_points(r);
    let names = type_names(r);
    let (peak, bw) = (
        r.machine.peak_gflops.max(1e-3),
        r.machine.bandwidth_gbs.max(1e-3),
    );
    let ridge = peak / bw;
    let all = layers.iter().chain(&types);
    let ai_lo = all.clone().map(|p| p.intensity).fold(ridge, f64::min) / 3.0;
    let ai_hi = all.clone().map(|p| p.intensity).fold(ridge, f64::max) * 3.0;
    let gf_lo = all
        .clone()
        .map(|p| p.gflops)
        .fold(peak, f64::min)
        .min(bw * ai_lo)
        / 2.0;
    // Winograd layers can beat the peak: their FLOPs are counted as direct
    // convolution's, so the axis makes room above the highest point too.
    let gf_hi = all.clone().map(|p| p.gflops).fold(peak, f64::max) * 2.0;
    let (width, height) = (900u32, 600u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, legend) = root.split_horizontally(width - 170);
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                format!(
                    "{}: roofline (batch {}, {} threads)",
                    r.model, r.batch, r.threads
                ),
                (FONT, 17),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((ai_lo..ai_hi).log_scale(), (gf_lo..gf_hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| compact(*v))
            .y_label_formatter(&|v| compact(*v))
            .x_desc("FLOP per byte moved")
            .y_desc("GFLOP/s achieved")
            .label_style((FONT, 12))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(err)?;
        // The roofs, sampled densely enough to look straight on log axes.
        let steps = 200;
        let roof = (0..=steps).map(|i| {
            let ai = ai_lo * (ai_hi / ai_lo).powf(i as f64 / steps as f64);
            (ai, (bw * ai).min(peak))
        });
        chart
            .draw_series(LineSeries::new(roof, ROOF.stroke_width(2)))
            .map_err(err)?;
        let (rx, ry) = chart.backend_coord(&(ridge, peak));
        root.draw(&Text::new(
            format!("peak {peak:.0} GFLOP/s"),
            (rx + 6, ry - 4),
            style(12, HPos::Left, VPos::Bottom),
        ))
        .map_err(err)?;
        let lx = ai_lo * 1.4;
        let (bx, by) = chart.backend_coord(&(lx, (bw * lx).max(gf_lo)));
        root.draw(&Text::new(
            format!("{bw:.1} GB/s"),
            (bx + 4, by - 6),
            style(12, HPos::Left, VPos::Bottom),
        ))
        .map_err(err)?;
        for p in &layers {
            let c = type_colour(&names, &p.kind);
            chart
                .draw_series(std::iter::once(Circle::new(
                    (p.intensity, p.gflops),
                    4,
                    c.filled(),
                )))
                .map_err(err)?;
        }
        for p in &types {
            let c = type_colour(&names, &p.kind);
            let (x, y) = chart.backend_coord(&(p.intensity, p.gflops));
            let d = 8;
            plot.draw(&PathElement::new(
                vec![(x, y - d), (x + d, y), (x, y + d), (x - d, y), (x, y - d)],
                c.stroke_width(2),
            ))
            .map_err(err)?;
        }
        // Name the slowest layers: each label goes right of its dot, else
        // left, above or below, wherever it overlaps no earlier label and
        // stays in the plot; a label with no such place is left out.
        let mut slowest: Vec<&Point> = layers.iter().collect();
        slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let (left_edge, right_edge) = (80, (width - 170) as i32 - 14);
        let peak_label = text_px(&format!("peak {peak:.0} GFLOP/s"));
        let mut placed: Vec<[i32; 4]> = vec![[rx + 6, ry - 20, rx + 6 + peak_label, ry - 4]];
        for p in slowest.into_iter().take(ROOFLINE_LABELS) {
            let (x, y) = chart.backend_coord(&(p.intensity, p.gflops));
            let label = short_label(&p.label);
            let w = text_px(&label);
            let candidates = [
                (x + 7, y, HPos::Left),
                (x - 7, y, HPos::Right),
                (x - w / 2, y - 14, HPos::Left),
                (x - w / 2, y + 14, HPos::Left),
                (x - w / 2, y - 28, HPos::Left),
                (x - w / 2, y + 28, HPos::Left),
                (x - w - 7, y - 14, HPos::Left),
                (x + 7, y + 14, HPos::Left),
            ];
            let free = candidates.into_iter().find(|&(tx, ty, h)| {
                let x0 = if matches!(h, HPos::Right) { tx - w } else { tx };
                let b = [x0, ty - 8, x0 + w, ty + 8];
                b[0] >= left_edge
                    && b[2] <= right_edge
                    && !placed
                        .iter()
                        .any(|o| b[0] < o[2] && o[0] < b[2] && b[1] < o[3] && o[1] < b[3])
            });
            if let Some((tx, ty, h)) = free {
                let x0 = if matches!(h, HPos::Right) { tx - w } else { tx };
                placed.push([x0, ty - 8, x0 + w, ty + 8]);
                plot.draw(&Text::new(label, (tx, ty), style(11, h, VPos::Center)))
                    .map_err(err)?;
            }
        }
        let plotted: Vec<&str> = names
            .iter()
            .copied()
            .filter(|k| layers.iter().chain(&types).any(|p| p.kind == *k))
            .collect();
        legend_column(&legend, &names, &plotted, "● layer  ◇ type")?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A column of colour swatches, one per type in `shown`, with a heading.
fn legend_column(
    area: &DrawingArea<SVGBackend, Shift>,
    names: &[&str],
    shown: &[&str],
    heading: &str,
) -> Result<(), String> {
    area.draw(&Text::new(
        heading.to_string(),
        (4, 48),
        style(12, HPos::Left, VPos::Center),
    ))
    .map_err(err)?;
    for (i, name) in shown.iter().enumerate() {
        let y = 72 + 20 * i as i32;
        let c = type_colour(names, name);
        area.draw(&Rectangle::new([(6, y - 6), (18, y + 6)], c.filled()))
            .map_err(err)?;
        area.draw(&Text::new(
            name.to_string(),
            (24, y),
            style(12, HPos::Left, VPos::Center),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// The iteration whose end-to-end time is the median: the one the
/// timeline shows.
pub fn median_iteration(events: &[TraceEvent]) -> Option<usize> {
    let last = events.iter().map(|e| e.iteration).max()?;
    let mut totals: Vec<(f64, usize)> = (0..=last)
        .map(|it| {
            let of_it = events.iter().filter(|e| e.iteration == it);
            let start = of_it.clone().map(|e| e.start_us).fold(f64::MAX, f64::min);
            let end = of_it.map(|e| e.start_us + e.dur_us).fold(0.0, f64::max);
            (end - start, it)
        })
        .collect();
    totals.sort_by(|a, b| a.0.total_cmp(&b.0));
    totals.get(totals.len() / 2).map(|t| t.1)
}

/// One iteration as a timeline: a lane per layer type, a box per layer
/// execution from its start to its end (ms since the iteration began).
pub fn timeline(r: &Report, events: &[TraceEvent]) -> ChartResult {
    let names = type_names(r);
    let Some(it) = median_iteration(events) else {
        return Err("no trace events to draw".into());
    };
    let of_it: Vec<&TraceEvent> = events.iter().filter(|e| e.iteration == it).collect();
    let t0 = of_it.iter().map(|e| e.start_us).fold(f64::MAX, f64::min);
    let end = of_it
        .iter()
        .map(|e| (e.start_us + e.dur_us - t0) / 1e3)
        .fold(0.0, f64::max)
        .max(1e-6);
    let lanes: Vec<&str> = names
        .iter()
        .copied()
        .filter(|k| of_it.iter().any(|e| e.kind == *k))
        .collect();
    let n = lanes.len().max(1);
    let label_px = lanes.iter().map(|l| text_px(l)).max().unwrap_or(40) + 14;
    let (width, height) = (900u32, 90 + 26 * n as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: one iteration, layer by layer ({:.3} ms)", r.model, end),
                (FONT, 17),
            )
            .margin(12)
            .margin_right(24)
            .x_label_area_size(34)
            .y_label_area_size(label_px as u32)
            .build_cartesian_2d(0.0..end, 0.0..n as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("ms since the iteration began")
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        for (lane, kind) in lanes.iter().enumerate() {
            let centre = (n - 1 - lane) as f64 + 0.5;
            let (x0, y) = chart.backend_coord(&(0.0, centre));
            root.draw(&Text::new(
                kind.to_string(),
                (x0 - 8, y),
                style(12, HPos::Right, VPos::Center),
            ))
            .map_err(err)?;
            let c = type_colour(&names, kind);
            chart
                .draw_series(of_it.iter().filter(|e| e.kind == *kind).map(|e| {
                    let a = (e.start_us - t0) / 1e3;
                    let b = a + e.dur_us / 1e3;
                    // A pixel of white at each box's end tells back-to-back
                    // layers of one type apart.
                    let mut r =
                        Rectangle::new([(a, centre - 0.35), (b, centre + 0.35)], c.filled());
                    r.set_margin(0, 0, 0, 1);
                    r
                }))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The comparison with a baseline: per row the change in percent as a bar
/// from zero (green faster, red slower), over a grey band of ± the noise
/// tolerance; regressions are the red bars that leave the band.
pub fn compare(model: &str, checks: &[Check]) -> ChartResult {
    let n = checks.len().max(1);
    let label_px = checks.iter().map(|c| text_px(&c.what)).max().unwrap_or(40) + 14;
    let texts: Vec<String> = checks
        .iter()
        .map(|c| {
            format!(
                "{:+.1}% ({:.3} → {:.3} ms){}",
                100.0 * c.change,
                c.baseline_ms,
                c.ms,
                if c.regression { " REGRESSION" } else { "" }
            )
        })
        .collect();
    let value_px = texts.iter().map(|t| text_px(t)).max().unwrap_or(40) + 12;
    let span = checks
        .iter()
        .map(|c| c.change.abs().max(c.tolerance))
        .fold(0.05, f64::max)
        * 100.0
        * 1.1;
    let (width, height) = (900u32, 90 + 30 * n as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{model}: change against the baseline"), (FONT, 17))
            .margin(12)
            .margin_right(12 + value_px as u32)
            .x_label_area_size(34)
            .y_label_area_size(label_px as u32)
            .build_cartesian_2d(-span..span, 0.0..n as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("change in median time, % (grey: noise band)")
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        for (i, (c, text)) in checks.iter().zip(&texts).enumerate() {
            let centre = (n - 1 - i) as f64 + 0.5;
            let band = 100.0 * c.tolerance;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(-band, centre - 0.45), (band, centre + 0.45)],
                    NOISE.filled(),
                )))
                .map_err(err)?;
            let colour = if c.change > 0.0 { SLOWER } else { FASTER };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, centre - 0.3), (100.0 * c.change, centre + 0.3)],
                    colour.filled(),
                )))
                .map_err(err)?;
            let (x0, y) = chart.backend_coord(&(-span, centre));
            let (x1, _) = chart.backend_coord(&(span, centre));
            row_texts(&root, y, (x0, &c.what), (x1, text), 12)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// How many layer types a trend chart follows besides the total.
const TREND_TYPES: usize = 5;

/// Median time per run for the total and the slowest types of the latest
/// run, in the order the runs were recorded.
pub fn trend(model: &str, runs: &[Run]) -> ChartResult {
    let Some(last) = runs.last() else {
        return Err("no runs to draw".into());
    };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![(
        "total".into(),
        runs.iter()
            .enumerate()
            .map(|(i, r)| (i as f64, r.report.latency_ms.median))
            .collect(),
    )];
    for (kind, _) in sorted_types(&last.report).into_iter().take(TREND_TYPES) {
        let points = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.report.by_type.get(kind).map(|t| (i as f64, t.ms)))
            .collect();
        series.push((kind.clone(), points));
    }
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.1;
    let names = type_names(&last.report);
    let (width, height) = (900u32, 460u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, legend) = root.split_horizontally(width - 170);
        let x_hi = (runs.len().max(2) - 1) as f64;
        let mut chart = ChartBuilder::on(&plot)
            .caption(format!("{model}: median ms per run"), (FONT, 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.2..x_hi + 0.2, 0.0..max)
            .map_err(err)?;
        let labels: Vec<String> = runs.iter().map(|r| r.label()).collect();
        chart
            .configure_mesh()
            .x_labels(runs.len().min(10))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("ms")
            .label_style((FONT, 11))
            .draw()
            .map_err(err)?;
        let mut keys: Vec<(String, RGBColor)> = Vec::new();
        for (name, points) in &series {
            let c = if name == "total" {
                BLACK
            } else {
                type_colour(&names, name)
            };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
            keys.push((name.clone(), c));
        }
        for (i, (name, c)) in keys.iter().enumerate() {
            let y = 60 + 20 * i as i32;
            legend
                .draw(&Rectangle::new([(6, y - 6), (18, y + 6)], c.filled()))
                .map_err(err)?;
            legend
                .draw(&Text::new(
                    name.clone(),
                    (24, y),
                    style(12, HPos::Left, VPos::Center),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Training curves: loss per step (light) and per epoch (dark) on the
/// left, train and test accuracy per epoch on the right, against epochs.
pub fn learning_curves(
    model: &str,
    steps: &[(f64, f64)],
    epochs: &[(f64, f64, f64, Option<f64>)],
) -> ChartResult {
    if steps.is_empty() && epochs.is_empty() {
        return Err("no training steps to draw".into());
    }
    let x_hi = steps
        .iter()
        .map(|p| p.0)
        .chain(epochs.iter().map(|e| e.0))
        .fold(0.0, f64::max)
        .max(1e-3);
    let loss_hi = steps
        .iter()
        .map(|p| p.1)
        .chain(epochs.iter().map(|e| e.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.05;
    let (width, height) = (1000u32, 420u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(width / 2);
        let mut loss = ChartBuilder::on(&left)
            .caption(format!("{model}: training loss"), (FONT, 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_hi, 0.0..loss_hi)
            .map_err(err)?;
        loss.configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .label_style((FONT, 11))
            .draw()
            .map_err(err)?;
        let light = RGBColor(160, 190, 230);
        loss.draw_series(LineSeries::new(
            steps.iter().copied(),
            light.stroke_width(1),
        ))
        .map_err(err)?
        .label("per step")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], light));
        let per_epoch: Vec<(f64, f64)> = epochs.iter().map(|e| (e.0, e.1)).collect();
        let dark = RGBColor(30, 80, 160);
        loss.draw_series(LineSeries::new(
            per_epoch.iter().copied(),
            dark.stroke_width(2),
        ))
        .map_err(err)?
        .label("epoch mean")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], dark));
        loss.draw_series(per_epoch.iter().map(|&p| Circle::new(p, 3, dark.filled())))
            .map_err(err)?;
        loss.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 11))
            .draw()
            .map_err(err)?;

        let acc = |e: &(f64, f64, f64, Option<f64>)| [Some(e.2), e.3];
        let lo = epochs
            .iter()
            .flat_map(acc)
            .flatten()
            .fold(1.0, f64::min)
            .min(0.9);
        let mut chart = ChartBuilder::on(&right)
            .caption("accuracy", (FONT, 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_hi, (lo - 0.02).max(0.0)..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style((FONT, 11))
            .draw()
            .map_err(err)?;
        for (which, name, colour) in [
            (0usize, "train", RGBColor(30, 80, 160)),
            (1, "test", RGBColor(200, 80, 30)),
        ] {
            let points: Vec<(f64, f64)> = epochs
                .iter()
                .filter_map(|e| acc(e)[which].map(|a| (e.0, a)))
                .collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 11))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    //! The charts as pictures: each SVG is rendered by resvg with the
    //! system's fonts and measured in pixels.

    use super::*;
    use crate::bench::Latency;
    use resvg::tiny_skia::Pixmap;
    use resvg::usvg;
    use std::collections::BTreeMap;

    struct Picture {
        pixmap: Pixmap,
        /// Every text with its bounding box (x0, y0, x1, y1) in pixels.
        texts: Vec<(String, [f32; 4])>,
    }

    fn collect_texts(g: &usvg::Group, out: &mut Vec<(String, [f32; 4])>) {
        for node in g.children() {
            match node {
                usvg::Node::Group(g) => collect_texts(g, out),
                usvg::Node::Text(t) => {
                    let text: String = t.chunks().iter().map(|c| c.text()).collect();
                    let b = t.abs_bounding_box();
                    out.push((text, [b.left(), b.top(), b.right(), b.bottom()]));
                }
                usvg::Node::Path(_) | usvg::Node::Image(_) => {}
            }
        }
    }

    fn render(svg: &str) -> Picture {
        let mut opt = usvg::Options::default();
        let db = opt.fontdb_mut();
        db.load_system_fonts();
        // fontdb maps `sans-serif` to Arial; use what the machine has, as a
        // browser would.
        let family = db
            .faces()
            .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
            .find(|name| name.contains("Sans"))
            .expect("no sans-serif system font: install fonts-dejavu-core");
        db.set_sans_serif_family(family);
        let tree = usvg::Tree::from_str(svg, &opt).expect("the chart is valid SVG");
        let size = tree.size().to_int_size();
        let mut pixmap = Pixmap::new(size.width(), size.height()).expect("non-empty chart");
        resvg::render(&tree, Default::default(), &mut pixmap.as_mut());
        let mut texts = Vec::new();
        collect_texts(tree.root(), &mut texts);
        assert!(!texts.is_empty(), "text was dropped: are fonts installed?");
        Picture { pixmap, texts }
    }

    impl Picture {
        fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
            let p = self.pixmap.pixel(x, y).expect("inside").demultiply();
            [p.red(), p.green(), p.blue()]
        }

        fn is(&self, x: u32, y: u32, c: RGBColor) -> bool {
            self.rgb(x, y) == [c.0, c.1, c.2]
        }

        /// Near `c` (anti-aliased lines are never exactly their colour).
        fn near(&self, x: u32, y: u32, c: RGBColor) -> bool {
            let p = self.rgb(x, y);
            let d: i32 = (0..3)
                .map(|i| (p[i] as i32 - [c.0, c.1, c.2][i] as i32).abs())
                .sum();
            d < 90
        }

        /// Boxes of exactly colour `c` that are separated by rows without
        /// it, top to bottom: (x0, y0, x1, y1) inclusive.
        fn row_boxes(&self, c: RGBColor) -> Vec<[u32; 4]> {
            let mut boxes: Vec<[u32; 4]> = Vec::new();
            let mut open = false;
            for y in 0..self.pixmap.height() {
                let xs: Vec<u32> = (0..self.pixmap.width())
                    .filter(|&x| self.is(x, y, c))
                    .collect();
                match (xs.first(), xs.last(), open) {
                    (Some(&a), Some(&b), true) => {
                        let last = boxes.last_mut().expect("open box");
                        *last = [last[0].min(a), last[1], last[2].max(b), y];
                    }
                    (Some(&a), Some(&b), false) => {
                        boxes.push([a, y, b, y]);
                        open = true;
                    }
                    _ => open = false,
                }
            }
            boxes
        }

        /// Runs of colour `c` along row `y`: (x0, x1) inclusive.
        fn runs(&self, y: u32, c: RGBColor) -> Vec<(u32, u32)> {
            let mut out: Vec<(u32, u32)> = Vec::new();
            for x in 0..self.pixmap.width() {
                if self.is(x, y, c) {
                    match out.last_mut() {
                        Some(r) if r.1 + 1 == x => r.1 = x,
                        _ => out.push((x, x)),
                    }
                }
            }
            out
        }

        /// Centres of the blobs of exactly colour `c` of at least `min`
        /// pixels.
        fn blobs(&self, c: RGBColor, min: f64) -> Vec<(f64, f64)> {
            let (w, h) = (self.pixmap.width(), self.pixmap.height());
            let mut seen = vec![false; (w * h) as usize];
            let mut out = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    if seen[(y * w + x) as usize] || !self.is(x, y, c) {
                        continue;
                    }
                    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
                    let mut stack = vec![(x, y)];
                    seen[(y * w + x) as usize] = true;
                    while let Some((px, py)) = stack.pop() {
                        sx += px as f64;
                        sy += py as f64;
                        n += 1.0;
                        for (dx, dy) in [(-1i32, 0i32), (1, 0), (0, -1), (0, 1)] {
                            let (qx, qy) = (px as i32 + dx, py as i32 + dy);
                            if qx < 0 || qy < 0 || qx >= w as i32 || qy >= h as i32 {
                                continue;
                            }
                            let (qx, qy) = (qx as u32, qy as u32);
                            if !seen[(qy * w + qx) as usize] && self.is(qx, qy, c) {
                                seen[(qy * w + qx) as usize] = true;
                                stack.push((qx, qy));
                            }
                        }
                    }
                    if n >= min {
                        out.push((sx / n, sy / n));
                    }
                }
            }
            out
        }

        fn text(&self, s: &str) -> [f32; 4] {
            self.texts
                .iter()
                .find(|t| t.0 == s)
                .unwrap_or_else(|| panic!("no text {s:?} in {:?}", self.texts))
                .1
        }

        fn assert_texts_inside(&self) {
            let (w, h) = (self.pixmap.width() as f32, self.pixmap.height() as f32);
            for (text, b) in &self.texts {
                assert!(
                    b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h,
                    "{text:?} at {b:?} leaves the {w}x{h} image"
                );
            }
        }
    }

    fn report(types: &[(&str, f64)], layers: Vec<LayerReport>) -> Report {
        let total: f64 = types.iter().map(|t| t.1).sum();
        let mut by_type = BTreeMap::new();
        for &(k, ms) in types {
            by_type.insert(
                k.to_string(),
                TypeReport {
                    count: 1,
                    ms,
                    share: ms / total,
                    macs: layers.iter().filter(|l| l.kind == k).map(|l| l.macs).sum(),
                    p10: ms,
                    p90: ms,
                    ..TypeReport::default()
                },
            );
        }
        Report {
            model: "net".into(),
            batch: 1,
            threads: 2,
            iters: 10,
            latency_ms: Latency {
                median: total,
                p10: total,
                p90: total,
                min: total,
            },
            images_per_second: 1e3 / total,
            gflops: 1.0,
            by_type,
            layers,
            memory: crate::bench::testing::memory(),
            machine: crate::bench::testing::machine(),
            compile_ms: None,
        }
    }

    /// A layer reaching `gflops` at `intensity` FLOP per byte in `ms`.
    fn layer(name: &str, kind: &str, intensity: f64, gflops: f64, ms: f64) -> LayerReport {
        let flops = gflops * 1e9 * ms / 1e3;
        LayerReport {
            name: name.into(),
            kind: kind.into(),
            op: kind.into(),
            source: String::new(),
            call_site: Vec::new(),
            fused: Vec::new(),
            ms,
            share: 0.1,
            macs: (flops / 2.0) as u64,
            gflops,
            percent_of_peak: gflops / 2.0,
            bytes: (flops / intensity) as u64,
            read_bytes: 0,
            weight_bytes: 0,
            written_bytes: 0,
            arithmetic_intensity: intensity,
        }
    }

    /// The values of the chart in the issue that found the bars shifted
    /// one category and the largest label below the axis.
    const TYPES: &[(&str, f64)] = &[
        ("conv 3x3", 2.10),
        ("conv 1x1", 3.06),
        ("conv other", 0.92),
        ("pool", 0.53),
        ("dense", 0.21),
        ("concat", 0.05),
    ];

    #[test]
    fn bars_have_their_values_lengths_and_labels_on_their_centre_lines() {
        let r = report(TYPES, Vec::new());
        let pic = render(&by_type(&r).unwrap());
        pic.assert_texts_inside();
        let bars = pic.row_boxes(BAR);
        let sorted = sorted_types(&r);
        assert_eq!(bars.len(), sorted.len(), "{bars:?}");
        let widest = (bars[0][2] - bars[0][0] + 1) as f64;
        let max = sorted[0].1.ms;
        for (bar, (name, t)) in bars.iter().zip(&sorted) {
            // One axis origin, lengths proportional to the values.
            assert!(bar[0].abs_diff(bars[0][0]) <= 1, "{name}: {bar:?}");
            let width = (bar[2] - bar[0] + 1) as f64;
            assert!(
                (width - widest * t.ms / max).abs() <= 2.0,
                "{name}: {width} px for {} ms, widest {widest} px for {max} ms",
                t.ms
            );
            // Its label left of the axis, on the bar's centre line.
            let label = pic.text(name);
            let centre = (label[1] + label[3]) / 2.0;
            assert!(
                centre > bar[1] as f32 && centre < bar[3] as f32,
                "{name}: label centre {centre} outside the bar's rows {}..{}",
                bar[1],
                bar[3]
            );
            assert!(label[2] <= bar[0] as f32, "{name}: label over the bar");
            // Its value right of its end, on the same line.
            let value = pic.text(&format!("{:.3} ms · {:.1}%", t.ms, 100.0 * t.share));
            let centre = (value[1] + value[3]) / 2.0;
            assert!(centre > bar[1] as f32 && centre < bar[3] as f32);
            assert!(value[0] >= bar[2] as f32, "{name}: value inside the bar");
        }
    }

    #[test]
    fn roofline_points_and_roofs_sit_where_the_log_axes_put_them() {
        let points = [
            (0.5, 5.0),
            (2.0, 30.0),
            (8.0, 100.0),
            (50.0, 150.0),
            (200.0, 120.0),
        ];
        let layers: Vec<LayerReport> = points
            .iter()
            .enumerate()
            .map(|(i, &(ai, gf))| layer(&format!("layer{i}"), "conv 3x3", ai, gf, 1.0 + i as f64))
            .collect();
        let r = report(&[("conv 3x3", 15.0)], layers);
        let pic = render(&roofline(&r).unwrap());
        pic.assert_texts_inside();
        let colour = type_colour(&["conv 3x3"], "conv 3x3");
        // The dots, left to right (the points' intensities rise): blobs in
        // the plot (not the legend's swatch) bigger than the outline of the
        // type's diamond.
        let legend_x = (pic.pixmap.width() - 170) as f64;
        let mut dots: Vec<(f64, f64)> = pic
            .blobs(colour, 12.0)
            .into_iter()
            .filter(|d| d.0 < legend_x)
            .collect();
        dots.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(dots.len(), points.len(), "{dots:?}");
        // x = a + b·log(intensity), y = c + d·log(GFLOP/s): fit on the
        // first and last dot, check every dot.
        let fit = |i: usize, j: usize, v: fn(&(f64, f64)) -> f64, p: fn(&(f64, f64)) -> f64| {
            let slope =
                (p(&dots[j]) - p(&dots[i])) / (v(&points[j]).log10() - v(&points[i]).log10());
            let at = p(&dots[i]) - slope * v(&points[i]).log10();
            (at, slope)
        };
        let (ax, bx) = fit(0, 4, |p| p.0, |d| d.0);
        let (ay, by) = fit(0, 4, |p| p.1, |d| d.1);
        assert!(bx > 0.0 && by < 0.0, "axes run the wrong way: {bx} {by}");
        for (p, d) in points.iter().zip(&dots) {
            let (x, y) = (ax + bx * p.0.log10(), ay + by * p.1.log10());
            assert!(
                (x - d.0).abs() < 1.5 && (y - d.1).abs() < 1.5,
                "dot for {p:?} at {d:?}, expected ({x:.1}, {y:.1})"
            );
        }
        // The roofs: bandwidth · intensity left of the ridge (10 FLOP/B),
        // the peak right of it.
        for ai in [0.25f64, 1.0, 4.0, 25.0, 100.0] {
            let x = (ax + bx * ai.log10()).round() as u32;
            let expect = ay + by * (20.0 * ai).min(200.0).log10();
            let rows: Vec<u32> = (0..pic.pixmap.height())
                .filter(|&y| pic.near(x, y, ROOF))
                .collect();
            assert!(!rows.is_empty(), "no roof at intensity {ai}");
            let mean = rows.iter().sum::<u32>() as f64 / rows.len() as f64;
            assert!(
                (mean - expect).abs() < 2.5,
                "roof at intensity {ai}: y {mean:.1}, expected {expect:.1}"
            );
        }
        // The slowest layer is named.
        pic.text("layer4");
    }

    #[test]
    fn timeline_boxes_follow_the_trace() {
        let r = report(&[("conv 3x3", 2.0), ("pool", 2.0)], Vec::new());
        let event = |name: &str, kind: &str, start_ms: f64, ms: f64| TraceEvent {
            name: name.into(),
            kind: kind.into(),
            iteration: 0,
            start_us: 1000.0 + start_ms * 1e3,
            dur_us: ms * 1e3,
        };
        let events = [
            event("a", "conv 3x3", 0.0, 1.0),
            event("b", "pool", 1.0, 2.0),
            event("c", "conv 3x3", 3.0, 1.0),
        ];
        let pic = render(&timeline(&r, &events).unwrap());
        pic.assert_texts_inside();
        let names = ["conv 3x3", "pool"];
        let conv = pic.row_boxes(type_colour(&names, "conv 3x3"));
        let pool = pic.row_boxes(type_colour(&names, "pool"));
        assert_eq!((conv.len(), pool.len()), (1, 1), "one lane each");
        assert!(conv[0][3] < pool[0][1], "lanes in type order");
        let y = (conv[0][1] + conv[0][3]) / 2;
        let runs = pic.runs(y, type_colour(&names, "conv 3x3"));
        let pool_run = pic.runs((pool[0][1] + pool[0][3]) / 2, type_colour(&names, "pool"));
        assert_eq!(
            (runs.len(), pool_run.len()),
            (2, 1),
            "{runs:?} {pool_run:?}"
        );
        // 1 ms, 2 ms, 1 ms back to back.
        let ms = (runs[1].1 - runs[0].0 + 1) as f64 / 4.0;
        let width = |r: (u32, u32)| (r.1 - r.0 + 1) as f64;
        assert!((width(runs[0]) - ms).abs() <= 2.0);
        assert!((width(pool_run[0]) - 2.0 * ms).abs() <= 2.0);
        assert!((width(runs[1]) - ms).abs() <= 2.0);
        assert!(runs[0].1.abs_diff(pool_run[0].0) <= 2);
        assert!(pool_run[0].1.abs_diff(runs[1].0) <= 2);
        pic.text("pool");
    }

    #[test]
    fn comparison_bars_start_at_zero_and_the_band_is_the_noise() {
        let check = |what: &str, change: f64, tolerance: f64| Check {
            what: what.into(),
            baseline_ms: 10.0,
            ms: 10.0 * (1.0 + change),
            change,
            tolerance,
            regression: change > tolerance,
        };
        let checks = [check("total", 0.30, 0.05), check("conv 3x3", -0.10, 0.05)];
        let pic = render(&compare("net", &checks).unwrap());
        pic.assert_texts_inside();
        let slower = pic.row_boxes(SLOWER);
        let faster = pic.row_boxes(FASTER);
        let band = pic.row_boxes(NOISE);
        assert_eq!((slower.len(), faster.len()), (1, 1));
        assert!(slower[0][1] < faster[0][1], "rows in order");
        // Both bars start at zero: the slower one's left edge, the faster
        // one's right edge; 30% is three times 10%.
        assert!(slower[0][0].abs_diff(faster[0][2]) <= 2);
        let len = |b: [u32; 4]| (b[2] - b[0] + 1) as f64;
        assert!((len(slower[0]) - 3.0 * len(faster[0])).abs() <= 3.0);
        // The band is ±5%: half as long as the 10% bar each side of zero.
        let zero = slower[0][0] as f64;
        let b = band.first().expect("a noise band");
        assert!(((zero - b[0] as f64) - len(faster[0]) / 2.0).abs() <= 3.0);
        assert!(((b[2] as f64 - zero) - len(faster[0]) / 2.0).abs() <= 3.0);
        pic.text("+30.0% (10.000 → 13.000 ms) REGRESSION");
    }

    #[test]
    fn trend_lines_and_labels_stay_in_the_picture() {
        let runs: Vec<Run> = (0..4)
            .map(|i| Run {
                unix_seconds: 1_800_000_000 + 60 * i,
                commit: Some(format!("abc{i}")),
                machine: "m".into(),
                report: report(&[("conv 3x3", 2.0 + i as f64), ("pool", 1.0)], Vec::new()),
            })
            .collect();
        let pic = render(&trend("net", &runs).unwrap());
        pic.assert_texts_inside();
        for label in ["abc0", "abc3", "total", "conv 3x3", "pool"] {
            pic.text(label);
        }
    }
}
