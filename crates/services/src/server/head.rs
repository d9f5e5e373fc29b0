//! The request-head check of the connection layer (pure): is this the complete head of a
//! request hyper would accept, and how long is its body?
//!
//! It applies hyper 1.x's own rules (`proto/h1/role.rs`, `Server::parse`): `httparse` with its
//! default configuration and at most [`MAX_HEADERS`] headers, a method from
//! `http::Method::from_bytes`, a target `http::Uri` accepts, and the framing rules of RFC 9112
//! §6 as hyper applies them (`Transfer-Encoding` only in HTTP/1.1 and with `chunked` last, which
//! then wins over `Content-Length`; every `Content-Length` plain digits and all equal). Whatever
//! this accepts, hyper accepts; whatever hyper would answer itself with an empty 400 or 431,
//! this refuses first, so the caller can answer in the error format.
//!
//! Not here: reading, buffering and timing ([`super::guard`]).

use axum::http::{Method, StatusCode, Uri};

/// The most headers a request may carry (hyper's default, `DEFAULT_MAX_HEADERS`).
pub const MAX_HEADERS: usize = 100;

/// The longest request target hyper accepts (`MAX_URI_LEN`).
pub const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// Why a head is refused: the status and error code to answer with, and a safe message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 408, 413, 414 or 431.
    pub status: StatusCode,
    /// The error code of the body.
    pub code: &'static str,
    /// The message of the body (also logged).
    pub message: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
        Refusal {
            status,
            code,
            message,
        }
    }

    /// 400 for a request that is not well-formed HTTP/1.1.
    pub const fn malformed(message: &'static str) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 431: the head is larger than the limit, or has too many headers.
    pub const HEAD_TOO_LARGE: Refusal = Refusal::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "the request headers are too large",
    );

    /// 414: the request line alone is longer than the head limit.
    pub const URI_TOO_LONG: Refusal = Refusal::new(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        "the request target is too long",
    );

    /// 408: the head did not arrive in time.
    pub const HEAD_TIMEOUT: Refusal = Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request headers did not arrive in time",
    );

    /// 413: a `Content-Length` no server could take.
    pub const BODY_TOO_LARGE: Refusal = Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body too large",
    );
}

/// How the body of an accepted request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// An accepted head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its length in bytes, up to and including the empty line.
    pub len: usize,
    /// The body framing.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

/// The outcome of [`inspect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not complete yet: more bytes are needed.
    Partial,
    /// A complete, acceptable head.
    Complete(Head),
    /// A head hyper would refuse.
    Refused(Refusal),
}

/// Checks the request head at the start of `buf` (leading empty lines allowed, as hyper does).
pub fn inspect(buf: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Verdict::Refused(Refusal::HEAD_TOO_LARGE),
        Err(httparse::Error::Version) => {
            return Verdict::Refused(Refusal::malformed("unsupported HTTP version"))
        }
        Err(httparse::Error::Token) if req.method.is_none() => {
            return Verdict::Refused(Refusal::malformed("malformed request method"))
        }
        Err(httparse::Error::Token) if req.path.is_none() => {
            return Verdict::Refused(Refusal::malformed("malformed request target"))
        }
        Err(_) => return Verdict::Refused(Refusal::malformed("malformed request header")),
    };
    match check(&req, len) {
        Ok(head) => Verdict::Complete(head),
        Err(refusal) => Verdict::Refused(refusal),
    }
}

/// What hyper checks after `httparse` accepted the head.
fn check(req: &httparse::Request<'_, '_>, len: usize) -> Result<Head, Refusal> {
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refusal::malformed("incomplete request line"));
    };
    Method::from_bytes(method.as_bytes())
        .map_err(|_| Refusal::malformed("malformed request method"))?;
    if path.len() > MAX_URI_LEN {
        return Err(Refusal::URI_TOO_LONG);
    }
    Uri::try_from(path.as_bytes()).map_err(|_| Refusal::malformed("malformed request target"))?;
    let http11 = version == 1;
    let mut framing = Framing::Length(0);
    let (mut is_te, mut is_cl, mut te_chunked) = (false, false, false);
    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(Refusal::malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            is_te = true;
            content_length = None;
            te_chunked = last_encoding_is_chunked(header.value);
            if te_chunked {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            is_cl = true;
            if is_te {
                continue;
            }
            let n = digits(header.value).ok_or(Refusal::malformed("malformed Content-Length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(Refusal::malformed("conflicting Content-Length headers"));
            }
            // hyper's largest length is u64::MAX - 2 (the values above mark chunked and close).
            if n > u64::MAX - 2 {
                return Err(Refusal::BODY_TOO_LARGE);
            }
            content_length = Some(n);
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(header.value, "close");
            keep_alive_token |= has_token(header.value, "keep-alive");
        }
    }
    if is_te && !te_chunked {
        return Err(Refusal::malformed("unsupported Transfer-Encoding"));
    }
    let keep_alive = !close && (http11 || keep_alive_token) && !(is_te && is_cl);
    Ok(Head {
        len,
        framing,
        keep_alive,
    })
}

