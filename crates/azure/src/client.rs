//! The ARM client: one request to ARM, with its budget, its token, its retries and its
//! counting. The operations callers use (`get`, `list`, `put_and_wait`, `delete_and_wait`,
//! `post_and_wait`) are in `lro.rs`, on top of [`Arm::send`].
//!
//! Retries: 429 always (ARM did not process the request), 408 and 5xx and lost connections
//! for idempotent methods (everything but POST), each after the server's `retry-after-ms`,
//! `x-ms-retry-after-ms` or `Retry-After`, else after an exponential backoff with jitter; a
//! 401 once, with a new token. Every attempt takes a token from the budget first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::budget::{Budget, Limits, OperationClass};
use crate::clock::{Clock, SystemClock};
use crate::config::ArmConfig;
use crate::credential::Tokens;
use crate::error::{ArmError, ErrorDetail};
use crate::transport::IdentityTransport;

/// How long one request may take before it counts as lost (ARM itself gives up on a resource
/// provider after 60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Retries and polling.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included, before a 429, 5xx or lost connection is
    /// returned as an error.
    pub max_attempts: u32,
    /// The first backoff when the server names no delay; doubled per attempt.
    pub initial_backoff: Duration,
    /// The longest backoff, and the longest poll interval the client accepts from a server.
    pub max_backoff: Duration,
    /// The poll interval when a long-running operation's answers carry no `Retry-After`.
    pub default_poll_interval: Duration,
    /// How long a long-running operation may take before the client stops polling.
    pub operation_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 16,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            default_poll_interval: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(3 * 3600),
        }
    }
}

/// How the client behaves, apart from where it connects ([`ArmConfig`]).
#[derive(Clone, Debug)]
pub struct ArmOptions {
    /// The clock of budgets, backoff and polling (tests compress time with
    /// [`crate::ScaledClock`]).
    pub clock: Arc<dyn Clock>,
    /// The client-side budget.
    pub limits: Limits,
    /// Retries and polling.
    pub retry: RetryPolicy,
    /// PEM certificates trusted in addition to the system's (a test server's own CA).
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl Default for ArmOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock::new()),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            extra_root_certificates: Vec::new(),
        }
    }
}

/// Requests sent so far (every attempt and every poll counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GET and HEAD requests to ARM.
    pub reads: u64,
    /// PUT, PATCH and POST requests to ARM.
    pub writes: u64,
    /// DELETE requests to ARM.
    pub deletes: u64,
    /// Attempts that repeated an earlier one.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// 408 and 5xx answers, and lost connections.
    pub failed_attempts: u64,
    /// Requests to the token endpoint (not ARM requests).
    pub token_requests: u64,
}

impl RequestCounts {
    /// Requests sent to ARM.
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.deletes
    }
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    deletes: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    failed_attempts: AtomicU64,
    token_requests: Arc<AtomicU64>,
}

impl Counters {
    fn sent(&self, class: OperationClass) {
        let counter = match class {
            OperationClass::Read => &self.reads,
            OperationClass::Write => &self.writes,
            OperationClass::Delete => &self.deletes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            reads: get(&self.reads),
            writes: get(&self.writes),
            deletes: get(&self.deletes),
            retries: get(&self.retries),
            throttled: get(&self.throttled),
            failed_attempts: get(&self.failed_attempts),
            token_requests: get(&self.token_requests),
        }
    }
}

