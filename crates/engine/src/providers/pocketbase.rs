//! The PocketBase provider: collections (`pocketbase.collection.<name>`) read in pages from
//! `GET /api/collections`, created and updated through `PUT /api/collections/import` with
//! `deleteMissing: false`, deleted explicitly with `DELETE /api/collections/{id}`.
//!
//! Not a records client: records are never read or written. Not the judge of consent: a
//! delete or a field removal reaches [`Provider::apply`] only after the engine's guard.
//!
//! Facts this relies on (PocketBase 0.40.6, `shared/ref/pocketbase.md`): import matches
//! collections and fields by id and merges (it never drops a field or a collection, which is
//! why `deleteMissing: true` is never sent and a field removal is a separate, explicit
//! `PATCH`); a field keeps its data across a rename when its id is kept; `perPage` is clamped
//! to 1000; the superuser token lasts a day (a 401 re-authenticates once).

mod normalise;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::providers::{LiveRead, Provider, Transient};
use kombiform_emit as emit;
use kombiform_model::{Env, Scope};
use kombiform_plan::{Action, Change, Resource};

pub use normalise::{address, attrs};

/// Collections per page: the most PocketBase returns (it clamps `perPage` to 1000).
pub const PER_PAGE: usize = 1000;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, body included (an import rebuilds a table).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest response body read (a page of 1000 collections is a few MB).
const BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// The name of PocketBase's default auth collection, left alone unless the specs define it.
const DEFAULT_USERS: &str = "users";

/// What the specs want of PocketBase: one resource per collection of the emitted snapshot,
/// in the snapshot's order. `meta.import` holds the collection exactly as it is imported.
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    let bodies = emit::pocketbase::collections(env);
    let templates = tenant_templates(env);
    let names = names_by_id(&bodies);
    bodies
        .into_iter()
        .map(|body| {
            let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
            let tenant = normalise::tenant_of(name, &templates);
            let mut r = normalise::resource(&body, &names, tenant.as_deref());
            r.meta.insert("import".into(), body);
            r
        })
        .collect()
}

/// The names of the tenant-scoped templates of `env`.
fn tenant_templates(env: Env<'_>) -> Vec<String> {
    env.collections()
        .iter()
        .filter(|t| t.scope == Scope::Tenant)
        .map(|t| t.name.clone())
        .collect()
}

/// Collection id → name.
fn names_by_id(collections: &[Value]) -> BTreeMap<String, String> {
    collections
        .iter()
        .filter_map(|c| {
            let id = c.get("id")?.as_str()?;
            let name = c.get("name")?.as_str()?;
            Some((id.to_string(), name.to_string()))
        })
        .collect()
}

/// A connection to one PocketBase server as a superuser.
pub struct PocketBase {
    base: String,
    agent: ureq::Agent,
    email: String,
    /// Kept to authenticate again when the token expires; never shown.
    password: String,
    token: RwLock<String>,
    /// Collections per page of `GET /api/collections`.
    per_page: usize,
    /// Requests made outside [`Provider::read`] (authentication) not yet reported by it.
    unreported: AtomicU64,
    /// Tenant template names, to tell a live collection's tenant.
    templates: Vec<String>,
    /// Whether the specs define a collection named `users` (PocketBase's default one).
    manage_users: bool,
}

impl std::fmt::Debug for PocketBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PocketBase")
            .field("base", &self.base)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// One HTTP response.
struct Reply {
    status: u16,
    text: String,
    retry_after: Option<Duration>,
}

