//! The HTTP edge of the health service (axum): `GET /health` and `GET /ready`. The JSON error
//! format, request ids and the request log come from [`crate::http`].
//!
//! Not here: checking dependencies (see [`super::readiness`]).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::readiness::{Readiness, Status};
use crate::http::{self, Rendered};

/// `GET /health` and `GET /ready` over `readiness`, with no fallback and no middleware: for a
/// service (such as `kombify-sso`) that merges them into its own router.
pub fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(readiness)
}

/// The whole `kombify-health` application: [`routes`] with the shared edge (JSON 404 and 405
/// in the error format, request ids, one log line per request).
pub fn app(readiness: Readiness) -> Router {
    http::with_common_layers(routes(readiness))
}

/// `{"status": "up"}`: the process is alive and serving. No IO.
async fn health() -> Response {
    no_store(Json(serde_json::json!({"status": "up"})).into_response())
}

/// The readiness report; 200 when every critical check is up, 503 otherwise. The 503 body is
/// the report too (which check is down and why), not the error format: it is not an error of
/// this request, so it is marked [`Rendered`] for the shared middleware to leave alone.
async fn ready(State(readiness): State<Readiness>) -> Response {
    let report = readiness.status().await;
    let code = match report.status {
        Status::Up => StatusCode::OK,
        Status::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = no_store((code, Json(report)).into_response());
    response.extensions_mut().insert(Rendered);
    response
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
