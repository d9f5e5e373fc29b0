//! Diagnostics: what a user did wrong, where, and how to fix it.
//!
//! A [`Diagnostic`] is data, not an error: the validator collects all of them in one run
//! and the CLI renders them. Every diagnostic has a stable kebab-case `code`, a primary
//! [`Label`] with `file:line:column`, a lowercase message and, where it helps, a hint.
//! This module does no IO: rendering returns a `String`.

use std::fmt::Write as _;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The specs cannot be built.
    Error,
    /// The specs build, but something looks wrong.
    Warning,
}

/// A position in a source file, 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// Index of the file in the [`SourceMap`].
    pub file: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
    /// Length of the underlined text in characters (at least 1 when rendered).
    pub len: u32,
    /// Optional text shown next to the underline.
    pub message: Option<String>,
}

impl Label {
    /// A label at `line:col` of `file` spanning `len` characters.
    pub fn new(file: usize, line: u32, col: u32, len: u32) -> Label {
        Label {
            file,
            line,
            col,
            len,
            message: None,
        }
    }

    /// The same label with a message.
    pub fn with_message(mut self, message: impl Into<String>) -> Label {
        self.message = Some(message.into());
        self
    }
}

/// One problem found in the specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable kebab-case code such as `unknown-plan`.
    pub code: &'static str,
    /// Lowercase, one line.
    pub message: String,
    /// Where the problem is.
    pub primary: Label,
    /// Related places ("plan defined here").
    pub secondary: Vec<Label>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error with the given code, message and position.
    pub fn error(code: &'static str, message: impl Into<String>, primary: Label) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary,
            secondary: Vec::new(),
            hint: None,
        }
    }

    /// A warning: the specs build, but something looks wrong.
    pub fn warning(code: &'static str, message: impl Into<String>, primary: Label) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, primary)
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a secondary label.
    pub fn also(mut self, label: Label) -> Diagnostic {
        self.secondary.push(label);
        self
    }
}

/// The texts of every file read, so that diagnostics can show snippets.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

#[derive(Clone, Debug)]
struct SourceFile {
    path: String,
    text: String,
}

impl SourceMap {
    /// Adds a file and returns its index.
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> usize {
        self.files.push(SourceFile {
            path: path.into(),
            text: text.into(),
        });
        self.files.len() - 1
    }

    /// The display path of a file.
    pub fn path(&self, file: usize) -> &str {
        self.files
            .get(file)
            .map_or("<unknown>", |f| f.path.as_str())
    }

    /// The text of a file.
    pub fn text(&self, file: usize) -> &str {
        self.files.get(file).map_or("", |f| f.text.as_str())
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file was added.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn line(&self, file: usize, line: u32) -> Option<&str> {
        let idx = usize::try_from(line).ok()?.checked_sub(1)?;
        self.text(file).lines().nth(idx)
    }
}

/// Sorts diagnostics by file, line, column and code, and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (
            a.primary.file,
            a.primary.line,
            a.primary.col,
            a.code,
            &a.message,
        )
            .cmp(&(
                b.primary.file,
                b.primary.line,
                b.primary.col,
                b.code,
                &b.message,
            ))
    });
    diags.dedup();
}

/// Renders diagnostics as plain text (no colour), the way the CLI prints them.
pub fn render(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags {
        render_one(&mut out, d, sources);
        out.push('\n');
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    let _ = writeln!(
        out,
        "{} error{}, {} warning{}",
        errors,
        if errors == 1 { "" } else { "s" },
        warnings,
        if warnings == 1 { "" } else { "s" }
    );
    out
}

fn render_one(out: &mut String, d: &Diagnostic, sources: &SourceMap) {
    let sev = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let p = &d.primary;
    let _ = writeln!(out, "{sev}[{}]: {}", d.code, d.message);
    let _ = writeln!(out, "  --> {}:{}:{}", sources.path(p.file), p.line, p.col);
    snippet(out, p, sources);
    for s in &d.secondary {
        let _ = writeln!(out, "  ::: {}:{}:{}", sources.path(s.file), s.line, s.col);
        snippet(out, s, sources);
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "   = help: {h}");
    }
}

fn snippet(out: &mut String, l: &Label, sources: &SourceMap) {
    let Some(text) = sources.line(l.file, l.line) else {
        return;
    };
    let text: String = text.chars().take(160).collect();
    let num = l.line.to_string();
    let pad = " ".repeat(num.len());
    let _ = writeln!(out, "{pad} |");
    let _ = writeln!(out, "{num} | {}", text.trim_end());
    let col = usize::try_from(l.col.saturating_sub(1)).unwrap_or(0);
    let width = text.chars().count().saturating_sub(col).max(1);
    let len = usize::try_from(l.len.max(1)).unwrap_or(1).min(width);
    let marker = format!("{}{}", " ".repeat(col), "^".repeat(len));
    match &l.message {
        Some(m) => {
            let _ = writeln!(out, "{pad} | {marker} {m}");
        }
        None => {
            let _ = writeln!(out, "{pad} | {marker}");
        }
    }
}

/// Suggests the closest of `candidates` to `word`, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&word.to_lowercase(), &c.to_lowercase());
        let limit = (word.chars().count().max(c.chars().count()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, bc)| (d, c) < (bd, bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbouring characters each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("prp", ["pro", "free"]), Some("pro"));
        assert_eq!(
            did_you_mean("enterprize", ["enterprise", "pro"]),
            Some("enterprise")
        );
        assert_eq!(did_you_mean("zzzzzz", ["pro", "free"]), None);
        assert_eq!(did_you_mean("prot", ["port", "protocol"]), Some("port"));
    }

    #[test]
    fn renders_position_snippet_and_hint() {
        let mut sm = SourceMap::default();
        let f = sm.add("specs/t.yaml", "a: 1\nplan: premium\n");
        let d = Diagnostic::error(
            "unknown-plan",
            "unknown plan `premium`",
            Label::new(f, 2, 7, 7),
        )
        .hint("did you mean `pro`?");
        let text = render(&[d], &sm);
        assert!(text.contains("specs/t.yaml:2:7"), "{text}");
        assert!(text.contains("      ^^^^^^^"), "{text}");
        assert!(text.contains("help: did you mean `pro`?"), "{text}");
        assert!(text.ends_with("1 error, 0 warnings\n"), "{text}");
    }
}