impl PocketBase {
    /// Authenticates as a superuser (`POST /api/collections/_superusers/auth-with-password`).
    /// `url` is the server's base URL (`http://127.0.0.1:8090`).
    pub fn connect(url: &str, superuser_email: &str, superuser_password: &str) -> Result<Self> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_global(Some(REQUEST_TIMEOUT))
                .user_agent("kombiform")
                .build(),
        );
        let pb = PocketBase {
            base: url.trim_end_matches('/').to_string(),
            agent,
            email: superuser_email.to_string(),
            password: superuser_password.to_string(),
            token: RwLock::new(String::new()),
            unreported: AtomicU64::new(0),
            per_page: PER_PAGE,
            templates: Vec::new(),
            manage_users: false,
        };
        pb.authenticate()?;
        Ok(pb)
    }

    /// Tells the provider what the specs of `env` define: which live collections belong to
    /// a tenant (their `meta.tenant` and dependency on `postgres.tenant.<slug>`), and whether
    /// PocketBase's default `users` collection is managed (otherwise it is not read).
    pub fn managing(mut self, env: Env<'_>) -> Self {
        self.templates = tenant_templates(env);
        self.manage_users = env
            .collections()
            .iter()
            .any(|t| t.scope == Scope::Global && t.name == DEFAULT_USERS);
        self
    }

    /// Reads `per_page` collections per request instead of [`PER_PAGE`] (clamped to
    /// 1..=[`PER_PAGE`]); for tests of paging on small servers.
    pub fn per_page(mut self, per_page: usize) -> Self {
        self.per_page = per_page.clamp(1, PER_PAGE);
        self
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn authenticate(&self) -> Result<()> {
        let path = "/api/collections/_superusers/auth-with-password";
        let body = json!({ "identity": self.email, "password": self.password });
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .raw("POST", path, Some(&body), None)
            .context("authenticating to PocketBase as superuser")?;
        if reply.status != 200 {
            return Err(self.failure("POST", path, &reply)).with_context(|| {
                format!(
                    "authenticating to PocketBase {} as superuser {}",
                    self.base, self.email
                )
            });
        }
        let json: Value = serde_json::from_str(&reply.text)
            .with_context(|| format!("POST {path} answered non-JSON"))?;
        let token = json
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("POST {path} answered without a token"))?;
        *self
            .token
            .write()
            .map_err(|_| anyhow!("token lock poisoned"))? = token.to_string();
        Ok(())
    }

    /// One request; transport failures are [`Transient`]. No status handling.
    fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let sent = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), token).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), token).call(),
            (m, body) => {
                let req = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => bail!("unsupported method {other}"),
                };
                let text = body.map(Value::to_string).unwrap_or_else(|| "{}".into());
                with_auth(req, token)
                    .content_type("application/json")
                    .send(text)
            }
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return Err(transport(method, &url, e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| transport(method, &url, e))?;
        Ok(Reply {
            status,
            text,
            retry_after,
        })
    }

    /// An authenticated request that must succeed (2xx). A 401 re-authenticates once; 429
    /// and 5xx are [`Transient`]; other statuses are errors with PocketBase's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.call_accepting(method, path, body, &[])
    }

    /// [`PocketBase::call`], also accepting the statuses in `accept`.
    fn call_accepting(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &[u16],
    ) -> Result<Reply> {
        let mut reauthenticated = false;
        loop {
            let token = self
                .token
                .read()
                .map_err(|_| anyhow!("token lock poisoned"))?
                .clone();
            let reply = self.raw(method, path, body, Some(&token))?;
            match reply.status {
                200..=299 => return Ok(reply),
                s if accept.contains(&s) => return Ok(reply),
                401 if !reauthenticated => {
                    reauthenticated = true;
                    self.authenticate()?;
                }
                _ => return Err(self.failure(method, path, &reply)),
            }
        }
    }

    /// The error for a failed response: [`Transient`] for 429 and 5xx.
    fn failure(&self, method: &str, path: &str, reply: &Reply) -> anyhow::Error {
        failure(&format!("{method} {}{path}", self.base), reply)
    }

    /// Every collection, page by page, as PocketBase returns them (system ones included).
    /// Returns them with the number of pages read.
    pub fn list_collections(&self) -> Result<(Vec<Value>, u64)> {
        let mut all = Vec::new();
        let mut page = 1u64;
        loop {
            let path = format!(
                "/api/collections?page={page}&perPage={}&sort=id",
                self.per_page
            );
            let reply = self.call("GET", &path, None)?;
            let json: Value = serde_json::from_str(&reply.text)
                .with_context(|| format!("GET {path} answered non-JSON"))?;
            let items = json
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("GET {path} answered without items"))?;
            let n = items.len();
            all.extend(items.iter().cloned());
            let total_pages = json.get("totalPages").and_then(Value::as_u64).unwrap_or(0);
            if page >= total_pages || n == 0 {
                return Ok((all, page));
            }
            page += 1;
        }
    }

    /// Imports one collection, merging (`deleteMissing: false`).
    fn import(&self, collection: &Value) -> Result<()> {
        let body = json!({ "collections": [collection], "deleteMissing": false });
        self.call("PUT", "/api/collections/import", Some(&body))?;
        Ok(())
    }

    /// Deletes a collection; one already gone is fine (a resumed apply).
    fn delete(&self, id: &str) -> Result<()> {
        let path = format!("/api/collections/{}", encode(id));
        self.call_accepting("DELETE", &path, None, &[404])?;
        Ok(())
    }

    /// Removes fields by id from a live collection: `PATCH` with its current field list
    /// without them (import never removes a field).
    fn remove_fields(&self, id: &str, remove: &[String]) -> Result<()> {
        let path = format!("/api/collections/{}", encode(id));
        let reply = self.call("GET", &path, None)?;
        let live: Value = serde_json::from_str(&reply.text)
            .with_context(|| format!("GET {path} answered non-JSON"))?;
        let fields: Vec<Value> = normalise::fields(&live)
            .filter(|f| {
                let fid = f.get("id").and_then(Value::as_str).unwrap_or_default();
                !remove.iter().any(|r| r == fid)
            })
            .cloned()
            .collect();
        self.call("PATCH", &path, Some(&json!({ "fields": fields })))?;
        Ok(())
    }

    fn apply_one(&self, change: &Change) -> Result<()> {
        let live_id = change
            .live
            .as_ref()
            .and_then(|r| r.meta.get("id"))
            .and_then(Value::as_str);
        let body = || -> Result<Value> {
            let mut body = change
                .desired
                .as_ref()
                .and_then(|r| r.meta.get("import"))
                .cloned()
                .ok_or_else(|| anyhow!("the plan has no collection to import"))?;
            // Update the collection that is there, whatever id it was created with.
            if let (Some(id), Some(obj)) = (live_id, body.as_object_mut()) {
                if change.action == Action::Update {
                    obj.insert("id".into(), Value::String(id.to_string()));
                }
            }
            Ok(body)
        };
        let live_id = || live_id.ok_or_else(|| anyhow!("the plan has no live collection id"));
        match change.action {
            Action::Create => self.import(&body()?),
            Action::Update => {
                let remove = removed_fields(change);
                if !remove.is_empty() {
                    self.remove_fields(live_id()?, &remove)?;
                }
                self.import(&body()?)
            }
            Action::Replace => {
                self.delete(live_id()?)?;
                self.import(&body()?)
            }
            Action::Delete => self.delete(live_id()?),
        }
    }
}

