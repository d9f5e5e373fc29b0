//! The PocketBase provider's client: collections (`pocketbase.collection.<name>`) read in
//! pages from `GET /api/collections`, created and updated through
//! `PUT /api/collections/import` with `deleteMissing: false`, deleted explicitly with
//! `DELETE /api/collections/{id}`.
//!
//! The backup schedule (`pocketbase.settings.backups`) is read from `GET /api/settings` and
//! set with `PATCH /api/settings`.
//!
//! Not a records client: records are never read or written. Not the judge of consent: a
//! delete or a field removal reaches [`Client::apply`] only after the engine's guard. What
//! the specs want, and how collections are normalised, is the pure target's
//! (`kombiform_emit::targets::pocketbase`).
//!
//! Facts this relies on (PocketBase 0.40.6, `shared/ref/pocketbase.md`): import matches
//! collections and fields by id and merges (it never drops a field or a collection, which is
//! why `deleteMissing: true` is never sent and a field removal is a separate, explicit
//! `PATCH`); a field keeps its data across a rename when its id is kept; `perPage` is clamped
//! to 1000; the superuser token lasts a day (a 401 re-authenticates once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::ops::env_lookup;
use crate::providers::{Client, LiveRead, Registration, Transient};
use kombiform_emit::targets::pocketbase::{
    self as target, normalise, removed_fields, DEFAULT_USERS,
};
use kombiform_model::{secret, Env};
use kombiform_plan::{Action, Change, Resource};

/// Collections per page: the most PocketBase returns (it clamps `perPage` to 1000).
pub const PER_PAGE: usize = 1000;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, body included (an import rebuilds a table).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest response body read (a page of 1000 collections is a few MB).
const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// The PocketBase provider.
pub const REGISTRATION: Registration = Registration {
    target: &target::PocketBase,
    connect: connect_env,
    available: super::always,
};

/// Connects to the PocketBase of `env` as its superuser.
fn connect_env(env: Env<'_>) -> Result<Box<dyn Client>> {
    let p = env.platform;
    let password = secret::resolve_non_empty(&p.pocketbase.superuser_password, env_lookup)
        .context("the PocketBase superuser password")?;
    let pb = PocketBase::connect(
        &p.pocketbase.url,
        &p.pocketbase.superuser_email,
        password.expose(),
    )
    .map_err(|e| {
        if e.downcast_ref::<CredentialsRefused>().is_none() {
            return e;
        }
        // Name what to set: the variable the spec's reference reads (the one rule).
        let variable = secret::variable(&p.pocketbase.superuser_password);
        e.context(format!(
            "PocketBase refused the password of superuser {}: set {variable} to it",
            p.pocketbase.superuser_email
        ))
    })
    .with_context(|| format!("connecting to PocketBase at {}", p.pocketbase.url))?
    .managing(env);
    Ok(Box::new(pb))
}

/// PocketBase refused the superuser's email or password (not transient: retrying the same
/// password does not help).
#[derive(Debug)]
pub struct CredentialsRefused;

impl std::fmt::Display for CredentialsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the superuser credentials were refused")
    }
}

/// A connection to one PocketBase server as a superuser.
pub struct PocketBase {
    base: String,
    http: reqwest::blocking::Client,
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
        let tls = kombiform_sys::tls::client_config()?;
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("kombiform/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let pb = PocketBase {
            base: url.trim_end_matches('/').to_string(),
            http,
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
        self.templates = target::tenant_templates(env);
        self.manage_users = target::manages_default_users(env);
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
        if reply.status == 400 || reply.status == 401 {
            // PocketBase answers 400 "Failed to authenticate." to a wrong email or password.
            return Err(self
                .failure("POST", path, &reply)
                .context(CredentialsRefused));
        }
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
        let method_ = match method {
            "GET" => reqwest::Method::GET,
            "DELETE" => reqwest::Method::DELETE,
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            other => bail!("unsupported method {other}"),
        };
        let mut req = self.http.request(method_, &url);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        if !matches!(method, "GET" | "DELETE") {
            let text = body.map(Value::to_string).unwrap_or_else(|| "{}".into());
            req = req.header("Content-Type", "application/json").body(text);
        }
        let response = req.send().map_err(|e| transport(method, &url, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if response
            .content_length()
            .is_some_and(|n| n > BODY_LIMIT as u64)
        {
            bail!("{method} {url}: the answer is larger than {BODY_LIMIT} bytes");
        }
        let bytes = response.bytes().map_err(|e| transport(method, &url, &e))?;
        if bytes.len() > BODY_LIMIT {
            bail!("{method} {url}: the answer is larger than {BODY_LIMIT} bytes");
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
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

    /// The backup settings (`GET /api/settings`), as the target's resource.
    fn read_backups(&self) -> Result<Resource> {
        let reply = self.call("GET", "/api/settings", None)?;
        let settings: Value =
            serde_json::from_str(&reply.text).context("PocketBase's settings are not JSON")?;
        let cron = settings
            .pointer("/backups/cron")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let keep = settings
            .pointer("/backups/cronMaxKeep")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(target::backups_resource(cron, keep))
    }

    /// Sets the backup schedule (`PATCH /api/settings`); the settings are never deleted.
    fn apply_backups(&self, change: &Change) -> Result<()> {
        let Some(want) = change.desired.as_ref() else {
            return Ok(());
        };
        let body = json!({"backups": {
            "cron": want.attrs.get("cron").cloned().unwrap_or(Value::Null),
            "cronMaxKeep": want.attrs.get("cronMaxKeep").cloned().unwrap_or(Value::Null),
        }});
        self.call("PATCH", "/api/settings", Some(&body))?;
        Ok(())
    }

    fn apply_one(&self, change: &Change) -> Result<()> {
        if change.address == target::BACKUPS {
            return self.apply_backups(change);
        }
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

impl Client for PocketBase {
    fn read(&self) -> Result<LiveRead> {
        let (collections, pages) = self
            .list_collections()
            .with_context(|| format!("reading collections from PocketBase {}", self.base))?;
        let names = target::names_by_id(&collections);
        let resources = collections
            .iter()
            .filter(|c| c.get("system").and_then(Value::as_bool) != Some(true))
            .filter(|c| {
                self.manage_users || c.get("name").and_then(Value::as_str) != Some(DEFAULT_USERS)
            })
            .map(|c| target::live_resource(c, &names, &self.templates))
            .chain(std::iter::once(self.read_backups().with_context(|| {
                format!("reading the backup settings of PocketBase {}", self.base)
            })?))
            .collect();
        Ok(LiveRead {
            resources,
            requests: pages + 1 + self.unreported.swap(0, Ordering::Relaxed),
        })
    }

    fn apply(&self, changes: &[&Change]) -> Result<()> {
        for change in changes {
            self.apply_one(change)
                .with_context(|| format!("{} {}", change.action.as_str(), change.address))?;
        }
        Ok(())
    }
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

/// A transport failure: connection and timeout problems are [`Transient`].
fn transport(method: &str, url: &str, e: &reqwest::Error) -> anyhow::Error {
    let message = format!("{method} {url}: {e}");
    if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
        anyhow::Error::new(Transient {
            message,
            retry_after: None,
        })
    } else {
        anyhow!(message)
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

    #[test]
    fn rate_limits_and_server_errors_are_transient() {
        let reply = |status: u16| Reply {
            status,
            text: r#"{"data":{},"message":"Too Many Requests.","status":429}"#.into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let e = failure("GET /api/collections", &reply(429));
        let t = crate::providers::transient(&e).unwrap();
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
