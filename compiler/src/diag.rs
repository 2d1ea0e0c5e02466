//! Diagnostics: one error with a primary span, rendered rustc-style
//! (`file:line:col`, the source line, a caret under the span).

use crate::source::{SourceMap, Span};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::{Error as FilesError, Files};
use codespan_reporting::term;
use std::ops::Range;

/// A located error in a model source.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// Extra lines printed under the snippet (`= note: ...`), and the block
    /// instantiations the error happened in.
    pub notes: Vec<Note>,
    /// Secondary spans with a short label, e.g. "first defined here".
    pub related: Vec<(Span, String)>,
}

/// A line under a diagnostic's snippet.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    Text(String),
    /// The error happened inside this block, instantiated by this call.
    InBlock {
        block: String,
        call: Span,
    },
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            notes: Vec::new(),
            related: Vec::new(),
        }
    }

    /// Record that the error happened inside block `block` instantiated at
    /// `call` (called from the innermost block outwards).
    pub fn in_block(mut self, block: &str, call: Span) -> Self {
        self.notes.push(Note::InBlock {
            block: block.to_string(),
            call,
        });
        self
    }

    /// "in block `basic` instantiated at models/googlenet.net:28:10", one
    /// per enclosing instantiation, innermost first.
    pub fn instantiation_notes(&self, sources: &SourceMap) -> Vec<String> {
        self.notes
            .iter()
            .filter(|n| matches!(n, Note::InBlock { .. }))
            .map(|n| self.note_text(n, sources))
            .collect()
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(Note::Text(note.into()));
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    fn note_text(&self, note: &Note, sources: &SourceMap) -> String {
        match note {
            Note::Text(t) => t.clone(),
            Note::InBlock { block, call } => format!(
                "in block `{block}` instantiated at {}",
                sources.location(*call)
            ),
        }
    }

    /// `file:line:col: message` — the compact one-line form.
    pub fn short(&self, sources: &SourceMap) -> String {
        format!("{}: {}", sources.location(self.span), self.message)
    }

    /// The full multi-line form with the source snippet and a caret.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut labels = vec![Label::primary(
            self.span.file.0,
            self.span.start..self.span.end,
        )];
        for (span, label) in &self.related {
            labels.push(Label::secondary(span.file.0, span.start..span.end).with_message(label));
        }
        let cs = CsDiagnostic::error()
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(
                self.notes
                    .iter()
                    .map(|n| self.note_text(n, sources))
                    .collect(),
            );
        let config = term::Config::default();
        let files = SourceFiles(sources);
        match term::emit_into_string(&config, &files, &cs) {
            Ok(text) => {
                // codespan prints `┌─ file:line:col`; rustc's plain first line
                // is friendlier to editors that jump to `file:line:col:`.
                format!("{}\n{}", self.short(sources), text)
            }
            Err(_) => self.short(sources),
        }
    }
}

struct SourceFiles<'a>(&'a SourceMap);

impl<'a> Files<'a> for SourceFiles<'a> {
    type FileId = u32;
    type Name = String;
    type Source = &'a str;

    fn name(&'a self, id: u32) -> Result<String, FilesError> {
        Ok(self
            .0
            .get(crate::source::FileId(id))
            .path
            .display()
            .to_string())
    }

    fn source(&'a self, id: u32) -> Result<&'a str, FilesError> {
        Ok(&self.0.get(crate::source::FileId(id)).text)
    }

    fn line_index(&'a self, id: u32, byte_index: usize) -> Result<usize, FilesError> {
        let text = self.source(id)?;
        let byte_index = byte_index.min(text.len());
        Ok(text.as_bytes()[..byte_index]
            .iter()
            .filter(|&&b| b == b'\n')
            .count())
    }

    fn line_range(&'a self, id: u32, line_index: usize) -> Result<Range<usize>, FilesError> {
        let text = self.source(id)?;
        let mut start = 0;
        for _ in 0..line_index {
            match text[start..].find('\n') {
                Some(i) => start += i + 1,
                None => {
                    return Err(FilesError::LineTooLarge {
                        given: line_index,
                        max: 0,
                    })
                }
            }
        }
        let end = text[start..]
            .find('\n')
            .map_or(text.len(), |i| start + i + 1);
        Ok(start..end)
    }
}
