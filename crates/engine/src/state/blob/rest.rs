//! Blob Storage's REST API, the few operations the state backend needs: get, put (block and
//! append blobs), append a block at a given position, set metadata, read properties, lease
//! (acquire, renew, release, break) and create the container.
//!
//! Every request carries a bearer token of the Azure credential chain (scope
//! `https://storage.azure.com/.default`), `x-ms-version` and `x-ms-date`; 408, 429, 500, 502,
//! 503 and 504 and lost connections are retried with a backoff, after `Retry-After` when the
//! service sends one; a refused token is renewed once. The caller sees every other answer,
//! its status and Blob Storage's error code (`x-ms-error-code`). Token values never reach an
//! error or a log.
//!
//! Not here: what the blobs hold or what a conditional failure means (`blob.rs` decides).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use reqwest::Method;

use kombiform_azure::TokenSource;

/// The service version sent: one Azurite and Blob Storage both speak, with bearer tokens.
const VERSION: &str = "2023-11-03";

/// Attempts per request (the first and the retries).
const ATTEMPTS: u32 = 5;

/// The first backoff; it doubles per retry.
const BACKOFF: Duration = Duration::from_millis(200);

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A Blob Storage container, reached with bearer tokens.
pub(crate) struct Rest {
    http: Client,
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER` (no trailing slash).
    container_url: String,
    tokens: TokenSource,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("container_url", &self.container_url)
            .finish_non_exhaustive()
    }
}

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// The request was sent more than once (an earlier attempt may have taken effect).
    pub(crate) retried: bool,
}

impl Answer {
    /// A header's value, if present and text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Blob Storage's error code (`BlobNotFound`, `LeaseAlreadyPresent`…).
    pub(crate) fn code(&self) -> &str {
        self.header("x-ms-error-code").unwrap_or("")
    }

    /// The entity tag.
    pub(crate) fn etag(&self) -> Option<String> {
        self.header("etag").map(str::to_string)
    }

    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `what` failed: status, code and Blob Storage's message.
    pub(crate) fn error(&self, what: &str) -> anyhow::Error {
        let text = String::from_utf8_lossy(&self.body);
        let message = between(&text, "<Message>", "</Message>")
            .map(|m| m.lines().next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let code = self.code();
        let hint = match (self.status, code) {
            (403, _) => {
                "; the principal needs the role `Storage Blob Data Contributor` on the storage \
                 account or container"
            }
            (404, "ContainerNotFound") => "; create the container, or fix `state.container`",
            _ => "",
        };
        anyhow::anyhow!(
            "{what}: Blob Storage answered {}{}{}{hint}",
            self.status,
            if code.is_empty() {
                String::new()
            } else {
                format!(" {code}")
            },
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            },
        )
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// One request: a blob (or the container, `blob: None`), query, headers and body.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) blob: Option<&'a str>,
    pub(crate) query: &'a [(&'a str, &'a str)],
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(method: Method, blob: &'a str) -> Call<'a> {
        Call {
            method,
            blob: Some(blob),
            query: &[],
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn query(mut self, query: &'a [(&'a str, &'a str)]) -> Call<'a> {
        self.query = query;
        self
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Vec<u8>) -> Call<'a> {
        self.body = body;
        self
    }
}

impl Rest {
    /// A client of `container_url`, trusting the platform's roots or exactly `ca_pem`.
    pub(crate) fn new(
        container_url: String,
        tokens: TokenSource,
        ca_pem: Option<&[u8]>,
    ) -> Result<Rest> {
        let tls = match ca_pem {
            Some(pem) => kombiform_sys::tls::client_config_with_roots(pem)?,
            None => kombiform_sys::tls::client_config()?,
        };
        let http = Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(20))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("kombiform/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the Blob Storage HTTP client")?;
        Ok(Rest {
            http,
            container_url,
            tokens,
        })
    }

    /// The container's URL.
    pub(crate) fn container_url(&self) -> &str {
        &self.container_url
    }

    /// Sends `call`, retrying what is worth retrying; every answer the retries do not absorb
    /// is returned, success or not.
    pub(crate) fn send(&self, call: &Call<'_>) -> Result<Answer> {
        let url = match call.blob {
            Some(blob) => format!("{}/{}", self.container_url, blob),
            None => self.container_url.clone(),
        };
        let what = || format!("{} {url}", call.method);
        let mut renewed_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self
                .tokens
                .bearer()
                .map_err(|e| anyhow::anyhow!("getting a Blob Storage token: {e}"))?;
            let mut req = self
                .http
                .request(call.method.clone(), &url)
                .query(call.query)
                .header("authorization", format!("Bearer {}", token.secret()))
                .header("x-ms-version", VERSION)
                .header("x-ms-date", http_date(unix_now()))
                .header("content-length", call.body.len().to_string());
            for (k, v) in &call.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if !call.body.is_empty() || call.method == Method::PUT {
                req = req.body(call.body.clone());
            }
            let retried = attempt > 1;
            let wait = match req.send() {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = match resp.bytes() {
                        Ok(b) => b.to_vec(),
                        Err(e) if attempt < ATTEMPTS => {
                            tracing::warn!("{}: reading the answer failed ({e}); retrying", what());
                            std::thread::sleep(backoff(attempt, None));
                            continue;
                        }
                        Err(e) => return Err(e).with_context(what),
                    };
                    let answer = Answer {
                        status,
                        headers,
                        body,
                        retried,
                    };
                    if status == 401 && !renewed_token {
                        renewed_token = true;
                        self.tokens.invalidate();
                        continue;
                    }
                    if !retryable(status) || attempt >= ATTEMPTS {
                        return Ok(answer);
                    }
                    backoff(attempt, retry_after(&answer))
                }
                Err(e) if attempt < ATTEMPTS && !e.is_builder() => {
                    tracing::warn!("{}: {e}; retrying", what());
                    backoff(attempt, None)
                }
                Err(e) => return Err(e).with_context(what),
            };
            std::thread::sleep(wait);
        }
    }

    /// Sends `call` and fails unless the answer is a success.
    pub(crate) fn send_ok(&self, call: &Call<'_>, what: &str) -> Result<Answer> {
        let answer = self.send(call)?;
        if !answer.ok() {
            return Err(answer.error(what));
        }
        Ok(answer)
    }

    /// The blob's content and entity tag; `None` if it (or its container) does not exist.
    pub(crate) fn get(&self, blob: &str) -> Result<Option<(Vec<u8>, String)>> {
        let answer = self.send(&Call::new(Method::GET, blob))?;
        // A container not created yet (by the first lock) holds no blob either.
        if answer.status == 404 && matches!(answer.code(), "BlobNotFound" | "ContainerNotFound") {
            return Ok(None);
        }
        if !answer.ok() {
            return Err(answer.error(&format!("reading blob {blob}")));
        }
        let etag = answer.etag().unwrap_or_default();
        Ok(Some((answer.body, etag)))
    }

    /// Creates the container (an existing one is fine).
    pub(crate) fn create_container(&self) -> Result<()> {
        let call = Call {
            method: Method::PUT,
            blob: None,
            query: &[("restype", "container")],
            headers: Vec::new(),
            body: Vec::new(),
        };
        let answer = self.send(&call)?;
        if answer.ok() || answer.code() == "ContainerAlreadyExists" {
            return Ok(());
        }
        Err(answer.error(&format!("creating the container {}", self.container_url)))
    }
}

fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn retry_after(answer: &Answer) -> Option<Duration> {
    let secs: u64 = answer.header("retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

fn backoff(attempt: u32, asked: Option<Duration>) -> Duration {
    asked.unwrap_or(BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1)))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HTTP date (RFC 7231 IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDTHH:MM:SSZ`, from the one date formatter of the workspace.
    let iso = kombiform_sys::rfc3339(unix_secs);
    let month: usize = iso.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let weekday = DAYS[((unix_secs / 86_400) % 7) as usize];
    format!(
        "{weekday}, {} {} {} {} GMT",
        iso.get(8..10).unwrap_or("01"),
        MONTHS[month.clamp(1, 12) - 1],
        iso.get(0..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00"),
    )
}

/// Metadata values travel as HTTP headers: ASCII printable, without `%`; anything else is
/// percent-encoded (UTF-8).
pub(crate) fn meta_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`meta_encode`].
pub(crate) fn meta_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Fails unless `answer` is a success (for calls whose failure has no special meaning).
pub(crate) fn expect_ok(answer: Answer, what: &str) -> Result<Answer> {
    if !answer.ok() {
        bail!(answer.error(what));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_709_251_200), "Fri, 01 Mar 2024 00:00:00 GMT");
    }

    #[test]
    fn metadata_values_round_trip() {
        for v in ["plain text", "100% sure", "Zoë über", "a\nb", ""] {
            let e = meta_encode(v);
            assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
            assert_eq!(meta_decode(&e), v);
        }
        assert_eq!(meta_encode("kombiform apply"), "kombiform apply");
        assert_eq!(meta_decode("broken %G1 tail %"), "broken %G1 tail %");
    }
}
