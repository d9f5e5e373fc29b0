//! The published JSON Schema of spec documents, and schema errors turned into diagnostics.
//!
//! The schema is generated from the model types (`schemars`), so the validator, the typed
//! model and the file editors use (`specs/schema/kombiform.schema.json`) cannot drift
//! apart; a test checks that the committed file is current. This module knows nothing
//! about semantics (references, uniqueness): that is `semantic`.

use std::collections::BTreeSet;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value as Json};

use super::diag::{did_you_mean, Diagnostic};
use super::yaml::{Node, Value};
use kombiform_model::{CollectionTemplate, FeatureFlag, Plan, Platform, Tenant};

/// The current API version of spec documents.
pub const API_VERSION: &str = "kombify.io/v1";

/// Older API versions `kombiform migrate-specs` can upgrade.
pub const OLD_API_VERSIONS: &[&str] = &["kombify.io/v1alpha1"];

/// The document kinds, in the order the schema lists them.
pub const KINDS: &[&str] = &[
    "CollectionTemplate",
    "FeatureFlag",
    "Plan",
    "Platform",
    "Tenant",
];

/// The JSON Schema of one spec document (draft 2020-12).
pub fn schema() -> Json {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let specs = [
        (
            "CollectionTemplate",
            generator.subschema_for::<CollectionTemplate>(),
        ),
        ("FeatureFlag", generator.subschema_for::<FeatureFlag>()),
        ("Plan", generator.subschema_for::<Plan>()),
        ("Platform", generator.subschema_for::<Platform>()),
        ("Tenant", generator.subschema_for::<Tenant>()),
    ];
    let mut defs: Map<String, Json> = generator.take_definitions(true);
    for v in defs.values_mut() {
        drop_null(v);
    }
    let all_of: Vec<Json> = specs
        .iter()
        .map(|(kind, spec)| {
            json!({
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"properties": {"spec": spec}}
            })
        })
        .collect();
    let mut sorted_defs = Map::new();
    let mut keys: Vec<&String> = defs.keys().collect();
    keys.sort();
    for k in keys {
        if let Some(v) = defs.get(k) {
            sorted_defs.insert(k.clone(), v.clone());
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kombify.io/schemas/kombiform/v1/document.json",
        "title": "kombiform spec document",
        "description": "One document of a kombiform spec file (kombify.io/v1). Many documents may share a file, separated by `---`.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": {"description": "Spec format version.", "const": API_VERSION},
            "kind": {"description": "What the document defines.", "enum": KINDS},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": false,
                "properties": {
                    "name": {
                        "description": "The object's name: environment name, plan name, tenant slug, flag name or collection template name.",
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 63
                    },
                    "labels": {
                        "description": "Free-form labels, for people.",
                        "type": "object",
                        "additionalProperties": {"type": "string"}
                    }
                }
            },
            "spec": {"type": "object"}
        },
        "allOf": all_of,
        "$defs": sorted_defs
    })
}

/// The schema, pretty-printed, as committed in `specs/schema/kombiform.schema.json`.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

/// A compiled validator for [`schema`].
pub struct SchemaValidator {
    validator: jsonschema::Validator,
    schema: Json,
}

impl SchemaValidator {
    /// Compiles the schema. Fails only if the generated schema itself is broken (a bug).
    pub fn new() -> anyhow::Result<SchemaValidator> {
        let schema = schema();
        let validator = jsonschema::draft202012::new(&schema)
            .map_err(|e| anyhow::anyhow!("the spec schema does not compile: {e}"))?;
        Ok(SchemaValidator { validator, schema })
    }

