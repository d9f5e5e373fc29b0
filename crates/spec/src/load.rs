//! Files → documents → typed items, with every problem as a diagnostic.
//!
//! [`load`] takes file texts (the caller reads them), parses every YAML document, checks
//! the API version, finds secrets written as plain values, validates each document against
//! the schema, deserialises the valid ones into model types and then runs the semantic
//! checks. It returns a [`Model`] only when there is no error. It does no IO.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value as Json;

use super::diag::{self, Diagnostic, Label, Severity, SourceMap};
use super::schema::{join_pointer, SchemaValidator, API_VERSION, KINDS, OLD_API_VERSIONS};
use super::semantic;
use super::yaml::{self, Node, Pos, Value};
use kombiform_model::{CollectionTemplate, FeatureFlag, Model, Plan, Platform, Tenant};

/// One spec file, as read by the caller.
#[derive(Clone, Debug)]
pub struct Input {
    /// Display path, e.g. `specs/tenants.yaml`.
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The model, when there was no error.
    pub model: Option<Model>,
    /// Every problem, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The texts of the files, for rendering diagnostics.
    pub sources: SourceMap,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics rendered as text.
    pub fn render(&self) -> String {
        diag::render(&self.diagnostics, &self.sources)
    }
}

/// A typed item with the document it came from (for positions in semantic checks).
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The item.
    pub item: T,
    /// File index in the source map.
    pub file: usize,
    /// The document's root node.
    pub root: Node,
}

impl<T> Located<T> {
    /// A label at `path` below the document root (or the closest existing parent).
    pub fn label(&self, path: &[&str]) -> Label {
        self.root.pos_of(path).label(self.file)
    }

    /// A label at a mapping key below the document root, falling back to its value.
    pub fn key_label(&self, parent: &[&str], key: &str) -> Label {
        self.root.at(parent).and_then(|n| n.key(key)).map_or_else(
            || self.label(&[parent, &[key]].concat()),
            |k| k.pos.label(self.file),
        )
    }
}

/// Every document, typed, before semantic checks.
#[derive(Debug, Default)]
pub struct Documents {
    /// `kind: Platform`.
    pub platforms: Vec<Located<Platform>>,
    /// `kind: Plan`.
    pub plans: Vec<Located<Plan>>,
    /// `kind: Tenant`.
    pub tenants: Vec<Located<Tenant>>,
    /// `kind: FeatureFlag`.
    pub flags: Vec<Located<FeatureFlag>>,
    /// `kind: CollectionTemplate`.
    pub collections: Vec<Located<CollectionTemplate>>,
    /// `(kind, name)` of documents that had errors: references to them are not reported
    /// again as unknown.
    pub broken: HashSet<(String, String)>,
}

impl Documents {
    /// Whether a document of `kind` named `name` exists but had errors.
    pub fn is_broken(&self, kind: &str, name: &str) -> bool {
        self.broken.contains(&(kind.to_string(), name.to_string()))
    }
}

/// Loads and validates spec files. Never panics, whatever the input.
pub fn load(inputs: Vec<Input>) -> Loaded {
    let mut sources = SourceMap::default();
    let mut diags = Vec::new();
    let validator = match SchemaValidator::new() {
        Ok(v) => v,
        Err(e) => {
            let file = sources.add("<schema>", "");
            diags.push(Diagnostic::error(
                "internal-error",
                format!("{e:#}"),
                Label::new(file, 1, 1, 1),
            ));
            return Loaded {
                model: None,
                diagnostics: diags,
                sources,
            };
        }
    };
    let mut docs = Documents::default();
    let mut first_file = None;
    for input in inputs {
        let file = sources.add(input.path, input.text);
        first_file.get_or_insert(file);
        load_file(sources.text(file), file, &validator, &mut docs, &mut diags);
    }
    if docs.platforms.is_empty() && !diags.iter().any(|d| d.severity == Severity::Error) {
        let file = first_file.unwrap_or_else(|| sources.add("<specs>", ""));
        diags.push(
            Diagnostic::error(
                "missing-platform",
                "no `kind: Platform` document: at least one environment is needed",
                Label::new(file, 1, 1, 1),
            )
            .hint("add a Platform document per environment, e.g. specs/platform/local.yaml"),
        );
    }
    let model = semantic::check(docs, &mut diags);
    diag::sort(&mut diags);
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    Loaded {
        model: if has_errors { None } else { Some(model) },
        diagnostics: diags,
        sources,
    }
}