/// An answer from ARM: status, headers and the body as read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The body as JSON; None when it is empty.
    pub(crate) fn json(&self, request: &str) -> Result<Option<Value>, ArmError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|err| ArmError::Protocol {
                request: request.to_owned(),
                message: format!("a {} answer whose body is not JSON: {err}", self.status),
            })
    }

    /// This reply as an error when its status is one.
    pub(crate) fn check(self, request: &str) -> Result<Self, ArmError> {
        if self.status < 400 {
            return Ok(self);
        }
        Err(ArmError::Api {
            request: request.to_owned(),
            status: self.status,
            error: ErrorDetail::from_response(self.status, &self.body),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The delay the server asks for: `retry-after-ms`, `x-ms-retry-after-ms`, then
    /// `Retry-After` (seconds; ARM never sends a date).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let millis = |name| {
            self.header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        millis("retry-after-ms")
            .or_else(|| millis("x-ms-retry-after-ms"))
            .or_else(|| {
                self.header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            })
    }

    /// A header holding a URL the client may poll, resolved against `base`.
    pub(crate) fn url_header(&self, name: &str) -> Option<&str> {
        self.header(name).filter(|v| !v.trim().is_empty())
    }
}

/// The Azure Resource Manager client. Cheap to clone; clones share the budget, the token cache
/// and the counts (one client is one principal).
#[derive(Clone, Debug)]
pub struct Arm {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    http: reqwest::Client,
    pub(crate) endpoint: Url,
    tokens: Tokens,
    budget: Budget,
    pub(crate) retry: RetryPolicy,
    pub(crate) clock: Arc<dyn Clock>,
    counters: Counters,
}

/// Installs ring as the process's rustls crypto provider, unless one is installed already
/// (the workspace's one provider; reqwest is built without its own).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl Arm {
    /// A client configured from the environment ([`ArmConfig::from_env`]), with default
    /// options.
    pub fn from_env() -> Result<Self, ArmError> {
        Self::new(ArmConfig::from_env()?, ArmOptions::default())
    }

    /// A client for `config`, behaving as `options` say.
    pub fn new(config: ArmConfig, options: ArmOptions) -> Result<Self, ArmError> {
        ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kombiform/", env!("CARGO_PKG_VERSION")));
        for pem in &options.extra_root_certificates {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|err| ArmError::Invalid(format!("an extra root certificate: {err}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|err| ArmError::Invalid(format!("building the HTTP client: {err}")))?;
        let counters = Counters::default();
        let transport = Arc::new(IdentityTransport::new(
            http.clone(),
            counters.token_requests.clone(),
        ));
        let authority = config.authority_host.as_ref().map(Url::as_str);
        let tokens = Tokens::new(&config.credentials, transport, authority)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoint: config.endpoint,
                tokens,
                budget: Budget::new(options.limits, options.clock.clone()),
                retry: options.retry,
                clock: options.clock,
                counters,
            }),
        })
    }

    /// The ARM endpoint this client talks to.
    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    /// Requests sent so far by this client and its clones.
    pub fn counts(&self) -> RequestCounts {
        self.inner.counters.snapshot()
    }

    /// The URL of `path` (a resource id or a collection path) at `api_version`.
    pub(crate) fn url(&self, path: &str, api_version: &str) -> Result<Url, ArmError> {
        check_path(path)?;
        check_api_version(api_version)?;
        let mut url = self.inner.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// A URL ARM handed out (`Azure-AsyncOperation`, `Location`, `nextLink`): absolute, or
    /// relative to the endpoint; refused when it points anywhere but the endpoint's origin,
    /// since the bearer token goes with it.
    pub(crate) fn followed_url(&self, request: &str, value: &str) -> Result<Url, ArmError> {
        let url = self
            .inner
            .endpoint
            .join(value.trim())
            .map_err(|err| ArmError::Protocol {
                request: request.to_owned(),
                message: format!("a URL to follow that is not one ({err})"),
            })?;
        let endpoint = &self.inner.endpoint;
        let same = url.scheme() == endpoint.scheme()
            && url.host_str().map(str::to_ascii_lowercase)
                == endpoint.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == endpoint.port_or_known_default();
        if !same {
            return Err(ArmError::Protocol {
                request: request.to_owned(),
                message: format!(
                    "ARM asked to follow {}://{}, which is not the endpoint {}; not sending the \
                     token there",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    endpoint.origin().ascii_serialization()
                ),
            });
        }
        Ok(url)
    }

    /// Sends one request (retrying as the module documentation says) and returns ARM's
    /// answer whatever its status; `request` names the caller's operation in errors.
    pub(crate) async fn send(
        &self,
        request: &str,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Reply, ArmError> {
        let inner = &self.inner;
        let class = OperationClass::of(&method);
        let scope = subscription_of(url.path()).to_owned();
        let idempotent = method != Method::POST;
        let mut attempt: u32 = 0;
        let mut renewed_token = false;
        loop {
            attempt += 1;
            if attempt > 1 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            inner.budget.acquire(&scope, class).await;
            let token = inner.tokens.bearer().await?;
            let mut builder = inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.secret())
                .header(ACCEPT, "application/json")
                .header("x-ms-client-request-id", kombiform_sys::random_id128());
            if let Some(body) = body {
                builder = builder.json(body);
            }
            inner.counters.sent(class);
            let outcome = match builder.send().await {
                Ok(response) => read(response).await,
                Err(err) => Err(err),
            };
            let last_attempt = attempt >= inner.retry.max_attempts;
            match outcome {
                Err(err) => {
                    inner
                        .counters
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%method, path = url.path(), attempt, "request lost: {}", describe(&err));
                    if last_attempt || !(idempotent || err.is_connect()) {
                        return Err(ArmError::Transport {
                            request: request.to_owned(),
                            message: format!("{} (after {attempt} attempts)", describe(&err)),
                        });
                    }
                    inner.clock.sleep(self.backoff(attempt)).await;
                }
                Ok(reply) => {
                    tracing::debug!(%method, path = url.path(), status = reply.status, attempt, "ARM answered");
                    self.observe_remaining(&scope, &reply.headers);
                    if reply.status == 401 && !renewed_token {
                        // A token revoked or expired early: ask for a new one, once.
                        renewed_token = true;
                        inner.tokens.invalidate().await;
                        continue;
                    }
                    let retry = match reply.status {
                        429 => {
                            inner.counters.throttled.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        408 | 500 | 502 | 503 | 504 => {
                            inner
                                .counters
                                .failed_attempts
                                .fetch_add(1, Ordering::Relaxed);
                            idempotent
                        }
                        _ => false,
                    };
                    if !retry || last_attempt {
                        return Ok(reply);
                    }
                    let wait = reply
                        .retry_after()
                        .map(|d| d.min(inner.retry.max_backoff))
                        .unwrap_or_else(|| self.backoff(attempt));
                    inner.clock.sleep(wait).await;
                }
            }
        }
    }

    /// The backoff before attempt `attempt + 1`: the initial backoff doubled per attempt,
    /// capped, times a random factor in [0.8, 1.2).
    fn backoff(&self, attempt: u32) -> Duration {
        let retry = &self.inner.retry;
        let doubled = retry
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = doubled.min(retry.max_backoff);
        let [byte] = kombiform_sys::random_bytes::<1>();
        capped.mul_f64(0.8 + 0.4 * f64::from(byte) / 256.0)
    }

    /// Lowers the budget to the remaining counts ARM reports.
    fn observe_remaining(&self, scope: &str, headers: &HeaderMap) {
        for class in [
            OperationClass::Read,
            OperationClass::Write,
            OperationClass::Delete,
        ] {
            let name = format!(
                "x-ms-ratelimit-remaining-subscription-{}",
                class.header_suffix()
            );
            let remaining = headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok());
            if let Some(remaining) = remaining {
                self.inner.budget.observe(scope, class, remaining);
            }
        }
    }
}

