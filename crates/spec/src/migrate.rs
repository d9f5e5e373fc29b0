//! Spec upgrades: rewrites documents of an older `apiVersion` into the current one.
//!
//! Edits are made in the text, at the positions the YAML reader recorded, so comments,
//! layout and every untouched byte stay as they were: the upgrade is a small, reviewable
//! diff. Pure: text in, text out.
//!
//! `kombify.io/v1alpha1` → `kombify.io/v1`:
//! - every kind: `apiVersion` changes;
//! - `Tenant`: `spec.orgId` → `spec.zitadelOrgId`, `spec.mode` → `spec.instance`;
//! - `Plan`: `spec.limits` → `spec.quotas`;
//! - `Platform`: `spec.gateway` → `spec.kong`.

use super::schema::API_VERSION;
use super::yaml::{self, Node, Pos};

/// The version this module upgrades from.
pub const V1ALPHA1: &str = "kombify.io/v1alpha1";

/// Key renames per kind: (kind, parent path, old key, new key).
const RENAMES: &[(&str, &[&str], &str, &str)] = &[
    ("Tenant", &["spec"], "orgId", "zitadelOrgId"),
    ("Tenant", &["spec"], "mode", "instance"),
    ("Plan", &["spec"], "limits", "quotas"),
    ("Platform", &["spec"], "gateway", "kong"),
];

/// One text edit: replace `len` characters at `pos` with `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Edit {
    pos: Pos,
    len: usize,
    text: String,
}

/// The outcome of upgrading one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The upgraded text (equal to the input when nothing changed).
    pub text: String,
    /// What changed, one line each (`line 3: apiVersion kombify.io/v1alpha1 -> kombify.io/v1`).
    pub changes: Vec<String>,
}

/// Upgrades every old document of `text`. Fails with a message when the YAML cannot be read
/// (run `kombiform validate` for the details).
pub fn upgrade(text: &str) -> Result<Upgrade, String> {
    let (docs, diags) = yaml::parse(text, 0);
    if let Some(d) = diags.first() {
        return Err(format!(
            "line {}:{}: {}",
            d.primary.line, d.primary.col, d.message
        ));
    }
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    for doc in &docs {
        collect_edits(&doc.root, &mut edits, &mut changes);
    }
    Ok(Upgrade {
        text: apply(text, edits),
        changes,
    })
}

fn collect_edits(root: &Node, edits: &mut Vec<Edit>, changes: &mut Vec<String>) {
    let Some(version) = root.get("apiVersion") else {
        return;
    };
    if version.as_str() != Some(V1ALPHA1) {
        return;
    }
    edits.push(Edit {
        pos: version.pos,
        len: usize::try_from(version.pos.len).unwrap_or(0),
        text: API_VERSION.to_string(),
    });
    changes.push(format!(
        "line {}: apiVersion {V1ALPHA1} -> {API_VERSION}",
        version.pos.line
    ));
    let kind = root.get("kind").and_then(Node::as_str).unwrap_or_default();
    for (k, parent, old, new) in RENAMES {
        if *k != kind {
            continue;
        }
        let Some(parent_node) = root.at(parent) else {
            continue;
        };
        if let Some(key) = parent_node.key(old) {
            if parent_node.key(new).is_some() {
                continue; // both present: leave it to the validator to report
            }
            edits.push(Edit {
                pos: key.pos,
                len: old.chars().count(),
                text: (*new).to_string(),
            });
            changes.push(format!("line {}: {kind} {old} -> {new}", key.pos.line));
        }
    }
}

/// Applies edits (positions are 1-based line and character column).
fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    if edits.is_empty() {
        return text.to_string();
    }
    edits.sort_by_key(|e| std::cmp::Reverse((e.pos.line, e.pos.col)));
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    for e in edits {
        let Some(line) = usize::try_from(e.pos.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| lines.get_mut(l))
        else {
            continue;
        };
        let col = usize::try_from(e.pos.col.saturating_sub(1)).unwrap_or(0);
        let chars: Vec<char> = line.chars().collect();
        if col + e.len > chars.len() {
            continue;
        }
        let before: String = chars[..col].iter().collect();
        let after: String = chars[col + e.len..].iter().collect();
        *line = format!("{before}{}{after}", e.text);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_version_and_keys_keeping_comments() {
        let old = "# a tenant\napiVersion: kombify.io/v1alpha1\nkind: Tenant\nmetadata:\n  name: acme # the slug\nspec:\n  displayName: ACME\n  plan: pro\n  orgId: \"1\"\n  mode: shared\n";
        let up = upgrade(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            up.text,
            "# a tenant\napiVersion: kombify.io/v1\nkind: Tenant\nmetadata:\n  name: acme # the slug\nspec:\n  displayName: ACME\n  plan: pro\n  zitadelOrgId: \"1\"\n  instance: shared\n"
        );
        assert_eq!(up.changes.len(), 3);
    }

    #[test]
    fn current_documents_are_untouched() {
        let text =
            "apiVersion: kombify.io/v1\nkind: Plan\nmetadata: {name: x}\nspec:\n  limits: 1\n";
        let up = upgrade(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(up.text, text);
        assert!(up.changes.is_empty());
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        assert!(upgrade("a: [1\n").is_err());
    }
}
