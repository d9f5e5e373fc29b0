//! A request as the ARM logic sees it (body read, base URL known) and the answer it gives,
//! with ARM's error body and a few value makers (GUIDs, times).

use hyper::header::HeaderMap;
use hyper::Method;
use serde_json::{json, Value};

/// One request.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) method: Method,
    /// The URL path, as sent (percent-encoded).
    pub(crate) path: String,
    /// The query parameters, decoded.
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// `scheme://host[:port]` as the client addressed the stand-in.
    pub(crate) base: String,
}

impl Req {
    /// A query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The api-version parameter.
    pub(crate) fn api_version(&self) -> Option<&str> {
        self.query("api-version").filter(|v| !v.is_empty())
    }

    /// A header.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (None when empty), or ARM's 400 for a body that is not JSON.
    pub(crate) fn json(&self) -> Result<Option<Value>, Answer> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body).map(Some).map_err(|err| {
            Answer::error(
                400,
                "InvalidRequestContent",
                &format!("The request content was invalid and could not be deserialized: '{err}'."),
            )
        })
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Close the connection instead of answering.
    pub(crate) drop: bool,
}

impl Answer {
    /// A JSON answer.
    pub(crate) fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: value.to_string().into_bytes(),
            drop: false,
        }
    }

    /// An answer without a body.
    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            drop: false,
        }
    }

    /// ARM's error answer: `{"error":{"code","message"}}`, with `x-ms-error-code`.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
        .with("x-ms-error-code", code)
    }

    /// ARM's error answer naming a target.
    pub(crate) fn error_with_target(status: u16, code: &str, message: &str, target: &str) -> Self {
        Self::json(
            status,
            &json!({"error": {"code": code, "message": message, "target": target}}),
        )
        .with("x-ms-error-code", code)
    }

    /// No answer: the connection is closed.
    pub(crate) fn dropped() -> Self {
        Self {
            drop: true,
            ..Self::empty(0)
        }
    }

    /// This answer with one more header.
    pub(crate) fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A random GUID (`8-4-4-4-12` hex digits).
pub(crate) fn guid() -> String {
    let hex = kombiform_sys::random_id128();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A GUID derived from `seed`, the same every time (ids ARM generates once per resource:
/// a workspace's customerId, an identity's principalId).
pub(crate) fn stable_guid(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hex = String::new();
    for round in 0u8..2 {
        for b in seed.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hex.push_str(&format!("{h:016x}"));
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Now, as ARM writes times.
pub(crate) fn now() -> String {
    kombiform_sys::now_rfc3339()
}
