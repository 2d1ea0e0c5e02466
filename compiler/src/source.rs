//! Source files and byte spans into them, shared by every diagnostic.

use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span { file, start, end }
    }
}

/// One loaded source file.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// Every file a compilation read (the model file and its imports).
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, path: impl Into<PathBuf>, text: String) -> FileId {
        self.files.push(SourceFile {
            path: path.into(),
            text,
        });
        FileId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| FileId(i as u32))
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let text = &self.get(file).text;
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// `path:line:col` of the start of a span.
    pub fn location(&self, span: Span) -> String {
        let (line, col) = self.line_col(span.file, span.start);
        format!("{}:{}:{}", self.get(span.file).path.display(), line, col)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One step on the way from the model to a layer: a block call, or the
/// statement that made the layer, and the part of the layer's dotted name
/// that step contributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub span: Span,
    pub name: String,
}

/// Where a layer was instantiated: the block calls from the model down,
/// outermost first, then the statement inside the innermost block.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct CallPath(pub Vec<Frame>);

impl CallPath {
    /// The statement that made the layer (the innermost frame).
    pub fn statement(&self) -> Option<Span> {
        self.0.last().map(|f| f.span)
    }
}

/// A [`Frame`] with its position resolved, for reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub name: String,
}

impl SourceMap {
    /// Every frame of a call path with file, line and column.
    pub fn locate(&self, path: &CallPath) -> Vec<Located> {
        path.0
            .iter()
            .map(|f| {
                let (line, col) = self.line_col(f.span.file, f.span.start);
                Located {
                    file: self.get(f.span.file).path.display().to_string(),
                    line,
                    col,
                    name: f.name.clone(),
                }
            })
            .collect()
    }

    /// `models/googlenet.net:28 inception3a › :16 branch2.0 › :7 conv`: a
    /// frame names its file only when it differs from the previous one.
    pub fn call_path(&self, path: &CallPath) -> String {
        format_frames(&self.locate(path), None)
    }
}

/// Frames as one line, `›` between them; a frame names its file only when
/// it differs from the one before (or from `after`, the file of a frame
/// printed earlier on the same line).
pub fn format_frames(frames: &[Located], after: Option<&str>) -> String {
    let mut out = String::new();
    let mut file = after;
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push_str(" › ");
        }
        if file != Some(f.file.as_str()) {
            out.push_str(&f.file);
        }
        out.push_str(&format!(":{} {}", f.line, f.name));
        file = Some(&f.file);
    }
    out
}
