//! The connection guard: an IO wrapper between the socket and hyper that lets hyper see a
//! request head only once [`super::head::inspect`] accepted it whole, so that every refusal
//! below the application is answered by this crate, in the error format, not by hyper with an
//! empty body.
//!
//! Reading: bytes of a head are held back until the head is complete; an accepted head is
//! released to hyper, then exactly its `Content-Length` body bytes, then the next head is held
//! again (keep-alive, pipelining). A chunked body is not tracked: the guard passes everything
//! through from there, and the response closes the connection (see
//! [`crate::http::request_id_middleware`]). A refused head (malformed, too large, or not
//! complete within the head timeout) is never shown to hyper: the guard records the refusal,
//! wakes the connection task, which asks hyper for a graceful shutdown (it finishes any response
//! in progress), and writes the error response itself when hyper shuts the connection down,
//! then drains the client's remaining input for a moment so the response is not lost to a reset.
//!
//! A connection idle for the idle timeout (no byte of a next request) ends quietly.
//! Not here: the rules for a head ([`super::head`]), the accept loop ([`super`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::head::{self, Framing, Refusal, Verdict};
use super::Limits;
use crate::http::{error_body, new_request_id};

/// How long a refused connection's remaining input is drained after the error response.
const LINGER: Duration = Duration::from_secs(2);

/// The most bytes drained after an error response.
const LINGER_BYTES: usize = 1 << 20;

/// Where the guard is in the request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting a head.
    Head,
    /// Releasing this many more body bytes, then back to `Head` (or `Done` without keep-alive).
    Body { left: u64, keep_alive: bool },
    /// Passing everything through untracked (after a chunked head).
    Through,
    /// The last request was released; further input is read and dropped.
    Done,
    /// A head was refused: hyper reads nothing more.
    Refused,
    /// The peer closed, or the connection idled out: hyper reads end-of-file.
    Eof,
}

/// The error response of a refused head, and how much of it is written.
struct Reply {
    bytes: Vec<u8>,
    written: usize,
}

/// The guarded socket.
pub(super) struct Guard<S> {
    inner: S,
    limits: Limits,
    state: State,
    /// Unreleased input (an incomplete head, and anything after it).
    held: Vec<u8>,
    /// How far `held` was searched for the end of a head.
    scanned: usize,
    /// Released input hyper has not read yet, from `ready_at`.
    ready: Vec<u8>,
    ready_at: usize,
    /// The head or idle deadline, when armed.
    timer: Option<Pin<Box<Sleep>>>,
    /// Set when a head is refused; the connection task waits on it.
    refused: Arc<Notify>,
    reply: Option<Reply>,
    /// Draining after the reply: the deadline and the bytes dropped so far.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<S> Guard<S> {
    /// Guards `inner`; `refused` is notified when a head is refused.
    pub(super) fn new(inner: S, limits: Limits, refused: Arc<Notify>) -> Guard<S> {
        Guard {
            inner,
            limits,
            state: State::Head,
            held: Vec::new(),
            scanned: 0,
            ready: Vec::new(),
            ready_at: 0,
            timer: None,
            refused,
            reply: None,
            linger: None,
        }
    }

