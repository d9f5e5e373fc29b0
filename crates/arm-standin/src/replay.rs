//! Replay of recorded ARM traffic (Azure SDK test-proxy `RecordEntries` JSON): requests must
//! arrive exactly in the recorded order (method, path, query, and the body where the
//! recording has one); each is answered with its recorded status, headers and body, with the
//! recorded ARM host in headers and bodies rewritten to the stand-in's own address.
//!
//! A request that does not match is answered `400 ReplayMismatch` and noted; the report says
//! what was expected, what arrived, and how far the replay got.

use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::answer::{Answer, Req};

/// The host recordings were made against.
const RECORDED_HOST: &str = "https://management.azure.com";

/// Headers of a recorded answer that describe its recorded transfer, not its content.
const TRANSFER_HEADERS: &[&str] = &[
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "date",
    "vary",
];

#[derive(Clone, Debug, Deserialize)]
struct File {
    #[serde(rename = "Entries")]
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, Deserialize)]
struct Entry {
    #[serde(rename = "RequestUri")]
    uri: String,
    #[serde(rename = "RequestMethod")]
    method: String,
    #[serde(rename = "RequestBody", default)]
    request_body: Value,
    #[serde(rename = "StatusCode")]
    status: u16,
    #[serde(rename = "ResponseHeaders", default)]
    headers: Map<String, Value>,
    #[serde(rename = "ResponseBody", default)]
    response_body: Value,
}

/// A request as the replay compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayRequest {
    /// The method.
    pub method: String,
    /// The path, as sent.
    pub path: String,
    /// The query parameters, sorted.
    pub query: Vec<(String, String)>,
    /// The JSON body; None when the recording has none (then any body matches).
    pub body: Option<Value>,
}

impl std::fmt::Display for ReplayRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        if let Some(body) = &self.body {
            write!(f, " {body}")?;
        }
        Ok(())
    }
}

/// A recording, parsed.
#[derive(Clone, Debug)]
pub struct Recording {
    entries: Vec<Entry>,
}

impl Recording {
    /// Parses a test-proxy recording.
    pub fn parse(text: &str) -> Result<Self> {
        let file: File = serde_json::from_str(text).context("reading a test-proxy recording")?;
        Ok(Self {
            entries: file.entries,
        })
    }

    /// The requests of the recording, in order, as the replay compares them.
    pub fn requests(&self) -> Result<Vec<ReplayRequest>> {
        self.entries.iter().map(expected).collect()
    }

    /// The recorded final answer body of the last entry whose method is `method`.
    pub fn last_response_body(&self, method: &str) -> Option<&Value> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.method.eq_ignore_ascii_case(method))
            .map(|e| &e.response_body)
    }
}

fn sorted_query(query: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut query: Vec<(String, String)> = query.collect();
    query.sort();
    query
}

fn expected(entry: &Entry) -> Result<ReplayRequest> {
    let url = url::Url::parse(&entry.uri)
        .with_context(|| format!("a recorded request URI that is not a URL: {}", entry.uri))?;
    let body = match &entry.request_body {
        Value::Null => None,
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => {
            Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        }
        other => Some(other.clone()),
    };
    Ok(ReplayRequest {
        method: entry.method.to_ascii_uppercase(),
        path: url.path().to_owned(),
        query: sorted_query(url.query_pairs().into_owned()),
        body,
    })
}

/// What a replay saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// The recorded requests.
    pub expected: Vec<ReplayRequest>,
    /// The requests that arrived, in order (token requests apart).
    pub received: Vec<ReplayRequest>,
    /// How many recorded entries were answered.
    pub answered: usize,
    /// Every mismatch, in words.
    pub mismatches: Vec<String>,
}

#[derive(Debug, Default)]
struct Progress {
    next: usize,
    received: Vec<ReplayRequest>,
    mismatches: Vec<String>,
}

/// A recording being replayed.
#[derive(Debug)]
pub(crate) struct Replay {
    entries: Vec<Entry>,
    expected: Vec<ReplayRequest>,
    progress: Mutex<Progress>,
}

impl Replay {
    pub(crate) fn new(recording: Recording) -> Result<Self> {
        let expected = recording.requests()?;
        Ok(Self {
            entries: recording.entries,
            expected,
            progress: Mutex::new(Progress::default()),
        })
    }

    pub(crate) fn handle(&self, req: &Req) -> Answer {
        let body = serde_json::from_slice::<Value>(&req.body).ok();
        let actual = ReplayRequest {
            method: req.method.as_str().to_owned(),
            path: req.path.clone(),
            query: sorted_query(req.query.iter().cloned()),
            body,
        };
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.received.push(actual.clone());
        let index = progress.next;
        let Some(expected) = self.expected.get(index) else {
            let message = format!(
                "request #{} after the end of the recording: {actual}",
                index + 1
            );
            progress.mismatches.push(message.clone());
            return Answer::error(400, "ReplayExhausted", &message);
        };
        let body_matches = expected.body.is_none() || expected.body == actual.body;
        if expected.method != actual.method
            || expected.path != actual.path
            || expected.query != actual.query
            || !body_matches
        {
            let message = format!(
                "request #{} differs from the recording\n  recorded: {expected}\n  received: {actual}",
                index + 1
            );
            progress.mismatches.push(message.clone());
            return Answer::error(400, "ReplayMismatch", &message);
        }
        progress.next += 1;
        answer(&self.entries[index], &req.base)
    }

    pub(crate) fn report(&self) -> ReplayReport {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        ReplayReport {
            expected: self.expected.clone(),
            received: progress.received.clone(),
            answered: progress.next,
            mismatches: progress.mismatches.clone(),
        }
    }
}

fn rewrite(text: &str, base: &str) -> String {
    text.replace(RECORDED_HOST, base)
}

fn answer(entry: &Entry, base: &str) -> Answer {
    let mut answer = match &entry.response_body {
        Value::Null => Answer::empty(entry.status),
        Value::String(text) => Answer {
            body: rewrite(text, base).into_bytes(),
            ..Answer::empty(entry.status)
        },
        value => Answer {
            body: rewrite(&value.to_string(), base).into_bytes(),
            ..Answer::empty(entry.status)
        },
    };
    for (name, value) in &entry.headers {
        if TRANSFER_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let values: Vec<&str> = match value {
            Value::String(v) => vec![v.as_str()],
            Value::Array(vs) => vs.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for v in values {
            answer = answer.with(name, &rewrite(v, base));
        }
    }
    answer
}
