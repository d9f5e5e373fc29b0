//! The PocketBase calls of the SSO service, all as superuser: `_sso_mappings` lookups, inserts
//! and deletes, tenant user creation at a chosen id, impersonation (short-lived,
//! non-refreshable user tokens) and token revocation (a password change rotates the user's
//! `tokenKey`; pocketbase.md §4.2).
//!
//! The superuser token is cached and renewed on a 401 or after an hour. Filter values are
//! restricted to a safe character set instead of being escaped. Not here: quotas, HTTP routes.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use kombiform_model::secret::Secret;
use kombiform_model::{USER_ROLE_FIELD, USER_SUBJECT_FIELD};

/// How long a superuser token is reused before a fresh login (PocketBase's default is a day).
const SUPERUSER_TOKEN_REUSE: Duration = Duration::from_secs(3600);

/// Timeout of each PocketBase request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A PocketBase user as the service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Record id.
    pub id: String,
    /// E-mail address.
    pub email: String,
    /// Collection name.
    pub collection: String,
}

/// A row of `_sso_mappings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Tenant slug.
    pub tenant: String,
    /// The user's collection.
    pub collection: String,
    /// The user's record id.
    pub user_id: String,
}

/// The result of creating a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new user.
    New(User),
    /// Another user record already holds this Zitadel subject. It is never adopted: only the
    /// mapping links a subject to a user (see [`super::exchange`]).
    SubjectTaken,
    /// Another user of the tenant has this e-mail address.
    EmailTaken,
}

/// A superuser client for one PocketBase.
pub struct PocketBase {
    base: String,
    http: reqwest::Client,
    email: String,
    password: Secret,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// `'value'` for a PocketBase filter, if `value` only holds characters that need no escaping.
pub fn filter_literal(value: &str) -> Option<String> {
    let safe = !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b));
    safe.then(|| format!("'{value}'"))
}

/// A random password for an SSO user (never used to log in; PocketBase requires one).
pub fn random_password() -> String {
    kombiform_model::hex(&kombiform_sys::random_bytes::<32>())
}

/// A fresh record id for a user: 15 characters of `[a-z2-7]` (75 random bits), which fits
/// PocketBase's id pattern `^[a-z0-9]+$` of length 15.
pub fn new_user_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    kombiform_sys::random_bytes::<15>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect()
}

