//! The HTTP edge shared by `kombify-sso` and `kombify-health`: the one JSON error format, the
//! request-id middleware, the request-body extractor (size limit and timeout), JSON logging
//! setup, and secret resolution from a [`SecretRef`].
//!
//! Error format (every error response of every service, LOW-001):
//! `{"error": {"code": "kebab_or_snake_code", "message": "human text", "requestId": "…"}}`.
//! Bodies never carry internal detail; that goes to the logs, tagged with the same request id.
//! Errors raised before a request reaches the router (malformed or oversized heads, slow
//! clients) are answered in the same format by the connection layer ([`crate::server`]).
//!
//! Not here: any service's routes or domain logic, the server itself ([`crate::server`]).

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tracing::Instrument;

use http_body_util::BodyExt;
use kombiform_model::secret::{self, Secret, SecretError};
use kombiform_model::SecretRef;

use crate::server::Limits;

/// The request-id header, accepted from the caller when well formed and always echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest caller-supplied request id that is accepted (longer ones are replaced).
pub const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id (inside [`request_id_middleware`]), else `"-"`.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_string())
}

/// A domain-agnostic HTTP error: status, a stable machine-readable `code` and a safe message.
///
/// The message is shown to the caller: never put internal detail (SQL, upstream bodies, tokens)
/// in it; log that separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `unauthorized`, `quota_exceeded`.
    pub code: &'static str,
    /// Safe, human-readable message.
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and safe message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized` with one fixed message (no oracle about why).
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials",
        )
    }

    /// 403 with a code.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the requested resource was not found",
        )
    }

    /// 500 `internal`: the detail is logged by the caller, never shown.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// 503 `unavailable`: a dependency did not answer.
    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a dependency is unavailable, try again later",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// Marks a response whose body is final, so the middleware leaves it whatever its status: an
/// error already in the error format, or a report that is the body of a 503 (`/ready`).
#[derive(Clone, Copy, Debug)]
pub struct Rendered;

/// The error body `{"error": {"code", "message", "requestId"}}`.
pub fn error_body(code: &str, message: &str, request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "error": { "code": code, "message": message, "requestId": request_id }
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.code, &self.message, &current_request_id());
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(Rendered);
        response
    }
}

/// The generic error for a status produced outside our handlers (axum's 404/405/413/415, a
/// rejected extractor): same format, a code derived from the status.
fn generic_error(status: StatusCode) -> ApiError {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "the requested resource was not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body too large"),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request did not arrive in time"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "expected a JSON request body")
        }
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            ("bad_request", "malformed request")
        }
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("error", "request failed"),
    };
    ApiError::new(status, code, message)
}

/// A well-formed caller request id (1..=128 of `[A-Za-z0-9._:-]`), else a fresh random one.
pub fn request_id_from(header: Option<&HeaderValue>) -> String {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_REQUEST_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    match header.and_then(|v| v.to_str().ok()) {
        Some(s) if valid(s) => s.to_string(),
        _ => new_request_id(),
    }
}

/// A fresh random request id: 32 lowercase hex characters.
pub fn new_request_id() -> String {
    kombiform_sys::random_id128()
}

/// Middleware: takes or makes the request id, runs the request inside a tracing span and the
/// task-local id (so [`ApiError`] bodies carry it), echoes `X-Request-ID`, rewrites any error
/// response not already in the error format, and logs one line per request.
pub async fn request_id_middleware(mut req: Request, next: Next) -> Response {
    let id = request_id_from(req.headers().get(REQUEST_ID_HEADER));
    let header_value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"));
    req.headers_mut().insert(
        HeaderName::from_static(REQUEST_ID_HEADER),
        header_value.clone(),
    );
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The connection layer does not follow chunked bodies: such a connection serves one request.
    let chunked = req.headers().contains_key(TRANSFER_ENCODING);
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let started = Instant::now();
    let fut = REQUEST_ID.scope(id.clone(), next.run(req));
    let mut response = fut.instrument(span.clone()).await;
    if response.status().as_u16() >= 400 && response.extensions().get::<Rendered>().is_none() {
        let err = generic_error(response.status());
        let body = error_body(err.code, &err.message, &id);
        let keep = response.headers().clone();
        response = (err.status, axum::Json(body)).into_response();
        for (name, value) in keep.iter() {
            if name != CONTENT_TYPE && name != CONTENT_LENGTH {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    response
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID_HEADER), header_value);
    if chunked {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::info!(status, elapsed_ms, "request"));
    response
}

/// A request body of at most `MAX` bytes, read within the server's body timeout
/// ([`Limits::body_timeout`]): 413 when larger (by `Content-Length` before reading, or while
/// reading), 408 when it does not arrive in time, 400 when it cannot be read.
#[derive(Clone, Debug)]
pub struct BodyBytes<const MAX: usize>(pub Bytes);

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for BodyBytes<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<BodyBytes<MAX>, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            )
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX as u64) {
            return Err(too_large());
        }
        let timeout = req
            .extensions()
            .get::<Limits>()
            .map_or(Limits::default().body_timeout, |l| l.body_timeout);
        let body = http_body_util::Limited::new(req.into_body(), MAX);
        match tokio::time::timeout(timeout, body.collect()).await {
            Ok(Ok(collected)) => Ok(BodyBytes(collected.to_bytes())),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )),
        }
    }
}

/// Adds the shared edge to a service's router: a JSON 404 fallback and the request-id
/// middleware (outermost, so it sees every response).
pub fn with_common_layers(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn(request_id_middleware))
}

/// Installs a JSON `tracing` subscriber on stderr; the filter comes from `RUST_LOG`
/// (default `info`). Safe to call more than once (later calls do nothing).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM, for `axum::serve(..).with_graceful_shutdown(..)`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Resolves a secret from the process environment with the workspace's one rule
/// ([`kombiform_model::secret`]); every secret the services use must be non-empty except the
/// PostgreSQL password (see [`resolve_secret_allow_empty`]).
pub fn resolve_secret(reference: &SecretRef) -> Result<Secret, SecretError> {
    secret::resolve_non_empty(reference, env_lookup)
}

/// Like [`resolve_secret`], for a secret that may be empty (a PostgreSQL password under
/// trust authentication): the same rule as `kombiform plan` and `apply`.
pub fn resolve_secret_allow_empty(reference: &SecretRef) -> Result<Secret, SecretError> {
    secret::resolve(reference, env_lookup)
}

/// The process environment as a secret lookup.
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A JSON response with a status (for handlers that build success bodies by hand).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_lists_split_for_rotations() {
        let s = Secret::new(" new , old,,");
        let list: Vec<String> = s.list().iter().map(|s| s.expose().to_string()).collect();
        assert_eq!(list, ["new", "old"]);
    }

    #[test]
    fn request_ids_are_taken_when_well_formed() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id_from(Some(&ok)), "abc-123_x.y:z");
        let bad = HeaderValue::from_static("has space");
        let generated = request_id_from(Some(&bad));
        assert_eq!(generated.len(), 32);
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_ne!(request_id_from(Some(&long)), "a".repeat(129));
    }

    #[test]
    fn error_body_has_the_one_format() {
        let v = error_body("quota_exceeded", "no seat", "rid");
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "quota_exceeded", "message": "no seat", "requestId": "rid"}})
        );
    }
}
