//! `netc bench --out`: the files a user opens — report.html above all —
//! written from a real run, self-contained, and (where Chromium is
//! installed) rendered by a real browser.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run netc; exit code 2 (a regression against a baseline) counts as
/// success when `regression_ok`: a loaded test machine can be slow.
fn netc(args: &[&str], regression_ok: bool) -> std::process::Output {
    let out = common::netc(args);
    let ok = out.status.success() || (regression_ok && out.status.code() == Some(2));
    assert!(
        ok,
        "netc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("netc-reports-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench(out: &Path, extra: &[&str]) {
    let out = out.to_string_lossy().into_owned();
    let mut args = vec![
        "bench",
        "models/deep_convnet.net",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    netc(&args, extra.contains(&"--baseline"));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_html_report_is_one_self_contained_page() {
    let dir = scratch("html");
    bench(&dir, &[]);
    for f in [
        "report.json",
        "report.md",
        "report.txt",
        "trace.json",
        "by_type.svg",
        "roofline.svg",
        "timeline.svg",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let html = read(&dir.join("report.html"));
    // Nothing fetched, nothing run: no scripts, no external sheets, fonts
    // or images (SVG's `xmlns` is a name, not a fetch).
    for banned in ["<script", "<link", "@import", "src=", "href=\"http", "url("] {
        assert!(!html.contains(banned), "report.html contains {banned:?}");
    }
    // The by-type chart, the roofline and the timeline, inline.
    assert_eq!(html.matches("<svg").count(), 3);
    for section in [
        "Time by layer type",
        "Roofline",
        "One iteration",
        "Slowest 10 layers",
        "Memory",
        "Machine",
        "activations written",
    ] {
        assert!(html.contains(section), "no {section:?} section");
    }
    // Call sites: every conv of the model is a statement of the model.
    assert!(html.contains("models/deep_convnet.net:"));
    let md = read(&dir.join("report.md"));
    assert!(md.contains("![roofline](roofline.svg)"));
    screenshot_in_a_browser(&dir.join("report.html"));
}

/// Render the page in headless Chromium and check it drew something: a
/// tall page with the charts' colours on it. Skipped (with a message)
/// where Chromium is absent, unless `NETC_REQUIRE_CHROMIUM` is set, as
/// `.ci/run` does.
fn screenshot_in_a_browser(page: &Path) {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        assert!(
            std::env::var_os("NETC_REQUIRE_CHROMIUM").is_none(),
            "NETC_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium to render report.html in (apt install chromium)");
        return;
    };
    let dir = page.parent().unwrap();
    let png = dir.join("report.png");
    let profile = dir.join("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,2600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .expect("run chromium");
    assert!(
        png.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap().to_rgb8();
    // The by-type bars' colour, drawn somewhere in the upper part, and
    // content (non-white rows) down most of the page.
    let bar = image::Rgb([66u8, 120, 180]);
    assert!(
        img.pixels().filter(|p| **p == bar).count() > 500,
        "no by-type bars in the rendered page"
    );
    let rows_with_ink = (0..img.height())
        .filter(|&y| (0..img.width()).any(|x| img.get_pixel(x, y).0 != [255, 255, 255]))
        .count();
    assert!(
        rows_with_ink > 1200,
        "the page rendered only {rows_with_ink} rows with anything on them"
    );
}

#[test]
fn a_baseline_adds_the_comparison_and_history_keeps_the_trend() {
    let base = scratch("baseline-a");
    bench(&base, &[]);
    let baseline = base.join("report.json").to_string_lossy().into_owned();
    let history = scratch("history");
    let history_arg = history.to_string_lossy().into_owned();
    let new = scratch("baseline-b");
    for _ in 0..2 {
        bench(&new, &["--baseline", &baseline, "--history", &history_arg]);
    }
    let compare = read(&new.join("compare.md"));
    assert!(compare.contains("| total |"), "{compare}");
    assert!(compare.contains("![change against the baseline](compare.svg)"));
    assert!(new.join("compare.svg").is_file());
    let summary = read(&new.join("summary.md"));
    assert!(
        summary.starts_with("### netc bench deep_convnet: "),
        "{summary}"
    );
    assert!(summary.lines().count() < 20, "not one screen:\n{summary}");
    let html = read(&new.join("report.html"));
    assert!(html.contains("Against the baseline"));
    let runs = read(&history.join("deep_convnet.jsonl"));
    assert_eq!(runs.lines().count(), 2);
    let run: serde_json::Value = serde_json::from_str(runs.lines().next().unwrap()).unwrap();
    assert!(run["machine"].as_str().unwrap().contains("threads"));
    assert!(run["report"]["latency_ms"]["median"].as_f64().unwrap() > 0.0);
    assert!(read(&history.join("deep_convnet-trend.svg")).contains("<svg"));
}