    /// Validates one document. `skip` holds JSON pointers already reported elsewhere
    /// (plain-text secrets): errors at or below them are dropped.
    pub fn check(
        &self,
        doc: &Json,
        root: &Node,
        file: usize,
        skip: &BTreeSet<String>,
        diags: &mut Vec<Diagnostic>,
    ) {
        let mut found = Vec::new();
        for err in self.validator.iter_errors(doc) {
            let pointer = err.instance_path().as_str().to_string();
            if skip
                .iter()
                .any(|s| pointer == *s || pointer.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let path = split_pointer(&pointer);
            let node = root.at(&path);
            let keyword_location = err
                .absolute_keyword_location()
                .map(|u| u.as_str().to_string())
                .unwrap_or_default();
            let required = match err.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    property.as_str().map(str::to_string)
                }
                _ => None,
            };
            for d in self.to_diagnostics(err.kind(), &path, node, root, file, &keyword_location) {
                found.push((pointer.clone(), required.clone(), d));
            }
        }
        // A misspelt key shows up twice: as unknown, and as the required key it should
        // have been. Keep only the first, which carries the "did you mean".
        let misspelt: BTreeSet<(String, String)> = found
            .iter()
            .filter(|(_, _, d)| d.code == "unknown-key")
            .filter_map(|(p, _, d)| {
                let hint = d.hint.as_deref()?;
                let key = hint.strip_prefix("did you mean `")?.strip_suffix("`?")?;
                Some((p.clone(), key.to_string()))
            })
            .collect();
        for (pointer, required, d) in found {
            if let Some(r) = required {
                if misspelt.contains(&(pointer, r)) {
                    continue;
                }
            }
            diags.push(d);
        }
    }

    fn to_diagnostics(
        &self,
        kind: &jsonschema::error::ValidationErrorKind,
        path: &[String],
        node: Option<&Node>,
        root: &Node,
        file: usize,
        keyword_location: &str,
    ) -> Vec<Diagnostic> {
        use jsonschema::error::ValidationErrorKind as K;
        let at = root.pos_of(path).label(file);
        let where_ = describe_path(path);
        let found = node.map_or("nothing", Node::type_name);
        let d = match kind {
            K::AdditionalProperties { unexpected } => {
                // One diagnostic per unknown key, pointing at the key.
                let allowed = self.allowed_keys(keyword_location);
                return unexpected
                    .iter()
                    .map(|key| {
                        let pos = node
                            .and_then(|n| n.key(key))
                            .map_or(at.clone(), |k| k.pos.label(file));
                        let d = Diagnostic::error(
                            "unknown-key",
                            format!("unknown key `{key}` in {where_}"),
                            pos,
                        );
                        match did_you_mean(key, allowed.iter().map(String::as_str)) {
                            Some(s) => d.hint(format!("did you mean `{s}`?")),
                            None if !allowed.is_empty() => {
                                d.hint(format!("allowed keys: {}", allowed.join(", ")))
                            }
                            None => d.hint("remove it"),
                        }
                    })
                    .collect();
            }
            K::Type { kind } => Diagnostic::error(
                "wrong-type",
                format!(
                    "{where_} must be {}, found {found}",
                    type_words(&format!("{kind:?}"))
                ),
                at,
            )
            .hint(type_hint(&format!("{kind:?}"), node)),
            K::Required { property } => {
                let name = property.as_str().unwrap_or("?");
                Diagnostic::error(
                    "missing-key",
                    format!("{where_} is missing the required key `{name}`"),
                    at,
                )
                .hint(format!("add `{name}:`"))
            }
            K::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().map(json_word).collect())
                    .unwrap_or_default();
                let got = node.map(node_word).unwrap_or_default();
                let d = Diagnostic::error(
                    "invalid-value",
                    format!("`{got}` is not allowed for {where_}"),
                    at,
                );
                match did_you_mean(&got, opts.iter().map(String::as_str)) {
                    Some(s) => d.hint(format!("did you mean `{s}`? allowed: {}", opts.join(", "))),
                    None => d.hint(format!("allowed: {}", opts.join(", "))),
                }
            }
            K::Constant { expected_value } => {
                let got = node.map(node_word).unwrap_or_default();
                Diagnostic::error(
                    "invalid-value",
                    format!("`{got}` is not allowed for {where_}"),
                    at,
                )
                .hint(format!("write `{}`", json_word(expected_value)))
            }
            K::Minimum { limit } | K::ExclusiveMinimum { limit } => Diagnostic::error(
                "out-of-range",
                format!(
                    "{where_} is {}, below the minimum of {limit}",
                    node.map(node_word).unwrap_or_default()
                ),
                at,
            )
            .hint(format!("use a value of at least {limit}")),
            K::Maximum { limit } | K::ExclusiveMaximum { limit } => Diagnostic::error(
                "out-of-range",
                format!(
                    "{where_} is {}, above the maximum of {limit}",
                    node.map(node_word).unwrap_or_default()
                ),
                at,
            )
            .hint(format!("use a value of at most {limit}")),
            K::MinLength { limit } => Diagnostic::error(
                "invalid-format",
                format!("{where_} is shorter than {limit} characters"),
                at,
            )
            .hint("write a longer value"),
            K::MaxLength { limit } => Diagnostic::error(
                "invalid-format",
                format!("{where_} is longer than {limit} characters"),
                at,
            )
            .hint("write a shorter value"),
            K::Pattern { pattern } => Diagnostic::error(
                "invalid-format",
                format!("{where_} does not match the pattern `{pattern}`"),
                at,
            )
            .hint("fix the value's format"),
            K::MinItems { limit } => Diagnostic::error(
                "invalid-list",
                format!("{where_} needs at least {limit} item(s)"),
                at,
            )
            .hint("add an item"),
            K::MaxItems { limit } => Diagnostic::error(
                "invalid-list",
                format!("{where_} has more than {limit} item(s)"),
                at,
            )
            .hint("remove items"),
            K::UniqueItems => Diagnostic::error(
                "invalid-list",
                format!("{where_} lists the same item twice"),
                at,
            )
            .hint("remove the repeated item"),
            K::OneOfNotValid { .. } | K::AnyOf { .. } | K::OneOfMultipleValid { .. } => {
                let secretish = self.is_secret_ref(keyword_location);
                let d = Diagnostic::error(
                    "invalid-value",
                    format!("{where_} has none of the allowed forms"),
                    at,
                );
                if secretish {
                    d.hint("write a secret reference: `{keyVault: NAME}` or `{env: NAME}`")
                } else {
                    d.hint(
                        "see the schema (specs/schema/kombiform.schema.json) for the allowed forms",
                    )
                }
            }
            other => Diagnostic::error(
                "schema-violation",
                format!("{where_} is invalid ({})", other.keyword()),
                at,
            )
            .hint("see specs/schema/kombiform.schema.json"),
        };
        vec![d]
    }

    /// The keys allowed by the object schema owning an `additionalProperties` keyword.
    fn allowed_keys(&self, keyword_location: &str) -> Vec<String> {
        let Some((_, frag)) = keyword_location.split_once('#') else {
            return Vec::new();
        };
        let owner = frag.trim_end_matches("/additionalProperties");
        let owner = percent_decode(owner);
        self.schema
            .pointer(&owner)
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object)
            .map(|m| {
                let mut keys: Vec<String> = m.keys().cloned().collect();
                keys.sort();
                keys
            })
            .unwrap_or_default()
    }

    fn is_secret_ref(&self, keyword_location: &str) -> bool {
        keyword_location.contains("SecretRef")
            || keyword_location
                .split_once('#')
                .and_then(|(_, f)| self.schema.pointer(&percent_decode(f)))
                .is_some_and(|s| s.to_string().contains("SecretRef"))
    }
}