async fn read(response: reqwest::Response) -> Result<Reply, reqwest::Error> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    Ok(Reply {
        status: status_code(status),
        headers,
        body,
    })
}

fn status_code(status: StatusCode) -> u16 {
    status.as_u16()
}

/// A transport error with its causes, without the URL.
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The subscription id of an ARM path (`/subscriptions/{id}/…`), or "" for tenant-level paths.
pub(crate) fn subscription_of(path: &str) -> &str {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some(first), Some(id)) if first.eq_ignore_ascii_case("subscriptions") => id,
        _ => "",
    }
}

/// A resource id or collection path: absolute, no query, no fragment, no empty or dot
/// segments, no whitespace or control characters.
fn check_path(path: &str) -> Result<(), ArmError> {
    let bad = |why: &str| {
        Err(ArmError::Invalid(format!(
            "{path:?} is not an ARM path: {why}"
        )))
    };
    if !path.starts_with('/') {
        return bad("it must start with /");
    }
    if path.contains(['?', '#']) {
        return bad("it must not carry a query or fragment");
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it must not contain whitespace or control characters");
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return bad("it has an empty, . or .. segment");
    }
    Ok(())
}

/// `YYYY-MM-DD`, optionally followed by `-preview` (or another lower-case suffix).
fn check_api_version(version: &str) -> Result<(), ArmError> {
    let bytes = version.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    let rest = &version[version.len().min(10)..];
    let suffix_ok = rest.is_empty()
        || (rest.len() > 1
            && rest.starts_with('-')
            && rest[1..].bytes().all(|b| b.is_ascii_lowercase()));
    if date_ok && suffix_ok {
        Ok(())
    } else {
        Err(ArmError::Invalid(format!(
            "{version:?} is not an ARM api-version (YYYY-MM-DD or YYYY-MM-DD-preview)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_read_from_paths() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/rg"),
            "abc"
        );
        assert_eq!(subscription_of("/SUBSCRIPTIONS/abc"), "abc");
        assert_eq!(subscription_of("/providers/Microsoft.Resources"), "");
        assert_eq!(subscription_of("/tenant/oauth2/v2.0/token"), "");
    }

    #[test]
    fn paths_and_api_versions_are_checked() {
        assert!(check_path("/subscriptions/s/resourceGroups/rg").is_ok());
        assert!(check_path("subscriptions/s").is_err());
        assert!(check_path("/subscriptions/s?api-version=x").is_err());
        assert!(check_path("/subscriptions//x").is_err());
        assert!(check_path("/subscriptions/../x").is_err());
        assert!(check_path("/subscriptions/a b").is_err());
        assert!(check_api_version("2025-07-01").is_ok());
        assert!(check_api_version("2022-06-01-preview").is_ok());
        assert!(check_api_version("2025-7-01").is_err());
        assert!(check_api_version("2025-07-01-").is_err());
        assert!(check_api_version("").is_err());
    }

    fn reply(headers: &[(&str, &str)]) -> Reply {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Reply {
            status: 429,
            headers: map,
            body: Vec::new(),
        }
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds() {
        assert_eq!(
            reply(&[("retry-after", "17")]).retry_after(),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            reply(&[("retry-after", "17"), ("retry-after-ms", "250")]).retry_after(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            reply(&[("x-ms-retry-after-ms", "40")]).retry_after(),
            Some(Duration::from_millis(40))
        );
        assert_eq!(
            reply(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]).retry_after(),
            None
        );
    }
}
