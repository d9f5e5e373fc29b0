//! The platform error format for responses Kong makes itself: `{"error":{"code","message",
//! "requestId"}}`, the format of the services' own errors (`kombiform_services::http`).
//!
//! Kong answers on its own for no matching route (404), refused credentials (401), refused
//! plans (403), limits (429), bodies too large (413) and upstream failures (5xx); its bodies
//! are `{"message":…}` (`kong.response.exit`) or its error template (`kong.response.error`,
//! the nginx error pages). A global `post-function` (bundled with OSS, priority -1000, so its
//! response phases run after every other plugin's, `correlation-id`'s included) rewrites every
//! response whose source is not the upstream service (`kong.response.get_source() ~=
//! "service"`) with a status of 400 or more: the code and message come from [`STATUSES`], the
//! request id is the correlation header `correlation-id` echoes (the caller's, or the one it
//! generated), else Kong's own request id. Kong collects the plugin for every request: after
//! an exit in the access phase the collecting loop still collects the remaining plugins' later
//! phases (kong@3.9.3 `kong/init.lua` `execute_collecting_plugins_iterator`), and a request
//! without a route runs the global plugins (`plugins_iterator.lua` `get_collected_iterator`).
//! Responses from the services pass unchanged: they already speak this format.
//!
//! Not here: the services' own error mapping.

use std::fmt::Write as _;

/// Status → (code, message) of every error Kong makes itself, in status order. Statuses not
/// listed get [`FALLBACK`] (4xx) or [`FALLBACK_5XX`].
pub const STATUSES: &[(u16, &str, &str)] = &[
    (400, "bad_request", "The request is not valid."),
    (401, "unauthorized", "A valid access token is required."),
    (403, "forbidden", "You may not call this API."),
    (404, "not_found", "There is nothing here."),
    (
        405,
        "method_not_allowed",
        "This method is not allowed here.",
    ),
    (
        408,
        "request_timeout",
        "The request took too long to arrive.",
    ),
    (
        411,
        "length_required",
        "The request needs a Content-Length.",
    ),
    (413, "payload_too_large", "The request body is too large."),
    (414, "uri_too_long", "The request URI is too long."),
    (
        429,
        "rate_limited",
        "Too many requests: slow down and retry later.",
    ),
    (494, "bad_request", "The request headers are too large."),
    (500, "internal", "Something went wrong on our side."),
    (
        502,
        "bad_gateway",
        "The service answered with an invalid response.",
    ),
    (503, "unavailable", "The service is unavailable right now."),
    (
        504,
        "upstream_timeout",
        "The service did not answer in time.",
    ),
];

/// Code and message of an unlisted 4xx status.
pub const FALLBACK: (&str, &str) = ("request_refused", "The request was refused.");
/// Code and message of an unlisted 5xx status.
pub const FALLBACK_5XX: (&str, &str) = ("internal", "Something went wrong on our side.");

/// Code and message of `status` (≥ 400).
pub fn describe(status: u16) -> (&'static str, &'static str) {
    STATUSES
        .iter()
        .find(|(s, _, _)| *s == status)
        .map(|(_, c, m)| (*c, *m))
        .unwrap_or(if status >= 500 {
            FALLBACK_5XX
        } else {
            FALLBACK
        })
}

/// The body Kong answers `status` with, for `request_id`: exactly what the generated Lua
/// writes (request ids are restricted to [`request_id_is_safe`] characters, so nothing needs
/// escaping).
pub fn body(status: u16, request_id: &str) -> String {
    let (code, message) = describe(status);
    format!(r#"{{"error":{{"code":"{code}","message":"{message}","requestId":"{request_id}"}}}}"#)
}

/// Whether a caller's request id is echoed into error bodies: 1 to 128 of letters, digits
/// and `-._:#` (UUIDs, `uuid#counter`, trace ids). Other values are replaced by Kong's own id.
pub fn request_id_is_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:#".contains(&b))
}

/// The `post-function` plugin that rewrites Kong's own errors, reading the request id from
/// `correlation_header`.
pub fn plugin(correlation_header: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "post-function",
        "config": {
            "header_filter": [header_filter(correlation_header)],
            "body_filter": [body_filter()],
        },
    })
}

/// A Lua string literal of `s` (which holds only printable ASCII; quotes and backslashes
/// escaped).
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
    out
}

