//! The request record (`--record FILE`): every request the stand-in receives, as one JSON line
//! `{"method","path","api-version","body","status","at_ms"}` (`status` is null for a dropped
//! connection; `at_ms` is when the request arrived, in real milliseconds since the start). Secrets never reach it: write-only properties are redacted, and of a token
//! request only the grant type, client id and scope are kept.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::answer::Req;
use crate::json::redact_paths;
use crate::path::{route, Route};
use crate::profiles;

/// One received request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The HTTP method.
    pub method: String,
    /// The URL path (no query).
    pub path: String,
    /// The `api-version` query parameter, if any.
    #[serde(rename = "api-version")]
    pub api_version: Option<String>,
    /// The body: JSON, a string when it was not JSON, null when empty.
    pub body: Value,
    /// The status answered; None when the connection was dropped.
    pub status: Option<u16>,
    /// When the request arrived: real milliseconds since the stand-in started.
    pub at_ms: u64,
}

/// Where records go: always memory, and a file when asked.
#[derive(Debug)]
pub(crate) struct Recorder {
    started: Instant,
    file: Option<Mutex<BufWriter<File>>>,
    memory: Mutex<Vec<Record>>,
}

impl Recorder {
    pub(crate) fn new(path: Option<&Path>) -> Result<Self> {
        let file = path
            .map(|p| {
                File::create(p)
                    .with_context(|| format!("creating the record file {}", p.display()))
                    .map(|f| Mutex::new(BufWriter::new(f)))
            })
            .transpose()?;
        Ok(Self {
            started: Instant::now(),
            file,
            memory: Mutex::new(Vec::new()),
        })
    }

    /// Records one request and its status. A record file that cannot be written is reported
    /// once per failure on the returned error; the request is answered anyway.
    pub(crate) fn record(&self, req: &Req, arrived: Instant, status: Option<u16>) -> Result<()> {
        let at_ms = arrived.saturating_duration_since(self.started).as_millis();
        let record = Record {
            method: req.method.to_string(),
            path: req.path.clone(),
            api_version: req.api_version().map(str::to_owned),
            body: recorded_body(req),
            status,
            at_ms: u64::try_from(at_ms).unwrap_or(u64::MAX),
        };
        if let Some(file) = &self.file {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_writer(&mut *file, &record).context("writing the record")?;
            file.write_all(b"\n").context("writing the record")?;
            file.flush().context("flushing the record")?;
        }
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
        Ok(())
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn recorded_body(req: &Req) -> Value {
    if req.body.is_empty() {
        return Value::Null;
    }
    let route = route(&req.path);
    if route == Route::Token {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        return json!({
            "grant_type": field("grant_type"),
            "client_id": field("client_id"),
            "scope": field("scope"),
        });
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(mut value) => {
            if let Route::Resource(rp) = route {
                redact_paths(&mut value, profiles::profile(&rp.type_key()).write_only);
            }
            value
        }
        Err(_) => Value::String(String::from_utf8_lossy(&req.body).into_owned()),
    }
}
