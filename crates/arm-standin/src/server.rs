//! The network side: one listener speaking HTTPS (the stand-in's own CA) or plain HTTP on the
//! same port (the first byte of a connection tells), HTTP/1.1, every request read whole,
//! delayed by the configured latency, answered by the ARM logic or the replay, recorded, or
//! dropped without an answer.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::answer::{guid, Answer, Req};
use crate::arm::Arm;
use crate::path::{route, Route};
use crate::record::Recorder;
use crate::replay::Replay;

/// The largest request body read (ARM's own limit for a template is 4 MB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Everything a connection needs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) arm: Arm,
    pub(crate) replay: Option<Replay>,
    pub(crate) recorder: Recorder,
}

/// Closes a connection instead of answering.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// Accepts connections until the task is aborted; aborting it ends every connection too.
pub(crate) async fn serve(listener: TcpListener, tls: TlsAcceptor, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(connection(stream, tls.clone(), shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, tls: TlsAcceptor, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
    if is_tls {
        let Ok(stream) = tls.accept(stream).await else {
            return;
        };
        serve_http(TokioIo::new(stream), "https", shared).await;
    } else {
        serve_http(TokioIo::new(stream), "http", shared).await;
    }
}

async fn serve_http<I>(io: I, scheme: &'static str, shared: Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(req, scheme, shared.clone()));
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    scheme: &'static str,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let arrived = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => {
            return Ok(response(Answer::error(
                413,
                "RequestEntityTooLarge",
                "The request body is too large.",
            )))
        }
    };
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers,
        body,
        base: format!("{scheme}://{host}"),
    };
    let latency = shared.arm.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answer = match &shared.replay {
        Some(replay) if route(&req.path) != Route::Token => replay.handle(&req),
        _ => shared.arm.handle(&req),
    };
    // A record file that cannot be written does not stop the answer; the in-memory record
    // still has the request.
    let _ = shared
        .recorder
        .record(&req, arrived, (!answer.drop).then_some(answer.status));
    if answer.drop {
        return Err(DropConnection);
    }
    let request_id = guid();
    let correlation = req
        .headers
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let mut answer = answer
        .with("x-ms-request-id", &request_id)
        .with("x-ms-correlation-request-id", &correlation)
        .with(
            "x-ms-routing-request-id",
            &format!("STANDIN:{}:{correlation}", kombiform_sys::now_rfc3339()),
        );
    if let Some(client) = req
        .headers
        .get("x-ms-client-request-id")
        .and_then(|v| v.to_str().ok())
    {
        answer = answer.with("x-ms-client-request-id", client);
    }
    Ok(response(answer))
}

fn response(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}
