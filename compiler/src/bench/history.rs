//! `netc bench --history DIR`: every run's report appended to
//! `DIR/<model>.jsonl` with when, on what machine and at which commit it
//! was taken, and the trend of the runs comparable to the latest one.

use super::Report;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One recorded run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Run {
    /// Seconds since the Unix epoch when the run finished.
    pub unix_seconds: u64,
    /// `git rev-parse --short HEAD` of the working directory, if any.
    pub commit: Option<String>,
    /// What makes runs comparable: CPU, threads, batch, micro-kernel.
    pub machine: String,
    pub report: Report,
}

impl Run {
    pub fn new(report: Report) -> Run {
        let unix_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Run {
            unix_seconds,
            commit: git_commit(),
            machine: signature(&report),
            report,
        }
    }

    /// A short axis label: the commit, or the time of day the run ended.
    pub fn label(&self) -> String {
        match &self.commit {
            Some(c) => c.clone(),
            None => {
                let s = self.unix_seconds % 86_400;
                format!("{:02}:{:02}", s / 3600, (s / 60) % 60)
            }
        }
    }
}

/// Runs are comparable when they ran the same batch on the same number of
/// threads of the same CPU with the same micro-kernel.
pub fn signature(r: &Report) -> String {
    format!(
        "{} | {} threads | batch {} | {}",
        r.machine.cpu, r.threads, r.batch, r.machine.micro_kernel
    )
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let commit = text.trim();
    (out.status.success() && !commit.is_empty()).then(|| commit.to_string())
}

/// The history file of a model.
pub fn file(dir: &Path, model: &str) -> PathBuf {
    dir.join(format!("{model}.jsonl"))
}

/// Append `run` to the model's history and return every run comparable to
/// it (same [`signature`]), oldest first, `run` last. Lines that do not
/// parse (a report from an incompatible version) are skipped, not fatal.
pub fn append(dir: &Path, run: &Run) -> Result<Vec<Run>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = file(dir, &run.report.model);
    let line = serde_json::to_string(run).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Run>(l).ok())
        .filter(|r| r.machine == run.machine)
        .collect())
}