fn load_file(
    text: &str,
    file: usize,
    validator: &SchemaValidator,
    docs: &mut Documents,
    diags: &mut Vec<Diagnostic>,
) {
    let (yaml_docs, mut yaml_diags) = yaml::parse(text, file);
    let broken = !yaml_diags.is_empty();
    diags.append(&mut yaml_diags);
    if broken {
        return;
    }
    if yaml_docs.iter().all(|d| d.root.value == Value::Null) && yaml_docs.len() <= 1 {
        diags.push(
            Diagnostic::error(
                "empty-file",
                "this file has no spec document",
                Label::new(file, 1, 1, 1),
            )
            .hint("add a document (apiVersion, kind, metadata, spec) or delete the file"),
        );
        return;
    }
    for doc in yaml_docs {
        load_document(doc.root, doc.pos, file, validator, docs, diags);
    }
}

fn load_document(
    root: Node,
    start: Pos,
    file: usize,
    validator: &SchemaValidator,
    docs: &mut Documents,
    diags: &mut Vec<Diagnostic>,
) {
    match &root.value {
        Value::Map(_) => {}
        Value::Null => {
            diags.push(
                Diagnostic::error(
                    "empty-document",
                    "this document is empty",
                    start.label(file),
                )
                .hint("remove the extra `---` or fill in the document"),
            );
            return;
        }
        _ => {
            diags.push(
                Diagnostic::error(
                    "not-a-document",
                    format!(
                        "a spec document must be a mapping, found {}",
                        root.type_name()
                    ),
                    root.pos.label(file),
                )
                .hint("start the document with `apiVersion: kombify.io/v1`"),
            );
            return;
        }
    }
    let before = diags.len();
    if !check_api_version(&root, file, diags) {
        let kind = root.get("kind").and_then(Node::as_str).unwrap_or_default();
        let name = root
            .at(&["metadata", "name"])
            .and_then(Node::as_str)
            .unwrap_or_default();
        docs.broken.insert((kind.to_string(), name.to_string()));
        return;
    }
    let mut skip = BTreeSet::new();
    find_plain_secrets(&root, &mut Vec::new(), file, &mut skip, diags);
    let json = root.to_json(file, diags);
    validator.check(&json, &root, file, &skip, diags);
    let kind = root.get("kind").and_then(Node::as_str).unwrap_or_default();
    let name = root
        .at(&["metadata", "name"])
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_string();
    if diags.len() > before {
        docs.broken.insert((kind.to_string(), name));
        return;
    }
    let spec = json.get("spec").cloned().unwrap_or(Json::Null);
    let at = root.pos_of(&["spec"]).label(file);
    match kind {
        "Platform" => {
            if let Some(mut item) = typed::<Platform>(spec, at, diags) {
                item.name = name;
                docs.platforms.push(Located { item, file, root });
            }
        }
        "Plan" => {
            if let Some(mut item) = typed::<Plan>(spec, at, diags) {
                item.name = name;
                docs.plans.push(Located { item, file, root });
            }
        }
        "Tenant" => {
            // The slug comes from `metadata.name`; a tenant whose slug is not valid goes no
            // further (a `TenantSlug` can only hold a valid one).
            let label = root.pos_of(&["metadata", "name"]).label(file);
            let Some(spec) = with_slug(spec, &name, label, diags) else {
                docs.broken.insert((kind.to_string(), name));
                return;
            };
            if let Some(item) = typed::<Tenant>(spec, at, diags) {
                docs.tenants.push(Located { item, file, root });
            }
        }
        "FeatureFlag" => {
            if let Some(mut item) = typed::<FeatureFlag>(spec, at, diags) {
                item.name = name;
                docs.flags.push(Located { item, file, root });
            }
        }
        "CollectionTemplate" => {
            if let Some(mut item) = typed::<CollectionTemplate>(spec, at, diags) {
                item.name = name;
                docs.collections.push(Located { item, file, root });
            }
        }
        _ => {}
    }
}

/// The tenant spec with its slug (`metadata.name`) added for typed reading, or the
/// `invalid-slug` diagnostic at `label`.
fn with_slug(
    mut spec: Json,
    name: &str,
    label: Label,
    diags: &mut Vec<Diagnostic>,
) -> Option<Json> {
    if let Some(problem) = kombiform_model::naming::slug_problem(name) {
        diags.push(
            Diagnostic::error("invalid-slug", format!("tenant slug `{name}` {problem}"), label)
                .hint("slugs become collection names, Kong consumers, Azure resource names and SQL values: use lowercase letters, digits and single `-`, e.g. `acme-labs`"),
        );
        return None;
    }
    if let Some(obj) = spec.as_object_mut() {
        obj.insert("slug".into(), Json::String(name.to_string()));
    }
    Some(spec)
}