impl PocketBase {
    /// A client for `base` (no trailing slash needed).
    pub fn new(base: &str, http: reqwest::Client, email: String, password: Secret) -> PocketBase {
        PocketBase {
            base: base.trim_end_matches('/').to_string(),
            http,
            email,
            password,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether `GET /api/health` answers 200 within `timeout`.
    pub async fn healthy(&self, timeout: Duration) -> Result<()> {
        let url = format!("{}/api/health", self.base);
        let r = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if r.status() != StatusCode::OK {
            bail!("GET {url} answered {}", r.status());
        }
        Ok(())
    }

    async fn superuser_token(&self, fresh: bool) -> Result<String> {
        let mut guard = self.token.lock().await;
        if let Some((t, at)) = guard.as_ref() {
            if !fresh && at.elapsed() < SUPERUSER_TOKEN_REUSE {
                return Ok(t.clone());
            }
        }
        let url = format!(
            "{}/api/collections/_superusers/auth-with-password",
            self.base
        );
        let body = json!({"identity": self.email, "password": self.password.expose()});
        let r = self
            .http
            .post(&url)
            .json(&body)
            .timeout(TIMEOUT)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = r.status();
        let v: Value = r
            .json()
            .await
            .with_context(|| format!("reading POST {url}"))?;
        if status != StatusCode::OK {
            bail!("PocketBase superuser login answered {status}");
        }
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .context("superuser login without token")?
            .to_string();
        *guard = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// A superuser request; retried once with a fresh token on 401. Returns status and JSON body
    /// (`null` when the body is empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut fresh = false;
        loop {
            let token = self.superuser_token(fresh).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .timeout(TIMEOUT)
                .header("Authorization", token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req
                .send()
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = r.status();
            if status == StatusCode::UNAUTHORIZED && !fresh {
                fresh = true;
                continue;
            }
            let bytes = r
                .bytes()
                .await
                .with_context(|| format!("reading {method} {path}"))?;
            let v = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            return Ok((status, v));
        }
    }

    /// The first record of `collection` matching `filter`, if any.
    async fn first(&self, collection: &str, filter: &str) -> Result<Option<Value>> {
        let path = format!("/api/collections/{collection}/records");
        let (status, v) = self
            .call(
                Method::GET,
                &path,
                &[("filter", filter), ("perPage", "1"), ("skipTotal", "1")],
                None,
            )
            .await?;
        if status != StatusCode::OK {
            bail!("GET {path} answered {status}");
        }
        Ok(v.get("items")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned())
    }

    /// The mapping of (provider, subject) in `mappings`, if any.
    pub async fn find_mapping(
        &self,
        mappings: &str,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Mapping>> {
        let (p, s) = (
            filter_literal(provider).ok_or_else(|| anyhow!("provider has unsafe characters"))?,
            filter_literal(subject).ok_or_else(|| anyhow!("subject has unsafe characters"))?,
        );
        let Some(row) = self
            .first(mappings, &format!("provider={p} && subject={s}"))
            .await?
        else {
            return Ok(None);
        };
        let field = |n: &str| {
            row.get(n)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("mapping without {n}"))
        };
        Ok(Some(Mapping {
            tenant: field("tenant")?,
            collection: field("collection")?,
            user_id: field("userId")?,
        }))
    }

    /// Whether `collection` has a user with record id `id`.
    pub async fn user_exists(&self, collection: &str, id: &str) -> Result<bool> {
        let path = format!("/api/collections/{collection}/records/{id}");
        let (status, _) = self.call(Method::GET, &path, &[], None).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("GET {path} answered {s}"),
        }
    }

    /// Creates a verified member user with record id `id` and a random password.
    pub async fn create_user(
        &self,
        collection: &str,
        id: &str,
        email: &str,
        subject: &str,
        name: &str,
    ) -> Result<Created> {
        let password = random_password();
        let body = json!({
            "id": id, "email": email, "password": password, "passwordConfirm": password,
            "verified": true, USER_SUBJECT_FIELD: subject, USER_ROLE_FIELD: "member", "name": name,
        });
        let path = format!("/api/collections/{collection}/records");
        let (status, v) = self.call(Method::POST, &path, &[], Some(&body)).await?;
        if status == StatusCode::OK {
            return user(&v, collection).map(Created::New);
        }
        let not_unique = |f: &str| {
            v.pointer(&format!("/data/{f}/code"))
                .and_then(Value::as_str)
                == Some("validation_not_unique")
        };
        if status == StatusCode::BAD_REQUEST && not_unique(USER_SUBJECT_FIELD) {
            return Ok(Created::SubjectTaken);
        }
        if status == StatusCode::BAD_REQUEST && not_unique("email") {
            return Ok(Created::EmailTaken);
        }
        bail!(
            "POST {path} answered {status}: {}",
            v.get("data").cloned().unwrap_or(Value::Null)
        )
    }

    /// Deletes a user (compensation when its mapping could not be written).
    pub async fn delete_user(&self, collection: &str, id: &str) -> Result<()> {
        let path = format!("/api/collections/{collection}/records/{id}");
        let (status, _) = self.call(Method::DELETE, &path, &[], None).await?;
        if !(status.is_success() || status == StatusCode::NOT_FOUND) {
            bail!("DELETE {path} answered {status}");
        }
        Ok(())
    }

    /// Writes a mapping row; its record id, or `None` when (provider, subject) is mapped
    /// already.
    pub async fn create_mapping(
        &self,
        mappings: &str,
        provider: &str,
        subject: &str,
        org_id: &str,
        m: &Mapping,
    ) -> Result<Option<String>> {
        let body = json!({
            "provider": provider, "subject": subject, "tenant": m.tenant, "orgId": org_id,
            "collection": m.collection, "userId": m.user_id,
        });
        let path = format!("/api/collections/{mappings}/records");
        let (status, v) = self.call(Method::POST, &path, &[], Some(&body)).await?;
        if status == StatusCode::OK {
            let id = v.get("id").and_then(Value::as_str);
            return id
                .map(|id| Some(id.to_string()))
                .with_context(|| format!("POST {path} answered without an id"));
        }
        if status == StatusCode::BAD_REQUEST
            && v.pointer("/data/subject/code").and_then(Value::as_str)
                == Some("validation_not_unique")
        {
            return Ok(None);
        }
        bail!(
            "POST {path} answered {status}: {}",
            v.get("data").cloned().unwrap_or(Value::Null)
        )
    }

    /// Deletes the mapping row `id` (compensation when its first login failed).
    pub async fn delete_mapping(&self, mappings: &str, id: &str) -> Result<()> {
        let path = format!("/api/collections/{mappings}/records/{id}");
        let (status, _) = self.call(Method::DELETE, &path, &[], None).await?;
        if !(status.is_success() || status == StatusCode::NOT_FOUND) {
            bail!("DELETE {path} answered {status}");
        }
        Ok(())
    }

    /// A non-refreshable token for the user, valid `ttl_seconds`, and the user's record.
    /// `Ok(None)` when the user no longer exists.
    pub async fn impersonate(
        &self,
        collection: &str,
        id: &str,
        ttl_seconds: u32,
    ) -> Result<Option<(String, User)>> {
        let path = format!("/api/collections/{collection}/impersonate/{id}");
        let (status, v) = self
            .call(
                Method::POST,
                &path,
                &[],
                Some(&json!({"duration": ttl_seconds})),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            bail!("POST {path} answered {status}");
        }
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .context("impersonate answered without a token")?;
        let record = v
            .get("record")
            .context("impersonate answered without a record")?;
        Ok(Some((token.to_string(), user(record, collection)?)))
    }

    /// Revokes every token of the user by setting a new random password (which rotates its
    /// `tokenKey`). `Ok(false)` when the user does not exist.
    pub async fn revoke_tokens(&self, collection: &str, id: &str) -> Result<bool> {
        let password = random_password();
        let path = format!("/api/collections/{collection}/records/{id}");
        let body = json!({"password": password, "passwordConfirm": password});
        let (status, _) = self.call(Method::PATCH, &path, &[], Some(&body)).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("PATCH {path} answered {s}"),
        }
    }
}

fn user(record: &Value, collection: &str) -> Result<User> {
    let field = |n: &str| {
        record
            .get(n)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("user record without {n}"))
    };
    Ok(User {
        id: field("id")?,
        email: field("email")?,
        collection: collection.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_literals_admit_only_safe_characters() {
        assert_eq!(
            filter_literal("287401958304129025").as_deref(),
            Some("'287401958304129025'")
        );
        assert_eq!(
            filter_literal("http://127.0.0.1:8081").as_deref(),
            Some("'http://127.0.0.1:8081'")
        );
        assert_eq!(filter_literal("x' || 1=1 || '"), None);
        assert_eq!(filter_literal(""), None);
        assert_eq!(filter_literal("a\\b"), None);
    }

    #[test]
    fn user_ids_fit_pocketbases_id_pattern_and_differ() {
        let (a, b) = (new_user_id(), new_user_id());
        assert_eq!(a.len(), 15);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(a, b);
    }

    #[test]
    fn passwords_are_long_and_differ() {
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
