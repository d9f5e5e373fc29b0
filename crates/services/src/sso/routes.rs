//! The HTTP edge of `kombify-sso`: routes, request parsing (raw bodies with size caps, the
//! bearer token), internal authentication, and response headers. Domain work is delegated to
//! [`super::exchange`], [`super::flags`], [`super::webhooks`] and [`super::db`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::db::{self, ApplyError, Audit};
use super::error::SsoError;
use super::flags::{self, FlagsPayload};
use super::token::MAX_TOKEN_BYTES;
use super::webhooks::{self, UserEffect, MAX_BODY_BYTES};
use super::{exchange, Sso};
use crate::http::with_common_layers;

/// The largest `Authorization` header accepted, in bytes ("Bearer " + token).
pub const MAX_AUTHORIZATION_BYTES: usize = MAX_TOKEN_BYTES + 7;

/// Timeout of each dependency check of `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The service's router, with the shared edge (request ids, JSON errors).
pub fn router(sso: Arc<Sso>) -> Router {
    let api = Router::new()
        .route("/api/internal/sso/exchange", post(exchange_handler))
        .route("/api/internal/feature-flags/apply", post(apply_flags))
        .route("/api/internal/feature-flags/{tenant}", get(tenant_flags))
        .route("/api/webhooks/stripe", post(stripe))
        .route("/api/webhooks/zitadel", post(zitadel))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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

async fn exchange_handler(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SsoError> {
    let from_body: String;
    let token = match bearer(&headers)? {
        Some(t) => t,
        None => {
            if body.len() > MAX_TOKEN_BYTES + 64 {
                return Err(SsoError::Unauthorized("body token too large"));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| SsoError::Unauthorized("no token"))?;
            from_body = v
                .get("token")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or(SsoError::Unauthorized("no token"))?;
            &from_body
        }
    };
    let out = exchange::exchange(&sso, token).await?;
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

/// Internal callers present `Authorization: Bearer <internal token>`; compared in constant time
/// (over SHA-256 digests, so the length does not leak either).
fn internal_auth(sso: &Sso, headers: &HeaderMap) -> Result<(), SsoError> {
    let given = bearer(headers)?.ok_or(SsoError::Unauthorized("no internal token"))?;
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(sso.internal_token.expose().as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(SsoError::Unauthorized("wrong internal token"))
    }
}

async fn apply_flags(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SsoError> {
    internal_auth(&sso, &headers)?;
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
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, SsoError> {
    internal_auth(&sso, &headers)?;
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
    body: Bytes,
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
    body: Bytes,
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
