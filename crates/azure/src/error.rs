//! What can go wrong talking to ARM, as data: the provider keys on ARM's error `code`
//! (`ResourceNotFound`, `ServerIsBusy`, `ConflictError`…), people read the `Display`.
//!
//! ARM error bodies are `{"error":{"code","message","target"?,"details"?[]}}`; a few resource
//! providers still answer the bare inner object. Both are read; anything else becomes a
//! detail whose code is the HTTP status and whose message is the start of the body.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// ARM's error object (OData v4 style), with its nested details.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The machine-readable code (`InvalidParameter`, `ResourceGroupNotFound`…).
    #[serde(default)]
    pub code: String,
    /// The human-readable (and localised) message.
    #[serde(default, deserialize_with = "string_or_null")]
    pub message: String,
    /// The property or resource the error is about, when ARM names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// More specific errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl ErrorDetail {
    /// The error of an ARM error body; `None` when the body carries none.
    pub fn from_body(body: &Value) -> Option<Self> {
        let inner = body.get("error").unwrap_or(body);
        let detail: ErrorDetail = serde_json::from_value(inner.clone()).ok()?;
        (!detail.code.is_empty()).then_some(detail)
    }

    /// The error of a failed response, whatever its body: ARM's error when there is one, else
    /// the status and up to 300 characters of the body.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        if let Some(detail) = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| Self::from_body(&v))
        {
            return detail;
        }
        let text = String::from_utf8_lossy(body);
        let message: String = text.trim().chars().take(300).collect();
        ErrorDetail {
            code: format!("Http{status}"),
            message,
            target: None,
            details: Vec::new(),
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(target) = &self.target {
            write!(f, " (target: {target})")?;
        }
        for detail in &self.details {
            write!(f, "; {detail}")?;
        }
        Ok(())
    }
}

/// How a long-running operation ended when it did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// `Failed`.
    Failed,
    /// `Canceled`.
    Canceled,
}

impl fmt::Display for Terminal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
        })
    }
}

/// An error of the ARM client. `request` is always `METHOD /path` of the operation the caller
/// asked for (never a query string, never a header).
#[derive(Debug)]
pub enum ArmError {
    /// ARM or the resource provider answered with an error status (after retries, for 429
    /// and 5xx).
    Api {
        /// `METHOD /path`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// ARM's error.
        error: ErrorDetail,
    },
    /// A long-running operation ended `Failed` or `Canceled`.
    Operation {
        /// `METHOD /path` of the operation that started it.
        request: String,
        /// How it ended.
        status: Terminal,
        /// The error the operation reported.
        error: ErrorDetail,
    },
    /// No credential of the chain produced a token.
    Credential(String),
    /// The request could not be sent, or its answer not read, after retries.
    Transport {
        /// `METHOD /path`.
        request: String,
        /// What failed.
        message: String,
    },
    /// An answer outside ARM's contract (a body that is not JSON, a poll URL on another host…).
    Protocol {
        /// `METHOD /path`.
        request: String,
        /// What was wrong.
        message: String,
    },
    /// A long-running operation did not end within the client's operation timeout.
    Timeout {
        /// `METHOD /path`.
        request: String,
        /// How long the client waited, in seconds of its clock.
        waited_secs: u64,
    },
    /// The caller's request cannot be sent as given (an id that is not a path, a bad
    /// api-version, an endpoint that is not a URL…).
    Invalid(String),
}

impl ArmError {
    /// ARM's error code, when the error carries one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { error, .. } | Self::Operation { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    /// The HTTP status of an [`ArmError::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The ARM error, when the error carries one.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            Self::Api { error, .. } | Self::Operation { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for ArmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api {
                request,
                status,
                error,
            } => write!(f, "{request}: HTTP {status}: {error}"),
            Self::Operation {
                request,
                status,
                error,
            } => write!(f, "{request}: the operation ended {status}: {error}"),
            Self::Credential(message) => write!(f, "no Azure credential: {message}"),
            Self::Transport { request, message } => write!(f, "{request}: {message}"),
            Self::Protocol { request, message } => {
                write!(f, "{request}: unexpected answer from ARM: {message}")
            }
            Self::Timeout {
                request,
                waited_secs,
            } => write!(
                f,
                "{request}: the operation did not finish within {waited_secs} s"
            ),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ArmError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_error_bodies_keep_code_message_target_and_details() {
        let body = json!({"error": {
            "code": "InvalidParameter", "message": "bad sku", "target": "sku.name",
            "details": [{"code": "Inner", "message": "more"}],
        }});
        let detail = ErrorDetail::from_response(400, body.to_string().as_bytes());
        assert_eq!(detail.code, "InvalidParameter");
        assert_eq!(detail.target.as_deref(), Some("sku.name"));
        assert_eq!(
            detail.to_string(),
            "InvalidParameter: bad sku (target: sku.name); Inner: more"
        );
    }

    #[test]
    fn bare_error_objects_and_null_messages_are_read() {
        let detail = ErrorDetail::from_response(409, br#"{"code":"Conflict","message":null}"#);
        assert_eq!(detail.code, "Conflict");
        assert_eq!(detail.message, "");
    }

    #[test]
    fn bodies_without_an_error_become_the_status_and_the_text() {
        let detail = ErrorDetail::from_response(502, b"<html>Bad Gateway</html>");
        assert_eq!(detail.code, "Http502");
        assert_eq!(detail.message, "<html>Bad Gateway</html>");
        let long = "x".repeat(1000);
        assert_eq!(
            ErrorDetail::from_response(500, long.as_bytes())
                .message
                .len(),
            300
        );
    }

    #[test]
    fn api_errors_display_request_status_and_arm_error() {
        let err = ArmError::Api {
            request: "PUT /subscriptions/s/resourceGroups/rg".into(),
            status: 404,
            error: ErrorDetail {
                code: "SubscriptionNotFound".into(),
                message: "gone".into(),
                target: None,
                details: vec![],
            },
        };
        assert_eq!(
            err.to_string(),
            "PUT /subscriptions/s/resourceGroups/rg: HTTP 404: SubscriptionNotFound: gone"
        );
        assert_eq!(err.code(), Some("SubscriptionNotFound"));
        assert_eq!(err.status(), Some(404));
    }
}
