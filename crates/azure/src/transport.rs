//! azure_identity's HTTP transport: its token requests go through the client's own reqwest
//! client (one HTTP stack, one TLS configuration, one crypto provider), counted apart from
//! ARM requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::error::{Error, ErrorKind};
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Method, Request};

/// An `azure_core` HTTP client on a reqwest client.
#[derive(Debug)]
pub(crate) struct IdentityTransport {
    http: reqwest::Client,
    token_requests: Arc<AtomicU64>,
}

impl IdentityTransport {
    pub(crate) fn new(http: reqwest::Client, token_requests: Arc<AtomicU64>) -> Self {
        Self {
            http,
            token_requests,
        }
    }
}

fn method(method: Method) -> azure_core::Result<reqwest::Method> {
    Ok(match method {
        Method::Delete => reqwest::Method::DELETE,
        Method::Get => reqwest::Method::GET,
        Method::Head => reqwest::Method::HEAD,
        Method::Patch => reqwest::Method::PATCH,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        other => {
            return Err(Error::with_message(
                ErrorKind::Other,
                format!("the HTTP method {other:?} is not supported by kombiform's transport"),
            ))
        }
    })
}

fn headers(map: &reqwest::header::HeaderMap) -> Headers {
    let map: HashMap<HeaderName, HeaderValue> = map
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some((
                HeaderName::from(name.as_str().to_owned()),
                HeaderValue::from(value.to_owned()),
            ))
        })
        .collect();
    Headers::from(map)
}

#[async_trait]
impl HttpClient for IdentityTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut builder = self
            .http
            .request(method(request.method())?, request.url().clone());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let builder = match request.body() {
            Body::Bytes(bytes) => builder.body(bytes.to_vec()),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by kombiform's transport",
                ))
            }
        };
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let response = builder.send().await.map_err(|err| {
            let kind = if err.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            Error::with_error(kind, err.without_url(), "sending a token request")
        })?;
        let status = response.status().as_u16();
        let headers = headers(response.headers());
        let body = response.bytes().await.map_err(|err| {
            Error::with_error(ErrorKind::Io, err.without_url(), "reading a token response")
        })?;
        Ok(AsyncRawResponse::from_bytes(status.into(), headers, body))
    }
}
