//! A small, deterministic YAML writer for `serde_json::Value` trees (block style).
//!
//! It writes what Kong's declarative loader and decK both read, and nothing clever: maps in
//! block style in their insertion order, sequences of scalars in flow style
//! (`["GET", "POST"]`), every string JSON-style double-quoted (valid YAML, no implicit typing
//! of `yes`, `0123` or `null`), and multi-line strings such as PEM blocks as literal block
//! scalars (`|`). No anchors, no aliases, no tags, no comments. It is not a YAML library: it
//! cannot parse, and it only writes what our emitters build.

use serde_json::{Map, Value};

/// Writes `value` as a complete YAML document body (a top-level map is written as block
/// entries; anything else on one line).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map_body(&mut out, 0, m),
        other => {
            write_scalar_or_flow(&mut out, other);
            out.push('\n');
        }
    }
    out
}

/// Writes one top-level `key: value` entry.
pub fn write_top_entry(out: &mut String, key: &str, value: &Value) {
    write_entry(out, 0, true, key, value);
}

/// Writes `value` as one item of a block sequence whose dashes are at column `indent`.
pub fn write_seq_item(out: &mut String, indent: usize, value: &Value) {
    pad(out, indent);
    out.push('-');
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push(' ');
            for (i, (k, v)) in m.iter().enumerate() {
                write_entry(out, indent + 2, i > 0, k, v);
            }
        }
        Value::Array(a) if !a.is_empty() && !is_flow(a) => {
            out.push('\n');
            for item in a {
                write_seq_item(out, indent + 2, item);
            }
        }
        Value::String(s) if is_literal(s) => write_literal(out, indent + 2, s),
        other => {
            out.push(' ');
            write_scalar_or_flow(out, other);
            out.push('\n');
        }
    }
}

fn write_map_body(out: &mut String, indent: usize, m: &Map<String, Value>) {
    for (k, v) in m {
        write_entry(out, indent, true, k, v);
    }
}

/// Writes one `key: value` map entry whose key is at column `indent`; with `pad_key` false
/// the caller has already written the key's indentation (e.g. `- ` of a sequence item).
pub fn write_entry(out: &mut String, indent: usize, pad_key: bool, key: &str, value: &Value) {
    if pad_key {
        pad(out, indent);
    }
    write_key(out, key);
    out.push(':');
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map_body(out, indent + 2, m);
        }
        Value::Array(a) if !a.is_empty() && !is_flow(a) => {
            out.push('\n');
            for item in a {
                write_seq_item(out, indent + 2, item);
            }
        }
        Value::String(s) if is_literal(s) => write_literal(out, indent + 2, s),
        other => {
            out.push(' ');
            write_scalar_or_flow(out, other);
            out.push('\n');
        }
    }
}

/// Writes one `key: "string"` entry without building a `Value` (the hot path of consumers).
pub fn write_str_entry(out: &mut String, indent: usize, pad_key: bool, key: &str, value: &str) {
    if pad_key {
        pad(out, indent);
    }
    write_key(out, key);
    if is_literal(value) {
        out.push(':');
        write_literal(out, indent + 2, value);
    } else {
        out.push_str(": ");
        write_quoted(out, value);
        out.push('\n');
    }
}

/// Scalars, empty collections and flow sequences of scalars.
fn write_scalar_or_flow(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_quoted(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_scalar_or_flow(out, item);
            }
            out.push(']');
        }
        // Only empty maps get here (non-empty ones are written in block style).
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_quoted(out, k);
                out.push_str(": ");
                write_scalar_or_flow(out, v);
            }
            out.push('}');
        }
    }
}

/// A sequence is written in flow style when every item is a one-line scalar.
fn is_flow(a: &[Value]) -> bool {
    a.iter().all(|v| match v {
        Value::String(s) => !is_literal(s),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
        Value::Array(_) | Value::Object(_) => false,
    })
}

/// Whether `s` can be written as a literal block scalar without changing its value: several
/// lines of printable ASCII, no line starting with a space, no trailing blanks, ending with
/// exactly one newline or none.
fn is_literal(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with(' ')
        && !body.starts_with('\n')
        && body
            .bytes()
            .all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
        && body
            .split('\n')
            .all(|line| !line.starts_with(' ') && !line.ends_with(' '))
}

fn write_literal(out: &mut String, indent: usize, s: &str) {
    let (body, chomp) = match s.strip_suffix('\n') {
        Some(b) => (b, ""),
        None => (s, "-"),
    };
    out.push_str(" |");
    out.push_str(chomp);
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn write_key(out: &mut String, key: &str) {
    let plain = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        out.push_str(key);
    } else {
        write_quoted(out, key);
    }
}

/// JSON-style double-quoted string; also escapes what YAML treats as line breaks or
/// non-printable (C1 controls, U+2028/U+2029, BOM).
fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || c == '\u{2028}'
                || c == '\u{2029}'
                || c == '\u{feff}' =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn pad(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value, expect: &str) {
        assert_eq!(to_string(&v), expect);
    }

    #[test]
    fn maps_sequences_and_scalars() {
        check(
            json!({"a": "x", "n": 3, "t": true, "z": null, "e": [], "m": {}}),
            "a: \"x\"\nn: 3\nt: true\nz: null\ne: []\nm: {}\n",
        );
        check(
            json!({"list": [{"name": "a", "paths": ["/x", "/y"]}, {"name": "b"}]}),
            "list:\n  - name: \"a\"\n    paths: [\"/x\", \"/y\"]\n  - name: \"b\"\n",
        );
        check(
            json!({"outer": {"inner": {"k": 1}}}),
            "outer:\n  inner:\n    k: 1\n",
        );
    }

    #[test]
    fn strings_are_quoted_safely() {
        check(json!({"s": "yes"}), "s: \"yes\"\n");
        check(json!({"s": "a\"b\\c"}), "s: \"a\\\"b\\\\c\"\n");
        check(json!({"s": "x\u{2028}y\u{1}"}), "s: \"x\\u2028y\\u0001\"\n");
        check(json!({"weird key": 1}), "\"weird key\": 1\n");
        check(json!({"s": "ä"}), "s: \"ä\"\n");
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        check(
            json!({"pem": "-----BEGIN X-----\nAB\n-----END X-----\n"}),
            "pem: |\n  -----BEGIN X-----\n  AB\n  -----END X-----\n",
        );
        check(json!({"s": "a\nb"}), "s: |-\n  a\n  b\n");
        // Not representable as a literal block without changing the value: quoted.
        check(json!({"s": "a\nb\n\n"}), "s: \"a\\nb\\n\\n\"\n");
        check(json!({"s": " a\nb"}), "s: \" a\\nb\"\n");
        check(json!({"s": "a \nb"}), "s: \"a \\nb\"\n");
        check(
            json!({"l": [{"pem": "a\nb\n"}]}),
            "l:\n  - pem: |\n      a\n      b\n",
        );
    }
}
