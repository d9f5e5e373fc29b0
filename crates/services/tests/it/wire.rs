//! Test helpers at the wire: a service binary started with its JSON log captured (address read
//! from its "listening" line, killed on drop), and raw HTTP/1.1 over TCP, so a test can send
//! bytes no HTTP client would and read exactly what came back.
//!
//! Not here: what the services should answer (the tests in `edge.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// How long a test waits for a binary to start or for a reply before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running service binary.
pub(crate) struct Service {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `exe --config <file with config_json> --listen 127.0.0.1:0 <args>` with only `envs`
    /// in its environment, and waits for the log line whose message is `listening`; its field
    /// `addr_field` is the address.
    pub(crate) fn start(
        exe: &str,
        config_json: &str,
        args: &[&str],
        envs: &[(&str, String)],
        listening: &str,
        addr_field: &str,
    ) -> Result<Service> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.json");
        std::fs::write(&config, config_json)?;
        let mut child = Command::new(exe)
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {exe}"))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let mut service = Service {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
            _dir: dir,
        };
        loop {
            let line = rx
                .recv_timeout(PATIENCE)
                .with_context(|| format!("{exe} did not start: {:?}", service.log_lines()))?;
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["fields"]["message"] == listening {
                let addr = v["fields"][addr_field].as_str().context("no address")?;
                service.addr = addr.parse().context("the logged address")?;
                return Ok(service);
            }
        }
    }

    /// The log so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops the binary and returns its whole log.
    pub(crate) fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log_lines()
    }

    /// A fresh raw connection.
    pub(crate) fn connect(&self) -> Result<Raw> {
        Raw::connect(self.addr)
    }

    /// Sends `request` on a fresh connection and reads one reply.
    pub(crate) fn once(&self, request: &[u8]) -> Result<Reply> {
        let mut raw = self.connect()?;
        raw.send(request)?;
        raw.reply()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `log` at level ERROR.
pub(crate) fn errors(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .collect()
}

/// One HTTP/1.1 reply as it came over the wire.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts the one error format: `status`, JSON `{"error": {"code", "message",
    /// "requestId"}}` with `code`, and the same id in `x-request-id`. Returns the request id.
    pub(crate) fn assert_error(&self, status: u16, code: &str, what: &str) -> String {
        let body = self.json();
        assert_eq!(
            (self.status, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {self:?} / {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
        let id = body["error"]["requestId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(!id.is_empty(), "{what}: no request id in {body}");
        assert_eq!(self.header("x-request-id"), Some(id.as_str()), "{what}");
        id
    }
}

/// A raw TCP connection speaking HTTP/1.1 by hand.
pub(crate) struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `addr`.
    pub(crate) fn connect(addr: SocketAddr) -> Result<Raw> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        Ok(Raw {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes `bytes`.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("sending")
    }

    fn fill(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).context("reading a reply")?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the next reply (which must carry a `Content-Length`).
    pub(crate) fn reply(&mut self) -> Result<Reply> {
        loop {
            if let Some(reply) = self.parse()? {
                return Ok(reply);
            }
            if self.fill()? == 0 {
                bail!(
                    "the connection closed before a complete reply: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    fn parse(&mut self) -> Result<Option<Reply>> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&self.buf)? else {
            return Ok(None);
        };
        let status = response.code.context("no status")?;
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .context("a reply without Content-Length")?
            .1
            .parse()?;
        if self.buf.len() < head + len {
            return Ok(None);
        }
        let body = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        Ok(Some(Reply {
            status,
            headers,
            body,
        }))
    }

    /// Whether the server closed the connection (end of input or a reset, nothing more sent).
    pub(crate) fn closed(&mut self) -> Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        match self.fill() {
            Ok(n) => Ok(n == 0),
            Err(e)
                if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                    == Some(std::io::ErrorKind::ConnectionReset) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}
