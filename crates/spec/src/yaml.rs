//! YAML text → a tree of [`Node`]s that remember where they came from.
//!
//! Built on the event API of `saphyr-parser`, so that every value and every key keeps its
//! line and column. This is also where hostile input is bounded: file size, nesting depth
//! and the number of nodes that aliases may expand to (a "billion laughs" file gets a
//! diagnostic, not an exhausted machine). Duplicate keys are diagnostics too.
//! Scalars are typed by the YAML 1.2 core schema. No IO here: the caller passes the text.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::diag::{Diagnostic, Label};

/// Largest spec file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one file may expand to, aliases included.
pub const MAX_NODES: usize = 2_000_000;

/// Where a node starts, and how long it is on its first line (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// Length in characters on the first line.
    pub len: u32,
}

impl Pos {
    /// A label for this position in `file`.
    pub fn label(self, file: usize) -> Label {
        Label::new(file, self.line, self.col, self.len)
    }
}

/// A mapping key with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key is.
    pub pos: Pos,
}

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// The child at `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key entry `key` of a mapping (for positions of keys).
    pub fn key(&self, key: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Follows a path of keys and sequence indexes (as text, like a JSON pointer).
    pub fn at<S: AsRef<str>>(&self, path: &[S]) -> Option<&Node> {
        let mut cur = self;
        for seg in path {
            let seg = seg.as_ref();
            cur = match &cur.value {
                Value::Map(_) => cur.get(seg)?,
                Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The deepest position along `path` that exists: the node itself, or the closest parent.
    pub fn pos_of<S: AsRef<str>>(&self, path: &[S]) -> Pos {
        let mut cur = self;
        for seg in path {
            match cur.at(&[seg.as_ref()]) {
                Some(n) => cur = n,
                None => break,
            }
        }
        cur.pos
    }

    /// A short word for the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// Converts to JSON. Non-finite floats become diagnostics (JSON cannot hold them).
    pub fn to_json(&self, file: usize, diags: &mut Vec<Diagnostic>) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None => {
                    diags.push(
                        Diagnostic::error(
                            "invalid-number",
                            "infinite or not-a-number values are not allowed",
                            self.pos.label(file),
                        )
                        .hint("write a finite number"),
                    );
                    J::Null
                }
            },
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(|n| n.to_json(file, diags)).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json(file, diags)))
                    .collect(),
            ),
        }
    }

    fn count(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + v.count()).sum::<usize>(),
            _ => 1,
        }
    }
}

/// One YAML document of a file.
#[derive(Clone, Debug)]
pub struct YamlDoc {
    /// The document's root.
    pub root: Node,
    /// Where the document starts.
    pub pos: Pos,
}

