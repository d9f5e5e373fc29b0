//! Colour for text the pipeline renders plain: diagnostics (`error[code]: …`, their
//! locations, markers and hints) and unified diffs. ANSI codes only when the caller asks
//! (it decides with [`crate::output::colour_stdout`] / [`crate::output::colour_stderr`]);
//! without colour the text is returned unchanged, byte for byte.
//!
//! Not here: plans (coloured by `kombiform_plan::render`), deciding whether to colour.

const RESET: &str = "\x1b[0m";

fn wrap(code: &str, s: &str) -> String {
    format!("\x1b[{code}m{s}{RESET}")
}

/// Rendered diagnostics, coloured: the severity and code (red errors, yellow warnings),
/// locations dim, markers in the severity's colour, hints cyan.
pub(crate) fn diagnostics(text: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut marker = "31";
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let painted = if let Some(rest) = body.strip_prefix("error") {
            marker = "31";
            format!("{}{rest}", wrap("1;31", "error"))
        } else if let Some(rest) = body.strip_prefix("warning") {
            marker = "33";
            format!("{}{rest}", wrap("1;33", "warning"))
        } else if body.starts_with("  -->") || body.starts_with("  :::") {
            wrap("2", body)
        } else if body.trim_start().starts_with("= help:") {
            wrap("36", body)
        } else if let Some((gutter, rest)) = body.split_once(" | ") {
            if rest.trim_start().starts_with('^') {
                format!("{gutter} | {}", wrap(marker, rest))
            } else {
                body.to_string()
            }
        } else {
            body.to_string()
        };
        out.push_str(&painted);
        out.push_str(nl);
    }
    out
}

/// A unified diff, coloured: additions green, removals red, hunk headers cyan, file headers
/// bold.
pub(crate) fn unified_diff(text: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let code = if body.starts_with("+++") || body.starts_with("---") {
            Some("1")
        } else if body.starts_with('+') {
            Some("32")
        } else if body.starts_with('-') {
            Some("31")
        } else if body.starts_with("@@") {
            Some("36")
        } else {
            None
        };
        match code {
            Some(c) => out.push_str(&wrap(c, body)),
            None => out.push_str(body),
        }
        out.push_str(nl);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAG: &str = "error[unknown-plan]: unknown plan `prp`\n  --> specs/t.yaml:2:7\n  |\n2 | plan: prp\n  |       ^^^\n   = help: did you mean `pro`?\n";

    #[test]
    fn without_colour_text_is_unchanged() {
        assert_eq!(diagnostics(DIAG, false), DIAG);
        assert_eq!(unified_diff("-a\n+b\n", false), "-a\n+b\n");
    }

    #[test]
    fn diagnostics_and_diffs_are_coloured_and_keep_their_text() {
        let c = diagnostics(DIAG, true);
        assert!(
            c.starts_with("\x1b[1;31merror\x1b[0m[unknown-plan]"),
            "{c:?}"
        );
        assert!(c.contains("\x1b[31m      ^^^\x1b[0m"), "{c:?}");
        assert!(
            c.contains("\x1b[36m   = help: did you mean `pro`?\x1b[0m"),
            "{c:?}"
        );
        let strip = |s: &str| {
            let mut out = String::new();
            let mut rest = s;
            while let Some(i) = rest.find('\x1b') {
                out.push_str(&rest[..i]);
                rest = rest[i..].split_once('m').map_or("", |(_, r)| r);
            }
            out + rest
        };
        assert_eq!(strip(&c), DIAG);
        let d = unified_diff("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", true);
        assert!(d.contains("\x1b[31m-a\x1b[0m\n\x1b[32m+b\x1b[0m"), "{d:?}");
        assert!(d.starts_with("\x1b[1m--- a/x"), "{d:?}");
    }
}
