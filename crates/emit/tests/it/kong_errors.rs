//! Golden files of the errors Kong makes itself, in the platform format
//! (`tests/golden/kong-errors/<status>.txt`): 401, 403, 404, 413, 429 and the 5xx, each as the
//! response a caller gets, rendered from the generated prod config itself: the `ERRORS` table
//! and the body format are read out of the emitted `post-function` Lua, the request-id header
//! from the emitted `correlation-id` plugin. So a change of the generated Lua shows here as a
//! diff, and the Rust model of the format (`kombiform_emit::kong::errors::body`) must agree with
//! the Lua. `UPDATE_EXPECT=1` rewrites the files.
//!
//! Not a run of Kong (no Lua interpreter is needed); which Kong component answers each status
//! is said in each file. Errors nginx raises before any Kong phase (413) reach the same
//! plugins: `Kong.handle_error` collects the plugins when none were (kong@3.9.3
//! `kong/init.lua`), so the global `post-function` runs for them too.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use kombiform_emit::kong::{document, errors};

/// A request id as a caller sends it, and one `correlation-id` generates (`uuid#counter`).
const CALLER_ID: &str = "6f1c2a9e-3d4b-4c8a-9e1f-7a2b3c4d5e6f";
const GENERATED_ID: &str = "9b2e4f60-1c3d-4e5f-8a7b-6c5d4e3f2a1b#42";

/// Each status, who answers it, and whether the caller sent an id.
const CASES: [(u16, &str, bool); 9] = [
    (
        401,
        "jwt refused the token: the anonymous consumer's request-termination",
        true,
    ),
    (
        403,
        "acl: the tenant's plan may not call the route (or the tenant is suspended)",
        true,
    ),
    (
        404,
        "no route matches (also every /api/internal path, and requests without Front Door's id)",
        false,
    ),
    (
        413,
        "nginx: the body is larger than client_max_body_size",
        true,
    ),
    (
        429,
        "rate-limiting: the tenant's plan limit or the per-IP limit",
        false,
    ),
    (
        500,
        "rate-limiting with fault_tolerant false while Redis is down, or a plugin error",
        true,
    ),
    (502, "the upstream answered with an invalid response", true),
    (503, "no healthy upstream target", true),
    (504, "the upstream did not answer in time", false),
];

fn reason(status: u16) -> &'static str {
    match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Status → (code, message), as the Lua's `ERRORS` table lists them.
type Table = BTreeMap<u16, (String, String)>;

/// The global plugin `name` of the document.
fn global<'a>(doc: &'a Value, name: &str) -> Result<&'a Value> {
    doc["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .with_context(|| format!("no global {name} plugin"))
}

/// The `ERRORS` table and the body format of the emitted `body_filter` Lua.
fn lua_table(lua: &str) -> Result<(Table, String)> {
    let mut table = BTreeMap::new();
    for line in lua.lines().filter(|l| l.starts_with('[')) {
        // [401] = { "unauthorized", "A valid access token is required." },
        let (status, rest) = line
            .trim_start_matches('[')
            .split_once("] = {")
            .with_context(|| format!("not a table line: {line}"))?;
        let quoted: Vec<&str> = rest.split('"').collect();
        let (Some(code), Some(message)) = (quoted.get(1), quoted.get(3)) else {
            bail!("not a table line: {line}");
        };
        table.insert(status.parse()?, (code.to_string(), message.to_string()));
    }
    let format = lua
        .lines()
        .find_map(|l| l.trim().strip_prefix('\'')?.split('\'').next())
        .context("no body format in the Lua")?
        .to_string();
    Ok((table, format))
}

fn render(
    status: u16,
    header: &str,
    id: &str,
    who: &str,
    table: &Table,
    format: &str,
) -> Result<String> {
    let (code, message) = table
        .get(&status)
        .with_context(|| format!("the Lua has no entry for {status}"))?;
    let mut body = format.to_string();
    for value in [code.as_str(), message.as_str(), id] {
        body = body.replacen("%s", value, 1);
    }
    let v: Value = serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
    assert_eq!(v["error"]["requestId"], id);
    assert_eq!(
        body,
        errors::body(status, id),
        "the Rust model and the Lua disagree"
    );
    Ok(format!(
        "# {who}\nHTTP/1.1 {status} {}\nContent-Type: application/json\n{header}: {id}\n\n{body}\n",
        reason(status)
    ))
}

#[test]
fn kongs_own_errors_are_in_the_platform_format() -> Result<()> {
    let model = kombiform_test_support::example_model();
    let doc = document(model.env("prod").context("prod")?);
    let correlation = &global(&doc, "correlation-id")?["config"];
    assert_eq!(
        correlation["echo_downstream"], true,
        "the id goes back to the caller"
    );
    let header = correlation["header_name"].as_str().context("header_name")?;
    let post = &global(&doc, "post-function")?["config"];
    let header_filter = post["header_filter"][0].as_str().context("header_filter")?;
    assert!(
        header_filter.contains(&format!("local header = \"{header}\"")),
        "the Lua reads the correlation header"
    );
    let (table, format) = lua_table(post["body_filter"][0].as_str().context("body_filter")?)?;

    let mut produced = BTreeMap::new();
    for (status, who, caller) in CASES {
        let id = if caller { CALLER_ID } else { GENERATED_ID };
        let who = if caller {
            format!("{who}; the caller sent {header}")
        } else {
            format!("{who}; no {header} sent: correlation-id generated one")
        };
        produced.insert(
            format!("{status}.txt"),
            render(status, header, id, &who, &table, &format)?,
        );
    }
    // An id that could break the JSON is never echoed: Kong's own id replaces it.
    assert!(!errors::request_id_is_safe("a\"b"));
    assert!(header_filter.contains("ngx.var.kong_request_id"));

    let dir = kombiform_test_support::golden_dir().join("kong-errors");
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        for (name, text) in &produced {
            std::fs::write(dir.join(name), text)?;
        }
    }
    for (name, text) in &produced {
        let expected = std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("{name}: run with UPDATE_EXPECT=1"))?;
        assert_eq!(&expected, text, "{name} differs (UPDATE_EXPECT=1 rewrites)");
    }
    let stale: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !produced.contains_key(n))
        .collect();
    assert!(stale.is_empty(), "stale golden files: {stale:?}");
    Ok(())
}