    /// Classifies newly read bytes: held, released, or dropped.
    fn feed(&mut self, data: &[u8]) {
        self.held.extend_from_slice(data);
        let mut pos = 0;
        while pos < self.held.len() {
            let rest = &self.held[pos..];
            match self.state {
                State::Through => {
                    self.ready.extend_from_slice(rest);
                    pos = self.held.len();
                }
                State::Body { left, keep_alive } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    self.ready.extend_from_slice(&rest[..n]);
                    pos += n;
                    let left = left - n as u64;
                    self.state = match (left, keep_alive) {
                        (0, true) => State::Head,
                        (0, false) => State::Done,
                        _ => State::Body { left, keep_alive },
                    };
                }
                State::Head => match self.inspect_head(pos) {
                    Some(n) => pos += n,
                    None => break,
                },
                State::Done | State::Refused | State::Eof => pos = self.held.len(),
            }
        }
        self.held.drain(..pos);
        self.scanned = self.scanned.saturating_sub(pos);
    }

    /// Looks at the head starting at `held[pos..]`: releases it and returns its length when it
    /// is complete and accepted; `None` when more bytes are needed or it was refused.
    fn inspect_head(&mut self, pos: usize) -> Option<usize> {
        let rest = &self.held[pos..];
        if self.timer.is_none() || self.scanned == 0 {
            // The first byte of a head starts its deadline (replacing the idle deadline).
            self.timer = Some(Box::pin(tokio::time::sleep(self.limits.head_timeout)));
        }
        // Only parse once an empty line may have arrived: a head sent byte by byte costs one
        // scan, not one parse per byte.
        let from = self.scanned.saturating_sub(pos).saturating_sub(3);
        let ended = rest.get(from..).is_some_and(|r| {
            r.windows(2).any(|w| w == b"\n\n") || r.windows(3).any(|w| w == b"\n\r\n")
        });
        self.scanned = self.held.len();
        let verdict = if ended {
            head::inspect(rest)
        } else {
            Verdict::Partial
        };
        match verdict {
            Verdict::Complete(h) if h.len > self.limits.max_head_bytes => {
                self.refuse(Refusal::HEAD_TOO_LARGE);
                None
            }
            Verdict::Complete(h) => {
                self.ready.extend_from_slice(&rest[..h.len]);
                self.timer = None;
                self.scanned = 0;
                self.state = match h.framing {
                    Framing::Chunked => State::Through,
                    Framing::Length(0) if h.keep_alive => State::Head,
                    Framing::Length(0) => State::Done,
                    Framing::Length(left) => State::Body {
                        left,
                        keep_alive: h.keep_alive,
                    },
                };
                Some(h.len)
            }
            Verdict::Partial if rest.len() > self.limits.max_head_bytes => {
                let line_ended = rest.contains(&b'\n');
                self.refuse(if line_ended {
                    Refusal::HEAD_TOO_LARGE
                } else {
                    Refusal::URI_TOO_LONG
                });
                None
            }
            Verdict::Partial => None,
            Verdict::Refused(r) => {
                self.refuse(r);
                None
            }
        }
    }

    /// Records a refusal: the error response is written at shutdown.
    fn refuse(&mut self, refusal: Refusal) {
        let id = new_request_id();
        tracing::info!(
            request_id = %id,
            status = refusal.status.as_u16(),
            reason = refusal.message,
            "request refused by the connection layer"
        );
        self.reply = Some(Reply {
            bytes: reply_bytes(refusal, &id),
            written: 0,
        });
        // What is held stays unread: hyper never sees it, the linger drops the rest.
        self.state = State::Refused;
        self.timer = None;
        self.refused.notify_one();
    }

    /// Handles the peer's end of input.
    fn on_eof(&mut self) {
        if self.state == State::Head && !self.held.is_empty() {
            self.refuse(Refusal::malformed("the request head ended early"));
        } else if self.state != State::Refused {
            self.state = State::Eof;
        }
    }

    /// Polls the armed deadline; `true` when it passed (and the state changed).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state != State::Head {
            self.timer = None;
            return false;
        }
        let idle = self.held.is_empty();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.limits.idle_timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if idle {
            self.state = State::Eof;
            self.timer = None;
        } else {
            self.refuse(Refusal::HEAD_TIMEOUT);
        }
        true
    }

    /// Copies released bytes to hyper's buffer; `false` when there were none.
    fn give(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let available = &self.ready[self.ready_at..];
        if available.is_empty() {
            return false;
        }
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.ready_at += n;
        if self.ready_at == self.ready.len() {
            self.ready.clear();
            self.ready_at = 0;
        }
        true
    }
}

