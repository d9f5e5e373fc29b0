//! The SSO service's domain errors and their ONE mapping to HTTP ([`ApiError`]): the reason or
//! cause is logged here with the request id, the body only carries a fixed code and message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::ApiError;

/// What went wrong, in domain terms.
#[derive(Debug)]
pub enum SsoError {
    /// Missing, malformed or invalid credentials (reason logged, never shown).
    Unauthorized(&'static str),
    /// A bearer-token request that is malformed in a way RFC 6750 §3.1 calls `invalid_request`
    /// (e.g. the token sent in more than one place); 400, reason logged.
    InvalidRequest(&'static str),
    /// The token's organization has no tenant, or the tenant is suspended (same body for both).
    TenantForbidden(&'static str),
    /// The Zitadel user was deactivated, locked or removed.
    UserDisabled,
    /// The tenant has no free user seat.
    QuotaExceeded,
    /// Zitadel's userinfo has no e-mail address for a first login.
    EmailRequired,
    /// Another user of the tenant has this e-mail address.
    EmailTaken,
    /// A user record kombify-sso did not create for this subject already holds it: it is
    /// never adopted, an operator must resolve it.
    SubjectConflict,
    /// A malformed request (safe message).
    BadRequest(String),
    /// A webhook signature did not verify (reason logged).
    BadSignature(&'static str),
    /// Unknown resource.
    NotFound,
    /// A dependency failed or timed out (cause logged).
    Unavailable(anyhow::Error),
    /// `/ready`: these dependencies failed their check (names only).
    NotReady(String),
    /// A bug or unexpected state (cause logged).
    Internal(anyhow::Error),
}

impl SsoError {
    fn to_api(&self) -> ApiError {
        match self {
            SsoError::Unauthorized(_) => ApiError::unauthorized(),
            SsoError::InvalidRequest(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "send the token in exactly one place: the Authorization header or the body",
            ),
            SsoError::TenantForbidden(_) => {
                ApiError::forbidden("tenant_forbidden", "no active tenant for this organization")
            }
            SsoError::UserDisabled => ApiError::forbidden("user_disabled", "this user is disabled"),
            SsoError::QuotaExceeded => {
                ApiError::forbidden("quota_exceeded", "the tenant has no free user seat")
            }
            SsoError::EmailRequired => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "email_required",
                "the identity provider returned no e-mail address",
            ),
            SsoError::EmailTaken => ApiError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "another user of this tenant has this e-mail address",
            ),
            SsoError::SubjectConflict => ApiError::new(
                StatusCode::CONFLICT,
                "subject_conflict",
                "another user record of this tenant claims this identity",
            ),
            SsoError::BadRequest(m) => ApiError::bad_request(m.clone()),
            SsoError::BadSignature(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_signature",
                "the webhook signature is invalid",
            ),
            SsoError::NotFound => ApiError::not_found(),
            SsoError::Unavailable(_) => ApiError::unavailable(),
            SsoError::NotReady(which) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("not ready: {which}"),
            ),
            SsoError::Internal(_) => ApiError::internal(),
        }
    }
}

impl From<anyhow::Error> for SsoError {
    fn from(e: anyhow::Error) -> SsoError {
        SsoError::Unavailable(e)
    }
}

impl IntoResponse for SsoError {
    fn into_response(self) -> Response {
        match &self {
            SsoError::Unauthorized(r) => tracing::info!(reason = r, "unauthorized"),
            SsoError::InvalidRequest(r) => tracing::info!(reason = r, "invalid request"),
            SsoError::TenantForbidden(r) => tracing::info!(reason = r, "tenant forbidden"),
            SsoError::BadSignature(r) => tracing::warn!(reason = r, "webhook signature refused"),
            SsoError::SubjectConflict => {
                tracing::warn!("a user record not linked by a mapping holds the subject")
            }
            SsoError::Unavailable(e) => {
                tracing::error!(error = %format!("{e:#}"), "dependency failed")
            }
            SsoError::Internal(e) => tracing::error!(error = %format!("{e:#}"), "internal error"),
            other => tracing::info!(error = ?other, "request refused"),
        }
        let api = self.to_api();
        let mut response = api.into_response();
        let challenge = match self {
            SsoError::Unauthorized(_) => Some("Bearer"),
            SsoError::InvalidRequest(_) => Some(r#"Bearer error="invalid_request""#),
            _ => None,
        };
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static(c));
        }
        response
    }
}