impl Provider for PocketBase {
    fn name(&self) -> &'static str {
        "pocketbase"
    }

    fn read(&self) -> Result<LiveRead> {
        let (collections, pages) = self
            .list_collections()
            .with_context(|| format!("reading collections from PocketBase {}", self.base))?;
        let names = names_by_id(&collections);
        let resources = collections
            .iter()
            .filter(|c| c.get("system").and_then(Value::as_bool) != Some(true))
            .filter(|c| {
                self.manage_users || c.get("name").and_then(Value::as_str) != Some(DEFAULT_USERS)
            })
            .map(|c| {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                let tenant = normalise::tenant_of(name, &self.templates);
                normalise::resource(c, &names, tenant.as_deref())
            })
            .collect();
        Ok(LiveRead {
            resources,
            requests: pages + self.unreported.swap(0, Ordering::Relaxed),
        })
    }

    fn classify(&self, change: &mut Change) {
        if change.action == Action::Update && !removed_fields(change).is_empty() {
            change.destructive = true;
        }
    }

    fn apply(&self, changes: &[&Change]) -> Result<()> {
        for change in changes {
            self.apply_one(change)
                .with_context(|| format!("{} {}", change.action.as_str(), change.address))?;
        }
        Ok(())
    }
}

/// Field ids whose data the change loses: fields dropped from the collection, and fields
/// whose type changes (PocketBase refuses to change a field's type: it is dropped first).
/// A renamed field (same id, new name) loses nothing.
pub fn removed_fields(change: &Change) -> Vec<String> {
    change
        .attrs
        .iter()
        .filter_map(|a| {
            let id = a.name.strip_prefix("fields.")?;
            let ty = |v: &Option<Value>| v.as_ref().and_then(|v| v.get("type")).cloned();
            match (&a.before, &a.after) {
                (Some(_), None) => Some(id.to_string()),
                (Some(_), Some(_)) if ty(&a.before) != ty(&a.after) => Some(id.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// The error for a failed response to `request`: [`Transient`] for 429 and 5xx.
fn failure(request: &str, reply: &Reply) -> anyhow::Error {
    let message = format!(
        "{request} answered {}: {}",
        reply.status,
        pocketbase_message(&reply.text)
    );
    if reply.status == 429 || reply.status >= 500 {
        anyhow::Error::new(Transient {
            message,
            retry_after: reply.retry_after,
        })
    } else {
        anyhow!(message)
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => req.header("Authorization", t),
        None => req,
    }
}

/// A transport failure: connection and timeout problems are [`Transient`].
fn transport(method: &str, url: &str, e: ureq::Error) -> anyhow::Error {
    let message = format!("{method} {url}: {e}");
    match e {
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound => anyhow::Error::new(Transient {
            message,
            retry_after: None,
        }),
        _ => anyhow!(message),
    }
}

/// PocketBase's error message with its details (`data`), shortened.
fn pocketbase_message(text: &str) -> String {
    let s = match serde_json::from_str::<Value>(text) {
        Ok(json) => {
            let message = json.get("message").and_then(Value::as_str).unwrap_or("");
            match json.get("data") {
                Some(data) if data.as_object().is_some_and(|o| !o.is_empty()) => {
                    format!("{message} {data}")
                }
                _ => message.to_string(),
            }
        }
        Err(_) => text.to_string(),
    };
    let mut s = s;
    if s.len() > 2000 {
        let mut cut = 2000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Percent-encodes a path segment (collection ids are `[a-z0-9_]`, but be safe).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;
    use kombiform_plan::AttrChange;

    use kombiform_test_support::example_model;

    fn update(attrs: Vec<AttrChange>) -> Change {
        Change {
            address: address("c"),
            action: Action::Update,
            attrs,
            destructive: false,
            drift: false,
            desired: None,
            live: None,
        }
    }

    fn attr(name: &str, before: Option<Value>, after: Option<Value>) -> AttrChange {
        AttrChange {
            name: name.into(),
            before,
            after,
            sensitive: false,
            forces_replace: false,
        }
    }

    #[test]
    fn desired_has_one_resource_per_snapshot_collection() {
        let model = example_model();
        let env = model.env("local").expect("local");
        let desired = desired(env);
        assert_eq!(desired.len(), emit::pocketbase::collections(env).len());
        let nodes = desired
            .iter()
            .find(|r| r.address == "pocketbase.collection.t_stark_lab_nodes")
            .expect("t_stark_lab_nodes");
        assert_eq!(nodes.meta["tenant"], "stark-lab");
        assert_eq!(nodes.meta["id"], "pbc_t_stark_lab_nodes");
        assert_eq!(
            nodes.depends_on,
            vec![
                "pocketbase.collection.t_stark_lab_stacks",
                "pocketbase.collection.t_stark_lab_users",
                "postgres.tenant.stark-lab",
            ]
        );
        assert_eq!(nodes.replace_on, vec!["type"]);
        let global = desired
            .iter()
            .find(|r| r.address == "pocketbase.collection._sso_mappings")
            .expect("_sso_mappings");
        assert!(global.depends_on.is_empty() && !global.meta.contains_key("tenant"));
    }

    #[test]
    fn every_auth_option_the_emitter_writes_is_compared() {
        let model = example_model();
        let env = model.env("local").expect("local");
        let users = emit::pocketbase::collections(env)
            .into_iter()
            .find(|c| c["type"] == "auth")
            .expect("an auth collection");
        let compared = |key: &str| -> Option<Option<&[&str]>> {
            normalise::AUTH_OPTIONS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, sub)| *sub)
        };
        let obj = users.as_object().expect("object");
        let base_keys = ["id", "name", "type", "fields", "indexes"];
        for (key, value) in obj {
            if base_keys.contains(&key.as_str()) || key.ends_with("Rule") && compared(key).is_none()
            {
                continue;
            }
            let sub = compared(key).unwrap_or_else(|| panic!("{key} is not compared"));
            if let (Some(sub), Some(v)) = (sub, value.as_object()) {
                for k in v.keys() {
                    assert!(sub.contains(&k.as_str()), "{key}.{k} is not compared");
                }
            }
        }
    }

    #[test]
    fn removing_or_retyping_a_field_is_destructive_renaming_is_not() {
        let text = json!({"name": "a", "type": "text"});
        let renamed = json!({"name": "b", "type": "text"});
        let number = json!({"name": "a", "type": "number"});
        let mut pb_change = update(vec![attr(
            "fields.text1",
            Some(text.clone()),
            Some(renamed),
        )]);
        assert!(removed_fields(&pb_change).is_empty());
        pb_change = update(vec![attr("fields.text1", Some(text.clone()), None)]);
        assert_eq!(removed_fields(&pb_change), vec!["text1"]);
        pb_change = update(vec![attr("fields.text1", Some(text), Some(number))]);
        assert_eq!(removed_fields(&pb_change), vec!["text1"]);
        let added = update(vec![attr("fields.text2", None, Some(json!({})))]);
        assert!(removed_fields(&added).is_empty());
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient() {
        let reply = |status: u16| Reply {
            status,
            text: r#"{"data":{},"message":"Too Many Requests.","status":429}"#.into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let e = failure("GET /api/collections", &reply(429));
        let t = crate::providers::transient(&e).expect("transient");
        assert_eq!(t.retry_after, Some(Duration::from_secs(3)));
        assert!(t.message.contains("Too Many Requests."), "{}", t.message);
        assert!(crate::providers::transient(&failure("x", &reply(503))).is_some());
        assert!(crate::providers::transient(&failure("x", &reply(400))).is_none());
    }

    #[test]
    fn error_messages_keep_pocketbases_details() {
        let text =
            r#"{"data":{"name":{"code":"x","message":"bad"}},"message":"Failed.","status":400}"#;
        let m = pocketbase_message(text);
        assert!(m.starts_with("Failed. ") && m.contains("\"bad\""), "{m}");
        assert_eq!(pocketbase_message("not json"), "not json");
        assert_eq!(encode("pbc_t_a b"), "pbc_t_a%20b");
    }
}