fn typed<T: serde::de::DeserializeOwned>(
    spec: Json,
    at: Label,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match serde_json::from_value::<T>(spec) {
        Ok(v) => Some(v),
        Err(e) => {
            // The schema accepted the document, so this is a mismatch between schema and
            // types: report it rather than panic.
            diags.push(
                Diagnostic::error("invalid-spec", format!("the spec cannot be read: {e}"), at)
                    .hint("check the values against specs/schema/kombiform.schema.json"),
            );
            None
        }
    }
}

/// Checks `apiVersion` before the schema does, to give upgrade advice. Returns whether the
/// document should be checked further.
fn check_api_version(root: &Node, file: usize, diags: &mut Vec<Diagnostic>) -> bool {
    let Some(node) = root.get("apiVersion") else {
        return true; // the schema reports the missing key
    };
    let Some(v) = node.as_str() else {
        return true;
    };
    if v == API_VERSION {
        return true;
    }
    if OLD_API_VERSIONS.contains(&v) {
        diags.push(
            Diagnostic::error(
                "old-api-version",
                format!("`{v}` is an old spec version; this kombiform reads `{API_VERSION}`"),
                node.pos.label(file),
            )
            .hint("run `kombiform migrate-specs` to upgrade the files in place"),
        );
    } else {
        let kind_ok = root
            .get("kind")
            .and_then(Node::as_str)
            .is_some_and(|k| KINDS.contains(&k));
        let d = Diagnostic::error(
            "unknown-api-version",
            format!("unknown apiVersion `{v}`"),
            node.pos.label(file),
        );
        diags.push(if kind_ok || v.starts_with("kombify.io/") {
            d.hint(format!("write `apiVersion: {API_VERSION}`"))
        } else {
            d.hint(format!(
                "kombiform reads `{API_VERSION}` documents; is this file a spec?"
            ))
        });
    }
    false
}

/// Key words that mark a value as a secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "clientkey",
    "accesskey",
    "license",
    "connectionstring",
    "credential",
];

/// Value prefixes that are secrets wherever they appear.
const SECRET_PREFIXES: &[&str] = &[
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "whsec_",
    "ghp_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "AKIA",
];

/// Finds secrets written as plain values. Their paths go into `skip`, so that the schema
/// does not report the same mistake a second time.
fn find_plain_secrets(
    node: &Node,
    path: &mut Vec<String>,
    file: usize,
    skip: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) {
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                path.push(k.name.clone());
                let lower = k.name.to_lowercase().replace(['_', '-'], "");
                let secret_key = SECRET_WORDS.iter().any(|w| lower.contains(w));
                match &v.value {
                    Value::Str(s) if secret_key && !s.is_empty() => {
                        skip.insert(join_pointer(path));
                        diags.push(plain_secret(&k.name, v, file));
                    }
                    _ => find_plain_secrets(v, path, file, skip, diags),
                }
                path.pop();
            }
        }
        Value::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                find_plain_secrets(v, path, file, skip, diags);
                path.pop();
            }
        }
        Value::Str(s)
            if s.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) =>
        {
            skip.insert(join_pointer(path));
            diags.push(
                Diagnostic::error(
                    "invalid-character",
                    "this value contains a control character (such as NUL)",
                    node.pos.label(file),
                )
                .hint("remove it: such characters break SQL, file names and logs downstream"),
            );
        }
        Value::Str(s) if looks_like_secret(s) => {
            skip.insert(join_pointer(path));
            let name = path.last().cloned().unwrap_or_default();
            diags.push(plain_secret(&name, node, file));
        }
        _ => {}
    }
}

fn looks_like_secret(s: &str) -> bool {
    let t = s.trim_start();
    (t.starts_with("-----BEGIN") && t.contains("PRIVATE KEY"))
        || SECRET_PREFIXES
            .iter()
            .any(|p| t.starts_with(p) && t.len() > p.len() + 8)
        || password_in_url(t)
}

fn password_in_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
    {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()))
}

fn plain_secret(name: &str, value: &Node, file: usize) -> Diagnostic {
    Diagnostic::error(
        "plain-text-secret",
        format!("`{name}` holds a secret as plain text"),
        value.pos.label(file),
    )
    .hint(format!(
        "never write secrets into specs: store it in Key Vault and write `{name}: {{keyVault: NAME}}` (or `{{env: NAME}}` locally); then rotate the leaked value"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secret_values_anywhere() {
        assert!(looks_like_secret("sk_live_51H8abcdefghijkl"));
        assert!(looks_like_secret("postgres://admin:hunter2@db:5432/x"));
        assert!(!looks_like_secret("https://auth.kombify.io"));
        assert!(!looks_like_secret("-----BEGIN PUBLIC KEY-----"));
    }
}
