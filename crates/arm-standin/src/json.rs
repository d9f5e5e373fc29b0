//! Small JSON helpers: write-only properties (removed from answers, redacted in the record)
//! and JSON merge patch (RFC 7396) for PATCH.

use serde_json::Value;

/// Applies `f` to every value a dotted path (`properties.secrets[].value`) reaches, handing it
/// the object that holds the last key.
fn visit(
    value: &mut Value,
    path: &[&str],
    f: &mut dyn FnMut(&mut serde_json::Map<String, Value>, &str),
) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let (key, each) = match first.strip_suffix("[]") {
        Some(key) => (key, true),
        None => (*first, false),
    };
    let Value::Object(map) = value else {
        return;
    };
    if rest.is_empty() && !each {
        f(map, key);
        return;
    }
    match map.get_mut(key) {
        Some(Value::Array(items)) if each => {
            for item in items {
                visit(item, rest, f);
            }
        }
        Some(inner) if !each => visit(inner, rest, f),
        _ => {}
    }
}

/// Removes the properties at `paths` (write-only properties ARM never returns).
pub(crate) fn remove_paths(value: &mut Value, paths: &[&str]) {
    for path in paths {
        let parts: Vec<&str> = path.split('.').collect();
        visit(value, &parts, &mut |map, key| {
            map.remove(key);
        });
    }
}

/// Replaces the values at `paths` by `"<redacted>"` (for the request record).
pub(crate) fn redact_paths(value: &mut Value, paths: &[&str]) {
    for path in paths {
        let parts: Vec<&str> = path.split('.').collect();
        visit(value, &parts, &mut |map, key| {
            if let Some(v) = map.get_mut(key) {
                *v = Value::String("<redacted>".into());
            }
        });
    }
}

/// RFC 7396: objects merge, `null` removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_only_paths_are_removed_in_arrays_too() {
        let mut v = json!({"properties": {
            "administratorLoginPassword": "p",
            "configuration": {"secrets": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]},
        }});
        remove_paths(
            &mut v,
            &[
                "properties.administratorLoginPassword",
                "properties.configuration.secrets[].value",
            ],
        );
        assert_eq!(
            v,
            json!({"properties": {"configuration": {"secrets": [{"name": "a"}, {"name": "b"}]}}})
        );
    }

    #[test]
    fn redaction_keeps_the_key() {
        let mut v = json!({"properties": {"value": "s3cret"}});
        redact_paths(&mut v, &["properties.value", "properties.absent"]);
        assert_eq!(v, json!({"properties": {"value": "<redacted>"}}));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}, "tags": {"x": "1"}});
        merge_patch(
            &mut v,
            &json!({"b": {"c": null, "e": 4}, "tags": {"y": "2"}, "a": null}),
        );
        assert_eq!(
            v,
            json!({"b": {"d": 3, "e": 4}, "tags": {"x": "1", "y": "2"}})
        );
    }
}