/// Lua without indentation (Lua does not need it; YAML then writes it as a literal block).
fn flush_left(lua: &str) -> String {
    lua.lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `header_filter`: marks Kong's own errors, fixes their headers and picks the request id.
fn header_filter(correlation_header: &str) -> String {
    let mut lua = String::new();
    lua.push_str("-- kombiform: Kong's own errors in the platform format (crates/emit/src/kong/errors.rs).\n");
    lua.push_str("local function safe(id)\n");
    lua.push_str("  if type(id) == \"table\" then id = id[1] end\n");
    lua.push_str("  if type(id) ~= \"string\" or #id == 0 or #id > 128 then return nil end\n");
    lua.push_str("  if id:find(\"[^%w%-%._:#]\") then return nil end\n");
    lua.push_str("  return id\n");
    lua.push_str("end\n");
    lua.push_str("return function()\n");
    lua.push_str("  local status = kong.response.get_status()\n");
    lua.push_str(
        "  if status < 400 or kong.response.get_source() == \"service\" then return end\n",
    );
    let _ = writeln!(lua, "  local header = {}", lua_str(correlation_header));
    lua.push_str("  kong.ctx.plugin.status = status\n");
    lua.push_str("  kong.ctx.plugin.request_id = safe(kong.response.get_header(header))\n");
    lua.push_str("    or safe(kong.request.get_header(header)) or ngx.var.kong_request_id\n");
    lua.push_str("  kong.response.set_header(\"Content-Type\", \"application/json\")\n");
    lua.push_str("  kong.response.clear_header(\"Content-Length\")\n");
    lua.push_str("end\n");
    flush_left(&lua)
}

/// `body_filter`: replaces the whole body of a marked response.
fn body_filter() -> String {
    let mut lua = String::new();
    lua.push_str("local ERRORS = {\n");
    for (status, code, message) in STATUSES {
        let _ = writeln!(
            lua,
            "  [{status}] = {{ {}, {} }},",
            lua_str(code),
            lua_str(message)
        );
    }
    lua.push_str("}\n");
    let _ = writeln!(
        lua,
        "local FALLBACK = {{ {}, {} }}",
        lua_str(FALLBACK.0),
        lua_str(FALLBACK.1)
    );
    let _ = writeln!(
        lua,
        "local FALLBACK_5XX = {{ {}, {} }}",
        lua_str(FALLBACK_5XX.0),
        lua_str(FALLBACK_5XX.1)
    );
    lua.push_str("return function()\n");
    lua.push_str("  local status = kong.ctx.plugin.status\n");
    lua.push_str("  if not status then return end\n");
    lua.push_str("  if not kong.response.get_raw_body() then return end\n");
    lua.push_str("  local e = ERRORS[status] or (status >= 500 and FALLBACK_5XX or FALLBACK)\n");
    lua.push_str("  kong.response.set_raw_body(string.format(\n");
    lua.push_str("    '{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"requestId\":\"%s\"}}',\n");
    lua.push_str("    e[1], e[2], kong.ctx.plugin.request_id or \"\"))\n");
    lua.push_str("end\n");
    flush_left(&lua)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_status_has_a_distinct_plain_message() {
        for (status, code, message) in STATUSES {
            assert!(*status >= 400, "{status}");
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!message.contains('"') && !message.contains('\\'));
        }
        assert_eq!(describe(418), FALLBACK);
        assert_eq!(describe(599), FALLBACK_5XX);
        assert_eq!(describe(429).0, "rate_limited");
    }

    #[test]
    fn bodies_are_json_in_the_platform_format() {
        let b = body(404, "abc-1#2");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["requestId"], "abc-1#2");
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn request_ids_are_restricted() {
        assert!(request_id_is_safe("3f2b8c1e-5a4d#12"));
        assert!(!request_id_is_safe(""));
        assert!(!request_id_is_safe("a\"b"));
        assert!(!request_id_is_safe(&"a".repeat(129)));
    }

    #[test]
    fn the_lua_quotes_the_header_name() {
        let p = plugin("X-Request-ID");
        let hf = p["config"]["header_filter"][0].as_str().unwrap();
        assert!(hf.contains(r#"local header = "X-Request-ID""#));
        assert_eq!(lua_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
