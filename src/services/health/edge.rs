//! The HTTP edge of the health service (axum): `GET /health`, `GET /ready`, the JSON error
//! format for everything else, request ids and one structured log line per request.
//!
//! Errors: handlers return [`ApiError`]; the request middleware is the ONE place that renders
//! it as `{"error": {"code", "message", "requestId"}}` (it knows the request id). Until the
//! shared `services::http` module lands, the error type, request ids and the request log live
//! here; they are deliberately small so swapping them is a few lines.
//!
//! Not here: checking dependencies (see [`super::readiness`]).

use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tracing::Instrument;

use super::readiness::{Readiness, Status};

/// The header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// `GET /health` and `GET /ready` over `readiness`, with no fallback and no middleware: for a
/// service (such as `kombify-sso`) that merges them into its own router.
pub fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(readiness)
}

/// The whole `kombify-health` application: [`routes`], JSON 404/405 and the request middleware.
pub fn app(readiness: Readiness) -> Router {
    routes(readiness)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_context))
}

/// `{"status": "up"}`: the process is alive and serving. No IO.
async fn health() -> Response {
    no_store(Json(serde_json::json!({"status": "up"})).into_response())
}

/// The readiness report; 200 when every critical check is up, 503 otherwise. The 503 body is
/// the report too (which check is down and why), not the error format: it is not an error of
/// this request.
async fn ready(State(readiness): State<Readiness>) -> Response {
    let report = readiness.status().await;
    let code = match report.status {
        Status::Up => StatusCode::OK,
        Status::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    no_store((code, Json(report)).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method not allowed for this endpoint",
    )
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error answer: a status, a stable kebab-case code and a public message. Internal detail
/// belongs in the log, never here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `not-found`.
    pub code: &'static str,
    /// Message for the caller.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    /// The status, with the error in an extension: [`request_context`] writes the body once it
    /// is known which request this is.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Gives every request an id (the caller's `x-request-id` if it is sane, else a new one),
/// runs it in a span carrying the id, renders [`ApiError`]s, echoes the id and logs one line.
async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map_or_else(new_request_id, str::to_string);
    let method = req.method().clone();
    // The path only: a query string may carry tokens.
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Some(err) = response.extensions_mut().remove::<ApiError>() {
        response = error_response(&err, &id);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let latency_ms = (start.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
    tracing::info!(
        request_id = %id,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        latency_ms,
        "request"
    );
    response
}

fn error_response(err: &ApiError, request_id: &str) -> Response {
    let body = ErrorBody {
        error: ErrorFields {
            code: err.code,
            message: &err.message,
            request_id,
        },
    };
    (err.status, Json(body)).into_response()
}

/// 1–64 characters of `[A-Za-z0-9._-]`: safe to echo and to log.
fn is_sane_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new request id: 16 hex digits from std's per-process random hasher keys (an id to
/// correlate logs, not a secret).
fn new_request_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked_and_generated_distinct() {
        assert!(is_sane_request_id("abc-123_X.y"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("a b"));
        assert!(!is_sane_request_id("a\nb"));
        assert!(!is_sane_request_id(&"a".repeat(65)));
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 16);
        assert!(is_sane_request_id(&a));
        assert_ne!(a, b);
    }
}