/// The raw HTTP/1.1 error response of a refused head (the connection closes after it).
fn reply_bytes(refusal: Refusal, request_id: &str) -> Vec<u8> {
    let body = error_body(refusal.code, refusal.message, request_id).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        refusal.status.as_u16(),
        refusal.status.canonical_reason().unwrap_or("Error"),
        body.len(),
    )
    .into_bytes()
}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.give(buf) {
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // End of input for hyper.
                State::Eof => return Poll::Ready(Ok(())),
                // The connection task shuts hyper down; nothing more to read.
                State::Refused => return Poll::Pending,
                _ => {}
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.on_eof(),
                Poll::Ready(Ok(())) => this.feed(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if !this.poll_timer(cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Writes the pending error response (after everything hyper wrote), shuts the write side,
    /// then drains the input for a moment before the socket is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(reply) = this.reply.as_mut() else {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        };
        while reply.written < reply.bytes.len() {
            let n =
                ready!(Pin::new(&mut this.inner).poll_write(cx, &reply.bytes[reply.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            reply.written += n;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER)), 0));
        }
        let Some((deadline, dropped)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if deadline.as_mut().poll(cx).is_ready() || *dropped > LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read)) {
                Ok(()) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => *dropped += read.filled().len(),
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            max_head_bytes: 1024,
            head_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    /// A guard over one end of an in-memory pipe; the other end is the client.
    fn pipe() -> (
        Guard<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Notify>,
    ) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let refused = Arc::new(Notify::new());
        (
            Guard::new(server, limits(), Arc::clone(&refused)),
            client,
            refused,
        )
    }

    /// What hyper would read now, without waiting.
    async fn readable(guard: &mut Guard<tokio::io::DuplexStream>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), guard.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn heads_are_released_whole_and_bodies_by_their_length() {
        let (mut guard, mut client, _) = pipe();
        client
            .write_all(b"POST /a HTTP/1.1\r\nContent-Le")
            .await
            .unwrap();
        assert_eq!(
            readable(&mut guard).await,
            b"",
            "an incomplete head is held back"
        );
        client
            .write_all(b"ngth: 5\r\n\r\nGET /bHTTP/1.1\r\nGET /c HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        // "GET /bHTTP/1.1" sits in the body (5 bytes "GET /"), then "bHTTP/1.1\r\n" is a head.
        let seen = readable(&mut guard).await;
        assert_eq!(seen, b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /");
        assert_eq!(
            guard.state,
            State::Refused,
            "the line after the body is no request"
        );
        assert!(guard.reply.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_pass_and_a_refusal_is_written_at_shutdown() {
        let (mut guard, mut client, refused) = pipe();
        let two = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\n\r\n";
        client.write_all(two).await.unwrap();
        client.write_all(b"GARBAGE\r\n\r\n").await.unwrap();
        assert_eq!(readable(&mut guard).await, two);
        // The connection task is told; hyper reads nothing more.
        tokio::time::timeout(Duration::from_secs(1), refused.notified())
            .await
            .expect("the refusal is signalled");
        assert_eq!(readable(&mut guard).await, b"");
        guard
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        drop(client.shutdown().await);
        guard.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        let (first, refusal) = answer.split_at(answer.find("HTTP/1.1 400").expect("a 400 follows"));
        assert!(
            first.starts_with("HTTP/1.1 200 OK"),
            "hyper's response comes first"
        );
        assert!(refusal.contains("\r\nconnection: close\r\n"), "{refusal}");
        assert!(refusal.contains(r#""code":"bad_request""#), "{refusal}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_gets_408_and_an_idle_connection_ends_quietly() {
        let (mut guard, mut client, _) = pipe();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        // The read waits for the head deadline (time is paused: it passes at once).
        let read = tokio::time::timeout(Duration::from_secs(2), guard.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "hyper keeps waiting; the task is notified instead"
        );
        assert_eq!(guard.state, State::Refused);
        let reply =
            String::from_utf8_lossy(&guard.reply.as_ref().expect("a reply").bytes).to_string();
        assert!(
            reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{reply}"
        );

        let (mut idle, _client, _) = pipe();
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("the idle timeout ends the read")
            .unwrap();
        assert_eq!((n, idle.state), (0, State::Eof), "end of input, no reply");
        assert!(idle.reply.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_heads_are_refused_as_431_or_414() {
        for (input, status) in [
            (format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000)), "431"),
            (format!("GET /{}", "a".repeat(2000)), "414"),
        ] {
            let (mut guard, mut client, _) = pipe();
            client.write_all(input.as_bytes()).await.unwrap();
            assert_eq!(readable(&mut guard).await, b"");
            let reply =
                String::from_utf8_lossy(&guard.reply.as_ref().expect("a reply").bytes).to_string();
            assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
        }
    }
}
