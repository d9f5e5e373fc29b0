//! The HTTP edge of `kombify-sso`: routes, request parsing (bodies with size caps and a read
//! timeout, the bearer token in exactly one place), internal authentication, path values checked
//! before they reach the database, and response headers. Domain work is delegated to
//! [`super::exchange`], [`super::flags`], [`super::webhooks`] and [`super::db`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ring::hmac;
use serde_json::{json, Value};

use super::db::{self, ApplyError, Audit};
use super::error::SsoError;
use super::flags::{self, FlagsPayload};
use super::input;
use super::token::MAX_TOKEN_BYTES;
use super::webhooks::{self, UserEffect, MAX_BODY_BYTES};
use super::{exchange, Sso};
use crate::http::{with_common_layers, BodyBytes};

/// The largest `Authorization` header accepted, in bytes ("Bearer " + token).
pub const MAX_AUTHORIZATION_BYTES: usize = MAX_TOKEN_BYTES + 7;

/// Timeout of each dependency check of `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Every request body of the service: at most [`MAX_BODY_BYTES`].
type Body = BodyBytes<MAX_BODY_BYTES>;

/// The service's router, with the shared edge (request ids, JSON errors).
pub fn router(sso: Arc<Sso>) -> Router {
    let api = Router::new()
        .route("/api/internal/sso/exchange", post(exchange_handler))
        .route("/api/sso/token", post(token_handler))
        .route("/api/internal/feature-flags/apply", post(apply_flags))
        .route("/api/internal/feature-flags/{tenant}", get(tenant_flags))
        .route("/api/webhooks/stripe", post(stripe))
        .route("/api/webhooks/zitadel", post(zitadel))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(sso);
    with_common_layers(api)
}

/// The bearer token of `Authorization`, if the header is there. Oversized, non-UTF-8 or
/// non-Bearer headers are refused (401, no oracle).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, SsoError> {
    let Some(value) = headers.get("authorization") else {
        return Ok(None);
    };
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(SsoError::Unauthorized("authorization header too large"));
    }
    let s = value
        .to_str()
        .map_err(|_| SsoError::Unauthorized("authorization header not ASCII"))?;
    match s.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(SsoError::Unauthorized(
            "authorization is not a bearer token",
        )),
    }
}

/// The `token` member of a JSON object body, if the body is one and has it.
fn body_token(body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    let mut v: Value = serde_json::from_slice(body).ok()?;
    v.get_mut("token").map(Value::take)
}

/// The exchange's token: from the `Authorization` header or from the body's `token`, never
/// both (RFC 6750 §3.1: more than one method is `invalid_request`).
fn exchange_token(headers: &HeaderMap, body: &[u8]) -> Result<String, SsoError> {
    let header = bearer(headers)?;
    let in_body = body_token(body);
    match (header, in_body) {
        (Some(_), Some(_)) => Err(SsoError::InvalidRequest(
            "token in both the Authorization header and the body",
        )),
        (Some(t), None) => Ok(t.to_string()),
        (None, _) if body.len() > MAX_TOKEN_BYTES + 64 => {
            Err(SsoError::Unauthorized("body token too large"))
        }
        (None, Some(Value::String(t))) => Ok(t),
        (None, _) => Err(SsoError::Unauthorized("no token")),
    }
}

