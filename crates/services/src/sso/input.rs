//! What a value from a request must look like before it may reach PostgreSQL or a PocketBase
//! filter (issue 8): identifiers, tenant slugs, names and free text. Pure predicates; the
//! callers (extractors in [`super::routes`], payload parsers in [`super::webhooks`] and
//! [`super::flags`], claim checks in [`super::token`]) turn a failure into a 400, 401 or 404.
//!
//! Why at the edge: PostgreSQL refuses a NUL byte in text (and `\u0000` in jsonb) with an error
//! the service can only report as a failed dependency; a value that cannot be valid must never
//! get that far. Not here: checks that need the database (does the tenant exist).

use kombiform_model::naming;

/// The longest identifier accepted.
pub const MAX_IDENTIFIER_LEN: usize = 255;

/// The longest name (plan) accepted.
pub const MAX_NAME_LEN: usize = 63;

/// An identifier (Zitadel subject and org ids, Stripe and Zitadel event fields): 1 to 255 of
/// `[A-Za-z0-9._:/@+-]`, the characters a PocketBase filter literal may hold unescaped.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENTIFIER_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b))
}

/// A tenant slug as the specs allow it ([`naming::slug_problem`]).
pub fn is_slug(s: &str) -> bool {
    naming::slug_problem(s).is_none()
}

/// A plan name: lowercase letters, digits and single `-`, 1 to 63 characters.
pub fn is_name(s: &str) -> bool {
    naming::name_problem(s, MAX_NAME_LEN).is_none()
}

/// Text without any control character (no NUL, no line breaks).
pub fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Free text of at most `max` bytes: no control character but tab, line feed and carriage
/// return.
pub fn is_text(s: &str, max: usize) -> bool {
    s.len() <= max
        && !s
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_cannot_be_valid_are_refused() {
        assert!(is_identifier("287401958304129025"));
        assert!(is_identifier("evt_1PkEnt0000"));
        assert!(is_identifier("user.deactivated"));
        for bad in ["", "a\0b", "a b", "a'b", "é", "a\u{7f}", &"x".repeat(256)] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
        assert!(is_slug("stark-lab"));
        for bad in ["Acme", "a\0", "a", "-a", "a--b", "admin", &"a".repeat(21)] {
            assert!(!is_slug(bad), "{bad:?}");
        }
        assert!(is_name("pro") && !is_name("Pro") && !is_name("p\0"));
        assert!(is_text("two\nlines\tand tabs", 100));
        assert!(!is_text("nul\0", 100) && !is_text("bell\u{7}", 100) && !is_text("abc", 2));
        assert!(is_printable("jti-1") && !is_printable("a\nb") && !is_printable("\u{85}"));
    }
}