/// Parses every document of `text`. Problems are diagnostics in `file`; documents that
/// could not be read completely are dropped.
pub fn parse(text: &str, file: usize) -> (Vec<YamlDoc>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if text.len() > MAX_FILE_BYTES {
        diags.push(
            Diagnostic::error(
                "file-too-large",
                format!(
                    "file is {} bytes, more than the limit of {} bytes",
                    text.len(),
                    MAX_FILE_BYTES
                ),
                Label::new(file, 1, 1, 1),
            )
            .hint("split the specs into several files"),
        );
        return (Vec::new(), diags);
    }
    let mut b = Builder {
        file,
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let docs = match b.stream() {
        Ok(docs) => docs,
        Err(d) => {
            diags.push(*d);
            Vec::new()
        }
    };
    for doc in &docs {
        check_duplicate_keys(&doc.root, file, &mut diags);
    }
    (docs, diags)
}

type Res<T> = Result<T, Box<Diagnostic>>;

struct Builder<'a> {
    file: usize,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

fn pos_of(span: &Span) -> Pos {
    let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
    let col = u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX);
    let len = if span.end.line() == span.start.line() {
        span.end.index().saturating_sub(span.start.index())
    } else {
        1
    };
    Pos {
        line,
        col,
        len: u32::try_from(len.max(1)).unwrap_or(1),
    }
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Res<(Event<'a>, Span)> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                let line = u32::try_from(m.line()).unwrap_or(u32::MAX).max(1);
                let col = u32::try_from(m.col() + 1).unwrap_or(u32::MAX);
                Err(Box::new(
                    Diagnostic::error(
                        "yaml-syntax",
                        format!("invalid YAML: {}", e.info()),
                        Label::new(self.file, line, col, 1),
                    )
                    .hint("check indentation, colons and quotes around this position"),
                ))
            }
            None => Err(Box::new(Diagnostic::error(
                "yaml-syntax",
                "invalid YAML: unexpected end of input",
                Label::new(self.file, 1, 1, 1),
            ))),
        }
    }

    fn stream(&mut self) -> Res<Vec<YamlDoc>> {
        let mut docs = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(docs),
                Event::DocumentStart(_) => {
                    self.anchors.clear();
                    let (ev, nspan) = self.next()?;
                    let root = self.node(ev, nspan, 0)?;
                    docs.push(YamlDoc {
                        root,
                        pos: pos_of(&span),
                    });
                }
                _ => {
                    return Err(Box::new(Diagnostic::error(
                        "yaml-syntax",
                        "invalid YAML: unexpected content outside a document",
                        pos_of(&span).label(self.file),
                    )))
                }
            }
        }
    }

    fn budget(&mut self, n: usize, pos: Pos) -> Res<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Box::new(
                Diagnostic::error(
                    "yaml-too-large",
                    format!(
                        "this file expands to more than {MAX_NODES} values (aliases included); \
                         is it an alias bomb?"
                    ),
                    pos.label(self.file),
                )
                .hint("avoid aliases that refer to other aliases; write the values out"),
            ));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Res<Node> {
        let pos = pos_of(&span);
        if depth > MAX_DEPTH {
            return Err(Box::new(
                Diagnostic::error(
                    "yaml-too-deep",
                    format!("values are nested more than {MAX_DEPTH} levels deep"),
                    pos.label(self.file),
                )
                .hint("flatten the structure; no spec needs this much nesting"),
            ));
        }
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.budget(1, pos)?;
                let value = match (&tag, style) {
                    (Some(t), _) if t.suffix == "str" => Value::Str(text.into_owned()),
                    (_, ScalarStyle::Plain) => resolve_plain(&text),
                    _ => Value::Str(text.into_owned()),
                };
                (Node { value, pos }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.budget(1, pos)?;
                let mut items = Vec::new();
                loop {
                    let (ev, s) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, s, depth + 1)?);
                }
                (
                    Node {
                        value: Value::Seq(items),
                        pos,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.budget(1, pos)?;
                let mut entries = Vec::new();
                loop {
                    let (ev, s) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key_node = self.node(ev, s, depth + 1)?;
                    let name = match key_node.value {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Null => "null".to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Box::new(
                                Diagnostic::error(
                                    "yaml-complex-key",
                                    "mapping keys must be plain text, not lists or mappings",
                                    key_node.pos.label(self.file),
                                )
                                .hint("use a plain word as the key"),
                            ))
                        }
                    };
                    let (ev, s) = self.next()?;
                    let value = self.node(ev, s, depth + 1)?;
                    entries.push((
                        Key {
                            name,
                            pos: key_node.pos,
                        },
                        value,
                    ));
                }
                (
                    Node {
                        value: Value::Map(entries),
                        pos,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Box::new(Diagnostic::error(
                        "yaml-syntax",
                        "alias refers to an unknown anchor",
                        pos.label(self.file),
                    )));
                };
                let n = target.count();
                self.budget(n, pos)?;
                let mut copy = self.anchors.get(&id).cloned().unwrap_or(Node {
                    value: Value::Null,
                    pos,
                });
                copy.pos = pos;
                (copy, 0)
            }
            _ => {
                return Err(Box::new(Diagnostic::error(
                    "yaml-syntax",
                    "invalid YAML: unexpected event",
                    pos.label(self.file),
                )))
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn check_duplicate_keys(node: &Node, file: usize, diags: &mut Vec<Diagnostic>) {
    match &node.value {
        Value::Map(entries) => {
            let mut seen: HashMap<&str, &Key> = HashMap::new();
            for (k, v) in entries {
                if let Some(first) = seen.get(k.name.as_str()) {
                    diags.push(
                        Diagnostic::error(
                            "duplicate-key",
                            format!("key `{}` appears twice in the same mapping", k.name),
                            k.pos.label(file),
                        )
                        .also(first.pos.label(file).with_message("first defined here"))
                        .hint("remove one of them; YAML would silently keep only the last"),
                    );
                } else {
                    seen.insert(&k.name, k);
                }
                check_duplicate_keys(v, file, diags);
            }
        }
        Value::Seq(items) => items
            .iter()
            .for_each(|n| check_duplicate_keys(n, file, diags)),
        _ => {}
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(v) = resolve_int(text) {
        return v;
    }
    if is_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_string())
}

fn resolve_int(text: &str) -> Option<Value> {
    let (digits, radix) = if let Some(h) = text.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = text.strip_prefix("0o") {
        (o, 8)
    } else {
        let body = text.strip_prefix(['-', '+']).unwrap_or(text);
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too large for i64: keep the text, the schema will say it is not an integer.
        return Some(
            text.parse::<i64>()
                .map_or_else(|_| Value::Str(text.to_string()), Value::Int),
        );
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(
        i64::from_str_radix(digits, radix)
            .map_or_else(|_| Value::Str(text.to_string()), Value::Int),
    )
}

fn is_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let (docs, diags) = parse(text, 0);
        assert!(diags.is_empty(), "{diags:?}");
        docs.into_iter().next().map(|d| d.root).unwrap_or(Node {
            value: Value::Null,
            pos: Pos::default(),
        })
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let n = one("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: yes\ng: 0x10\n");
        assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Int(1)));
        assert_eq!(n.get("b").map(|n| &n.value), Some(&Value::Float(1.5)));
        assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Bool(true)));
        assert_eq!(n.get("d").map(|n| &n.value), Some(&Value::Null));
        assert_eq!(n.get("e").map(|n| &n.value), Some(&Value::Str("1".into())));
        assert_eq!(
            n.get("f").map(|n| &n.value),
            Some(&Value::Str("yes".into()))
        );
        assert_eq!(n.get("g").map(|n| &n.value), Some(&Value::Int(16)));
    }

    #[test]
    fn positions_are_one_based() {
        let n = one("spec:\n  plan: pro\n");
        let p = n.at(&["spec", "plan"]).map(|n| n.pos);
        assert_eq!(
            p,
            Some(Pos {
                line: 2,
                col: 9,
                len: 3
            })
        );
    }

    #[test]
    fn alias_bomb_is_a_diagnostic() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, diags) = parse(&text, 0);
        assert_eq!(diags.first().map(|d| d.code), Some("yaml-too-large"));
    }

    #[test]
    fn deep_nesting_is_a_diagnostic() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let (_, diags) = parse(&text, 0);
        assert_eq!(diags.first().map(|d| d.code), Some("yaml-too-deep"));
    }

    #[test]
    fn duplicate_keys_are_diagnostics() {
        let (_, diags) = parse("a: 1\na: 2\n", 0);
        assert_eq!(diags.first().map(|d| d.code), Some("duplicate-key"));
        assert_eq!(diags.first().map(|d| d.primary.line), Some(2));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let (_, diags) = parse("a: [1, 2\nb: c\n", 0);
        assert_eq!(diags.first().map(|d| d.code), Some("yaml-syntax"));
    }
}
