//! Checking: load a model file and its imports, then elaborate the model
//! into a [`Network`] with every shape inferred and every name assigned.

mod eval;
mod lower;
pub mod network;
mod ops;

pub mod report;

pub use eval::Limits;
pub use network::*;

use crate::diag::Diagnostic;
use crate::parse::{self, ast};
use crate::source::{SourceMap, Span};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Anything that stops a model from checking.
#[derive(Debug, Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error located in a source file; render it with its [`SourceMap`].
    #[error("{}", .0.message)]
    Source(Diagnostic),
}

impl From<Diagnostic> for CheckError {
    fn from(d: Diagnostic) -> Self {
        CheckError::Source(d)
    }
}

/// Options for checking a model.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    pub batch: usize,
    /// Binds every input's open height and width (`H: 520`); `None`
    /// keeps their defaults.
    pub size: Option<[usize; 2]>,
    pub limits: Limits,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            batch: 1,
            size: None,
            limits: Limits::default(),
        }
    }
}

/// Parsed files: the root first, then its imports in load order.
pub struct Program {
    pub sources: SourceMap,
    pub files: Vec<ast::File>,
}

const MAX_FILES: usize = 256;

/// Read and parse `path` and, transitively, every file it imports.
/// A failed parse still returns the sources so the error can be rendered.
pub fn load(path: &Path) -> Result<Program, (SourceMap, CheckError)> {
    let mut sources = SourceMap::default();
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue: Vec<(PathBuf, Option<Span>)> = vec![(path.to_path_buf(), None)];
    while let Some((p, from)) = queue.pop() {
        // Diamond imports load once; cycles stop at the second visit.
        if !seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())) {
            continue;
        }
        let text = match std::fs::read(&p) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    let id = sources.add(p.clone(), text);
                    let d = Diagnostic::new(Span::new(id, at, at + 1), "file is not valid UTF-8");
                    return Err((sources, d.into()));
                }
            },
            Err(e) => {
                let err = match from {
                    Some(span) => {
                        Diagnostic::new(span, format!("cannot import {}: {e}", p.display())).into()
                    }
                    None => CheckError::Io { path: p, source: e },
                };
                return Err((sources, err));
            }
        };
        if files.len() >= MAX_FILES {
            let d = Diagnostic::new(
                from.unwrap_or_default(),
                format!("more than {MAX_FILES} imported files"),
            );
            return Err((sources, d.into()));
        }
        let id = sources.add(p.clone(), text);
        let parsed = match parse::parse(id, &sources.get(id).text) {
            Ok(f) => f,
            Err(d) => return Err((sources, d.into())),
        };
        let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
        for import in parsed.imports.iter().rev() {
            queue.push((dir.join(&import.path), Some(import.span)));
        }
        files.push(parsed);
    }
    Ok(Program { sources, files })
}

impl Program {
    /// Elaborate the root file's model.
    pub fn check(&self, options: CheckOptions) -> Result<Network, CheckError> {
        let root = &self.files[0];
        let model = match root.models.as_slice() {
            [m] => m,
            [] => {
                let span = Span::new(crate::source::FileId(0), 0, 0);
                return Err(Diagnostic::new(span, "this file defines no `model`")
                    .note("a file with only blocks can be imported by a model file")
                    .into());
            }
            [_, second, ..] => {
                return Err(
                    Diagnostic::new(second.name.span, "a file defines at most one model").into(),
                )
            }
        };
        for f in &self.files[1..] {
            if let Some(m) = f.models.first() {
                return Err(
                    Diagnostic::new(m.name.span, "an imported file cannot define a model").into(),
                );
            }
        }
        if options.batch == 0 || options.batch > 1 << 20 {
            return Err(Diagnostic::new(
                model.name.span,
                format!(
                    "batch must be between 1 and {}, found {}",
                    1 << 20,
                    options.batch
                ),
            )
            .into());
        }
        let blocks = self
            .files
            .iter()
            .flat_map(|f| f.blocks.iter())
            .map(|def| eval::BlockRef { def })
            .collect();
        let mut el = eval::Elaborator::new(blocks, options.limits)?;
        el.model(model, options.batch, options.size)?;
        Ok(el.net)
    }
}

/// A model that did not check, ready to show: where (when the error has a
/// place in a source file), the one-line message, and the full rendering
/// the CLI prints (its `Display`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// File, 1-based line and column of the error's primary span.
    pub location: Option<(String, usize, usize)>,
    pub message: String,
    pub rendered: String,
}

impl Rejected {
    pub fn new(sources: &SourceMap, e: &CheckError) -> Rejected {
        let location = match e {
            CheckError::Source(d) => {
                let (line, col) = sources.line_col(d.span.file, d.span.start);
                let file = sources.get(d.span.file).path.display().to_string();
                Some((file, line, col))
            }
            CheckError::Io { .. } => None,
        };
        let message = match e {
            CheckError::Source(d) => d.message.clone(),
            other => other.to_string(),
        };
        Rejected {
            location,
            message,
            rendered: render_error(sources, e),
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl std::error::Error for Rejected {}

/// Load and check a model file in one step.
pub fn check_file(path: &Path, options: CheckOptions) -> Result<(Program, Network), Rejected> {
    let program = load(path).map_err(|(sources, e)| Rejected::new(&sources, &e))?;
    match program.check(options) {
        Ok(net) => Ok((program, net)),
        Err(e) => Err(Rejected::new(&program.sources, &e)),
    }
}

/// Render a check error as the CLI prints it.
pub fn render_error(sources: &SourceMap, e: &CheckError) -> String {
    match e {
        CheckError::Source(d) => d.render(sources),
        other => other.to_string(),
    }
}

/// Check source text held in memory (tests, fuzzing).
pub fn check_source(
    name: &str,
    text: &str,
    options: CheckOptions,
) -> Result<Network, (SourceMap, Diagnostic)> {
    let mut sources = SourceMap::default();
    let id = sources.add(name, text.to_string());
    let file = match parse::parse(id, text) {
        Ok(f) => f,
        Err(d) => return Err((sources, d)),
    };
    if !file.imports.is_empty() {
        let d = Diagnostic::new(file.imports[0].span, "imports need a file on disk");
        return Err((sources, d));
    }
    let program = Program {
        sources,
        files: vec![file],
    };
    match program.check(options) {
        Ok(n) => Ok(n),
        Err(CheckError::Source(d)) => Err((program.sources, d)),
        Err(e) => {
            let d = Diagnostic::new(Span::default(), e.to_string());
            Err((program.sources, d))
        }
    }
}