/// hyper's `is_chunked_`: the value is visible ASCII and its last encoding is `chunked`.
fn last_encoding_is_chunked(value: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(value) else {
        return false;
    };
    let visible = s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible
        && s.rsplit(',')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked"))
}

/// hyper's `from_digits`: one or more ASCII digits, no sign, no overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, b| {
        let d = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        acc.checked_mul(10)?.checked_add(d)
    })
}

/// Whether the comma-separated `value` holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(raw: &str) -> Verdict {
        inspect(raw.as_bytes())
    }

    fn refused(raw: &str) -> (u16, &'static str) {
        match verdict(raw) {
            Verdict::Refused(r) => (r.status.as_u16(), r.message),
            other => panic!("{raw:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn complete_heads_carry_their_framing() {
        let get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            verdict(get),
            Verdict::Complete(Head {
                len: get.len(),
                framing: Framing::Length(0),
                keep_alive: true
            })
        );
        assert_eq!(
            verdict("GET /health HTTP/1.1\r\nHost: x\r\n"),
            Verdict::Partial
        );
        assert_eq!(verdict("\r\nGET / HTTP/1.1\r\n\r\nrest").len(), Some(20));
        let post = "POST /x HTTP/1.1\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(verdict(post).framing(), Some(Framing::Length(12)));
        let te =
            "POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(verdict(te).framing(), Some(Framing::Chunked));
        assert_eq!(verdict(te).keep_alive(), Some(false), "TE with CL closes");
        assert_eq!(verdict("GET / HTTP/1.0\r\n\r\n").keep_alive(), Some(false));
        assert_eq!(
            verdict("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive(),
            Some(true)
        );
        assert_eq!(
            verdict("GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n").keep_alive(),
            Some(false)
        );
        assert!(
            matches!(verdict("FOO /x HTTP/1.1\r\n\r\n"), Verdict::Complete(_)),
            "unknown methods are the router's"
        );
    }

    #[test]
    fn what_hyper_refuses_is_refused_here() {
        assert_eq!(
            refused("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
            (400, "malformed request header")
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nX: a\u{1}b\r\n\r\n"),
            (400, "malformed request header")
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nBad Name: a\r\n\r\n"),
            (400, "malformed request header")
        );
        assert_eq!(
            refused("GET / HTTP/9.9\r\n\r\n"),
            (400, "unsupported HTTP version")
        );
        assert_eq!(
            refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            (400, "unsupported HTTP version")
        );
        assert_eq!(
            refused("G(T / HTTP/1.1\r\n\r\n"),
            (400, "malformed request method")
        );
        assert_eq!(
            refused("GET /a\u{0}b HTTP/1.1\r\n\r\n"),
            (400, "malformed request target")
        );
        // Raw bytes that are not UTF-8: hyper's Uri refuses them; UTF-8 itself is the router's.
        assert!(matches!(
            inspect(b"GET /a\xffb HTTP/1.1\r\n\r\n"),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            verdict("GET /\u{e9} HTTP/1.1\r\n\r\n"),
            Verdict::Complete(_)
        ));
        assert_eq!(
            refused("GARBAGE\r\n\r\n"),
            (400, "malformed request method")
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            (400, "malformed Content-Length")
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            (400, "conflicting Content-Length headers")
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            (400, "malformed Content-Length")
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"),
            (413, "request body too large")
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (400, "unsupported Transfer-Encoding")
        );
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (400, "Transfer-Encoding in an HTTP/1.0 request")
        );
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(refused(&many), (431, "the request headers are too large"));
        let enough = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS));
        assert!(matches!(verdict(&enough), Verdict::Complete(_)));
    }

    impl Verdict {
        fn head(self) -> Option<Head> {
            match self {
                Verdict::Complete(h) => Some(h),
                _ => None,
            }
        }
        fn len(self) -> Option<usize> {
            self.head().map(|h| h.len)
        }
        fn framing(self) -> Option<Framing> {
            self.head().map(|h| h.framing)
        }
        fn keep_alive(self) -> Option<bool> {
            self.head().map(|h| h.keep_alive)
        }
    }
}
