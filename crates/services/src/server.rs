//! The HTTP/1.1 server of both services: the accept loop, one hyper connection per socket
//! behind the connection guard (`server/guard.rs`: requests hyper would refuse with an empty
//! body are answered in the error format by this crate instead), configured [`Limits`], and
//! graceful shutdown.
//!
//! Why not `axum::serve`: it offers no limits and no way to answer the errors hyper produces
//! before a request exists (431, malformed request line or headers), which it sends with an
//! empty body. hyper writes those in `proto/h1/role.rs` (`Server::on_error`: 400 for a bad
//! method, target, version or header, 431 for a head over the buffer limit or with too many
//! headers, 414 for a target over 64 KiB; hyper 1.12.0 as locked); [`head`] refuses every such
//! head first. A header-read timeout in hyper closes without any response; the guard answers a
//! slow head with 408 instead.
//!
//! HTTP/1 only: the services sit behind Kong, which speaks HTTP/1.1 to upstreams. Not here:
//! routes, the JSON error format and request ids ([`crate::http`]).

mod guard;
pub mod head;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// The limits of a server's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head (request line and headers), in bytes; larger ones get 431 (414
    /// when the request line alone is that long).
    pub max_head_bytes: usize,
    /// How long a client has, from the first byte of a request head, to send all of it (408).
    pub head_timeout: Duration,
    /// How long a request body may take to arrive once a handler reads it (408).
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request before it is closed quietly (above
    /// Kong's upstream keep-alive timeout of 60 s, so Kong closes first).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 64 * 1024,
            head_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
        }
    }
}

/// Command-line overrides of [`Limits`], shared by both binaries (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct LimitArgs {
    /// Time a client has to send a complete request head, in milliseconds (default 15000).
    #[arg(long, value_name = "MS")]
    pub head_timeout_ms: Option<u64>,
    /// Time a request body may take to arrive, in milliseconds (default 30000).
    #[arg(long, value_name = "MS")]
    pub body_timeout_ms: Option<u64>,
}

impl LimitArgs {
    /// The default limits with these overrides.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            head_timeout: self
                .head_timeout_ms
                .map_or(d.head_timeout, Duration::from_millis),
            body_timeout: self
                .body_timeout_ms
                .map_or(d.body_timeout, Duration::from_millis),
            ..d
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in progress, and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = app.layer(axum::Extension(limits));
    let (stop, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone(), limits, stopped.clone()));
                }
                Err(e) => accept_failed(&e).await,
            },
        }
    }
    drop(listener);
    let _ = stop.send(());
    while connections.join_next().await.is_some() {}
}

/// Logs a failed accept; waits a moment when the cause is this process (out of descriptors),
/// not the peer, so the loop does not spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Serves one connection until it ends, the guard refuses a head, or the server stops.
async fn connection(stream: TcpStream, app: Router, limits: Limits, mut stop: watch::Receiver<()>) {
    let _ = stream.set_nodelay(true);
    let refused = Arc::new(Notify::new());
    let io = TokioIo::new(guard::Guard::new(stream, limits, Arc::clone(&refused)));
    let conn = hyper::server::conn::http1::Builder::new()
        // A client that closes its sending side still gets its response, and a refused head
        // arriving while a request is in progress waits for that response.
        .half_close(true)
        .serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = refused.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