async fn exchange_handler(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    BodyBytes(body): Body,
) -> Result<Response, SsoError> {
    let token = exchange_token(&headers, &body)?;
    let out = exchange::exchange(&sso, &token).await?;
    let (max, used) = (out.quota.max_users, out.quota.used_users);
    let mut response = Json(&out).into_response();
    let h = response.headers_mut();
    h.insert("x-quota-users-limit", HeaderValue::from(max));
    h.insert("x-quota-users-used", HeaderValue::from(used));
    h.insert(
        "x-quota-users-remaining",
        HeaderValue::from((max - used).max(0)),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /api/sso/token`: a Zitadel access token (bearer, or `token` in a JSON body) for a
/// platform access token ([`super::platform`]). Not found when the gateway does not verify
/// platform tokens (Enterprise).
async fn token_handler(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    BodyBytes(body): Body,
) -> Result<Response, SsoError> {
    let token = exchange_token(&headers, &body)?;
    let minted = super::platform::issue(&sso, &token, now()).await?;
    let mut response = Json(&minted).into_response();
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(response)
}

/// An internal caller: `Authorization: Bearer <internal token>`, compared in constant time as
/// HMACs under a per-process random key (so neither content nor length leaks).
pub struct InternalCaller;

/// The per-process key the internal token is compared under.
fn compare_key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| hmac::Key::new(hmac::HMAC_SHA256, &kombiform_sys::random_bytes::<32>()))
}

fn internal_auth(sso: &Sso, headers: &HeaderMap) -> Result<(), SsoError> {
    let given = bearer(headers)?.ok_or(SsoError::Unauthorized("no internal token"))?;
    let key = compare_key();
    let expected = hmac::sign(key, sso.internal_token.expose().as_bytes());
    hmac::verify(key, given.as_bytes(), expected.as_ref())
        .map_err(|_| SsoError::Unauthorized("wrong internal token"))
}

impl FromRequestParts<Arc<Sso>> for InternalCaller {
    type Rejection = SsoError;

    async fn from_request_parts(parts: &mut Parts, sso: &Arc<Sso>) -> Result<Self, SsoError> {
        internal_auth(sso, &parts.headers).map(|()| InternalCaller)
    }
}

/// A tenant slug from the path: a value that is not a slug names no tenant (404), a segment that
/// does not decode (invalid UTF-8) is malformed (400). Either way it never reaches the database.
pub struct TenantSlug(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TenantSlug {
    type Rejection = SsoError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, SsoError> {
        let Path(tenant) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| SsoError::BadRequest("malformed path".to_string()))?;
        if input::is_slug(&tenant) {
            Ok(TenantSlug(tenant))
        } else {
            tracing::info!(len = tenant.len(), "path value is not a tenant slug");
            Err(SsoError::NotFound)
        }
    }
}

async fn apply_flags(
    State(sso): State<Arc<Sso>>,
    _: InternalCaller,
    BodyBytes(body): Body,
) -> Result<Response, SsoError> {
    let payload: FlagsPayload = serde_json::from_slice(&body)
        .map_err(|e| SsoError::BadRequest(format!("invalid flags payload: {e}")))?;
    flags::validate(&payload).map_err(SsoError::BadRequest)?;
    match sso.db.apply_flags(&payload).await {
        Ok(()) => Ok(Json(json!({"applied": payload.flags.len()})).into_response()),
        Err(ApplyError::Invalid(m)) => Err(SsoError::BadRequest(m.to_string())),
        Err(ApplyError::Db(e)) => Err(SsoError::Unavailable(e)),
    }
}

async fn tenant_flags(
    State(sso): State<Arc<Sso>>,
    _: InternalCaller,
    TenantSlug(tenant): TenantSlug,
) -> Result<Response, SsoError> {
    let Some((plan, rows)) = sso.db.flags_for(&tenant).await? else {
        return Err(SsoError::NotFound);
    };
    let mut out = serde_json::Map::new();
    for row in &rows {
        let (enabled, source) = flags::evaluate(row, &tenant);
        out.insert(
            row.name.clone(),
            json!({"enabled": enabled, "source": source}),
        );
    }
    Ok(Json(json!({"tenant": tenant, "plan": plan, "flags": out})).into_response())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn verify(
    sso: &Sso,
    headers: &HeaderMap,
    header: &str,
    secrets: &[kombiform_model::secret::Secret],
    body: &[u8],
) -> Result<(), SsoError> {
    let value = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let tolerance = i64::from(sso.config.webhooks.tolerance_seconds);
    webhooks::verify(value, body, secrets, now(), tolerance)
        .map(|_| ())
        .map_err(|e| {
            SsoError::BadSignature(match e {
                webhooks::SigError::Missing => "missing",
                webhooks::SigError::Malformed => "malformed",
                webhooks::SigError::NoSignature => "no v1",
                webhooks::SigError::TooOld => "timestamp too old",
                webhooks::SigError::TooNew => "timestamp in the future",
                webhooks::SigError::Mismatch => "mismatch",
            })
        })
}

fn received(duplicate: bool, effect: &str) -> Response {
    Json(json!({"received": true, "duplicate": duplicate, "effect": effect})).into_response()
}

async fn stripe(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    BodyBytes(body): Body,
) -> Result<Response, SsoError> {
    verify(
        &sso,
        &headers,
        "stripe-signature",
        &sso.stripe_secrets,
        &body,
    )?;
    let event = webhooks::parse_stripe(&body)
        .map_err(|m| SsoError::BadRequest(format!("invalid Stripe event: {m}")))?;
    let mut client = sso.db.client().await?;
    let tx = client
        .transaction()
        .await
        .context("starting a webhook transaction")?;
    if !db::record_event(&tx, "stripe", &event.id, &event.kind).await? {
        tracing::info!(event = %event.id, "duplicate Stripe event ignored");
        return Ok(received(true, "none"));
    }
    let mut effect = "none";
    if webhooks::is_subscription_change(&event.kind) {
        let (customer, price) = (
            event.customer.as_deref().unwrap_or(""),
            event.price.as_deref().unwrap_or(""),
        );
        match db::change_plan(&tx, customer, price).await? {
            Some((tenant, old, new)) => {
                effect = "plan_changed";
                db::insert_audit(
                    &tx,
                    &Audit {
                        actor: "stripe",
                        action: "tenant.plan.change",
                        target: &tenant,
                        result: "success",
                        details: json!({"event": event.id, "from": old, "to": new}),
                    },
                )
                .await?;
            }
            None => {
                effect = "ignored";
                db::insert_audit(
                    &tx,
                    &Audit {
                        actor: "stripe",
                        action: "tenant.plan.change",
                        target: customer,
                        result: "failure",
                        details: json!({"event": event.id, "reason": "unknown customer or price"}),
                    },
                )
                .await?;
            }
        }
    }
    tx.commit().await.context("committing a Stripe event")?;
    Ok(received(false, effect))
}

async fn zitadel(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    BodyBytes(body): Body,
) -> Result<Response, SsoError> {
    verify(
        &sso,
        &headers,
        "zitadel-signature",
        &sso.zitadel_secrets,
        &body,
    )?;
    let event = webhooks::parse_zitadel(&body)
        .map_err(|m| SsoError::BadRequest(format!("invalid Zitadel event: {m}")))?;
    let issuer = sso.config.zitadel.issuer.as_str();
    let mut client = sso.db.client().await?;
    let tx = client
        .transaction()
        .await
        .context("starting a webhook transaction")?;
    if !db::record_event(&tx, "zitadel", &event.id, &event.kind).await? {
        tracing::info!(event = %event.id, "duplicate Zitadel event ignored");
        return Ok(received(true, "none"));
    }
    let effect = match event.effect {
        UserEffect::None => "none",
        UserEffect::Disable | UserEffect::Enable => {
            let disable = event.effect == UserEffect::Disable;
            let tenants = db::set_disabled(&tx, issuer, &event.user_id, disable).await?;
            let mut revoked = false;
            if disable {
                let mappings = &sso.config.pocketbase.sso_mappings_collection;
                if let Some(m) = sso
                    .pb
                    .find_mapping(mappings, issuer, &event.user_id)
                    .await?
                {
                    revoked = sso.pb.revoke_tokens(&m.collection, &m.user_id).await?;
                }
            }
            let action = if disable {
                "sso.user.disable"
            } else {
                "sso.user.enable"
            };
            db::insert_audit(&tx, &Audit {
                actor: "zitadel", action, target: tenants.first().map_or("", String::as_str), result: "success",
                details: json!({"event": event.id, "type": event.kind, "subject": event.user_id, "tokensRevoked": revoked}),
            }).await?;
            if disable {
                "tokens_revoked"
            } else {
                "enabled"
            }
        }
    };
    tx.commit().await.context("committing a Zitadel event")?;
    Ok(received(false, effect))
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(sso): State<Arc<Sso>>) -> Result<Response, SsoError> {
    let (pg, pb) = tokio::join!(sso.db.ping(READY_TIMEOUT), sso.pb.healthy(READY_TIMEOUT));
    let failed: Vec<&str> = [("postgres", pg.is_err()), ("pocketbase", pb.is_err())]
        .iter()
        .filter(|(_, f)| *f)
        .map(|(n, _)| *n)
        .collect();
    if let Err(e) = &pg {
        tracing::warn!(error = %format!("{e:#}"), "postgres not ready");
    }
    if let Err(e) = &pb {
        tracing::warn!(error = %format!("{e:#}"), "pocketbase not ready");
    }
    if failed.is_empty() {
        Ok((
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": {"postgres": "ok", "pocketbase": "ok"}})),
        )
            .into_response())
    } else {
        Err(SsoError::NotReady(failed.join(", ")))
    }
}