/// Optional fields are written by leaving them out, never as `null`: removes the `null`
/// alternatives schemars adds for `Option<T>`.
fn drop_null(v: &mut Json) {
    match v {
        Json::Object(m) => {
            if let Some(Json::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    m.insert("type".to_string(), only);
                }
            }
            if let Some(Json::Array(alts)) = m.get_mut("anyOf") {
                alts.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                if alts.len() == 1 {
                    let only = alts.remove(0);
                    m.remove("anyOf");
                    if let Json::Object(inner) = only {
                        for (k, v) in inner {
                            m.entry(k).or_insert(v);
                        }
                    }
                }
            }
            if let Some(Json::Array(e)) = m.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            if m.get("const").is_some_and(Json::is_null) {
                m.remove("const");
            }
            m.values_mut().for_each(drop_null);
        }
        Json::Array(a) => a.iter_mut().for_each(drop_null),
        _ => {}
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Some(h) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(char::from(h));
                i += 3;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// Splits a JSON pointer into segments.
pub fn split_pointer(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Joins segments into a JSON pointer.
pub fn join_pointer(path: &[String]) -> String {
    path.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// `spec.services[2].port`, for messages.
pub fn describe_path(path: &[String]) -> String {
    if path.is_empty() {
        return "the document".to_string();
    }
    let mut out = String::from("`");
    for (i, seg) in path.iter().enumerate() {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out.push('`');
    out
}

fn json_word(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn node_word(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Seq(_) => "a list".to_string(),
        Value::Map(_) => "a mapping".to_string(),
    }
}

fn type_words(debug: &str) -> String {
    let lower = debug.to_lowercase();
    let mut words = Vec::new();
    for (key, word) in [
        ("object", "a mapping"),
        ("array", "a list"),
        ("string", "a string"),
        ("integer", "an integer"),
        ("number", "a number"),
        ("boolean", "true or false"),
        ("null", "null"),
    ] {
        if lower.contains(key)
            && !(key == "number" && lower.contains("integer") && !lower.contains("number,"))
        {
            words.push(word);
        }
    }
    if words.is_empty() {
        return lower;
    }
    words.join(" or ")
}

fn type_hint(debug: &str, node: Option<&Node>) -> String {
    let lower = debug.to_lowercase();
    match node.map(|n| &n.value) {
        Some(Value::Str(s)) if lower.contains("integer") || lower.contains("number") => {
            format!("write the number without quotes (`{s}` is text)")
        }
        Some(Value::Str(_)) if lower.contains("array") => "write a list: `[a, b]`".to_string(),
        Some(Value::Int(_) | Value::Float(_) | Value::Bool(_)) if lower.contains("string") => {
            "quote the value to make it text".to_string()
        }
        _ => format!("change the value to {}", type_words(debug)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_compiles_and_lists_every_kind() {
        let v = SchemaValidator::new();
        assert!(v.is_ok());
        let s = schema();
        let kinds = s
            .pointer("/properties/kind/enum")
            .cloned()
            .unwrap_or_default();
        assert_eq!(kinds.as_array().map(Vec::len), Some(KINDS.len()));
    }

    #[test]
    fn pointers_round_trip() {
        let p = vec!["spec".to_string(), "a/b".to_string(), "0".to_string()];
        assert_eq!(split_pointer(&join_pointer(&p)), p);
        assert_eq!(describe_path(&p), "`spec.a/b[0]`");
    }
}
