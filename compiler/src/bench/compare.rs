//! Regression checks against an earlier report.
//!
//! A slowdown counts only when it exceeds the run-to-run noise measured in
//! both runs: the relative p10–p90 spread of the baseline plus that of the
//! new run, and never less than [`MIN_TOLERANCE`]. Types below
//! [`MIN_MS`] are too short to judge.

use super::{Latency, Report};
use serde::Serialize;

pub const MIN_TOLERANCE: f64 = 0.02;
pub const MIN_MS: f64 = 0.02;

#[derive(Debug, Serialize, PartialEq)]
pub struct Check {
    pub what: String,
    pub baseline_ms: f64,
    pub ms: f64,
    /// (new − baseline) / baseline.
    pub change: f64,
    pub tolerance: f64,
    pub regression: bool,
}

fn spread(median: f64, p10: f64, p90: f64) -> f64 {
    if median > 0.0 {
        (p90 - p10).max(0.0) / median
    } else {
        0.0
    }
}

fn check(what: String, base: (f64, f64, f64), new: (f64, f64, f64)) -> Check {
    let tolerance =
        (spread(base.0, base.1, base.2) + spread(new.0, new.1, new.2)).max(MIN_TOLERANCE);
    let change = if base.0 > 0.0 {
        (new.0 - base.0) / base.0
    } else {
        0.0
    };
    Check {
        what,
        baseline_ms: base.0,
        ms: new.0,
        change,
        tolerance,
        regression: change > tolerance && new.0.max(base.0) >= MIN_MS,
    }
}

fn triple(l: &Latency) -> (f64, f64, f64) {
    (l.median, l.p10, l.p90)
}

/// Compare the total and every layer type present in both reports.
pub fn compare(base: &Report, new: &Report) -> Vec<Check> {
    let mut out = vec![check(
        "total".into(),
        triple(&base.latency_ms),
        triple(&new.latency_ms),
    )];
    for (kind, t) in &new.by_type {
        if let Some(b) = base.by_type.get(kind) {
            out.push(check(
                kind.clone(),
                (b.ms, b.p10, b.p90),
                (t.ms, t.p10, t.p90),
            ));
        }
    }
    out
}

/// The comparison as text, regressions marked.
pub fn describe(checks: &[Check]) -> String {
    let mut out = String::from("vs baseline     baseline ms     new ms   change  tolerance\n");
    for c in checks {
        out += &format!(
            "{:<14} {:>12.3} {:>10.3} {:>+7.1}% {:>9.1}%{}\n",
            c.what,
            c.baseline_ms,
            c.ms,
            100.0 * c.change,
            100.0 * c.tolerance,
            if c.regression { "  REGRESSION" } else { "" }
        );
    }
    out
}

/// `compare.md`: every row with before, after, change and noise band,
/// and the chart beside it.
pub fn markdown(model: &str, checks: &[Check], chart: Option<&str>) -> String {
    let mut out = format!("# netc bench: {model} against the baseline\n\n");
    out += "A row regresses when its median grew by more than the noise band: the \
            relative p10–p90 spread of both runs added, at least 2%.\n\n";
    out += "| | baseline ms | ms | change | noise band | |\n|---|---|---|---|---|---|\n";
    for c in checks {
        out += &format!(
            "| {} | {:.3} | {:.3} | {:+.1}% | ±{:.1}% | {} |\n",
            c.what,
            c.baseline_ms,
            c.ms,
            100.0 * c.change,
            100.0 * c.tolerance,
            if c.regression { "**regression**" } else { "" }
        );
    }
    if let Some(chart) = chart {
        out += &format!("\n![change against the baseline]({chart})\n");
    }
    out
}

/// How many rows the one-screen summary lists besides the total.
const SUMMARY_ROWS: usize = 8;

/// A one-screen Markdown summary for a CI job page: the verdict, the
/// total, and the types that moved most.
pub fn summary(report: &Report, checks: &[Check]) -> String {
    let regressions: Vec<&Check> = checks.iter().filter(|c| c.regression).collect();
    let mut out = format!(
        "### netc bench {}: {}\n\n",
        report.model,
        if regressions.is_empty() {
            "no regression".to_string()
        } else {
            format!(
                "{} regression{} ({})",
                regressions.len(),
                if regressions.len() == 1 { "" } else { "s" },
                regressions
                    .iter()
                    .map(|c| c.what.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    out += &format!(
        "batch {}, {} threads, {} iterations on {}\n\n",
        report.batch, report.threads, report.iters, report.machine.cpu
    );
    out += "| | baseline ms | ms | change | noise |\n|---|---:|---:|---:|---:|\n";
    let mut rows: Vec<&Check> = checks.iter().skip(1).collect();
    rows.sort_by(|a, b| b.change.abs().total_cmp(&a.change.abs()));
    for c in checks
        .iter()
        .take(1)
        .chain(rows.into_iter().take(SUMMARY_ROWS))
    {
        out += &format!(
            "| {}{} | {:.3} | {:.3} | {:+.1}% | ±{:.1}% |\n",
            if c.regression { "❌ " } else { "" },
            c.what,
            c.baseline_ms,
            c.ms,
            100.0 * c.change,
            100.0 * c.tolerance
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::TypeReport;
    use std::collections::BTreeMap;

    fn report(total: f64, conv: f64, noise: f64) -> Report {
        let mut by_type = BTreeMap::new();
        by_type.insert(
            "conv 3x3".to_string(),
            TypeReport {
                count: 3,
                ms: conv,
                share: 1.0,
                macs: 1,
                p10: conv * (1.0 - noise),
                p90: conv * (1.0 + noise),
                ..TypeReport::default()
            },
        );
        Report {
            model: "m".into(),
            batch: 1,
            threads: 2,
            iters: 10,
            latency_ms: Latency {
                median: total,
                p10: total * (1.0 - noise),
                p90: total * (1.0 + noise),
                min: total * 0.9,
            },
            images_per_second: 1.0,
            gflops: 1.0,
            by_type,
            layers: Vec::new(),
            memory: crate::bench::testing::memory(),
            machine: crate::bench::testing::machine(),
            compile_ms: None,
        }
    }

    #[test]
    fn a_synthetic_slower_run_is_flagged() {
        let base = report(10.0, 8.0, 0.02);
        let slow = report(13.0, 11.0, 0.02);
        let checks = compare(&base, &slow);
        assert!(checks.iter().all(|c| c.regression), "{checks:?}");
    }

    #[test]
    fn a_same_speed_run_is_not_flagged() {
        let base = report(10.0, 8.0, 0.05);
        let same = report(10.3, 8.2, 0.05);
        assert!(compare(&base, &same).iter().all(|c| !c.regression));
    }

    #[test]
    fn noisy_runs_need_a_bigger_slowdown() {
        // 15% slower, but each run spreads ±10%: within the noise.
        let base = report(10.0, 8.0, 0.1);
        let slower = report(11.5, 9.2, 0.1);
        assert!(compare(&base, &slower).iter().all(|c| !c.regression));
    }

    #[test]
    fn reports_round_trip_through_json() {
        let r = report(10.0, 8.0, 0.02);
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert!(compare(&r, &back).iter().all(|c| c.change == 0.0));
    }
}
